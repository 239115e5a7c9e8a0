"""The verification plans of the cocotb benches (sim/plans.py), on the reference model alone:
the path of the adaptive threshold is the spec's, a plan reaches what it promises, and the
switch point of a commit under traffic is found exactly (and a wrong flag after it is not excused)."""

from __future__ import annotations

import numpy as np
import pytest
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import (
    ADAPT_FRAC,
    CoreConfig,
    RouteConfig,
    ScoreResult,
    adaptive_flags,
    route_intervals,
    score,
)
from mailpulse.sim import plans
from mailpulse.sim.codec import random_samples


@pytest.mark.parametrize("n", [24, 400])
def test_plan_reaches_every_event_on_the_spec_path(n: int) -> None:
    p = get_params("small")
    for seed in range(8):
        rng = np.random.default_rng([seed, n])
        x, _tags = random_samples(p, rng, n)
        cfg = plans.adaptive_config(p, x, rng)
        s = score(p, cfg, x).score
        path, events = plans.threshold_path(s, cfg.adapt, cfg.threshold << ADAPT_FRAC)
        flags, acc = adaptive_flags(s, cfg.adapt, cfg.threshold << ADAPT_FRAC)
        assert path[-1] == acc and np.array_equal(flags, score(p, cfg, x).anomaly)
        assert events == plans.ADAPT_EVENTS == plans.reached(p, cfg, x), (seed, cfg.adapt)
        lo, hi = cfg.adapt.t_min << ADAPT_FRAC, cfg.adapt.t_max << ADAPT_FRAC
        assert lo in path and hi in path and cfg.adapt.t_min <= cfg.threshold <= cfg.adapt.t_max


def test_fixed_threshold_reaches_nothing() -> None:
    p = get_params("small")
    rng = np.random.default_rng(1)
    x, _tags = random_samples(p, rng, 100)
    assert plans.reached(p, CoreConfig.random(p, rng), x) == set()


def test_commit_switch_is_exact() -> None:
    p = get_params("small")
    rng = np.random.default_rng(5)
    x, tags = random_samples(p, rng, 300)
    old = plans.adaptive_config(p, x, rng)
    new = plans.adaptive_config(p, x, rng)
    acc = (old.threshold << ADAPT_FRAC) + 77
    for s in (1, 137, 299):
        a = score(p, old, x[:s], tags[:s], acc=acc)
        b = score(p, new, x[s:], tags[s:])
        got = ScoreResult(*(np.concatenate([getattr(a, f), getattr(b, f)]) for f in ("score", "anomaly", "argmax",
                                                                                      "tag")))
        found = plans.commit_switch(p, old, new, x, tags, got, acc)
        assert [f[0] for f in found][-1:] == [s] or s in [f[0] for f in found]
        _at, before, after = next(f for f in found if f[0] == s)
        assert before.acc == a.acc and after.acc == b.acc
        for _at, before, after in found:   # every other explanation gives the same results
            assert np.array_equal(np.concatenate([before.anomaly, after.anomaly]), got.anomaly)
        # one flag after the switch taken from the new model seeded one sample early: not old-then-new
        early = score(p, new, x[s - 1:], tags[s - 1:]).anomaly[1:]
        i = int(np.argmax(early != b.anomaly)) if (early != b.anomaly).any() else None
        if i is not None:
            got.anomaly[s + i] = early[i]
            with pytest.raises(AssertionError, match="not old-then-new"):
                plans.commit_switch(p, old, new, x, tags, got, acc)


def test_threshold_commit_plan_shows_everywhere() -> None:
    """The planned COMMIT_THRESHOLD seed changes the flags or the final threshold at every switch
    point of the window: a commit that the RTL loses cannot look like one that landed."""
    p = get_params("small")
    rng = np.random.default_rng(3)
    cfg, x, _tags, x2, _tags2, seed = plans.threshold_commit_plan(
        p, rng, 300, 120, 5, 100, frozenset({"adapt:moved", "adapt:sweep"}))
    assert {"adapt:moved", "adapt:sweep"} <= plans.reached(p, cfg, x)
    acc = score(p, cfg, x).acc
    assert acc is not None
    lost = score(p, cfg, x2, acc=acc)
    reseeded = cfg.copy()
    reseeded.threshold = seed
    for at in range(5, 101):
        after = score(p, reseeded, x2[at:])
        assert after.acc != lost.acc or not np.array_equal(after.anomaly, lost.anomaly[at:]), at


def test_route_plan_and_seed_reach_what_they_say() -> None:
    """``route_plan`` reaches every route event by the spec (``route_intervals``), a disabled setting
    reaches none, and the seed of ``route_seed_showing`` changes a flag of the events after it."""
    params = get_params("small-r4")
    rng = np.random.default_rng(3)
    lower = np.full(params.r, 0x0800 << ADAPT_FRAC)
    upper = np.full(params.r, 0x0C00 << ADAPT_FRAC)
    cfg, routes, lat = plans.route_plan(params, rng, 200, lower, upper)
    ri = route_intervals(routes, lat, lower, upper, cfg)
    tracked = routes < params.r
    assert ri.below.any() and ri.above.any() and (~tracked).any()
    assert (tracked & (ri.below == 0) & (ri.above == 0)).any()
    assert plans.route_reached(routes, lat, lower, upper, RouteConfig()) == set()
    # routes:widened: the first miss moved its bound outward (by the spec); ratio 0 flags, never widens
    i = int(np.flatnonzero(ri.below | ri.above)[0])
    before = route_intervals(routes[:i], lat[:i], lower, upper, cfg)
    after = route_intervals(routes[:i + 1], lat[:i + 1], lower, upper, cfg)
    k = int(routes[i])
    assert after.lower[k] < before.lower[k] if ri.below[i] else after.upper[k] > before.upper[k]
    still = plans.route_reached(routes, lat, lower, upper, RouteConfig(1, 0, cfg.step_exp))
    assert {"routes:below", "routes:above"} <= still and "routes:widened" not in still
    showing = plans.route_seed_showing(routes[100:], lat[100:], ri.lower, ri.upper, cfg)
    assert showing is not None
    index, value = showing
    lo, up = ri.lower.copy(), ri.upper.copy()
    (up if index & 1 else lo)[index >> 1] = value
    seeded = route_intervals(routes[100:], lat[100:], lo, up, cfg)
    plain = route_intervals(routes[100:], lat[100:], ri.lower, ri.upper, cfg)
    assert not (np.array_equal(seeded.below, plain.below) and np.array_equal(seeded.above, plain.above))
