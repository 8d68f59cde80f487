"""Tier 5, transformers: a two-layer attention-only transformer with a compiled induction circuit.

The induction circuit (Olsson et al. 2022, "In-context learning and induction heads"; decomposed with SPD in
arXiv:2511.08854, whose induction-head toy in the SPD repository is trained and has no ground-truth metric)
is two heads in two layers: a previous-token head copies each token's predecessor into its position, and an
induction head, at the last position, attends to the position whose predecessor equals the current token and
copies the token found there. Here the weights are set by hand (compiled), so the mechanisms are exact.

Data. A sequence of ``T`` tokens: ``BOS``, then tokens from a vocabulary of ``V``, in which a token S appears
exactly twice, at a position p in 1..T-3 and at the last position, and M (!= S) follows it at p + 1; every
other token is uniform over the vocabulary without S. The task is to predict M at the last position. An
input is the sequence one-hot, flattened to ``[T * (V + 1)]`` floats; the output is the last position's
``V`` logits, and ``loss`` is the cross-entropy to M.

Network. Residual stream ``d = (V + 1) + T + V + V``: a token slot (one direction per token and BOS), a
position slot, a previous-token slot and an output slot. Embedding ``E`` and positions ``P`` write the first
two; the unembedding ``U`` reads the output slot (gain ``GAIN``). No LayerNorm, no MLP, one head per layer,
no 1/sqrt(d) in the scores (the scale sits in ``W_K``). Every weight use is ``h @ W.T`` on ``[batch * T, d]``
rows, so each decomposed matrix is an ordinary linear site.

- Layer 0, previous-token head (head size T): ``W_Q0`` reads position i, ``W_K0`` the shifted position, so
  position i scores ``SCALE`` on i - 1 and 0 elsewhere (causal); ``W_V0`` reads the token slot (not BOS) and
  ``W_O0`` writes the previous-token slot.
- Layer 1, induction head (head size V): ``W_Q1`` reads the token slot, ``W_K1`` the previous-token slot
  (times ``SCALE``), so the last position attends to p + 1; ``W_V1`` reads the token slot and ``W_O1``
  writes the output slot, so the logits are ``GAIN`` on M.

Ground truth (2V + 1 mechanisms, exact by construction; the pieces sum to the weights):
- ``match_t`` for each token t, active iff S = t: the previous-token OV piece of t (row t of ``W_V0``,
  column t of ``W_O0``) and the induction QK piece of t (row t of ``W_Q1``, row t of ``W_K1``). These four
  pieces are used on exactly the same inputs, and removing any one loses the match, so they form one
  cross-layer mechanism (as deep_linear's layers do); ``refinement``: the QK piece and the OV piece.
- ``copy_m`` for each token m, active iff M = m: row m of ``W_V1`` and column m of ``W_O1``.
- ``prev_attn``, always on: ``W_Q0`` and ``W_K0`` whole. Its per-position pieces are not local (without one,
  a position averages its prefix, which can create a false match), so it is one mechanism.
Removing ``match_t`` or ``copy_m`` changes nothing on the other inputs but what the softmax leaks
(about T e^-SCALE of the output).

``induction-rot`` draws, from the instance seed, a random orthogonal change of basis of the residual stream
and of each head's query-key and value-output space (``toy_models/rotated.py``'s ``haar_orthogonal``):
``W_Q, W_K`` become ``A W R^T`` (the same A for both, so the scores are unchanged), ``W_V`` becomes
``B W R^T``, ``W_O`` becomes ``R W B^T``, ``E, P`` become ``R E, R P`` and ``U`` becomes ``U R^T``. The
function is unchanged; no basis of the residual stream or of a head gives the pieces away.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.registry import TOY_MODELS
from benchmark.toy import LinearSite, Mechanism, ToyModel, ToyModelSpec
from toy_models._common import ConfigKeyed, train
from toy_models.rotated import haar_orthogonal

SCALE = 20.0  # attention score of a match: the softmax leaks about T e^-20 elsewhere
GAIN = 10.0  # the logit of the predicted token
ABLATED_ACCURACY = 0.75  # the trained toy's health: removing a mechanism leaves at most this accuracy
HEADS = ("Q0", "K0", "V0", "O0", "Q1", "K1", "V1", "O1")


class AttnOnly(nn.Module):
    """Two causal single-head attention layers on a residual stream; logits at the last position.

    ``x``: ``[batch, T * vocab]`` one-hot rows (vocab includes BOS). Parameters ``W_Q0 .. W_O1`` (the heads),
    ``E [d, vocab]``, ``P [d, T]``, ``U [V, d]``.
    """

    def __init__(self, vocab: int, seq: int, d: int, d_qk: tuple[int, int], d_ov: tuple[int, int], n_out: int):
        super().__init__()
        self.vocab, self.seq, self.d = vocab, seq, d
        for layer in (0, 1):
            for kind, size in (("Q", d_qk[layer]), ("K", d_qk[layer]), ("V", d_ov[layer])):
                setattr(self, f"W_{kind}{layer}", nn.Parameter(torch.zeros(size, d)))
            setattr(self, f"W_O{layer}", nn.Parameter(torch.zeros(d, d_ov[layer])))
        self.E = nn.Parameter(torch.zeros(d, vocab))
        self.P = nn.Parameter(torch.zeros(d, seq))
        self.U = nn.Parameter(torch.zeros(n_out, d))

    def embed(self, x: Tensor) -> Tensor:
        """The residual stream before layer 0, ``[batch * T, d]``."""
        onehot = x.reshape(-1, self.vocab)  # [batch * T, vocab]
        pos = self.P.T.repeat(x.shape[0], 1)  # [batch * T, d]
        return onehot @ self.E.T + pos

    def attend(self, h: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        """One causal head on ``h [batch * T, d]``: (the value mix ``z [batch * T, d_ov]``, its output)."""
        W = {k: getattr(self, f"W_{k}{layer}") for k in "QKVO"}
        n, t = h.shape[0] // self.seq, self.seq
        q, k, v = ((h @ W[c].T).reshape(n, t, -1) for c in "QKV")
        scores = q @ k.transpose(1, 2)
        causal = torch.ones(t, t, dtype=torch.bool, device=h.device).triu(1)
        z = (torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1) @ v).reshape(n * t, -1)
        return z, z @ W["O"].T

    def streams(self, x: Tensor) -> dict[str, Tensor]:
        """What each decomposed matrix reads: ``h0``, ``z0``, ``h1``, ``z1`` (``[batch * T, *]``), and
        ``logits``."""
        h0 = self.embed(x)
        z0, out0 = self.attend(h0, 0)
        h1 = h0 + out0
        z1, out1 = self.attend(h1, 1)
        last = (h1 + out1).reshape(x.shape[0], self.seq, -1)[:, -1]
        return {"h0": h0, "z0": z0, "h1": h1, "z1": z1, "logits": last @ self.U.T}

    def forward(self, x: Tensor) -> Tensor:
        return self.streams(x)["logits"]


class Induction(ConfigKeyed, ToyModel):
    """The compiled induction circuit on a vocabulary of ``vocab`` tokens and sequences of ``seq`` positions
    (BOS included), optionally behind random rotations (``rotate``) drawn from ``seed``."""

    track = "diagnostic"  # until the headroom gate says otherwise (docs/toy_models.md)
    # the strict defaults hold: exact locality (up to the softmax's e^-SCALE leak), every input moved

    def __init__(self, vocab: int = 10, seq: int = 8, rotate: bool = False, seed: int = 0, name: str = "induction"):
        super().__init__()
        if vocab < 3 or seq < 4:
            raise ValueError(f"induction needs vocab >= 3 and seq >= 4, not {vocab} and {seq}")
        self.V, self.T, self.rotate = vocab, seq, rotate
        self.d = (vocab + 1) + seq + 2 * vocab
        self._config = {"vocab": vocab, "seq": seq, "rotate": rotate}
        self.activation_rate = 1 / vocab  # S and M are each uniform over the vocabulary
        rot = " Behind random rotations of the residual stream and of each head, drawn from the seed." * rotate
        self.spec = ToyModelSpec(
            name=name,
            tier=5,
            version="1",
            seed=seed,
            gt_status="exact",
            description=f"2-layer attention-only transformer, compiled: a previous-token head and an induction "
            f"head predict M after [BOS ... S M ... S] ({vocab} tokens, {seq} positions, d_model {self.d}). "
            f"Mechanisms: match_t (S = t: previous-token OV and induction QK pieces of t), copy_m (M = m: "
            f"induction OV piece of m), prev_attn (always on).{rot}",
            paper="induction heads: Olsson et al. 2022 (arXiv:2209.11895); SPD on an induction-head toy: "
            "arXiv:2511.08854",
            decomposed=tuple(f"W_{h}" for h in HEADS),
        )

    def make_model(self) -> nn.Module:
        V, T = self.V, self.T
        return AttnOnly(V + 1, T, self.d, d_qk=(T, V), d_ov=(V, V), n_out=V)

    # -- the compiled weights, as pieces ---------------------------------------------------------------
    def _slots(self) -> dict[str, slice]:
        V, T = self.V, self.T
        return {"tok": slice(0, V + 1), "pos": slice(V + 1, V + 1 + T), "prev": slice(V + 1 + T, 2 * V + 1 + T),
                "out": slice(2 * V + 1 + T, 3 * V + 1 + T)}  # fmt: skip

    def _rotations(self, seed: int) -> dict[str, Tensor]:
        eye = {"R": self.d, "A0": self.T, "B0": self.V, "A1": self.V, "B1": self.V}
        if not self.rotate:
            return {k: torch.eye(n, dtype=torch.float64) for k, n in eye.items()}
        g = torch.Generator().manual_seed(1_000_003 * seed + 17)
        return {k: haar_orthogonal(n, g) for k, n in eye.items()}

    def _pieces(self) -> tuple[dict[str, Tensor], list[tuple[str, dict[str, Tensor], bool]]]:
        """The float64 weights (rotated) and the mechanisms as ``(name, {param: piece}, always_on)``."""
        V, T = self.V, self.T
        s = self._slots()
        rot = self._rotations(self.spec.seed)
        R = rot["R"]

        def resid(slot: str, i: int) -> Tensor:  # unit vector i of a slot, rotated
            return R[:, s[slot].start + i]

        outer = torch.outer
        A0, B0, A1, B1 = rot["A0"], rot["B0"], rot["A1"], rot["B1"]
        mechs: list[tuple[str, dict[str, Tensor], bool]] = []
        for t in range(V):
            mechs.append(
                (
                    f"match_{t}",
                    {
                        "W_V0": outer(B0[:, t], resid("tok", t)),
                        "W_O0": outer(resid("prev", t), B0[:, t]),
                        "W_Q1": outer(A1[:, t], resid("tok", t)),
                        "W_K1": SCALE * outer(A1[:, t], resid("prev", t)),
                    },
                    False,
                )
            )
        for m in range(V):
            mechs.append(
                (
                    f"copy_{m}",
                    {"W_V1": outer(B1[:, m], resid("tok", m)), "W_O1": outer(resid("out", m), B1[:, m])},
                    False,
                )
            )
        q0 = sum(outer(A0[:, i], resid("pos", i)) for i in range(T))
        k0 = SCALE * sum(outer(A0[:, j + 1], resid("pos", j)) for j in range(T - 1))
        mechs.append(("prev_attn", {"W_Q0": q0, "W_K0": k0}, True))
        weights: dict[str, Tensor] = {}
        for _, pieces, _ in mechs:
            for k, v in pieces.items():
                weights[k] = weights.get(k, 0) + v
        weights["E"] = torch.stack([resid("tok", i) for i in range(V + 1)], dim=1)
        weights["P"] = torch.stack([resid("pos", i) for i in range(T)], dim=1)
        weights["U"] = GAIN * torch.stack([resid("out", m) for m in range(V)])
        return weights, mechs

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        weights, _ = self._pieces()
        with torch.no_grad():
            for name, w in weights.items():
                getattr(model, name).copy_(w.float())
        return {"hand_built": True}

    # -- data --------------------------------------------------------------------------------------------
    def tokens(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` token sequences ``[n, T]`` (BOS = V)."""
        V, T = self.V, self.T
        S = torch.randint(0, V, (n,), generator=generator)
        M = (S + torch.randint(1, V, (n,), generator=generator)) % V  # uniform over the vocabulary without S
        p = torch.randint(1, T - 2, (n,), generator=generator)  # S's first position, 1 .. T-3
        fill = (S[:, None] + torch.randint(1, V, (n, T), generator=generator)) % V  # any token but S
        rows = torch.arange(n)
        fill[:, 0] = V
        fill[rows, p] = S
        fill[rows, p + 1] = M
        fill[:, -1] = S
        return fill

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        tok = self.tokens(n, generator)
        return nn.functional.one_hot(tok, self.V + 1).float().reshape(n, -1)

    def decode(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """(S, M) of each input."""
        tok = inputs.reshape(inputs.shape[0], self.T, self.V + 1).argmax(dim=-1)
        S = tok[:, -1]
        first = (tok[:, :-1] == S[:, None]).float().argmax(dim=1)  # the earlier S
        return S, tok[torch.arange(tok.shape[0]), first + 1]

    def loss(self, output: Tensor, inputs: Tensor) -> Tensor:
        """Cross-entropy of the last position's logits to M."""
        _, M = self.decode(inputs.detach().cpu())
        return nn.functional.cross_entropy(output, M.to(output.device))

    # -- ground truth -----------------------------------------------------------------------------------
    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        _, mechs = self._pieces()
        shapes = {k: getattr(model, k).shape for k in self.spec.decomposed}
        out = []
        for name, pieces, always in mechs:
            comps = {k: v.float() for k, v in pieces.items()}
            support = {k: v.ne(0) for k, v in comps.items()}
            refinement = None
            if name.startswith("match_"):
                refinement = [{k: comps[k] for k in ("W_V0", "W_O0")}, {k: comps[k] for k in ("W_Q1", "W_K1")}]
            assert all(v.shape == shapes[k] for k, v in comps.items())
            out.append(Mechanism(name, support, components=comps, always_on=always, refinement=refinement))
        return out

    def active(self, inputs: Tensor) -> Tensor:
        S, M = self.decode(inputs)
        vocab = torch.arange(self.V)
        match = S[:, None] == vocab
        copy = M[:, None] == vocab
        return torch.cat([match, copy, torch.ones(inputs.shape[0], 1, dtype=torch.bool)], dim=1)

    def sites(self, model: nn.Module, inputs: Tensor) -> list[LinearSite]:
        st = model.streams(inputs)
        reads = {"Q": "h", "K": "h", "V": "h", "O": "z"}
        return [LinearSite(f"W_{h}", st[f"{reads[h[0]]}{h[1]}"]) for h in HEADS]


def _make(rotate: bool, name: str):  # noqa: ANN202
    def make(seed: int = 0) -> Induction:
        return Induction(rotate=rotate, seed=seed, name=name)

    return make


TOY_MODELS.register("induction", _make(False, "induction"))
TOY_MODELS.register("induction-rot", _make(True, "induction-rot"))


class TrainedInduction(Induction):
    """The same architecture and data, the eight head matrices trained (strong ground truth).

    The embedding, positions and unembedding are the compiled ones, frozen; ``W_Q0 .. W_O1`` start from
    N(0, 0.1^2) (seed) and are trained with Adam on the cross-entropy to M, as the SPD repository trains its
    induction-head toy (arXiv:2511.08854), at our size. The rotations of ``induction-rot`` are then folded in.

    What the trained heads do is not known piece by piece, so the ground truth is the compiled circuit's
    per-token reads, as spans (a strong ground truth: the spans need not sum to the weights), checked by
    ablation in ``health``. With E_t token t's embedding and U_m the unembedding of m (unit vectors):
    - ``match_t``, active iff S = t: the induction query's read of t, ``W_Q1 E_t E_t^T``, and the previous-token
      value's read of t, ``W_V0 E_t E_t^T`` (rank 2);
    - ``copy_m``, active iff M = m: the induction value's read of m, ``W_V1 E_m E_m^T``, and its output's write
      to m, ``U_m U_m^T W_O1`` (rank 2).
    Health: the trained model is at least 0.99 accurate; removing any mechanism (projecting out its span)
    leaves at most ``ABLATED_ACCURACY`` accuracy on the inputs that use it, and at least 0.95 on the others.
    The rest of the weights (positions, keys, the previous-token output) is in no mechanism.
    """

    track = "reproduction"
    locality = "ratio"  # a trained softmax spreads a little attention everywhere: no exact locality
    # removing copy_m moves its own inputs 4.4-10x more than the others at seed 0 (its write to U_m moves
    # logit m a little on every input); match_t 18-37x
    locality_ratio = 3.0
    steps, batch, lr = 3000, 256, 1e-2

    def __init__(self, seed: int = 0, name: str = "induction_trained"):
        super().__init__(rotate=True, seed=seed, name=name)
        self._config["trained"] = (self.steps, self.batch, self.lr)
        self.spec = replace(
            self.spec,
            gt_status="strong",
            version="2",  # 2: per-token spans (1 was per head, unscoreable: always-on pieces co-activate)
            description=f"2-layer attention-only transformer, trained: predict M after [BOS ... S M ... S] "
            f"({self.V} tokens, {self.T} positions, d_model {self.d}; embeddings frozen). Mechanisms (spans, "
            f"checked by ablation): match_t (S = t: W_Q1's and W_V0's reads of token t), copy_m (M = m: W_V1's "
            f"read of m, W_O1's write to m). Behind random rotations.",
        )

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        plain = Induction(self.V, self.T, rotate=False)
        weights, _ = plain._pieces()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name in ("E", "P", "U"):
                getattr(model, name).copy_(weights[name].float())
            for name in self.spec.decomposed:
                p = getattr(model, name)
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        heads = [getattr(model, n) for n in self.spec.decomposed]
        for name in ("E", "P", "U"):
            getattr(model, name).requires_grad_(False)
        opt = torch.optim.Adam(heads, lr=self.lr)
        data = torch.Generator().manual_seed(seed + 1)

        def batches(step: int) -> tuple[Tensor, Tensor]:
            x = self.sample(self.batch, data)
            return x, self.decode(x)[1]

        last = train(model, batches, nn.functional.cross_entropy, self.steps, opt)
        rot = self._rotations(self.spec.seed)
        R, folds = rot["R"].float(), {"Q": "A", "K": "A", "V": "B"}
        with torch.no_grad():
            for layer in (0, 1):
                for kind, side in folds.items():
                    W = getattr(model, f"W_{kind}{layer}")
                    W.copy_(rot[f"{side}{layer}"].float() @ W @ R.T)
                W = getattr(model, f"W_O{layer}")
                W.copy_(R @ W @ rot[f"B{layer}"].float().T)
            model.E.copy_(R @ model.E)
            model.P.copy_(R @ model.P)
            model.U.copy_(model.U @ R.T)
        return {"final_loss": last}

    def health(self, model: nn.Module, info: dict[str, Any]) -> str | None:
        x = self.sample(4096, torch.Generator().manual_seed(12345))
        act = self.active(x)
        M = self.decode(x)[1]
        params = dict(model.named_parameters())

        def correct(p: dict[str, Tensor]) -> Tensor:
            with torch.no_grad():
                return torch.func.functional_call(model, p, (x,)).argmax(dim=1) == M

        info["accuracy"] = float(correct(params).float().mean())
        if info["accuracy"] < 0.99:
            return f"accuracy {info['accuracy']:.3f} < 0.99 after training"
        worst_on, worst_off = 0.0, 1.0
        for m, mech in enumerate(self.mechanisms(model)):
            ok = correct(mech.removed_from(params))
            on, off = float(ok[act[:, m]].float().mean()), float(ok[~act[:, m]].float().mean())
            worst_on, worst_off = max(worst_on, on), min(worst_off, off)
        info["ablated_accuracy_worst_on"], info["ablated_accuracy_worst_off"] = worst_on, worst_off
        if worst_on > ABLATED_ACCURACY or worst_off < 0.95:
            return f"ablation: accuracy {worst_on:.3f} on a mechanism's inputs, {worst_off:.3f} on the others"
        return None

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        E = model.E.detach()[:, : self.V]
        E = E / E.norm(dim=0)
        U = model.U.detach()
        U = U / U.norm(dim=1, keepdim=True)
        W = {k: getattr(model, k).detach() for k in self.spec.decomposed}
        out = []
        for kind, pieces in (
            ("match", lambda t: {"W_Q1": W["W_Q1"] @ torch.outer(E[:, t], E[:, t]),
                                 "W_V0": W["W_V0"] @ torch.outer(E[:, t], E[:, t])}),
            ("copy", lambda t: {"W_V1": W["W_V1"] @ torch.outer(E[:, t], E[:, t]),
                                "W_O1": torch.outer(U[t], U[t]) @ W["W_O1"]}),
        ):  # fmt: skip
            for t in range(self.V):
                piece = pieces(t)
                names = list(piece)
                span = {k: torch.zeros(2, *W[k].shape) for k in names}
                for i, k in enumerate(names):
                    span[k][i] = piece[k] / piece[k].norm()
                support = {k: torch.ones_like(W[k], dtype=torch.bool) for k in names}
                out.append(Mechanism(f"{kind}_{t}", support, subspace=span))
        return out

    def active(self, inputs: Tensor) -> Tensor:
        return super().active(inputs)[:, :-1]  # no prev_attn mechanism


TOY_MODELS.register("induction_trained", lambda seed=0: TrainedInduction(seed=seed))
