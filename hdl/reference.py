"""Bit-exact reference model of the mailpulse scorer core: the executable spec.

Pure numpy with integer arithmetic and no Amaranth import.  The RTL must produce exactly what this
module computes, for every input and every register value; ``docs/fixed-point.md`` states the same
in words.  Two levels:

* :func:`score` - the datapath: what one configured core outputs for a batch of samples.
* :class:`EmulatedCore` - the register-level model: shadow/active model, field truncation, sign
  extension, commit, counters, the push/result registers and bus errors, as seen by a host.

The datapath, per sample ``x`` (D signed ``in_bits`` integers) and projection ``k``::

    p[k]   = sum_d w[k][d] * x[d]                     exact, signed proj_bits
    diff   = p[k] - offset[k]                         exact, signed proj_bits + 1
    bin[k] = clamp(diff >> shift[k], 0, B - 1)        >> is arithmetic (floor division by 2**shift)
    v[k]   = table[k][bin[k]]                         unsigned table_bits
    score  = sum_k v[k]                               exact, unsigned score_bits (never wraps)
    flag   = score > threshold                        unsigned 32-bit compare
    argmax = smallest k with v[k] == max(v)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .params import CoreParams
from .regmap import CORE_ID, TABLE_BASE, Kind, RegisterMap, pack_weights, unpack_weights

IntArray = npt.NDArray[np.int64]


@dataclass
class CoreConfig:
    """One complete model as the core holds it (one bank).

    Attributes
    ----------
    weights : (K, D) int array, each in ``weight_min..weight_max``
    offsets : (K,) int array, signed ``offset_bits``
    shifts : (K,) int array, ``0..2**shift_bits - 1``
    tables : (K, B) int array, ``0..2**table_bits - 1``
    threshold : int, ``0..2**32 - 1``
    """

    weights: IntArray
    offsets: IntArray
    shifts: IntArray
    tables: IntArray
    threshold: int

    @classmethod
    def zeros(cls, params: CoreParams) -> CoreConfig:
        """The configuration the core has after reset."""
        return cls(
            weights=np.zeros((params.k, params.d), dtype=np.int64),
            offsets=np.zeros(params.k, dtype=np.int64),
            shifts=np.zeros(params.k, dtype=np.int64),
            tables=np.zeros((params.k, params.b), dtype=np.int64),
            threshold=0xFFFFFFFF,
        )

    def copy(self) -> CoreConfig:
        return CoreConfig(self.weights.copy(), self.offsets.copy(), self.shifts.copy(),
                          self.tables.copy(), int(self.threshold))

    def validate(self, params: CoreParams) -> None:
        """Raise ``ValueError`` naming the first thing that does not fit the core's parameters."""
        checks: list[tuple[str, npt.NDArray[np.int64], tuple[int, ...], int, int]] = [
            ("weights", np.asarray(self.weights), (params.k, params.d), params.weight_min, params.weight_max),
            ("offsets", np.asarray(self.offsets), (params.k,), params.offset_min, params.offset_max),
            ("shifts", np.asarray(self.shifts), (params.k,), 0, params.shift_max),
            ("tables", np.asarray(self.tables), (params.k, params.b), 0, params.table_max),
        ]
        for name, arr, shape, lo, hi in checks:
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, the core ({params.name}) needs {shape}")
            if arr.size and (arr.min() < lo or arr.max() > hi):
                bad = arr[(arr < lo) | (arr > hi)].flat[0]
                raise ValueError(f"{name} holds {int(bad)}, outside {lo}..{hi} for the core ({params.name})")
        if not 0 <= int(self.threshold) <= 0xFFFFFFFF:
            raise ValueError(f"threshold {self.threshold} is outside 0..2**32-1")

    @classmethod
    def random(cls, params: CoreParams, rng: np.random.Generator, *, density: float = 0.5) -> CoreConfig:
        """A random configuration over the whole legal register range (for verification)."""
        w = rng.integers(params.weight_min, params.weight_max + 1, size=(params.k, params.d))
        w[rng.random((params.k, params.d)) > density] = 0
        cfg = cls(
            weights=w.astype(np.int64),
            offsets=rng.integers(params.offset_min, params.offset_max + 1, size=params.k).astype(np.int64),
            shifts=rng.integers(0, params.shift_max + 1, size=params.k).astype(np.int64),
            tables=rng.integers(0, params.table_max + 1, size=(params.k, params.b)).astype(np.int64),
            threshold=int(rng.integers(0, 1 << params.score_bits)),
        )
        # Most random offsets/shifts clamp every sample to one end; keep half of the projections
        # in a range where bins actually vary, so that the table lookups are exercised.
        for k in range(0, params.k, 2):
            cfg.shifts[k] = int(rng.integers(0, params.in_bits))
            cfg.offsets[k] = int(rng.integers(-(1 << params.in_bits), 1 << params.in_bits)) - (
                params.b << int(cfg.shifts[k])) // 2
            cfg.offsets[k] = int(np.clip(cfg.offsets[k], params.offset_min, params.offset_max))
        return cfg


