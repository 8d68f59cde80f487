"""The node-layer graph of a network, read through its :class:`~benchmark.toy.LinearSite` list.

A *node layer* is an activation space that one or more weight uses read (sites with equal inputs share a
node). A *section* runs from a node through a reader site's weight (z = W f) to the node that the next
site reads, when that node's activations are an element-wise function of z: identity or ReLU, each with a
per-coordinate offset (a bias), checked on the data. A reader with no such successor ends at an *output*
node: the model's output when it is verified to be such a function of z, else z itself (the "single
section" fallback: the Jacobian is then the weight). LIB is computed backwards over this graph
(``docs/reference/lib_pca.md`` sections 2.4, 2.7, 2.13); edges are rib's ``squared`` formula (2.8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from methods._activation_bases import Basis


@dataclass
class Reader:
    """One site: weight (as used, ``[d_out, d_in]``) reading a node; where its output goes."""

    site: int
    param: str
    transposed: bool
    weight: Tensor  # float64 [d_out, d_in], the matrix as the forward pass uses it
    node: int
    children: list[tuple[int, Tensor]] = field(default_factory=list)  # (node, derivative [N, d_out])
    out_derivative: Tensor | None = None  # [N, d_out] when the reader ends at an output node
    out_kind: str = ""  # how the section was identified (for the run record)


@dataclass
class NodeGraph:
    nodes: list[Tensor]  # activations per node [N, d]
    readers: list[Reader]
    site_node: list[int]

    def readers_of(self, n: int) -> list[Reader]:
        return [r for r in self.readers if r.node == n]

    def describe(self) -> list[str]:
        out = []
        for r in self.readers:
            nxt = ", ".join(f"node{m}" for m, _ in r.children) or "output"
            out.append(f"site{r.site}({r.param}{'^T' if r.transposed else ''}): node{r.node} -> {nxt} [{r.out_kind}]")
        return out


def elementwise_derivative(z: Tensor, f: Tensor, rtol: float = 1e-4) -> tuple[Tensor, str] | None:
    """If f = phi(z + c) on every sample with phi identity or ReLU and c a per-coordinate offset, return
    (phi'(z + c) ``[N, d]``, kind); else None. The offset is estimated on a subset and checked on all."""
    if z.shape != f.shape:
        return None
    z, f = z.to("cpu", torch.float64), f.to("cpu", torch.float64)
    atol = rtol * float(z.abs().max() + f.abs().max() + 1e-30)
    for rows in (slice(0, 4096), slice(None)):  # estimate on a subset first; all rows if that fails
        diff = f[rows] - z[rows]
        c = diff.median(dim=0).values
        if bool(((f - z - c).abs() <= atol).all()):
            return torch.ones_like(z), "identity"
        if bool((f < -atol).any()):
            return None
        pos = f[rows] > atol
        c = torch.nanmedian(torch.where(pos, diff, torch.nan), dim=0).values
        c = torch.where(torch.isnan(c), -z.max(dim=0).values, c)
        if bool(((f - torch.relu(z + c)).abs() <= atol).all()):
            return (f > atol).to(torch.float64), "relu"
        if rows == slice(None) or f.shape[0] <= 4096:
            return None
    return None


def build_graph(sites: list, params: dict[str, Tensor], output: Tensor | None, rtol: float = 1e-4) -> NodeGraph:
    """Group sites into node layers and find the sections between them (see the module docstring)."""
    if not sites:
        raise ValueError("the target exposes no linear sites: activation-basis methods have nothing to read")
    nodes: list[Tensor] = []
    site_node: list[int] = []
    readers: list[Reader] = []
    for s, site in enumerate(sites):
        if site.param not in params:
            raise ValueError(
                f"site {s} reads parameter {site.param!r}, which is not decomposed (decomposed: {', '.join(params)})"
            )
        f = site.inputs.detach().to("cpu", torch.float64).reshape(site.inputs.shape[0], -1)
        if not torch.isfinite(f).all():
            raise ValueError(f"site {s} ({site.param}) has NaN or infinite activations")
        W = params[site.param].detach().to("cpu", torch.float64)
        if W.ndim != 2:
            raise ValueError(f"site {s}: parameter {site.param!r} is not a matrix (shape {tuple(W.shape)})")
        W = W.T if site.transposed else W
        if W.shape[1] != f.shape[1]:
            raise ValueError(f"site {s}: {site.param} reads {W.shape[1]} inputs but its activations have {f.shape[1]}")
        n = next((i for i, g in enumerate(nodes) if g.shape == f.shape and torch.equal(g, f)), None)
        if n is None:
            nodes.append(f)
            n = len(nodes) - 1
        site_node.append(n)
        readers.append(Reader(s, site.param, site.transposed, W, n))
    y = None if output is None else output.detach().to("cpu", torch.float64).reshape(output.shape[0], -1)
    for r in readers:
        z = nodes[r.node] @ r.weight.T
        for m, g in enumerate(nodes):
            if m == r.node:
                continue
            hit = elementwise_derivative(z, g, rtol)
            if hit is not None:
                r.children.append((m, hit[0]))
                r.out_kind = hit[1]
        if not r.children:
            hit = None if y is None else elementwise_derivative(z, y, rtol)
            if hit is not None:
                r.out_derivative, r.out_kind = hit[0], f"output ({hit[1]})"
            else:
                r.out_derivative, r.out_kind = torch.ones_like(z), "pre-activation (single section)"
    return NodeGraph(nodes, readers, site_node)


def backward_order(graph: NodeGraph) -> list[int]:
    """Nodes ordered so that every node comes after all nodes its readers feed (output side first)."""
    succ = {n: {m for r in graph.readers_of(n) for m, _ in r.children} for n in range(len(graph.nodes))}
    order: list[int] = []
    state: dict[int, int] = {}

    def visit(n: int) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ValueError("the sites form a cycle; LIB needs a feed-forward chain of node layers")
        state[n] = 1
        for m in sorted(succ[n]):
            visit(m)
        state[n] = 2
        order.append(n)

    for n in range(len(graph.nodes)):
        visit(n)
    return order


def jacobian_gram(reader: Reader, next_read: Tensor | None, deriv: Tensor) -> Tensor:
    """E_x[J^T J] ``[d_in, d_in]`` for J(x) = A diag(phi'(x)) W, A = next_read.T (identity at an output).

    Computed without a loop over samples: W^T ((A^T A) * E[phi' phi'^T]) W.
    """
    phi = deriv.to(torch.float64)
    second = phi.T @ phi / phi.shape[0]
    ata = torch.eye(phi.shape[1], dtype=torch.float64) if next_read is None else next_read @ next_read.T
    return reader.weight.T @ (ata * second) @ reader.weight


def section_edges(
    reader: Reader, basis_in: Basis, f_in: Tensor, next_read: Tensor | None, deriv: Tensor, chunk: int = 512
) -> Tensor:
    """rib's squared edges E[i, j] = E_x[(d f_hat_out_i / d f_hat_in_j * f_hat_in_j)^2], ``[r_out, r_in]``."""
    fin = basis_in.coords(f_in)  # [N, r_in]
    B = reader.weight @ basis_in.write  # [d_out, r_in]
    phi = deriv.to(torch.float64)
    if next_read is None:  # unrotated output: E_ij = B_ij^2 E[phi'_i^2 f_hat_j^2], one matmul
        return B.pow(2) * (phi.pow(2).T @ fin.pow(2)) / fin.shape[0]
    A = next_read.T  # [r_out, d_out]
    total = torch.zeros(A.shape[0], B.shape[1], dtype=torch.float64)
    step = max(1, min(chunk, 2**22 // max(1, phi.shape[1] * B.shape[1])))  # bound the [b, d_out, r_in] block
    for start in range(0, fin.shape[0], step):
        jac = A @ (phi[start : start + step].unsqueeze(2) * B)  # [b, r_out, r_in]
        total += ((jac * fin[start : start + step].unsqueeze(1)) ** 2).sum(0)
    return total / fin.shape[0]
