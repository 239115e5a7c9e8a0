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

With ``ADAPT.ENABLE`` the threshold adapts (:func:`adaptive_flags`): after each scored sample a
fraction-extended accumulator ``A`` (threshold ``T = A >> ADAPT_FRAC``) moves toward the
``1 - 2**-alpha_exp`` quantile of the score (:func:`tracker_step`).  Per-route latency prediction
intervals (:func:`route_intervals`) use the same step on a lower and an upper bound per route.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .params import CoreParams
from .regmap import (
    ADAPT_FRAC,
    CORE_ID,
    ROUTE_RATIO_BITS,
    TABLE_BASE,
    Kind,
    RegisterMap,
    pack_weights,
    unpack_weights,
)

IntArray = npt.NDArray[np.int64]


#: Largest ``alpha_exp`` (a 4-bit register field).
ADAPT_EXP_MAX = 15
#: Largest miss ratio of the route intervals (``ADAPT.ROUTE_RATIO``, 255).
ROUTE_RATIO_MAX = (1 << ROUTE_RATIO_BITS) - 1
#: Largest step exponent (4-bit register fields): the small step is ``2**step_exp`` units of
#: ``2**-ADAPT_FRAC``, at most 128 score units per sample.
ADAPT_STEP_MAX = 15


def tracker_steps(rate_exp: int, step_exp: int) -> tuple[int, int]:
    """``(big, small)`` steps of a quantile tracker, in units of ``2**-ADAPT_FRAC``.

    ``small = 2**step_exp`` and ``big = small * (2**rate_exp - 1)``: a tracker that moves up by
    ``big`` after a miss (the value is beyond it) and down by ``small`` after a hit is stationary
    where ``P(miss) * big == P(hit) * small``, i.e. at a miss rate of ``2**-rate_exp``.
    """
    if not 0 <= rate_exp <= ADAPT_EXP_MAX or not 0 <= step_exp <= ADAPT_STEP_MAX:
        raise ValueError(f"rate exponent {rate_exp} or step exponent {step_exp} out of range "
                         f"0..{ADAPT_EXP_MAX}/0..{ADAPT_STEP_MAX}")
    small = 1 << step_exp
    return small * ((1 << rate_exp) - 1), small


def route_steps(ratio: int, step_exp: int) -> tuple[int, int]:
    """``(big, small)`` steps of a route bound, in units of ``2**-ADAPT_FRAC`` of a Q8.8 latency.

    ``small = 2**step_exp`` and ``big = ratio * small`` (``ratio << step_exp``): a bound that widens
    by ``big`` after a miss on its side and narrows by ``small`` after a hit is stationary where
    ``P(miss) * ratio == P(hit)``, i.e. at a miss rate of ``1 / (ratio + 1)`` per side
    (:func:`nominal_coverage`).  ``ratio = 2**b - 1`` steps as :func:`tracker_steps` ``(b, step_exp)``.
    ``ratio`` 0: ``big`` is 0, a miss leaves its bound (see :func:`route_intervals`).
    """
    if not 0 <= ratio <= ROUTE_RATIO_MAX or not 0 <= step_exp <= ADAPT_STEP_MAX:
        raise ValueError(f"route miss ratio {ratio} or step exponent {step_exp} out of range "
                         f"0..{ROUTE_RATIO_MAX}/0..{ADAPT_STEP_MAX}")
    return ratio << step_exp, 1 << step_exp


def nominal_coverage(ratio: int) -> float:
    """The share of events the route intervals of miss ratio ``ratio`` aim to cover:
    ``1 - 2 / (ratio + 1)`` (each side misses ``1 / (ratio + 1)``; 19: 0.9), 0 for ``ratio`` 0 and 1
    (0: the interval empties; 1: both bounds track the median)."""
    if not 0 <= ratio <= ROUTE_RATIO_MAX:
        raise ValueError(f"route miss ratio {ratio} is outside 0..{ROUTE_RATIO_MAX}")
    return max(0.0, 1.0 - 2.0 / (ratio + 1))


