"""One projection's histogram as the core holds it: bin width and placement, and its table.

The core bins a projected value ``p`` as ``clamp((p - offset) >> shift, 0, B - 1)``: ``B - 2`` inner
bins of width ``2**shift`` and two clamp bins that hold everything beyond them.

* Width (:func:`bin_shift`): the Freedman-Diaconis rule ``2 IQR n**(-1/3)`` rounded to a power of
  two, so bins follow the row count (coarse for 200 rows, fine for 100 000) and the spread of the
  bulk, not of the tails; never more than 16 times finer than the width at which the inner bins
  span the central 99.8 % (heavy tails then go to the clamp bins rather than to empty inner bins).
* Placement (:func:`place`): the window of inner bins holding the most samples, the data it holds
  centred in it.
* Tables: :func:`density_table` is ``-log`` density with add-one (Laplace) smoothing, the clamp
  bins' density spread over the extent of the data they hold; :func:`tail_table` is
  ``-log P(value >= bin)`` for *energy* channels, whose anomalies are only ever large.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Pseudo-count added to every bin (measured: 0.25-2 change no AUC by more than 0.005).
SMOOTHING = 1.0
#: Tail quantile (per side) whose span bounds how fine the bins may get.
RANGE_QUANTILE = 1e-3
#: The bins are at most 2**FINEST_BELOW_RANGE times finer than the range-spanning width.
FINEST_BELOW_RANGE = 4


def bin_index(p: IntArray, offset: int, shift: int, params: CoreParams) -> IntArray:
    """The core's bin of projected values (the arithmetic of :func:`mailpulse.hdl.reference.bins`)."""
    return np.clip((p - offset) >> shift, 0, params.b - 1)


def range_shift(p: IntArray, params: CoreParams) -> int:
    """Smallest shift whose ``B - 2`` inner bins span the central ``1 - 2 RANGE_QUANTILE`` of ``p``."""
    lo, hi = np.quantile(p, [RANGE_QUANTILE, 1 - RANGE_QUANTILE])
    span = max(float(hi - lo), 1.0)
    inner = params.b - 2
    return min(max(math.ceil(math.log2(span / inner)), 0), params.shift_max) if span > inner else 0


def bin_shift(p: IntArray, params: CoreParams) -> int:
    """Bin width ``2**shift`` by the Freedman-Diaconis rule (see the module docstring)."""
    q1, q3 = np.quantile(p, [0.25, 0.75])
    width = 2.0 * max(float(q3 - q1), 1.0) * len(p) ** (-1.0 / 3.0)
    fd = round(math.log2(max(width, 1.0)))
    return int(np.clip(max(fd, range_shift(p, params) - FINEST_BELOW_RANGE), 0, params.shift_max))


def place(p_sorted: IntArray, shift: int, params: CoreParams) -> int:
    """Offset of the window of ``B - 2`` inner bins holding the most of the (sorted) samples."""
    length = (params.b - 2) << shift
    ends = np.searchsorted(p_sorted, p_sorted + length, side="left")
    i = int(np.argmax(ends - np.arange(len(p_sorted))))
    a, z = int(p_sorted[i]), int(p_sorted[ends[i] - 1])
    offset = (a + z) // 2 - length // 2 - (1 << shift)
    return int(np.clip(offset, params.offset_min, params.offset_max))


def fit_bins(p: IntArray, params: CoreParams) -> tuple[int, int]:
    """Offset and shift for the projected samples ``p``."""
    shift = bin_shift(p, params)
    return place(np.sort(p), shift, params), shift


def log_density(p: IntArray, offset: int, shift: int, params: CoreParams) -> FloatArray:
    """Per-bin log density of ``p`` (Laplace-smoothed; clamp bins over the extent of their data)."""
    b = params.b
    counts = np.bincount(bin_index(p, offset, shift, params), minlength=b).astype(np.float64)
    width = np.full(b, float(1 << shift))
    width[0] = max(width[0], float(offset + (1 << shift) - int(p.min())))
    width[b - 1] = max(width[b - 1], float(int(p.max()) - offset - (b - 1) * (1 << shift) + 1))
    return np.asarray(np.log((counts + SMOOTHING) / (len(p) + SMOOTHING * b) / width), dtype=np.float64)


def density_table(p: IntArray, offset: int, shift: int, params: CoreParams) -> FloatArray:
    """Float ``-log`` density table of ``p``, shifted to minimum 0."""
    t = -log_density(p, offset, shift, params)
    return t - t.min()


def tail_table(p: IntArray, offset: int, shift: int, params: CoreParams) -> FloatArray:
    """Float ``-log P(value in this bin or above)`` (Laplace-smoothed), minimum 0 at bin 0."""
    b = params.b
    counts = np.bincount(bin_index(p, offset, shift, params), minlength=b).astype(np.float64)
    mass = (counts + SMOOTHING) / (len(p) + SMOOTHING * b)
    t = -np.log(np.cumsum(mass[::-1])[::-1])
    return np.asarray(t - t.min(), dtype=np.float64)


def table_values(p_fit: IntArray, p_eval: IntArray, params: CoreParams) -> FloatArray:
    """``-log`` density table values at ``p_eval`` of a histogram fit on ``p_fit`` (held-out use)."""
    offset, shift = fit_bins(p_fit, params)
    return density_table(p_fit, offset, shift, params)[bin_index(p_eval, offset, shift, params)]


__all__ = ["bin_index", "bin_shift", "density_table", "fit_bins", "log_density", "place", "table_values",
           "tail_table"]
