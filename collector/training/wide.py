"""Fit the wide-input transform: F > D raw features to D energy channels, without labels.

The D channels look at the data in three ways (for D = 8: 3 + 2 + 3 channels, :func:`channel_split`):

* **Feature-density energies** (channels ``0 .. n_density - 1``): the non-constant features,
  robustly standardised (median, IQR / 1.349, or the standard deviation where the IQR is 0), in
  column order, split into contiguous groups; a channel is the sum over its group of each
  feature's learnt energy (:class:`mailpulse.transform.RowTable`): the ``-log2`` density of its
  own histogram (Laplace-smoothed, bins of a quarter robust standard deviation over +-3 of them),
  continued beyond that window by the Cauchy energy ``log2(1 + d**2)`` of the distance ``d`` to
  it.  The sum is the ``-log`` density of a product of the marginals (as HBOS) with heavy tails:
  a feature in a rare part of its own range (a gap between modes, a rare discrete value), or far
  beyond it, raises its group's energy, however many features there are.
* **Feature-tail energies** (the next ``n_tail`` channels): the same features in as many
  contiguous groups, each feature's energy now ``-log2`` of its two-sided empirical tail
  probability ``min(1, 2 min(P(Z <= z), P(Z >= z)))`` over the same window (same continuation):
  how far out a value is in the ranks of its own feature, rising monotonically from the median.
  This is what an isolation forest's axis-parallel cuts see; a density energy scores a rare value
  in the middle as high as one far out, and a value in a well-filled tail as low as the bulk.
* **Whitened-band energies** (the last channels): the principal components of the standardised
  features, each divided by its standard deviation (whitened; components with less than 1e-4 of
  the largest variance are dropped), in order of decreasing variance, split into contiguous
  bands, each channel the Cauchy energy of its band.  A row that breaks the features'
  correlations is far out in the minor components though every feature is in range.

Each channel's anomalies are large values only, so the trainer gives channels one-sided tail
tables and no pair projections.  Of the label-free reductions compared on the wide development
sets kept for tuning (cardio, letter, pendigits, satellite), this three-view split came out best
(``docs/trainer.md`` has the tables, and the sets where it still trails IForest).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from mailpulse.transform import L_MAX, LOG_FRAC_BITS, ROW_COEF_BITS, UNIT, RowTable, WideTransform, group_shift

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Rows used to fit the transform (a random subset of larger data).
FIT_ROWS = 100_000
#: Feature rows' energy tables: bins of 2**TABLE_SHIFT counts (UNIT = one robust standard deviation)
#: over +-TABLE_REACH robust standard deviations; beyond, the Cauchy energy of the distance.
TABLE_SHIFT = 6
TABLE_REACH = 3
#: Pseudo-count of every table bin.
TABLE_SMOOTHING = 1.0
#: Whitened components with less than this fraction of the largest variance are dropped.
MIN_VARIANCE_RATIO = 1e-4


def robust_scale(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-feature median and counts per unit (``UNIT`` per robust standard deviation; 0 if constant)."""
    center = np.median(x, axis=0)
    q1, q3 = np.quantile(x, [0.25, 0.75], axis=0)
    sd = (q3 - q1) / 1.349
    sd = np.where(sd > 0, sd, np.std(x, axis=0))
    scale = np.where(sd > 0, UNIT / np.where(sd > 0, sd, 1.0), 0.0)
    return center, scale


def whitening_rows(z: IntArray) -> FloatArray:
    """Rows ``A`` (components x features) with ``A z`` the whitened principal components, in z units."""
    zf = z.astype(np.float64) / UNIT
    cov = np.atleast_2d(np.cov(zf, rowvar=False))
    lam, vec = np.linalg.eigh(cov)
    order = np.argsort(-lam, kind="stable")
    lam, vec = lam[order], vec[:, order]
    keep = lam > MIN_VARIANCE_RATIO * max(float(lam[0]), 1e-300)
    rows = vec[:, keep].T / np.sqrt(lam[keep])[:, None]
    # Fix each component's sign (eigh may return either): largest coefficient positive.
    sign = np.sign(rows[np.arange(len(rows)), np.argmax(np.abs(rows), axis=1)])
    return np.asarray(rows * np.where(sign == 0, 1.0, sign)[:, None], dtype=np.float64)


def row_table(r: IntArray) -> RowTable:
    """``-log2`` histogram density of the row values ``r`` (Laplace-smoothed) as a :class:`RowTable`."""
    offset = -TABLE_REACH * UNIT
    shift = TABLE_SHIFT
    n = (2 * TABLE_REACH * UNIT) >> shift
    idx = np.clip((r - offset) >> shift, 0, n - 1)
    counts = np.bincount(idx, minlength=n).astype(np.float64) + TABLE_SMOOTHING
    t = -np.log2(counts / counts.sum())
    t = np.rint((t - t.min()) * (1 << LOG_FRAC_BITS))
    return RowTable(offset, shift, [int(v) for v in np.clip(t, 0, L_MAX)])