@dataclass
class ScoreResult:
    """Outputs for a batch of N samples (all ``int64`` arrays of length N)."""

    score: IntArray
    anomaly: IntArray
    argmax: IntArray
    tag: IntArray

    def __len__(self) -> int:
        return len(self.score)

    def row(self, i: int) -> tuple[int, int, int, int]:
        return int(self.score[i]), int(self.anomaly[i]), int(self.argmax[i]), int(self.tag[i])


def bins(params: CoreParams, cfg: CoreConfig, x: npt.ArrayLike) -> IntArray:
    """(N, K) bin indices for (N, D) integer samples."""
    xs = np.asarray(x, dtype=np.int64)
    if xs.ndim != 2 or xs.shape[1] != params.d:
        raise ValueError(f"samples must have shape (N, {params.d}), not {xs.shape}")
    if xs.size and (xs.min() < params.in_min or xs.max() > params.in_max):
        raise ValueError(f"sample features must be signed {params.in_bits}-bit integers")
    proj = xs @ np.asarray(cfg.weights, dtype=np.int64).T                 # (N, K), exact
    diff = proj - np.asarray(cfg.offsets, dtype=np.int64)[None, :]
    shifted = diff >> np.asarray(cfg.shifts, dtype=np.int64)[None, :]    # arithmetic shift = floor
    return np.clip(shifted, 0, params.b - 1)


#: Rows per pass of :func:`score`: each sample is scored on its own, so a large batch is taken in
#: slices whose (rows, K) int64 temporaries stay in the CPU cache (2-3x faster on a million rows).
SCORE_CHUNK = 1 << 14


def score(params: CoreParams, cfg: CoreConfig, x: npt.ArrayLike,
          tags: npt.ArrayLike | None = None) -> ScoreResult:
    """Score a batch of samples exactly as the core does."""
    xs = np.asarray(x)
    tables = np.asarray(cfg.tables, dtype=np.int64)
    totals, args = [], []
    for i in range(0, max(len(xs), 1), SCORE_CHUNK):
        b = bins(params, cfg, xs[i:i + SCORE_CHUNK])
        vals = tables[np.arange(params.k)[None, :], b]                     # (rows, K)
        totals.append(vals.sum(axis=1) if len(b) else np.zeros(0, dtype=np.int64))
        args.append(np.argmax(vals, axis=1) if len(b) else np.zeros(0, dtype=np.int64))  # first maximum
    total, arg = np.concatenate(totals), np.concatenate(args)
    n = len(total)
    tag_arr = np.zeros(n, dtype=np.int64) if tags is None else np.asarray(tags, dtype=np.int64) & 0xFFFFFFFF
    if len(tag_arr) != n:
        raise ValueError(f"{n} samples but {len(tag_arr)} tags")
    return ScoreResult(
        score=total.astype(np.int64),
        anomaly=(total > int(cfg.threshold)).astype(np.int64),
        argmax=arg.astype(np.int64),
        tag=tag_arr,
    )


