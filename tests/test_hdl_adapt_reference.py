"""The adaptive units of the reference model (the executable spec): the adaptive threshold and the
per-route latency prediction intervals converge to their targets on synthetic streams, honour
their clamps, and the register-level model exposes and seeds them as the register map says.

Behaviour with tolerances (statistical, fixed seeds): the stationary flag rate of a quantile
tracker with steps ``big = small * (2**a - 1)`` is ``2**-a``; with ``big = small * M`` (the route
intervals' miss ratio) ``1 / (M + 1)``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import (
    ADAPT_FRAC,
    AdaptConfig,
    CoreConfig,
    EmulatedCore,
    RouteConfig,
    adaptive_flags,
    nominal_coverage,
    route_intervals,
    route_steps,
    score,
    tracker_step,
    tracker_steps,
)
from mailpulse.hdl.regmap import RegisterMap


def test_steps_are_powers_of_two_with_the_target_ratio() -> None:
    assert tracker_steps(5, 8) == (31 << 8, 1 << 8)
    assert tracker_steps(0, 0) == (0, 1)          # alpha = 1: never moves up
    with pytest.raises(ValueError, match="out of range"):
        tracker_steps(16, 0)
    assert tracker_step(100, True, 50, 1, 0, 120) == 120
    assert tracker_step(100, False, 50, 1, 100, 120) == 100
    assert tracker_step(200, False, 50, 1, 0, 120) == 120   # seeded above the range: back at once
    assert tracker_step(5, True, 1, 1, 10, 120) == 10
    assert tracker_step(5, True, 1, 1, 130, 120) == 130      # T_MIN > T_MAX: the upper check first
    assert tracker_step(125, True, 1, 1, 130, 120) == 120


@pytest.mark.parametrize("alpha_exp", [3, 5, 7])
def test_threshold_flag_rate_converges_to_the_target(alpha_exp: int) -> None:
    rng = np.random.default_rng(alpha_exp)
    n = 400_000
    scores = np.clip(rng.normal(20_000, 2_000, n), 0, (1 << 19) - 1).astype(np.int64)
    cfg = AdaptConfig(enable=1, alpha_exp=alpha_exp, step_exp=10, t_min=0, t_max=(1 << 19) - 1)
    flags, acc = adaptive_flags(scores, cfg, 20_000 << ADAPT_FRAC)
    target = 2.0 ** -alpha_exp
    late = flags[n // 2:].mean()
    assert abs(late - target) < 0.15 * target, (late, target)
    # the threshold sits near the score's (1 - alpha) quantile
    q = np.quantile(scores, 1 - target)
    assert abs((acc >> ADAPT_FRAC) - q) < 600, (acc >> ADAPT_FRAC, q)


def test_threshold_follows_a_level_shift_and_stays_in_its_clamp() -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(10_000, 1_000, 200_000)
    b = rng.normal(30_000, 1_000, 200_000)
    scores = np.concatenate([a, b]).astype(np.int64)
    cfg = AdaptConfig(enable=1, alpha_exp=4, step_exp=12, t_min=5_000, t_max=40_000)
    flags, _ = adaptive_flags(scores, cfg, 0)
    assert abs(flags[300_000:].mean() - 1 / 16) < 0.01
    # the same stream, but T_MAX below the second level: everything there is flagged, T pinned
    cfg2 = AdaptConfig(enable=1, alpha_exp=4, step_exp=12, t_min=5_000, t_max=20_000)
    flags2, acc2 = adaptive_flags(scores, cfg2, 0)
    assert acc2 == 20_000 << ADAPT_FRAC
    assert flags2[250_000:].all()
    # T_MIN above every score: nothing is flagged once T is there
    cfg3 = AdaptConfig(enable=1, alpha_exp=4, step_exp=12, t_min=50_000, t_max=60_000)
    flags3, acc3 = adaptive_flags(scores, cfg3, 0)
    assert acc3 == 50_000 << ADAPT_FRAC and not flags3[1:].any()


def test_disabled_adaptation_is_the_fixed_threshold() -> None:
    p = get_params("small")
    rng = np.random.default_rng(3)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(2000, p.d))
    r = score(p, cfg, x)
    assert r.acc is None
    assert np.array_equal(r.anomaly, (r.score > cfg.threshold).astype(np.int64))
    cfg.adapt = AdaptConfig(enable=1, alpha_exp=3, step_exp=15)
    cfg.threshold = int(np.median(r.score))
    ra = score(p, cfg, x)
    assert np.array_equal(ra.score, r.score) and ra.acc is not None
    assert not np.array_equal(ra.anomaly, (r.score > cfg.threshold).astype(np.int64))


def test_route_steps_follow_the_ratio() -> None:
    assert route_steps(19, 9) == (19 << 9, 1 << 9)
    assert route_steps(0, 0) == (0, 1)            # ratio 0: a miss leaves its bound
    assert route_steps(255, 15) == (255 << 15, 1 << 15)
    for b in range(9):                            # 2**b - 1 steps as the exponent b did
        assert route_steps((1 << b) - 1, 7) == tracker_steps(b, 7)
    for bad in ((256, 0), (-1, 0), (3, 16)):
        with pytest.raises(ValueError, match="out of range"):
            route_steps(*bad)
    assert nominal_coverage(19) == pytest.approx(0.9) and nominal_coverage(31) == 0.9375
    assert nominal_coverage(0) == nominal_coverage(1) == 0.0
    assert RouteConfig(1, 19, 10).nominal_coverage == nominal_coverage(19)
    half: Any = 2.5
    for bad_cfg, text in ((RouteConfig(1, 256, 9), "ratio must be an integer in 0..255, not 256"),
                          (RouteConfig(1, half, 9), "ratio must be an integer in 0..255, not 2.5"),
                          (RouteConfig(2, 19, 9), "enable must be an integer in 0..1, not 2"),
                          (RouteConfig(1, 19, -1), "step_exp must be an integer in 0..15, not -1")):
        with pytest.raises(ValueError, match=re.escape(text)):
            bad_cfg.validate()


def test_ratio_zero_empties_the_interval() -> None:
    """Ratio 0: a miss leaves its bound, every hit narrows it, so the bounds cross and then every
    event misses on one side at least."""
    rng = np.random.default_rng(4)
    lat = np.clip(np.round(rng.normal(3_000, 200, 4_000)), 0, 0xFFFF).astype(np.int64)
    res = route_intervals(np.zeros(len(lat), dtype=np.int64), lat, [2_000 << ADAPT_FRAC], [4_000 << ADAPT_FRAC],
                          RouteConfig(enable=1, ratio=0, step_exp=10))
    assert res.lower[0] > res.upper[0]
    assert (res.below[-500:] | res.above[-500:]).all()


@pytest.mark.parametrize("ratio", [19, 31])
def test_route_intervals_cover_nominally(ratio: int) -> None:
    rng = np.random.default_rng(11)
    n, routes = 400_000, 16
    r = rng.integers(0, routes, n)
    centre = rng.integers(2_000, 6_000, routes)          # log2(latency) in Q8.8, per route
    spread = rng.integers(100, 600, routes)
    lat = np.clip(np.round(rng.normal(centre[r], spread[r])), 0, 0xFFFF).astype(np.int64)
    cfg = RouteConfig(enable=1, ratio=ratio, step_exp=9)
    lower = np.full(routes, 4_000 << ADAPT_FRAC)
    upper = np.full(routes, 4_000 << ADAPT_FRAC)
    res = route_intervals(r, lat, lower, upper, cfg)
    late = slice(n // 2, n)
    beta = 1.0 / (ratio + 1)
    assert nominal_coverage(ratio) == pytest.approx(1 - 2 * beta)
    assert abs(res.below[late].mean() - beta) < 0.15 * beta
    assert abs(res.above[late].mean() - beta) < 0.15 * beta
    coverage = 1 - (res.below[late] | res.above[late]).mean()
    assert abs(coverage - (1 - 2 * beta)) < 0.01, coverage
    for k in range(routes):
        sel = (r == k)
        sel[: n // 2] = False
        miss = (res.below[sel] | res.above[sel]).mean()
        assert abs(miss - 2 * beta) < 0.03, (k, miss)
        # the bounds end near the route's own quantiles (within half a sigma and two big steps)
        lo_q, hi_q = np.quantile(lat[r == k], [beta, 1 - beta])
        tol = spread[k] / 2 + 2 * route_steps(ratio, 9)[0] / (1 << ADAPT_FRAC)
        assert abs((res.lower[k] >> ADAPT_FRAC) - lo_q) < tol
        assert abs((res.upper[k] >> ADAPT_FRAC) - hi_q) < tol
    assert (res.lower <= res.upper).all()


def test_route_ids_out_of_range_and_disabled_do_nothing() -> None:
    lower = np.array([100 << ADAPT_FRAC, 200 << ADAPT_FRAC])
    upper = np.array([150 << ADAPT_FRAC, 300 << ADAPT_FRAC])
    cfg = RouteConfig(enable=1, ratio=3, step_exp=4)
    res = route_intervals([2, 255, 1, 0], [0, 0xFFFF, 0xFFFF, 0], lower, upper, cfg)
    assert res.below.tolist() == [0, 0, 0, 1] and res.above.tolist() == [0, 0, 1, 0]
    big, small = route_steps(3, 4)
    assert res.upper.tolist() == [upper[0] - small, upper[1] + big]
    assert res.lower.tolist() == [lower[0] - big, lower[1] + small]
    off = route_intervals([0, 1], [0, 0xFFFF], lower, upper, RouteConfig(enable=0, ratio=3, step_exp=4))
    assert not off.below.any() and not off.above.any()
    assert np.array_equal(off.lower, lower) and np.array_equal(off.upper, upper)
    # clamps: a bound never leaves 0 .. 0xFFFF
    edge = route_intervals([0, 0], [0, 0xFFFF], [0, 0], [0xFFFF << ADAPT_FRAC] * 2,
                           RouteConfig(enable=1, ratio=255, step_exp=15))
    assert edge.lower.min() >= 0 and edge.upper.max() <= 0xFFFF << ADAPT_FRAC


def test_register_model_adapts_seeds_and_reads_back() -> None:
    p = get_params("small")
    rm = RegisterMap(p)
    core = EmulatedCore(p)
    rng = np.random.default_rng(5)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(3000, p.d))
    cfg.threshold = 0
    cfg.adapt = AdaptConfig(enable=1, alpha_exp=3, step_exp=15, t_min=10, t_max=(1 << 19) - 1)
    for a, v in core.model_writes(cfg):
        core.write(a, v)
    assert core.read(rm["ADAPT"].address()) == rm["ADAPT"].value(ENABLE=1, ALPHA_EXP=3, STEP_EXP=15)
    assert core.read(rm["T_MIN"].address()) == 10
    core.write(rm["CTRL"].address(), rm["CTRL"].field("COMMIT").mask)
    first = core.stream(x[:1000])
    exp = score(p, cfg, x[:1000])
    assert np.array_equal(first.anomaly, exp.anomaly)
    assert exp.acc is not None
    assert core.read(rm["THRESHOLD_ACTIVE"].address()) == exp.acc >> ADAPT_FRAC
    assert core.read(rm["THRESHOLD_FRAC"].address()) == exp.acc & 0xFF
    # the stream goes on from where it was, not from the seed
    second = core.stream(x[1000:])
    assert np.array_equal(second.anomaly, score(p, cfg, x[1000:], acc=exp.acc).anomaly)
    # the host seeds the threshold mid-stream: COMMIT_THRESHOLD restarts the accumulator there
    core.write(rm["THRESHOLD"].address(), 12345)
    core.write(rm["CTRL"].address(), rm["CTRL"].field("COMMIT_THRESHOLD").mask)
    assert core.read(rm["THRESHOLD_ACTIVE"].address()) == 12345
    assert core.read(rm["THRESHOLD_FRAC"].address()) == 0
    third = core.stream(x[:500])
    assert np.array_equal(third.anomaly, score(p, cfg, x[:500], acc=12345 << ADAPT_FRAC).anomaly)
