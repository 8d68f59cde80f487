"""A complete, small method adapter for pdbench: the rank-1 terms of each weight matrix's SVD.

Written as the worked example of ``docs/submit.md``. Each decomposed matrix W = sum_k s_k u_k v_k^T is
split into its rank-1 singular terms s_k u_k v_k^T (terms with s_k below ``rel_tol * s_max`` are
dropped); a parameter that is not a matrix stays whole. The per-input attribution of a term is how much
it writes on that input, |s_k v_k . x| where the network computes x @ W.T (|s_k u_k . x| where it uses
W's transpose), summed over the weight's uses. The method is deterministic and ignores ``seed``.

Submit it with either of::

    pdbench submit examples/svd_method.py
    pdbench submit examples.svd_method:WeightSVD     # from the repository root
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmark.decomposition import Decomposition, LowRank, RunRecord
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.toy import Target


@METHODS.register("example-svd", replace=True)  # replace=True: the file may be loaded as a plugin and imported
class WeightSVD(Method):
    version = "1"
    paper = "worked example (docs/submit.md): rank-1 SVD terms of each weight matrix"
    defaults = {"rel_tol": 1e-6}

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        hp = self.hparams(target.spec.name)
        components: list[dict[str, Tensor | LowRank]] = []
        terms: dict[str, tuple[Tensor, Tensor, Tensor, int]] = {}  # param -> (U, S, Vh, first component index)
        for name, p in target.params().items():
            w = p.detach()
            if w.dim() != 2:
                components.append({name: w.clone()})
                continue
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            keep = int((s > hp["rel_tol"] * s.max().clamp_min(1e-30)).sum())
            terms[name] = (u[:, :keep], s[:keep], vh[:keep], len(components))
            components += [{name: LowRank(s[k] * u[:, k : k + 1], vh[k : k + 1])} for k in range(keep)]

        def attributions(inputs: Tensor) -> Tensor:
            out = torch.zeros(inputs.shape[0], len(components), dtype=inputs.dtype)
            with torch.no_grad():
                for site in target.sites(inputs):
                    if site.param not in terms:
                        continue
                    u, s, vh, start = terms[site.param]
                    reads = u if site.transposed else vh.T  # the direction of the input each term reads
                    out[:, start : start + len(s)] += (site.inputs @ reads * s).abs()
            whole = [i for i, c in enumerate(components) if next(iter(c)) not in terms]
            out[:, whole] = 1.0  # parameters kept whole are always on
            return out

        return Decomposition(
            components, attributions=attributions, faithful=True, record=RunRecord(steps=0, hparams=hp)
        )
