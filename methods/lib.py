"""LIB: the (Local) Interaction Basis (Bushnaq et al. 2024, arXiv:2405.10927 and arXiv:2405.10928).

Per node layer (the activations a weight reads, :mod:`methods._lib_graph`), computed backwards from the
output: centre and whiten the activations, form M = E[J^T J] with J the Jacobian of the next node layer's
LIB features (the output is unrotated), and rotate onto M's eigenvectors, scaling feature i by
sqrt(Lambda_i) (``docs/reference/lib_pca.md`` sections 2.3-2.5, 2.12). Directions with no variance
or no downstream effect are dropped, so a layer has at most rank(layer) features: LIB is never
overcomplete and cannot recover superposed mechanisms (reference 5.5).

Parameter components are read-side rank-1 pieces W write_i read_i^T (reference 5.1, our proposal; see
``docs/activation_methods.md``) plus the constant and residual components that make them sum to W.
Interaction edges are rib's squared edges (2.8); ``group`` clusters features across layers by thresholded
connected components of the edge graph (5.3) and returns the clusters as ``groups``
(``granularity="cluster"`` sums each cluster into one component). Attributions: |f_hat_i(x)| (centred,
i.e. mean-ablation semantics) or the APD-style gradient attribution (5.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from benchmark.decomposition import Component, Decomposition, RunRecord
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.toy import Target, per_input
from methods._activation_bases import Basis
from methods._attribution import gradient_attributions
from methods._basis_components import (
    CompInfo,
    activity,
    capped_samples,
    site_components,
    unread_components,
    use_counts,
)
from methods._lib_basis import lib_basis
from methods._lib_graph import NodeGraph, backward_order, build_graph, jacobian_gram, section_edges


def fit_lib(graph: NodeGraph, rel_tol_var: float = 1e-10, rel_tol_lambda: float = 1e-10) -> dict[int, Basis]:
    """The LIB basis of every node, computed from the output side backwards."""
    bases: dict[int, Basis] = {}
    for n in backward_order(graph):
        f = graph.nodes[n]
        gram = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        for r in graph.readers_of(n):
            if r.children:
                for m, deriv in r.children:
                    gram += jacobian_gram(r, bases[m].read, deriv)
            else:
                gram += jacobian_gram(r, None, r.out_derivative)
        bases[n] = lib_basis(f, gram, rel_tol_var, rel_tol_lambda)
    return bases


def all_edges(graph: NodeGraph, bases: dict[int, Basis], n_samples: int) -> list[tuple[int, int | None, Tensor]]:
    """(reader index, next node or None for an output, E ``[r_next, r_in]``) for every section."""
    out = []
    for k, r in enumerate(graph.readers):
        f = graph.nodes[r.node][:n_samples]
        if r.children:
            for m, deriv in r.children:
                out.append((k, m, section_edges(r, bases[r.node], f, bases[m].read, deriv[:n_samples])))
        else:
            out.append((k, None, section_edges(r, bases[r.node], f, None, r.out_derivative[:n_samples])))
    return out


def normalised_edges(E: Tensor) -> Tensor:
    """E_ij / sqrt(max_k E_ik * max_k E_kj): each edge against the strongest edges of its two ends, so that a
    weak feature's real edges outweigh the sampling noise that leaks from strong features."""
    denom = (E.max(1, keepdim=True).values * E.max(0, keepdim=True).values).sqrt()
    return torch.where(denom > 0, E / denom.clamp_min(1e-300), torch.zeros_like(E))


def cluster_features(
    graph: NodeGraph, bases: dict[int, Basis], edges: list[tuple[int, int | None, Tensor]], threshold: float
) -> dict[tuple[int, int], int]:
    """Cluster label of every feature (node, i): connected components of the graph of edges whose normalised
    weight (:func:`normalised_edges`) is at least ``threshold`` (reference 5.3, thresholded connected
    components; output nodes only link features and own no weights)."""
    ids: dict[tuple, int] = {}

    def gid(key: tuple) -> int:
        return ids.setdefault(key, len(ids))

    for n, b in bases.items():
        for i in range(b.rank):
            gid(("f", n, i))
    rows, cols = [], []
    for k, m, E in edges:
        n = graph.readers[k].node
        for i, j in (normalised_edges(E) >= threshold).nonzero().tolist():
            rows.append(gid(("f", n, j)))
            cols.append(gid(("f", m, i) if m is not None else ("o", k, i)))
    size = len(ids)
    adj = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size))
    _, labels = connected_components(adj, directed=False)
    return {(key[1], key[2]): int(labels[v]) for key, v in ids.items() if key[0] == "f"}


@dataclass
class LIBFit:
    """What LIB computes: the node-layer graph, per node the basis (read vectors = C, write vectors = its
    left inverse C^+, ``scale`` = Lambda), the squared edges per section (reader index, next node or None
    for an output, ``E [r_next, r_in]``), and the cluster label of each feature (node, i)."""

    graph: NodeGraph
    bases: dict[int, Basis]
    edges: list[tuple[int, int | None, Tensor]]
    labels: dict[tuple[int, int], int]