def _sext(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class BusError(Exception):
    """A register access the core answers with an error (AXI SLVERR, SPI BUS_ERROR)."""


class EmulatedCore:
    """Register-level model of the core, as a host sees it through AXI4-Lite or SPI.

    Stream samples are scored with :meth:`stream`; pushed samples with a write to ``PUSH``.  The
    model treats every transaction as complete when the call returns (the RTL's pipeline latency
    is not modelled; commits happen between samples, which the model has no way to split).

    A stalled result stream (:meth:`stall_results`): the output stream does not take results and
    the pipeline is full, so nothing gets through it.  Then a PUSH stays pending
    (``STATUS.PUSH_PENDING``, no result) and a COMMIT stays pending (``STATUS.COMMIT_PENDING``,
    nothing swapped); an access that would have to wait for them - a write to ``PUSH``,
    ``FEATURE`` or ``TAG``, or of ``CTRL.COMMIT_THRESHOLD``, behind a pending PUSH, a write to a shadow register or the table
    window, or a write of ``CTRL.COMMIT``, behind a pending COMMIT - is answered with an error
    after :data:`~mailpulse.hdl.regmap.WAIT_LIMIT` cycles and does nothing at all (not even the
    other bits of that ``CTRL`` write); reads always answer.  When the stream flows again, the
    pending COMMIT takes effect first, then the pending PUSH is scored (with the committed model).
    """

    def __init__(self, params: CoreParams) -> None:
        self.params = params
        self.regmap = RegisterMap(params)
        self.reset()

    def reset(self) -> None:
        p = self.params
        self.active = CoreConfig.zeros(p)
        self.shadow = CoreConfig.zeros(p)
        # Table banks: the host writes the shadow bank; COMMIT swaps them.
        self.bank_tables = [np.zeros((p.k, p.b), dtype=np.int64), np.zeros((p.k, p.b), dtype=np.int64)]
        self.active_bank = 0
        self.samples = 0
        self.anomalies = 0
        self.bus_error = False
        self.features = [0] * p.d
        self.tag = 0
        self.result: tuple[int, int, int, int] | None = None
        self.stalled = False
        self.push_pending = False
        self.commit_pending = False

    # -- register access ------------------------------------------------------------------
    def read(self, address: int) -> int:
        hit = self.regmap.decode(address)
        if hit is None:
            self.bus_error = True
            raise BusError(f"read of unmapped address 0x{address:04X}")
        reg, i = hit
        p = self.params
        name = reg.name
        if reg.access == "WO":
            return 0
        if reg.kind is Kind.CONST:
            return reg.reset
        if name == "STATUS":
            # COMMIT_PENDING, BUSY and PUSH_PENDING are 0 unless the result stream is stalled:
            # every other access completes in the model
            return reg.value(ACTIVE_BANK=self.active_bank, RESULT_VALID=self.result is not None,
                             BUS_ERROR=self.bus_error, COMMIT_PENDING=self.commit_pending,
                             PUSH_PENDING=self.push_pending, BUSY=self.stalled)
        if name == "THRESHOLD":
            return int(self.shadow.threshold)
        if name == "THRESHOLD_ACTIVE":
            return int(self.active.threshold)
        if name == "SAMPLES":
            return self.samples
        if name == "ANOMALIES":
            return self.anomalies
        if name == "LATENCY":
            raise NotImplementedError("LATENCY depends on the RTL pipeline; compare it to the RTL's constant")
        if name == "FEATURE":
            return self.features[i] & 0xFFFFFFFF
        if name == "TAG":
            return self.tag
        if name == "RESULT_SCORE":
            return self.result[0] if self.result else 0
        if name == "RESULT_INFO":
            return reg.value(ANOMALY=self.result[1], ARGMAX=self.result[2]) if self.result else 0
        if name == "RESULT_TAG":
            return self.result[3] if self.result else 0
        if name == "OFFSET":
            return int(self.shadow.offsets[i]) & 0xFFFFFFFF
        if name == "SHIFT":
            return int(self.shadow.shifts[i])
        if name == "WEIGHTS":
            return pack_weights(p, [int(w) for w in self.shadow.weights[i]])
        raise AssertionError(f"register {name} is not modelled")  # pragma: no cover

    def write(self, address: int, value: int) -> None:
        value &= 0xFFFFFFFF
        hit = self.regmap.decode(address)
        if hit is None:
            self.bus_error = True
            raise BusError(f"write of unmapped address 0x{address:04X}")
        reg, i = hit
        p = self.params
        name = reg.name
        if reg.access == "RO":
            self.bus_error = True
            raise BusError(f"write of read-only register {name}")
        fired = {f.name for f in reg.fields if value & f.mask} if name == "CTRL" else set()
        if (self.push_pending and (reg.kind is Kind.PUSH or name in self.regmap["PUSH"].operands
                                   or "COMMIT_THRESHOLD" in fired)) or (
                self.commit_pending and (reg.shadow or "COMMIT" in fired)):
            self.bus_error = True
            raise BusError(f"write of {name} timed out: the result stream is stalled with "
                           f"{'a PUSH' if self.push_pending and not self.commit_pending else 'a COMMIT'} pending")
        if name == "CTRL":
            if "COMMIT" in fired:
                if self.stalled:
                    self.commit_pending = True
                else:
                    self.commit()
            if "COMMIT_THRESHOLD" in fired:
                self.active.threshold = self.shadow.threshold
            if "CLEAR_COUNTERS" in fired:
                self.samples = self.anomalies = 0
            if "CLEAR_ERROR" in fired:
                self.bus_error = False
        elif name == "THRESHOLD":
            self.shadow.threshold = value
        elif name == "FEATURE":
            self.features[i] = _sext(value, p.in_bits)
        elif name == "TAG":
            self.tag = value
        elif name == "PUSH":
            self.result = None
            if self.stalled:
                self.push_pending = True
            else:
                self._push()
        elif name == "OFFSET":
            self.shadow.offsets[i] = _sext(value, p.offset_bits)
        elif name == "SHIFT":
            self.shadow.shifts[i] = value & p.shift_max
        elif name == "WEIGHTS":
            self.shadow.weights[i] = unpack_weights(p, value)
        elif name == "TABLE":
            assert address >= TABLE_BASE
            k, b = divmod(i, p.b)
            self.bank_tables[1 - self.active_bank][k, b] = value & p.table_max
        else:  # pragma: no cover
            raise AssertionError(f"register {name} is not modelled")

    def commit(self) -> None:
        self.active_bank ^= 1
        self.active = CoreConfig(self.shadow.weights.copy(), self.shadow.offsets.copy(),
                                 self.shadow.shifts.copy(), self.bank_tables[self.active_bank].copy(),
                                 int(self.shadow.threshold))

    def stall_results(self, stalled: bool = True) -> None:
        """The result stream stalls with the pipeline full (``True``), or flows again (``False``:
        a pending COMMIT takes effect, then a pending PUSH is scored)."""
        self.stalled = stalled
        if not stalled:
            if self.commit_pending:
                self.commit_pending = False
                self.commit()
            if self.push_pending:
                self.push_pending = False
                self._push()

    # -- samples --------------------------------------------------------------------------
    def _push(self) -> None:
        r = self._score(np.array([self.features], dtype=np.int64), np.array([self.tag]))
        self.result = r.row(0)

    def _score(self, x: IntArray, tags: npt.ArrayLike) -> ScoreResult:
        r = score(self.params, self.active, x, tags)
        self.samples = (self.samples + len(r)) & 0xFFFFFFFF
        self.anomalies = (self.anomalies + int(r.anomaly.sum())) & 0xFFFFFFFF
        return r

    def stream(self, x: npt.ArrayLike, tags: npt.ArrayLike | None = None) -> ScoreResult:
        """Score samples that arrive on the input stream (results leave on the output stream)."""
        xs = np.asarray(x, dtype=np.int64)
        if self.stalled:
            raise RuntimeError("no sample enters while the result stream is stalled with the pipeline full")
        return self._score(xs, np.zeros(len(xs), dtype=np.int64) if tags is None else tags)

    # -- convenience: the register writes that load a whole model --------------------------
    def model_writes(self, cfg: CoreConfig) -> list[tuple[int, int]]:
        """(address, value) writes that put ``cfg`` in the shadow model (commit not included)."""
        return model_writes(self.regmap, cfg)


def model_writes(regmap: RegisterMap, cfg: CoreConfig) -> list[tuple[int, int]]:
    """(address, value) register writes that load ``cfg`` into the shadow model.

    The order is the one every host uses: weights, offsets, shifts, tables, threshold.  The
    caller writes ``CTRL.COMMIT`` afterwards.
    """
    p = regmap.params
    cfg.validate(p)
    out: list[tuple[int, int]] = []
    for k in range(p.k):
        out.append((regmap["WEIGHTS"].address(k), pack_weights(p, [int(w) for w in cfg.weights[k]])))
    for k in range(p.k):
        out.append((regmap["OFFSET"].address(k), int(cfg.offsets[k]) & 0xFFFFFFFF))
    for k in range(p.k):
        out.append((regmap["SHIFT"].address(k), int(cfg.shifts[k])))
    tab = regmap["TABLE"]
    for k in range(p.k):
        for b in range(p.b):
            out.append((tab.address(k * p.b + b), int(cfg.tables[k, b])))
    out.append((regmap["THRESHOLD"].address(), int(cfg.threshold)))
    return out


__all__ = ["CORE_ID", "BusError", "CoreConfig", "EmulatedCore", "ScoreResult", "bins", "model_writes", "score"]