def clamp(v: int, lo: int, hi: int) -> int:
    """``hi`` if ``v > hi``, else ``lo`` if ``v < lo``, else ``v`` (the upper clamp is checked
    first; with ``lo > hi`` a value above ``hi`` gives ``hi``, one at or below it ``lo``)."""
    return hi if v > hi else lo if v < lo else v


def tracker_step(acc: int, up: bool, big: int, small: int, lo: int, hi: int) -> int:
    """One update of a quantile tracker's accumulator (all integers, units of ``2**-ADAPT_FRAC``):
    ``clamp(acc + big if up else acc - small, lo, hi)`` (:func:`clamp`)."""
    return clamp(acc + big if up else acc - small, lo, hi)


@dataclass
class AdaptConfig:
    """The adaptation registers of the model (shadow, committed with the rest).

    Attributes
    ----------
    enable : the threshold adapts (``ADAPT.ENABLE``); 0 after reset
    alpha_exp : target flag rate ``2**-alpha_exp`` (``ADAPT.ALPHA_EXP``, 0..15)
    step_exp : small step ``2**step_exp`` in units of ``2**-ADAPT_FRAC`` (``ADAPT.STEP_EXP``)
    t_min, t_max : the threshold's clamp (``T_MIN``/``T_MAX``, unsigned 32-bit)
    """

    enable: int = 0
    alpha_exp: int = 0
    step_exp: int = 0
    t_min: int = 0
    t_max: int = 0xFFFFFFFF

    def copy(self) -> AdaptConfig:
        return AdaptConfig(self.enable, self.alpha_exp, self.step_exp, self.t_min, self.t_max)

    def validate(self) -> None:
        if self.enable not in (0, 1):
            raise ValueError(f"adapt enable must be 0 or 1, not {self.enable}")
        tracker_steps(self.alpha_exp, self.step_exp)
        for name, v in (("t_min", self.t_min), ("t_max", self.t_max)):
            if not 0 <= v <= 0xFFFFFFFF:
                raise ValueError(f"{name} {v} is outside 0..2**32-1")

    @classmethod
    def random(cls, rng: np.random.Generator, score_bits: int) -> AdaptConfig:
        """An enabled configuration over the register ranges (for verification), biased toward ones
        that move within a few thousand samples and clamps inside the score range."""
        t_min = int(rng.integers(0, 1 << score_bits))
        t_max = int(rng.integers(t_min, 1 << score_bits)) if rng.random() < 0.8 else int(rng.integers(0, 1 << 32))
        alpha = int(rng.integers(1, 11)) if rng.random() < 0.8 else int(rng.integers(0, ADAPT_EXP_MAX + 1))
        step = int(rng.integers(8, ADAPT_STEP_MAX + 1)) if rng.random() < 0.8 else int(rng.integers(0, 8))
        return cls(1, alpha, step, t_min, t_max)


def adaptive_flags(scores: npt.ArrayLike, adapt: AdaptConfig, acc: int) -> tuple[IntArray, int]:
    """Flags of ``scores`` scored one after the other with the adaptive threshold, and the final
    accumulator.

    ``acc`` is the accumulator before the first score (after a commit: ``threshold << ADAPT_FRAC``).
    Per score: ``flag = score > acc >> ADAPT_FRAC`` (the threshold before the update), then
    ``acc = tracker_step(acc, flag, big, small, t_min << F, t_max << F)`` with
    ``(big, small) = tracker_steps(alpha_exp, step_exp)``.
    """
    big, small = tracker_steps(adapt.alpha_exp, adapt.step_exp)
    lo, hi = adapt.t_min << ADAPT_FRAC, adapt.t_max << ADAPT_FRAC
    s = np.asarray(scores, dtype=np.int64).tolist()
    flags = [0] * len(s)
    for i, v in enumerate(s):
        up = v > acc >> ADAPT_FRAC
        flags[i] = int(up)
        acc = clamp(acc + big if up else acc - small, lo, hi)
    return np.asarray(flags, dtype=np.int64), acc