@METHODS.register("lib")
class LIB(Method):
    version = "1"
    paper = "Bushnaq et al. 2024, arXiv:2405.10928 (LIB) and arXiv:2405.10927 (interaction basis)"

    # Thresholds are relative (reference 2.14); the paper's absolute 1e-15 in float64 drops only
    # numerically zero directions, which these relative values also do on the toy models.
    @dataclass
    class Config:
        n_samples: int = 20_000
        rel_tol_var: float = 1e-10
        rel_tol_lambda: float = 1e-10
        n_edge_samples: int = 4096
        group: bool = True
        edge_threshold: float = 0.1
        granularity: str = "feature"
        attribution: str = "activation"
        section_rtol: float = 1e-4
        max_floats: float = 1e7

    def fit(self, target: Target, seed: int) -> LIBFit:
        """The basis of every node layer, the interaction edges and (with ``group``) the feature clusters."""
        hp = self.hparams(target.spec.name)
        n = capped_samples(target, hp["n_samples"], hp["max_floats"])
        x = target.sample(n, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            graph = build_graph(target.sites(x), target.params(), target.model(x), hp["section_rtol"])
        bases = fit_lib(graph, hp["rel_tol_var"], hp["rel_tol_lambda"])
        edges = all_edges(graph, bases, hp["n_edge_samples"])
        labels = cluster_features(graph, bases, edges, hp["edge_threshold"]) if hp["group"] else {}
        return LIBFit(graph, bases, edges, labels)

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        hp = self.hparams(target.spec.name)
        if hp["granularity"] not in ("feature", "cluster"):
            raise ValueError(f"granularity must be 'feature' or 'cluster', not {hp['granularity']!r}")
        if hp["granularity"] == "cluster" and not hp["group"]:
            raise ValueError("granularity='cluster' needs group=True")
        if hp["attribution"] not in ("activation", "gradient"):
            raise ValueError(f"attribution must be 'activation' or 'gradient', not {hp['attribution']!r}")
        if not hp["edge_threshold"] > 0:
            raise ValueError(f"edge_threshold must be > 0, not {hp['edge_threshold']!r}")
        fitted = self.fit(target, seed)
        self.last_fit = fitted  # for inspection and tests
        graph, bases, edges, labels = fitted.graph, fitted.bases, fitted.edges, fitted.labels
        params = target.params()
        counts = use_counts([r.param for r in graph.readers])
        components: list[Component] = []
        infos: list[CompInfo] = []
        for r in graph.readers:
            c, i = site_components(
                r.param,
                r.weight,
                r.transposed,
                bases[r.node],
                "read",
                r.site,
                1.0 / counts[r.param],
                params[r.param].dtype,
            )
            components += c
            infos += i
        c, i = unread_components(params, set(counts))
        components += c
        infos += i
        groups = self._groups(graph, infos, labels) if hp["group"] else None
        feature_infos = infos
        members = [[k] for k in range(len(components))]
        if hp["granularity"] == "cluster" and groups is not None:
            components, infos, members = self._merge(components, infos, groups, params)
            groups = None
        site_basis = {r.site: bases[r.node] for r in graph.readers}
        record = RunRecord(
            steps=0,
            hparams=hp,
            extra={
                "sections": graph.describe(),
                "features_per_node": {f"node{n}": b.rank for n, b in sorted(bases.items())},
                "dims_per_node": {f"node{n}": b.dim for n, b in sorted(bases.items())},
                "lambda": {f"node{n}": [float(v) for v in b.scale[:32]] for n, b in sorted(bases.items())},
                "rank_cap": sum(b.rank + (b.const_read is not None) for b in site_basis.values()),
                "n_clusters": len(set(labels.values())) if labels else None,
                "edge_sections": [
                    f"site{graph.readers[k].site} -> {'output' if m is None else f'node{m}'}: "
                    f"{tuple(E.shape)}, total {float(E.sum()):.4g}"
                    for k, m, E in edges
                ],
                "kinds": [i.kind for i in infos],
            },
        )
        dec = Decomposition(components, groups=groups, faithful=True, record=record)
        if hp["attribution"] == "gradient":
            model, names = target.model, target.decomposed
            dec.attributions = lambda inp: gradient_attributions(model, dec, inp, names)
        else:

            def attributions(inputs: Tensor) -> Tensor:
                with torch.no_grad():
                    sites = target.sites(inputs)
                acts = {s: sites[s].inputs.reshape(sites[s].inputs.shape[0], -1) for s in site_basis}
                per = per_input(activity(feature_infos, site_basis, acts), inputs.shape[0])
                return torch.stack([per[:, m].sum(1) for m in members], dim=1)

            dec.attributions = attributions
        return dec

    @staticmethod
    def _groups(graph: NodeGraph, infos: list[CompInfo], labels: dict[tuple[int, int], int]) -> list[list[int]]:
        by_label: dict[int, list[int]] = {}
        singles: list[list[int]] = []
        for k, info in enumerate(infos):
            if info.kind == "feature":
                by_label.setdefault(labels[(graph.site_node[info.site], info.feature)], []).append(k)
            else:
                singles.append([k])
        return [g for _, g in sorted(by_label.items())] + singles

    @staticmethod
    def _merge(
        components: list[Component], infos: list[CompInfo], groups: list[list[int]], params: dict[str, Tensor]
    ) -> tuple[list[Component], list[CompInfo], list[list[int]]]:
        dense = Decomposition(components)
        merged: list[Component] = []
        new_infos: list[CompInfo] = []
        members: list[list[int]] = []
        for g in groups:
            total: dict[str, Tensor] = {}
            for k in g:
                for n, v in dense.dense(k).items():
                    total[n] = total.get(n, torch.zeros_like(params[n])) + v
            merged.append(total)
            new_infos.append(infos[g[0]] if len(g) == 1 else CompInfo(-1, "cluster"))
            members.append(g)
        return merged, new_infos, members
