"""How components become mechanisms: the scorer's grouping levels (docs/metrics.md, "Grouping levels").

A method returns components; a mechanism may need several of them (SPD's rank-1 subcomponents of a
rank-5 block, a cross-layer mechanism). Which components belong together is decided here, by one rule
for every method, so that no adapter's own heuristic decides its score:

- ``raw``: every component on its own;
- ``engine``: components whose active sets on the evaluation inputs overlap with Jaccard >= tau form one
  mechanism (connected components over the pairs, as SPD's and APD's authors group subcomponents that fire
  together); tau is swept over ``SWEEP`` and a metric is averaged over the sweep (as MIB integrates over
  circuit sizes), so no threshold is chosen per method. A method without attributions has nothing to
  co-activate: its engine level is its raw level;
- ``own``: the groups the method itself returns, where its paper defines them (LIB's connected
  components); N/A otherwise;
- ``oracle``: per mechanism, the components closest to it joined greedily while each raises its credit
  (a diagnostic of what grouping by the ground truth gives; it never enters the headline).
"""

from __future__ import annotations

import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

SWEEP = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # Jaccard thresholds of the engine level, averaged over


def coactivation_groups(active: Tensor, threshold: float) -> list[list[int]]:
    """Partition the columns of bool ``active [n_inputs, C]``: join i and j when the Jaccard index of
    their active sets is at least ``threshold``. A never-active component stays alone."""
    a = active.to(torch.float64)
    inter = a.T @ a
    count = a.sum(0)
    union = count[:, None] + count[None, :] - inter
    jac = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))
    linked = torch.triu(jac >= threshold - 1e-12, diagonal=1).numpy()  # the pairs i < j to join
    _, label = connected_components(csr_matrix(linked), directed=False)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(label.tolist()):
        groups.setdefault(g, []).append(i)
    return sorted(groups.values())


def singletons(n: int) -> list[list[int]]:
    return [[i] for i in range(n)]


def by_owner(owner: list[int | None]) -> list[list[int]]:
    """Partition from one label per component (None: alone), e.g. the mechanism each is closest to."""
    groups: dict[int, list[int]] = {}
    out: list[list[int]] = []
    for i, o in enumerate(owner):
        if o is None:
            out.append([i])
        else:
            groups.setdefault(o, []).append(i)
    return sorted(list(groups.values()) + out)