#: Width of a log2-latency value and of a route bound: unsigned Q8.8 (``log2(latency in us) * 256``).
LATENCY_BITS = 16


@dataclass
class RouteConfig:
    """The adaptation registers of the route intervals.

    Attributes
    ----------
    enable : the intervals flag and adapt (``ADAPT.ROUTES``)
    ratio : miss ratio ``M`` (``ADAPT.ROUTE_RATIO``, 0..255): a miss widens a bound ``M`` times as
        much as a hit narrows it, so each side misses ``1 / (M + 1)`` of the events (nominal
        coverage ``1 - 2 / (M + 1)``, :func:`nominal_coverage`; 19: 90 %)
    step_exp : small step ``2**step_exp`` in units of ``2**-ADAPT_FRAC`` of a Q8.8 latency
        (``ADAPT.ROUTE_STEP_EXP``, 0..15)
    """

    enable: int = 0
    ratio: int = 0
    step_exp: int = 0

    def copy(self) -> RouteConfig:
        return RouteConfig(self.enable, self.ratio, self.step_exp)

    @property
    def nominal_coverage(self) -> float:
        """:func:`nominal_coverage` of the ratio (0.9 for 19)."""
        return nominal_coverage(self.ratio)

    def validate(self) -> None:
        """Raise ``ValueError`` (one sentence) for a field that is no integer of its register range."""
        for name, v, top in (("enable", self.enable, 1), ("ratio", self.ratio, ROUTE_RATIO_MAX),
                             ("step_exp", self.step_exp, ADAPT_STEP_MAX)):
            if not isinstance(v, int | np.integer) or not 0 <= v <= top:
                raise ValueError(f"route interval {name} must be an integer in 0..{top}, not {v!r}")

    @classmethod
    def random(cls, rng: np.random.Generator) -> RouteConfig:
        """An enabled configuration (for verification), biased toward ones that move within a few
        hundred events of a route: mostly a ratio of 1..40 (most of them no ``2**b - 1``), else any
        of 0..255."""
        ratio = int(rng.integers(1, 41)) if rng.random() < 0.8 else int(rng.integers(0, ROUTE_RATIO_MAX + 1))
        step = int(rng.integers(6, 13)) if rng.random() < 0.8 else int(rng.integers(0, ADAPT_STEP_MAX + 1))
        return cls(1, ratio, step)


@dataclass
class RouteResult:
    """Per event: ``below``/``above`` its route's interval (int64 arrays); the bounds after the
    events (``(R,)`` accumulators, units of ``2**-ADAPT_FRAC``)."""

    below: IntArray
    above: IntArray
    lower: IntArray
    upper: IntArray


