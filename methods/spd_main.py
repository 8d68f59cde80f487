"""SPD at its main-branch version (goodfire-ai/spd ``main``, Feb 2026), beside the paper's version (``spd``).

The SPD paper's objective (Bushnaq, Braun, Sharkey 2025, arXiv:2506.20790; :mod:`methods.spd`) with the
main-branch changes that fix its known failures, each a setting of the shared core
(:mod:`methods._vpd_core`):

- the delta component (PR #151): the residual ``W - U V`` is a maskable channel with its own U(0, 1) mask in
  the stochastic losses, and the faithfulness loss is dropped (coefficient 0);
- the faithfulness warm-up (PR #169): 200 AdamW steps (lr 0.01, weight decay 0.1) of the factors on
  ``||W - U V||^2 / N`` before training, which fixed a failing TMS 5-2 + identity seed;
- the lower-leaky masks with the sign-gated backward leak instead of a forward leak (as VPD);
- linear p-annealing (PR #106) is available (``p_start`` != ``p_end``) but off, as in the toy configs.

Otherwise as the paper: SPD's per-subcomponent scalar CI MLPs (16 hidden), stochastic reconstruction through
every site plus the layerwise term, importance minimality. Per-model settings are the ``spd`` adapter's
(its ``FAST`` table for the default preset, its ``PAPER`` table for ``preset="paper"``), so the two versions
differ only by the changes above; toy models without one run SPD's blind rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmark.registry import METHODS
from methods import spd
from methods.vpd import VPD


def from_spd(entry: dict[str, Any]) -> dict[str, Any]:
    """An ``spd`` per-model setting in this core's terms."""
    out = {k: entry[k] for k in ("C", "imp_coeff", "lr", "steps", "batch_size") if k in entry}
    if "pnorm" in entry:
        out["p_start"] = out["p_end"] = entry["pnorm"]
    if "d_gate" in entry:
        out["ci_hidden"] = entry["d_gate"]
    if "schedule" in entry:
        out["final_lr_frac"] = 1.0 if entry["schedule"] == "constant" else 0.0
    return out


@METHODS.register("spd-main")
class SPDMain(VPD):
    version = "1"
    paper = "Bushnaq, Braun, Sharkey 2025, arXiv:2506.20790, at goodfire-ai/spd main (PRs #151, #169)"

    @dataclass
    class Config(VPD.Config):
        """SPD main: scalar CI MLPs, stochastic + layerwise reconstruction through every site, the delta
        component, a faithfulness warm-up and no faithfulness loss; p = 1 unless annealed."""

        freq_coeff: float | None = 0.0
        p_start: float = 1.0
        p_end: float = 1.0
        adv_coeff: float = 0.0
        stoch_coeff: float = 1.0
        layerwise_coeff: float = 1.0
        routing: str = "all"
        faith_coeff: float = 0.0
        warmup_wd: float = 0.1
        final_lr_frac: float = 0.0
        grad_clip: float = 0.0

    per_model_defaults = {k: from_spd(v) for k, v in spd.FAST.items()}
    tables = {"fast": per_model_defaults, "paper": {k: from_spd(v) for k, v in spd.PAPER.items()}}
    blind_imp_coeff, imp_per_output_ms = spd.BLIND_IMP_COEFF, spd.IMP_PER_OUTPUT_MS