def tail_row_table(r: IntArray) -> RowTable:
    """``-log2`` two-sided tail probability of the row values ``r`` per bin, as a :class:`RowTable`.

    Same window as :func:`row_table`.  A bin below the median gets ``P(r <= its upper edge)``, one
    above it ``P(r >= its lower edge)`` (counts + 1 over n + 2), doubled and capped at 1: 0 at the
    median, rising monotonically into either tail.
    """
    offset = -TABLE_REACH * UNIT
    shift = TABLE_SHIFT
    n = (2 * TABLE_REACH * UNIT) >> shift
    rs = np.sort(r)
    lo = offset + (np.arange(n, dtype=np.int64) << shift)
    hi = lo + (1 << shift) - 1
    m = len(rs)
    left = (np.searchsorted(rs, hi, side="right") + 1) / (m + 2)
    right = (m - np.searchsorted(rs, lo, side="left") + 1) / (m + 2)
    tail = np.where(lo + (1 << (shift - 1)) < np.median(rs), left, right)
    t = -np.log2(np.minimum(2.0 * tail, 1.0))
    t = np.rint((t - t.min()) * (1 << LOG_FRAC_BITS))
    return RowTable(offset, shift, [int(v) for v in np.clip(t, 0, L_MAX)])


def channel_split(d: int) -> tuple[int, int, int]:
    """Channels of each view for a core of ``d`` inputs: feature-density, feature-tail, whitened bands."""
    n_tail = d // 4
    n_density = (d - n_tail + 1) // 2
    return n_density, n_tail, d - n_density - n_tail


def fit_wide_transform(x: FloatArray, d: int, rng: np.random.Generator) -> WideTransform:
    """The transform for raw samples ``x`` (N, F > d): see the module docstring."""
    fit = x[rng.choice(len(x), FIT_ROWS, replace=False)] if len(x) > FIT_ROWS else x
    center, scale = robust_scale(fit)
    f = x.shape[1]
    used = np.flatnonzero(scale > 0)
    probe = WideTransform([float(c) for c in center], [float(s) for s in scale], np.zeros((1, f), dtype=np.int64),
                          0, [0], [[] for _ in range(d)], [0] * d)
    z = probe.features_to_int(fit)
    white = np.zeros((0, f))
    if len(used) > 1:
        a = whitening_rows(z[:, used])
        white = np.zeros((len(a), f))
        white[:, used] = a
    top = max(1.0, float(np.abs(white).max()) if white.size else 1.0)
    row_shift = int(np.clip(ROW_COEF_BITS - math.ceil(math.log2(top)), 0, ROW_COEF_BITS))
    ident = np.zeros((len(used), f))
    ident[np.arange(len(used)), used] = 1.0
    # Rows: the features (density tables), the whitened components (Cauchy), the features again (tail tables).
    rows = np.rint(np.vstack([ident, white, ident]) * (1 << row_shift)).astype(np.int64)
    if len(rows) == 0:                       # every feature constant: channels that are always 0
        return WideTransform(probe.center, probe.scale, np.zeros((1, f), dtype=np.int64), 0, [0],
                             [[] for _ in range(d)], [0] * d)
    t = WideTransform([float(c) for c in center], [float(s) for s in scale], rows, row_shift,
                      [0] * len(rows), [[] for _ in range(d)], [0] * d)
    r = t.rows_of(z)
    nu, nw = len(used), len(white)
    t.row_center = ([0] * nu + [int(v) for v in np.median(r[:, nu:nu + nw], axis=0).astype(np.int64)]
                    + [0] * nu)
    n_density, n_tail, n_bands = channel_split(d)
    groups: list[list[int]] = []
    for n_groups, first, count in ((n_density, 0, nu), (n_tail, nu + nw, nu), (n_bands, nu, nw)):
        groups += [[int(i) + first for i in g] for g in np.array_split(np.arange(count), n_groups)] if n_groups else []
    t.groups = groups
    t.row_tables = ([row_table(r[:, i]) for i in range(nu)] + [None] * nw
                    + [tail_row_table(r[:, i]) for i in range(nu)])
    t.out_shift = [group_shift(t.group_weight(g)) for g in groups]
    t.validate(d)
    return t


__all__ = ["channel_split", "fit_wide_transform", "row_table", "tail_row_table"]