def route_intervals(routes: npt.ArrayLike, latencies: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike,
                    cfg: RouteConfig) -> RouteResult:
    """Flags and adaptive-conformal updates of the per-route latency prediction intervals.

    Event ``i`` has route ``r`` and value ``v`` (unsigned :data:`LATENCY_BITS`).  With ``L``/``U``
    the route's bound accumulators before the event (threshold ``L >> ADAPT_FRAC``...)::

        below = v < L >> F            above = v > U >> F            (both 0 when disabled)
        U = clamp(U + big if above else U - small, 0, HI)
        L = clamp(L - big if below else L + small, 0, HI)

    with ``(big, small) = route_steps(ratio, step_exp)`` (``big = ratio << step_exp``,
    ``small = 1 << step_exp``) and ``HI = (2**16 - 1) << F`` (the bounds given are in ``0..HI``, see
    :func:`route_seed`): each bound widens by ``big`` after a miss on its side and narrows by
    ``small`` after a hit, so each side's miss rate tends to ``1 / (ratio + 1)`` and the coverage to
    ``1 - 2 / (ratio + 1)`` (:func:`nominal_coverage`).  Every ratio 0..255 is defined by the
    formulas above; two are degenerate: 1 moves both bounds toward the median (coverage tends to
    0), and 0 (``big`` 0) leaves a bound where it is after a miss, so each bound keeps narrowing
    while events hit it: the upper one sinks below the values, the lower one rises above them, and
    the interval empties (every later event misses on at least one side).  A route id outside
    ``0..R-1`` (``R = len(lower)``) is not tracked: no flag, no update.  Disabled: no flags, no
    updates.
    """
    lo_acc = np.asarray(lower, dtype=np.int64).copy()
    up_acc = np.asarray(upper, dtype=np.int64).copy()
    r_arr = np.asarray(routes, dtype=np.int64)
    v_arr = np.asarray(latencies, dtype=np.int64)
    if r_arr.shape != v_arr.shape:
        raise ValueError(f"{len(r_arr)} route ids but {len(v_arr)} latencies")
    n = len(r_arr)
    below = np.zeros(n, dtype=np.int64)
    above = np.zeros(n, dtype=np.int64)
    if not cfg.enable:
        return RouteResult(below, above, lo_acc, up_acc)
    big, small = route_steps(cfg.ratio, cfg.step_exp)
    hi = ((1 << LATENCY_BITS) - 1) << ADAPT_FRAC
    nr = len(lo_acc)
    lo_l, up_l = lo_acc.tolist(), up_acc.tolist()
    for i, (r, v) in enumerate(zip(r_arr.tolist(), v_arr.tolist(), strict=True)):
        if not 0 <= r < nr:
            continue
        lo_v, up_v = lo_l[r], up_l[r]
        b, a = v < lo_v >> ADAPT_FRAC, v > up_v >> ADAPT_FRAC
        below[i], above[i] = b, a
        up_l[r] = tracker_step(up_v, a, big, small, 0, hi)
        lo_l[r] = clamp(lo_v - big if b else lo_v + small, 0, hi)
    return RouteResult(below, above, np.asarray(lo_l, dtype=np.int64), np.asarray(up_l, dtype=np.int64))


def random_route_events(rng: np.random.Generator, n: int, routes: int) -> tuple[IntArray, IntArray]:
    """``n`` random (route id, latency) events for a core of ``routes`` routes (for verification):
    ids mostly in range, one in eight out of it (up to 0xFFFF); latencies around a per-route centre
    with a spread, one in sixteen anywhere in 0..0xFFFF (both ends included), so both flags fire
    and the bounds reach their clamps."""
    r = rng.integers(0, max(routes, 1), size=n)
    out = rng.random(n) < 0.125
    r[out] = rng.integers(routes, 1 << 16, size=int(out.sum()))
    centre = rng.integers(0x0400, 0x1400, size=max(routes, 1))
    lat = centre[np.minimum(r, max(routes, 1) - 1)] + rng.normal(0, 180, size=n).astype(np.int64)
    wild = np.flatnonzero(rng.random(n) < 0.0625)
    lat[wild] = rng.integers(0, 1 << 16, size=len(wild))
    lat[wild[::2]] = rng.choice(np.array([0, 1, 0xFFFE, 0xFFFF]), size=len(wild[::2]))
    return r.astype(np.int64), np.clip(lat, 0, 0xFFFF).astype(np.int64)


#: The route id of an event that belongs to no route (the largest id a beat carries): never tracked.
NO_ROUTE = (1 << 16) - 1


def route_seed(value: int) -> int:
    """A bound accumulator as the host seeds it: capped at ``0xFFFF << ADAPT_FRAC`` (every bound
    stays in ``0 .. 0xFFFF << ADAPT_FRAC``, the range :func:`route_intervals` assumes)."""
    return min(value, ((1 << LATENCY_BITS) - 1) << ADAPT_FRAC)


