"""The wide-input transform: more raw features than the core's D inputs, reduced on the host.

A model trained on data with ``F > D`` features stores a :class:`WideTransform` that every scoring
path applies to each event before the core (``TrainedModel.scale`` calls it; the node, the host
bridge, the evaluation and the retraining guard all go through that).  It maps ``F`` raw floats to
``D`` non-negative 16-bit integers, the *channels*, in three steps::

    z[f]   = clip(rint((x[f] - center[f]) * scale[f]), -32767, 32767)          per feature, float -> int
    r[i]   = clip(((sum_f rows[i][f] * z[f]) >> row_shift) - row_center[i], -32767, 32767)   integer rows
    out[d] = min((sum_{i in groups[d]} L(r[i])) >> out_shift[d], 32767)       integer, per channel

with ``L(r) = log2fix(r*r + U*U) - log2fix(U*U)``, ``U = 256`` counts per robust standard deviation
and ``log2fix`` the fixed-point base-2 logarithm with :data:`LOG_FRAC_BITS` fractional bits that
interpolates linearly between powers of two (exact integer arithmetic).  ``L`` is the Cauchy
``-log`` density of ``r / U`` in fixed point: each channel is a robust *energy* of its group of
rows, so a single extreme row cannot swamp the rest.

A row may instead carry a :class:`RowTable` (kind ``energy-tables``): its energy is a learnt
table over a window of ``n`` bins of width ``2**shift`` from ``offset`` (the trainer's: the
feature's ``-log2`` histogram density plus its ``-log2`` tail probability), continued beyond the
window by the Cauchy energy of the distance to it::

    E(r) = table[clamp((r - offset) >> shift, 0, n - 1)] + L(max(offset - r, r - end, 0))
    end  = offset + (n << shift) - 1

(the distance clipped to 32767, so ``E`` stays within ``2 * L_MAX``).

Determinism: the first step is the same elementwise IEEE-754 arithmetic as the narrow input scaling
(one subtraction, one multiplication, each correctly rounded, then ``rint``), identical on every
conforming platform.  Everything after it is integer arithmetic.  The row products are accumulated
in float64 only because BLAS is fast: every term and every partial sum is an integer below
``2**53`` (``|z| < 2**15``, ``|rows| <= 2**ROW_COEF_BITS``, at most :data:`MAX_FEATURES` terms), so the
sum is exact in any order, then converted to int64.  The result is the same integers on any host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import UserError

IntArray = npt.NDArray[np.int64]

#: Counts per robust standard deviation of ``z`` and of the rows ``r``.
UNIT = 256
#: Fractional bits of :func:`log2fix`.
LOG_FRAC_BITS = 8
#: Largest magnitude of a row coefficient (bits): ``2**15 * 2**20 * MAX_FEATURES < 2**53``.
ROW_COEF_BITS = 20
#: Most raw features a transform takes (keeps every row sum exact in float64).
MAX_FEATURES = 1 << 16
#: Most bins of a row table.
MAX_TABLE_BINS = 256
#: Largest value of ``L(r)``: ``log2((32767**2 + UNIT**2) / UNIT**2) < 15``, in fixed point.
L_MAX = 15 << LOG_FRAC_BITS
_INPUT_MAX = 32767
_LOG_UNIT2 = 16 << LOG_FRAC_BITS            # log2fix(UNIT * UNIT), exact since UNIT * UNIT = 2**16


def log2fix(v: npt.ArrayLike) -> IntArray:
    """Fixed-point ``log2`` of positive integers below ``2**40``, in exact integer arithmetic.

    ``e + (v - 2**e) / 2**e`` in ``LOG_FRAC_BITS`` fractional bits, where ``2**e <= v < 2**(e+1)``:
    exact at powers of two, linear between them (at most 0.086 below the true ``log2``).
    """
    va = np.asarray(v, dtype=np.int64)
    if va.size and va.min() < 1:
        raise ValueError("log2fix needs positive integers")
    # frexp of an integer below 2**53 is exact: v = m * 2**bl with m in [0.5, 1), so 2**(bl-1) <= v.
    bl = np.frexp(va.astype(np.float64))[1].astype(np.int64)
    e = bl - 1
    frac = ((va << LOG_FRAC_BITS) >> e) - (1 << LOG_FRAC_BITS)
    return (e << LOG_FRAC_BITS) + frac


def cauchy_energy(r: IntArray) -> IntArray:
    """``L(r)``: fixed-point ``log2(1 + (r / UNIT)**2)``, elementwise, in ``0..L_MAX``."""
    ra = np.asarray(r, dtype=np.int64)
    return log2fix(ra * ra + UNIT * UNIT) - _LOG_UNIT2


def group_shift(size: int) -> int:
    """Right shift that keeps the sum of ``size`` values of ``L`` within the 16-bit input range."""
    shift = 0
    while (size * L_MAX) >> shift > _INPUT_MAX:
        shift += 1
    return shift


@dataclass
class RowTable:
    """A row's learnt energy table (``-log2`` units, ``LOG_FRAC_BITS`` fixed point, ``0..L_MAX``)."""

    offset: int
    shift: int
    table: list[int]

    @property
    def end(self) -> int:
        """Last row value inside the window."""
        return self.offset + (len(self.table) << self.shift) - 1

    def validate(self) -> None:
        if not 1 <= len(self.table) <= MAX_TABLE_BINS:
            raise ValueError(f"transform row table needs 1..{MAX_TABLE_BINS} entries, not {len(self.table)}")
        if not 0 <= self.shift <= 15:
            raise ValueError(f"transform row table shift {self.shift} is outside 0..15")
        if abs(self.offset) > _INPUT_MAX or abs(self.end) > _INPUT_MAX:
            raise ValueError(f"transform row table window {self.offset}..{self.end} is beyond +-{_INPUT_MAX}")
        if min(self.table) < 0 or max(self.table) > L_MAX:
            raise ValueError(f"transform row table values must be within 0..{L_MAX}")

    def energy(self, r: IntArray) -> IntArray:
        """``E(r)`` (see the module docstring), elementwise, in ``0..2 * L_MAX``."""
        ra = np.asarray(r, dtype=np.int64)
        idx = np.clip((ra - self.offset) >> self.shift, 0, len(self.table) - 1)
        beyond = np.clip(np.maximum(self.offset - ra, ra - self.end), 0, _INPUT_MAX)
        return np.asarray(self.table, dtype=np.int64)[idx] + cauchy_energy(beyond)

    def as_dict(self) -> dict[str, Any]:
        return {"offset": int(self.offset), "shift": int(self.shift), "table": [int(v) for v in self.table]}

    @classmethod
    def from_dict(cls, doc: Any) -> RowTable:
        if not isinstance(doc, dict) or not isinstance(doc["table"], list):
            raise TypeError("transform row table must be an object with a table list")
        return cls(_int(doc["offset"], "row table offset"), _int(doc["shift"], "row table shift"),
                   [_int(v, "row table") for v in doc["table"]])


