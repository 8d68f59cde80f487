"""What a seed group (``methods/_*_group.py``) needs so that each run gets, on a CPU, the bits it gets alone.

A group stacks its runs' tensors and hands each run its own slice. Two things in a CPU kernel can depend on
where a run's block sits in a stacked tensor, not only on its values:

- a BLAS product (MKL) may take another path, and sum in another order, on an operand whose data does not start
  on a 64-byte boundary: a run's slice starts ``run x block`` bytes in;
- an element-wise kernel treats a tensor's last partial block of vectors apart from the rest (for ``pow``, a
  scalar loop with other rounding than the vector code), and a run's elements may fall on the other side of that
  border than alone.

Measured on TMS 5-2 and gated_circuits-rot@0: the SPD, APD and VPD groups gave other bits than alone with 3 or 7
rows a run and the same with 32 or 96, and L3D's whenever an epoch's last batch had 3, 7 or 11 rows (999, 1,003
or 1,011 samples). So SPD, APD and VPD group only runs of whole blocks of :data:`ROWS_ALIGN` rows, and L3D, whose
last batch is whatever the data leaves, hands BLAS a run's slice through :func:`aligned`.
"""

from __future__ import annotations

from torch import Tensor

#: Rows a run must have in a group: 32 rows of any width are whole pairs of 16-float (AVX512) vectors and start
#: every run's block on a 128-byte boundary, in float32 and float64 alike.
ROWS_ALIGN = 32


def rows_aligned(rows: int) -> bool:
    return rows % ROWS_ALIGN == 0


def aligned(t: Tensor) -> Tensor:
    """``t``, or a copy of it where its data does not start on a 64-byte boundary (as a run's own tensor does)."""
    return t if t.data_ptr() % 64 == 0 else t.clone()