@dataclass
class CoreConfig:
    """One complete model as the core holds it (one bank).

    Attributes
    ----------
    weights : (K, D) int array, each in ``weight_min..weight_max``
    offsets : (K,) int array, signed ``offset_bits``
    shifts : (K,) int array, ``0..2**shift_bits - 1``
    tables : (K, B) int array, ``0..2**table_bits - 1``
    threshold : int, ``0..2**32 - 1`` (with adaptation: the seed of the adaptive threshold)
    adapt : AdaptConfig, the adaptation registers (disabled by default)
    routes : RouteConfig, the route intervals' registers (``ADAPT.ROUTES`` ...; disabled by default)
    """

    weights: IntArray
    offsets: IntArray
    shifts: IntArray
    tables: IntArray
    threshold: int
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    routes: RouteConfig = field(default_factory=RouteConfig)

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
                          self.tables.copy(), int(self.threshold), self.adapt.copy(), self.routes.copy())

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
        self.adapt.validate()
        self.routes.validate()
        if self.routes.enable and not params.r:
            raise ValueError(f"route intervals are enabled but the core ({params.name}) has no routes (R = 0)")

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
    #: With adaptation: the threshold accumulator after the batch (else None).
    acc: int | None = None
    #: With routes (R > 0): per sample, the latency fell below / above its route's interval (else None).
    below: IntArray | None = None
    above: IntArray | None = None

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
          tags: npt.ArrayLike | None = None, acc: int | None = None) -> ScoreResult:
    """Score a batch of samples exactly as the core does.

    With ``cfg.adapt.enable`` the flags come from :func:`adaptive_flags`, starting from ``acc``
    (default: ``cfg.threshold << ADAPT_FRAC``, the accumulator right after a commit); the final
    accumulator is :attr:`ScoreResult.acc`."""
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
    if cfg.adapt.enable:
        anomaly, acc_end = adaptive_flags(total, cfg.adapt,
                                          int(cfg.threshold) << ADAPT_FRAC if acc is None else acc)
    else:
        anomaly, acc_end = (total > int(cfg.threshold)).astype(np.int64), None
    return ScoreResult(
        score=total.astype(np.int64),
        anomaly=anomaly,
        argmax=arg.astype(np.int64),
        tag=tag_arr,
        acc=acc_end,
    )