@dataclass(eq=False)
class WideTransform:
    """``F`` raw features to ``D`` channels (see the module docstring for the arithmetic).

    Attributes
    ----------
    center, scale : list of F floats
        Per-feature centring and counts per unit; ``scale == 0`` makes a feature always 0.
    rows : (R, F) int array
        Integer rows, ``|rows| <= 2**ROW_COEF_BITS``.
    row_shift : int
        Right shift after the row products, ``0..ROW_COEF_BITS``.
    row_center : list of R ints
        Subtracted from each row value after the shift.
    groups : list of D lists of row indices
        The rows whose energies make each channel (an empty group is a channel that is always 0).
    out_shift : list of D ints
        Right shift of each channel's sum (:func:`group_shift` of its weight, or more).
    row_tables : list of R (RowTable or None), or None
        A row's learnt energy (``None``: the Cauchy energy ``L``); ``None`` for no tables at all.
    """

    center: list[float]
    scale: list[float]
    rows: IntArray
    row_shift: int
    row_center: list[int]
    groups: list[list[int]]
    out_shift: list[int]
    row_tables: list[RowTable | None] | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WideTransform) and self.as_dict() == other.as_dict()

    @property
    def n_features(self) -> int:
        return len(self.center)

    @property
    def n_channels(self) -> int:
        return len(self.groups)

    def validate(self, d: int) -> None:
        """Raise ``ValueError`` naming the first field that is inconsistent or out of range."""
        f = self.n_features
        if not 1 <= f <= MAX_FEATURES or len(self.scale) != f:
            raise ValueError(f"transform center and scale need the same length in 1..{MAX_FEATURES}")
        if not all(np.isfinite(self.center)) or not all(np.isfinite(self.scale)):
            raise ValueError("transform center/scale hold a non-finite number")
        rows = np.asarray(self.rows)
        if rows.ndim != 2 or rows.shape[1] != f or rows.shape[0] < 1:
            raise ValueError(f"transform rows must be an R x {f} integer matrix, not shape {rows.shape}")
        if np.abs(rows).max() > 1 << ROW_COEF_BITS:
            raise ValueError(f"transform rows hold a coefficient beyond 2**{ROW_COEF_BITS}")
        if not 0 <= self.row_shift <= ROW_COEF_BITS:
            raise ValueError(f"transform row_shift {self.row_shift} is outside 0..{ROW_COEF_BITS}")
        if len(self.row_center) != rows.shape[0] or any(abs(c) > _INPUT_MAX for c in self.row_center):
            raise ValueError(f"transform row_center needs {rows.shape[0]} integers within +-{_INPUT_MAX}")
        if len(self.groups) != d or len(self.out_shift) != d:
            raise ValueError(f"transform needs {d} groups and out_shifts (D of the core)")
        if self.row_tables is not None:
            if len(self.row_tables) != rows.shape[0]:
                raise ValueError(f"transform row_tables needs {rows.shape[0]} entries (one per row, or null)")
            for rt in self.row_tables:
                if rt is not None:
                    rt.validate()
        for g, sh in zip(self.groups, self.out_shift):
            if any(not 0 <= i < rows.shape[0] for i in g):
                raise ValueError(f"transform group {g} names a row outside 0..{rows.shape[0] - 1}")
            if not group_shift(self.group_weight(g)) <= sh <= 31:
                raise ValueError(f"transform out_shift {sh} cannot hold a group of {len(g)} rows")

    def group_weight(self, group: list[int]) -> int:
        """Bound of a group's energy sum in units of ``L_MAX`` (a row with a table counts twice)."""
        tables = self.row_tables or []
        return sum(2 if i < len(tables) and tables[i] is not None else 1 for i in group)

    def features_to_int(self, x: npt.ArrayLike) -> IntArray:
        """Step 1: ``(N, F)`` raw floats to ``(N, F)`` integers ``z`` (UserError on a bad shape or NaN)."""
        xs = np.asarray(x, dtype=np.float64)
        if xs.ndim == 1:
            xs = xs[None, :]
        if xs.ndim != 2:
            raise UserError(f"samples must be a 2-D array (rows x features), not {xs.ndim}-D")
        if xs.shape[1] != self.n_features:
            raise UserError(f"the model expects {self.n_features} features per sample, the data has {xs.shape[1]}")
        if xs.size and not np.all(np.isfinite(xs)):
            raise UserError("the samples contain NaN or infinite values; clean or impute them first")
        center = np.asarray(self.center, dtype=np.float64)
        scale = np.asarray(self.scale, dtype=np.float64)
        q = np.rint((xs - center[None, :]) * scale[None, :])
        return np.clip(q, -_INPUT_MAX, _INPUT_MAX).astype(np.int64)

    def rows_of(self, z: IntArray) -> IntArray:
        """Step 2: ``(N, F)`` integers to ``(N, R)`` row values (exact, see the module docstring)."""
        acc = np.asarray(z, dtype=np.float64) @ np.asarray(self.rows, dtype=np.float64).T
        r = (acc.astype(np.int64) >> self.row_shift) - np.asarray(self.row_center, dtype=np.int64)[None, :]
        return np.clip(r, -_INPUT_MAX, _INPUT_MAX)

    def channels_of(self, r: IntArray) -> IntArray:
        """Step 3: row values to ``(N, D)`` channels in ``0..32767``."""
        energy = cauchy_energy(r)
        for i, rt in enumerate(self.row_tables or []):
            if rt is not None:
                energy[:, i] = rt.energy(r[:, i])
        out = np.zeros((len(r), self.n_channels), dtype=np.int64)
        for d, (g, sh) in enumerate(zip(self.groups, self.out_shift)):
            if g:
                out[:, d] = np.minimum(energy[:, g].sum(axis=1) >> sh, _INPUT_MAX)
        return out

    #: Rows per pass of :meth:`apply` (bounds the (rows, R) temporaries).
    CHUNK = 1 << 15

    def apply(self, x: npt.ArrayLike) -> IntArray:
        """Raw samples ``(N, F)`` to the core's channels ``(N, D)``, in slices of :attr:`CHUNK` rows."""
        z = self.features_to_int(x)
        parts = [self.channels_of(self.rows_of(z[i:i + self.CHUNK])) for i in range(0, len(z), self.CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, self.n_channels), dtype=np.int64)

    def as_dict(self) -> dict[str, Any]:
        tables = {} if self.row_tables is None else {
            "row_tables": [None if rt is None else rt.as_dict() for rt in self.row_tables]}
        return {
            "kind": "energy-groups" if self.row_tables is None else "energy-tables",
            "center": [float(c) for c in self.center],
            "scale": [float(s) for s in self.scale],
            "rows": [[int(v) for v in row] for row in np.asarray(self.rows)],
            "row_shift": int(self.row_shift),
            "row_center": [int(c) for c in self.row_center],
            "groups": [[int(i) for i in g] for g in self.groups],
            "out_shift": [int(s) for s in self.out_shift],
            **tables,
        }

    @classmethod
    def from_dict(cls, doc: Any, d: int) -> WideTransform:
        """Parse and validate the model file's ``transform`` object (``ValueError``/``TypeError``/``KeyError``)."""
        if not isinstance(doc, dict):
            raise TypeError("transform is not an object")
        if doc["kind"] not in ("energy-groups", "energy-tables"):
            raise ValueError(f"transform kind {doc['kind']!r} is unknown "
                             "(this mailpulse knows 'energy-groups' and 'energy-tables')")
        row_tables = None
        if doc["kind"] == "energy-tables":
            if not isinstance(doc["row_tables"], list):
                raise TypeError("transform row_tables must be a list (a table object or null per row)")
            row_tables = [None if rt is None else RowTable.from_dict(rt) for rt in doc["row_tables"]]
        rows = np.asarray(doc["rows"])
        if rows.size and rows.dtype.kind not in "iu":
            raise TypeError("transform rows must hold integers")
        groups = doc["groups"]
        if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
            raise TypeError("transform groups must be a list of lists of row indices")
        t = cls(center=[float(c) for c in doc["center"]], scale=[float(s) for s in doc["scale"]],
                rows=rows.astype(np.int64), row_shift=_int(doc["row_shift"], "row_shift"),
                row_center=[_int(c, "row_center") for c in doc["row_center"]],
                groups=[[_int(i, "groups") for i in g] for g in groups],
                out_shift=[_int(s, "out_shift") for s in doc["out_shift"]], row_tables=row_tables)
        t.validate(d)
        return t


def _int(v: Any, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"transform {name} must hold integers")
    return v


__all__ = ["LOG_FRAC_BITS", "L_MAX", "UNIT", "RowTable", "WideTransform", "cauchy_energy", "group_shift", "log2fix"]
