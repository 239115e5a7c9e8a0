"""Per-configuration verification plans, derived from the reference model before the RTL runs.

A testbench that streams random samples can pass without ever reaching the behaviour it is meant to
check: an adaptive threshold that never moves, a clamp never hit.  This module answers, from
:mod:`mailpulse.hdl.reference` alone, what a configuration's samples reach (:func:`reached`: a set of
event names), picks settings that reach what a test asks for (:func:`adapt_reaching`,
:func:`adaptive_config`), and names
the registers that show the model's state after the samples (:func:`state_registers`: read back
from the RTL and compared with :class:`~mailpulse.hdl.reference.EmulatedCore`).  The cocotb benches
(``sim/tb_verify.py``, ``sim/tb_axi.py``, ``sim/tb_spi.py``) check the RTL against the model; the
plan makes sure the case asked the RTL the question.

Events are ``<unit>:<what>`` strings, so that another adaptive unit adds its own next to these:

* ``adapt:moved`` - the adaptive threshold (``THRESHOLD_ACTIVE``) left its seed;
* ``adapt:free`` - a step of the threshold's accumulator that no clamp limited;
* ``adapt:frac`` - the accumulator's fraction (``THRESHOLD_FRAC``) was not 0 (a step below one
  score unit: ``STEP_EXP < ADAPT_FRAC``);
* ``adapt:sweep`` - the threshold swept over at least :data:`SWEEP` distinct scores of the
  samples (so that it changed many flags; not in :data:`ADAPT_EVENTS`: a few samples with the
  fraction in play cannot do it);
* ``adapt:t_min`` / ``adapt:t_max`` - a step of the threshold was clamped at ``T_MIN`` / ``T_MAX``;
* ``routes:below`` / ``routes:above`` - an event's latency fell below / above its route's interval
  (:func:`mailpulse.hdl.reference.route_intervals`);
* ``routes:inside`` - an event of a route fell inside its interval (both bounds narrowed);
* ``routes:untracked`` - an event's route id was outside ``0..R-1`` (no flag, no update);
* ``routes:widened`` - a miss widened its bound by ``ROUTE_RATIO << ROUTE_STEP_EXP`` (a flag with
  a ratio above 0: a flagged bound is never at the clamp it widens toward, since the latency lies
  beyond it; with ratio 0 a miss leaves its bound, and the flags alone would not show the ratio);
* ``routes:seeded`` - a flag after a bound seeded over the bus (``ROUTE_BOUND``) differs from the
  flag without the seed (:func:`route_reached` with ``unseeded``).

:func:`commit_switch` finds where a commit made while samples flowed took effect: with adaptation
the new model's flags depend on that point (its accumulator starts from its seed there), so the
results are compared with the model for each possible point.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import (
    ADAPT_FRAC,
    ADAPT_STEP_MAX,
    AdaptConfig,
    CoreConfig,
    IntArray,
    RouteConfig,
    ScoreResult,
    adaptive_flags,
    random_route_events,
    route_intervals,
    score,
    tracker_step,
    tracker_steps,
)

from .codec import random_samples

__all__ = ["ADAPT_EVENTS", "ROUTE_EVENTS", "STATE_REGISTERS", "SWEEP", "adapt_reaching", "adaptive_config",
           "commit_switch", "observable_seed", "reached", "route_plan", "route_reached", "route_seed_showing",
           "state_registers", "threshold_commit_plan", "threshold_path"]

#: The events of the adaptive threshold (see the module docstring).
ADAPT_EVENTS = frozenset({"adapt:moved", "adapt:free", "adapt:frac", "adapt:t_min", "adapt:t_max"})
#: The events of the route intervals (see the module docstring; ``routes:seeded`` needs a seed).
ROUTE_EVENTS = frozenset({"routes:below", "routes:above", "routes:inside", "routes:untracked", "routes:widened"})
#: Distinct sample scores the threshold must sweep over for ``adapt:sweep``.
SWEEP = 8
#: Registers whose value after a batch of samples comes from the model's state (counters, the
#: threshold's accumulator), in every configuration.
STATE_REGISTERS = ("SAMPLES", "ANOMALIES", "THRESHOLD_ACTIVE", "THRESHOLD_FRAC")


def threshold_path(scores: npt.ArrayLike, adapt: AdaptConfig, acc: int) -> tuple[list[int], set[str]]:
    """The threshold accumulator after each score (from ``acc``, the accumulator before the first
    one), and the events (:data:`ADAPT_EVENTS`) on the way: each step is
    :func:`mailpulse.hdl.reference.tracker_step`, as :func:`~mailpulse.hdl.reference.adaptive_flags`
    takes it."""
    big, small = tracker_steps(adapt.alpha_exp, adapt.step_exp)
    lo, hi = adapt.t_min << ADAPT_FRAC, adapt.t_max << ADAPT_FRAC
    seed = acc >> ADAPT_FRAC
    path: list[int] = []
    events: set[str] = set()
    for v in np.asarray(scores, dtype=np.int64).tolist():
        up = v > acc >> ADAPT_FRAC
        raw = acc + big if up else acc - small
        acc = tracker_step(acc, up, big, small, lo, hi)
        if raw != acc:   # tracker_step checks the upper clamp first
            events.add("adapt:t_max" if raw > hi else "adapt:t_min")
        else:
            events.add("adapt:free")
        if acc >> ADAPT_FRAC != seed:
            events.add("adapt:moved")
        if acc & ((1 << ADAPT_FRAC) - 1):
            events.add("adapt:frac")
        path.append(acc)
    if path:
        lo_t, hi_t = min(seed, min(path) >> ADAPT_FRAC), max(seed, max(path) >> ADAPT_FRAC)
        sv = np.unique(np.asarray(scores, dtype=np.int64))
        if np.count_nonzero((sv > lo_t) & (sv <= hi_t)) >= SWEEP:
            events.add("adapt:sweep")
    return path, events


def reached(params: CoreParams, cfg: CoreConfig, x: npt.ArrayLike, acc: int | None = None) -> set[str]:
    """The events (:data:`ADAPT_EVENTS`) that ``cfg`` reaches on samples ``x``, scored in order
    from accumulator ``acc`` (default: the seed, ``cfg.threshold << ADAPT_FRAC``)."""
    if not cfg.adapt.enable:
        return set()
    s = score(params, cfg, x).score
    _path, events = threshold_path(s, cfg.adapt, int(cfg.threshold) << ADAPT_FRAC if acc is None else acc)
    return events


def adapt_reaching(params: CoreParams, cfg: CoreConfig, x: npt.ArrayLike, rng: np.random.Generator,
                   want: frozenset[str] = ADAPT_EVENTS, tries: int = 500) -> CoreConfig:
    """A copy of ``cfg`` with its adaptive threshold on, set so that on samples ``x`` it reaches
    every event of ``want`` (:func:`reached`).

    Drawn at random until it does, ``ALPHA_EXP`` 0..8 and the seed between the clamps, half of
    the draws with ``T_MIN`` below and ``T_MAX`` above the median of the scores of ``x`` (at
    quantiles 0.25..0.45 and 0.55..0.75) and the step chosen so that the threshold crosses that
    range in about a quarter of the samples, half with the seed near the quantile the threshold
    tracks and the clamps a few steps from it (a random walk of N steps strays about sqrt(N)
    steps; a step moves the threshold by at most 2**15 / 2**ADAPT_FRAC = 128 score units).

    Raises
    ------
    ValueError
        When no draw of ``tries`` reaches ``want`` (e.g. samples that all score the same).
    """
    xs = np.asarray(x)
    s = score(params, cfg, xs).score
    n = max(1, len(s))
    for _ in range(tries):
        alpha = int(rng.integers(0, 9))
        if rng.random() < 0.5:
            lo_q, hi_q = rng.uniform(0.25, 0.45), rng.uniform(0.55, 0.75)
            t_min, t_max = (int(v) for v in np.quantile(s, [lo_q, hi_q]))
            span = max(1, t_max - t_min) << ADAPT_FRAC
            step = int(np.clip(round(np.log2(span * 4 / n)) + rng.integers(-2, 3), 0, ADAPT_STEP_MAX))
            seed = int(np.quantile(s, rng.uniform(lo_q, hi_q)))
        else:   # the seed near the quantile the threshold tracks, the clamps a random walk away
            step = int(rng.integers(0, ADAPT_STEP_MAX + 1))
            big, small = tracker_steps(alpha, step)
            seed = int(np.quantile(s, np.clip(1 - 2.0 ** -alpha + rng.uniform(-0.1, 0.1), 0, 1)))
            reach = 2 + int(np.sqrt(n))
            t_min = max(0, seed - max(1, (small * int(rng.integers(1, reach))) >> ADAPT_FRAC))
            t_max = min(0xFFFFFFFF, seed + max(1, (max(big, small) * int(rng.integers(1, 4))) >> ADAPT_FRAC))
        out = cfg.copy()
        out.adapt = AdaptConfig(1, alpha, step, t_min, t_max)
        out.threshold = seed
        if want <= threshold_path(s, out.adapt, out.threshold << ADAPT_FRAC)[1]:
            return out
    raise ValueError(f"no adaptive setting of {tries} tries reaches {sorted(want)} on these {len(s)} samples")


def adaptive_config(params: CoreParams, x: npt.ArrayLike, rng: np.random.Generator,
                    want: frozenset[str] = ADAPT_EVENTS, configs: int = 20) -> CoreConfig:
    """A random configuration (:meth:`~mailpulse.hdl.reference.CoreConfig.random`) whose adaptive
    threshold reaches ``want`` on samples ``x`` (:func:`adapt_reaching`); another random one while
    a configuration's scores cannot (e.g. one whose projections clamp almost every sample to a few
    scores), up to ``configs`` of them."""
    for _ in range(configs - 1):
        try:
            return adapt_reaching(params, CoreConfig.random(params, rng), x, rng, want, tries=200)
        except ValueError:
            continue
    return adapt_reaching(params, CoreConfig.random(params, rng), x, rng, want, tries=200)


def observable_seed(params: CoreParams, cfg: CoreConfig, x: npt.ArrayLike, acc: int, lo: int, hi: int) -> int | None:
    """A threshold for a ``COMMIT_THRESHOLD`` while samples ``x`` flow (``cfg`` active, its
    accumulator ``acc`` before them) that shows wherever it lands: for each switch point ``s`` in
    ``lo..hi`` the flags (the old threshold on ``x[:s]``, the new seed from ``s`` on) or the final
    accumulator differ from those without the commit, so a commit that is lost cannot pass.
    (Every seed outside the clamps, and most inside, merges with the old threshold at a clamp a
    few samples later; the flags then pin the point only where they differ before.)  Tried: the
    quantiles of the scores, the clamps, 0, ``2**32 - 1``; None when none shows everywhere."""
    s = score(params, cfg, x).score
    old, old_acc = adaptive_flags(s, cfg.adapt, acc)
    for seed in (*(int(v) for v in np.quantile(s, [0.5, 0.3, 0.7, 0.1, 0.9])), cfg.adapt.t_min, cfg.adapt.t_max,
                 0, 0xFFFFFFFF):
        for at in range(lo, hi + 1):
            flags, end = adaptive_flags(s[at:], cfg.adapt, seed << ADAPT_FRAC)
            if end == old_acc and np.array_equal(flags, old[at:]):
                break
        else:
            return seed
    return None


def threshold_commit_plan(params: CoreParams, rng: np.random.Generator, n: int, m: int, lo: int, hi: int,
                          want: frozenset[str], tries: int = 20) -> tuple[CoreConfig, IntArray, IntArray,
                                                                           IntArray, IntArray, int]:
    """A setting (:func:`adaptive_config`, reaching ``want`` on ``n`` samples), those samples,
    ``m`` more, and a threshold for a ``COMMIT_THRESHOLD`` while the ``m`` flow that shows wherever
    it lands in ``lo..hi`` (:func:`observable_seed`, the accumulator as the first samples leave it).

    Raises
    ------
    ValueError
        When ``tries`` settings give no such threshold.
    """
    for _ in range(tries):
        x, tags = random_samples(params, rng, n)
        cfg = adaptive_config(params, x, rng, want)
        end = score(params, cfg, x).acc
        assert end is not None
        x2, tags2 = random_samples(params, rng, m)
        seed = observable_seed(params, cfg, x2, end, lo, hi)
        if seed is not None:
            return cfg, x, tags, x2, tags2, seed
    raise ValueError(f"no setting of {tries} gives a threshold commit that shows at every point {lo}..{hi}")


def state_registers(cfg: CoreConfig) -> tuple[str, ...]:
    """Registers to read after a batch of samples of ``cfg`` and compare with the model."""
    return STATE_REGISTERS


def _outputs_equal(a: ScoreResult, b: ScoreResult, names: tuple[str, ...]) -> npt.NDArray[np.bool_]:
    ok = np.ones(len(a), dtype=bool)
    for name in names:
        ok &= np.asarray(getattr(a, name)) == np.asarray(getattr(b, name))
    return ok


def _tail(r: ScoreResult, start: int) -> ScoreResult:
    return ScoreResult(np.asarray(r.score)[start:], np.asarray(r.anomaly)[start:], np.asarray(r.argmax)[start:],
                       np.asarray(r.tag)[start:])


def commit_switch(params: CoreParams, old: CoreConfig, new: CoreConfig, x: npt.ArrayLike, tags: npt.ArrayLike,
                  got: ScoreResult, acc: int) -> list[tuple[int, ScoreResult, ScoreResult]]:
    """Where a commit of ``new`` (or a ``COMMIT_THRESHOLD``: ``new`` is ``old`` with the new
    threshold) made while samples ``x`` flowed can have taken effect.

    Returns every ``(s, before, after)``, largest ``s`` first, such that ``got[:s]`` equals
    ``before``, the model's results of ``old`` on ``x[:s]`` from accumulator ``acc``, and
    ``got[s:]`` equals ``after``, ``new``'s results on ``x[s:]`` from its seed
    (``new.threshold << ADAPT_FRAC``); ``s == len(x)``: the commit did not take effect during the
    samples.  ``before.acc``/``after.acc`` are the accumulators after them (None without
    adaptation): when several ``s`` explain the results, the threshold read afterwards tells them
    apart.

    Raises
    ------
    AssertionError
        When no ``s`` explains ``got``; the message names the first result that fits neither model.
    """
    xs, ts = np.asarray(x), np.asarray(tags)
    n = len(xs)
    if len(got) != n:
        raise AssertionError(f"{n} samples but {len(got)} results")
    fields = ("score", "anomaly", "argmax", "tag")
    a = score(params, old, xs, ts, acc=acc)
    ok_a = _outputs_equal(a, got, fields)
    prefix = int(np.argmin(ok_a)) if not ok_a.all() else n
    # the outputs that do not depend on the switch point narrow it down: got[s:prefix] must be new's
    fixed = new.copy()
    fixed.adapt.enable = 0
    ok_b = _outputs_equal(score(params, fixed, xs, ts), got, ("score", "argmax", "tag"))
    lowest = prefix
    while lowest > 0 and ok_b[lowest - 1]:
        lowest -= 1
    found = []
    for s in range(prefix, lowest - 1, -1):
        after = score(params, new, xs[s:], ts[s:])
        if _outputs_equal(after, _tail(got, s), fields).all():
            found.append((s, score(params, old, xs[:s], ts[:s], acc=acc), after))
    if found:
        return found
    b = score(params, new, xs[prefix:], ts[prefix:])
    bad = prefix + int(np.argmin(_outputs_equal(b, _tail(got, prefix), fields)))
    raise AssertionError(
        f"results are not old-then-new: the first result that is not the old model's is {prefix}, and from "
        f"{lowest}..{prefix} on none fits the committed model (first difference at {bad}: x={xs[bad].tolist()} "
        f"expected (score, anomaly, argmax, tag)={b.row(bad - prefix)} got "
        f"{tuple(int(np.asarray(getattr(got, f))[bad]) for f in fields)})")



def route_reached(routes: npt.ArrayLike, latencies: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike,
                  cfg: RouteConfig, unseeded: tuple[npt.ArrayLike, npt.ArrayLike] | None = None) -> set[str]:
    """The events (:data:`ROUTE_EVENTS`) that route events (``routes``, ``latencies``) reach from the
    bound accumulators ``lower``/``upper``; with ``unseeded`` (the bounds had no seed been written)
    also ``routes:seeded`` when the seed changes a flag."""
    if not cfg.enable:
        return set()
    r = np.asarray(routes, dtype=np.int64)
    ri = route_intervals(r, latencies, lower, upper, cfg)
    events = {name for name, hit in (("routes:below", ri.below.any()), ("routes:above", ri.above.any()))
              if hit}
    tracked = (r >= 0) & (r < len(np.asarray(lower)))
    if (tracked & (ri.below == 0) & (ri.above == 0)).any():
        events.add("routes:inside")
    if (~tracked).any():
        events.add("routes:untracked")
    if cfg.ratio and (ri.below.any() or ri.above.any()):
        events.add("routes:widened")
    if unseeded is not None:
        base = route_intervals(r, latencies, unseeded[0], unseeded[1], cfg)
        if not (np.array_equal(base.below, ri.below) and np.array_equal(base.above, ri.above)):
            events.add("routes:seeded")
    return events


def route_plan(params: CoreParams, rng: np.random.Generator, n: int, lower: npt.ArrayLike, upper: npt.ArrayLike,
               want: frozenset[str] = ROUTE_EVENTS, tries: int = 200) -> tuple[RouteConfig, IntArray, IntArray]:
    """A route interval setting (:meth:`~mailpulse.hdl.reference.RouteConfig.random`) and ``n``
    route events (:func:`~mailpulse.hdl.reference.random_route_events`) that reach ``want`` from
    the bounds ``lower``/``upper``.

    Raises
    ------
    ValueError
        When no draw of ``tries`` reaches ``want``.
    """
    for _ in range(tries):
        cfg = RouteConfig.random(rng)
        routes, lat = random_route_events(rng, n, params.r)
        if want <= route_reached(routes, lat, lower, upper, cfg):
            return cfg, routes, lat
    raise ValueError(f"no route setting of {tries} tries reaches {sorted(want)} on {n} events")


def route_seed_showing(routes: npt.ArrayLike, latencies: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike,
                       cfg: RouteConfig) -> tuple[int, int] | None:
    """A ``ROUTE_BOUND`` write (element ``2r`` lower / ``2r + 1`` upper, accumulator value) before
    route events (``routes``, ``latencies``) from bounds ``lower``/``upper`` that changes a flag
    (``routes:seeded``), so that a lost seed cannot pass: for the routes by number of events, the
    upper bound to 0 or the lower bound to the cap (every event outside), then the other way round
    (every event inside); None when none does."""
    r = np.asarray(routes, dtype=np.int64)
    lo, up = np.asarray(lower, dtype=np.int64), np.asarray(upper, dtype=np.int64)
    cap = ((1 << 16) - 1) << ADAPT_FRAC
    tracked = r[(r >= 0) & (r < len(lo))]
    for route in np.argsort(-np.bincount(tracked, minlength=len(lo)), kind="stable").tolist():
        for side, value in ((1, 0), (0, cap), (1, cap), (0, 0)):
            slo, sup = lo.copy(), up.copy()
            (sup if side else slo)[route] = value
            if "routes:seeded" in route_reached(r, latencies, slo, sup, cfg, unseeded=(lo, up)):
                return 2 * route + side, value
    return None