def _sext(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class BusError(Exception):
    """A register access the core answers with an error (AXI SLVERR, SPI BUS_ERROR)."""


class EmulatedCore:
    """Register-level model of the core, as a host sees it through AXI4-Lite or SPI.

    Stream samples are scored with :meth:`stream`; pushed samples with a write to ``PUSH``.  With
    routes (R > 0) each sample is also an event of the route intervals (:func:`route_intervals`:
    its route id and latency from the stream, or from ``ROUTE`` for a PUSH); the bounds are live
    state (``ROUTE_BOUND``: read, seeded by a write, capped by :func:`route_seed`; a COMMIT leaves
    them alone, it only takes the shadow ``ADAPT`` route fields).  The
    model treats every transaction as complete when the call returns (the RTL's pipeline latency
    is not modelled; commits happen between samples, which the model has no way to split).

    A stalled result stream (:meth:`stall_results`): the output stream does not take results and
    the pipeline is full, so nothing gets through it.  Then a PUSH stays pending
    (``STATUS.PUSH_PENDING``, no result) and a COMMIT stays pending (``STATUS.COMMIT_PENDING``,
    nothing swapped); an access that would have to wait for them - a write to ``PUSH``,
    ``FEATURE`` or ``TAG``, or of ``CTRL.COMMIT_THRESHOLD``, behind a pending PUSH, a write to a
    shadow register or the table window, or a write of ``CTRL.COMMIT``, behind a pending COMMIT (with
    routes also a write to ``ROUTE`` or ``ROUTE_BOUND`` behind a pending PUSH) -
    is answered with an error after :data:`~mailpulse.hdl.regmap.WAIT_LIMIT` cycles and does
    nothing at all (not even the other bits of that ``CTRL`` write); reads always answer.  When the
    stream flows again, the pending COMMIT takes effect first, then the pending PUSH is scored
    (with the committed model).
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
        self.route = 0
        self.result: tuple[int, int, int, int] | None = None
        #: ``(below, above)`` of the last pushed sample (with routes).
        self.result_flags = (0, 0)
        #: The route bound accumulators (units of ``2**-ADAPT_FRAC``): live state, not committed.
        self.lower = np.zeros(p.r, dtype=np.int64)
        self.upper = np.zeros(p.r, dtype=np.int64)
        self.stalled = False
        self.push_pending = False
        self.commit_pending = False
        #: The active threshold's accumulator: THRESHOLD_ACTIVE is ``acc >> ADAPT_FRAC``.
        self.acc = int(self.active.threshold) << ADAPT_FRAC

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
            return self.acc >> ADAPT_FRAC
        if name == "THRESHOLD_FRAC":
            return self.acc & ((1 << ADAPT_FRAC) - 1)
        if name == "ADAPT":
            return adapt_value(self.regmap, self.shadow)
        if name == "T_MIN":
            return self.shadow.adapt.t_min
        if name == "T_MAX":
            return self.shadow.adapt.t_max
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
            if not self.result:
                return 0
            flags = dict(zip(("BELOW", "ABOVE"), self.result_flags, strict=True)) if p.r else {}
            return reg.value(ANOMALY=self.result[1], ARGMAX=self.result[2], **flags)
        if name == "ROUTE":
            return self.route
        if name == "ROUTE_BOUND":
            return int((self.upper if i & 1 else self.lower)[i >> 1])
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
        if (self.push_pending and (reg.kind in (Kind.PUSH, Kind.LIVE) or name in self.regmap["PUSH"].operands
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
                self.acc = int(self.shadow.threshold) << ADAPT_FRAC
            if "CLEAR_COUNTERS" in fired:
                self.samples = self.anomalies = 0
            if "CLEAR_ERROR" in fired:
                self.bus_error = False
        elif name == "THRESHOLD":
            self.shadow.threshold = value
        elif name == "ADAPT":
            a = self.shadow.adapt
            a.enable, a.alpha_exp, a.step_exp = (reg.get(f, value) for f in ("ENABLE", "ALPHA_EXP", "STEP_EXP"))
            if p.r:
                rc = self.shadow.routes
                rc.enable, rc.ratio, rc.step_exp = (reg.get(f, value) for f in ("ROUTES", "ROUTE_RATIO",
                                                                                "ROUTE_STEP_EXP"))
        elif name == "ROUTE":
            self.route = value
        elif name == "ROUTE_BOUND":
            bound = route_seed(value & reg.write_mask)
            (self.upper if i & 1 else self.lower)[i >> 1] = bound
        elif name == "T_MIN":
            self.shadow.adapt.t_min = value
        elif name == "T_MAX":
            self.shadow.adapt.t_max = value
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
                                 int(self.shadow.threshold), self.shadow.adapt.copy(), self.shadow.routes.copy())
        self.acc = int(self.shadow.threshold) << ADAPT_FRAC

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
        events = None
        if self.params.r:   # the ROUTE register: ID and LATENCY
            reg = self.regmap["ROUTE"]
            events = (np.array([reg.get("ID", self.route)]), np.array([reg.get("LATENCY", self.route)]))
        r = self._score(np.array([self.features], dtype=np.int64), np.array([self.tag]), events)
        self.result = r.row(0)
        if r.below is not None and r.above is not None:
            self.result_flags = (int(r.below[0]), int(r.above[0]))

    def _score(self, x: IntArray, tags: npt.ArrayLike,
               events: tuple[npt.ArrayLike, npt.ArrayLike] | None = None) -> ScoreResult:
        r = score(self.params, self.active, x, tags, acc=self.acc)
        if self.params.r:
            routes, lat = events if events is not None else (np.full(len(r), NO_ROUTE), np.zeros(len(r)))
            ri = route_intervals(routes, lat, self.lower, self.upper, self.active.routes)
            self.lower, self.upper = ri.lower, ri.upper
            r.below, r.above = ri.below, ri.above
        if r.acc is not None:
            self.acc = r.acc
            self.active.threshold = r.acc >> ADAPT_FRAC
        self.samples = (self.samples + len(r)) & 0xFFFFFFFF
        self.anomalies = (self.anomalies + int(r.anomaly.sum())) & 0xFFFFFFFF
        return r

    def stream(self, x: npt.ArrayLike, tags: npt.ArrayLike | None = None, routes: npt.ArrayLike | None = None,
               latencies: npt.ArrayLike | None = None) -> ScoreResult:
        """Score samples that arrive on the input stream (results leave on the output stream);
        with routes, ``routes``/``latencies`` are the beats' route ids and latencies (default:
        :data:`NO_ROUTE`, latency 0: not tracked)."""
        xs = np.asarray(x, dtype=np.int64)
        if self.stalled:
            raise RuntimeError("no sample enters while the result stream is stalled with the pipeline full")
        n = len(xs)
        events = None
        if routes is not None or latencies is not None:
            events = (np.full(n, NO_ROUTE) if routes is None else routes,
                      np.zeros(n, dtype=np.int64) if latencies is None else latencies)
        return self._score(xs, np.zeros(n, dtype=np.int64) if tags is None else tags, events)

    # -- convenience: the register writes that load a whole model --------------------------
    def model_writes(self, cfg: CoreConfig) -> list[tuple[int, int]]:
        """(address, value) writes that put ``cfg`` in the shadow model (commit not included)."""
        return model_writes(self.regmap, cfg)


def adapt_value(regmap: RegisterMap, cfg: CoreConfig) -> int:
    """The ``ADAPT`` register value of ``cfg`` (with routes: its route interval fields too)."""
    a, rc = cfg.adapt, cfg.routes
    routes = {"ROUTES": rc.enable, "ROUTE_RATIO": rc.ratio, "ROUTE_STEP_EXP": rc.step_exp} if regmap.params.r else {}
    return regmap["ADAPT"].value(ENABLE=a.enable, ALPHA_EXP=a.alpha_exp, STEP_EXP=a.step_exp, **routes)


def model_writes(regmap: RegisterMap, cfg: CoreConfig) -> list[tuple[int, int]]:
    """(address, value) register writes that load ``cfg`` into the shadow model.

    The order is the one every host uses: weights, offsets, shifts, tables, the adaptation
    registers, threshold.  The caller writes ``CTRL.COMMIT`` afterwards.
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
    a = cfg.adapt
    out.append((regmap["ADAPT"].address(), adapt_value(regmap, cfg)))
    out.append((regmap["T_MIN"].address(), a.t_min))
    out.append((regmap["T_MAX"].address(), a.t_max))
    out.append((regmap["THRESHOLD"].address(), int(cfg.threshold)))
    return out


__all__ = [
    "ADAPT_FRAC",
    "CORE_ID",
    "LATENCY_BITS",
    "NO_ROUTE",
    "ROUTE_RATIO_MAX",
    "AdaptConfig",
    "BusError",
    "CoreConfig",
    "EmulatedCore",
    "RouteConfig",
    "RouteResult",
    "ScoreResult",
    "adapt_value",
    "adaptive_flags",
    "bins",
    "clamp",
    "model_writes",
    "nominal_coverage",
    "random_route_events",
    "route_intervals",
    "route_seed",
    "route_steps",
    "score",
    "tracker_step",
    "tracker_steps",
]
