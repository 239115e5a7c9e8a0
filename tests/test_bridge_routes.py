"""The host bridge's route interval API: score with route ids and latencies, below/above back,
bounds read and seeded; bit-exact with :func:`mailpulse.hdl.reference.route_intervals` through the
model backend and the simulated RTL (stream path and PUSH path), and every hostile value answered
with one sentence."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import (
    ADAPT_FRAC,
    CoreConfig,
    RouteConfig,
    random_route_events,
    route_intervals,
    route_seed,
    score,
)
from mailpulse.host_bridge.backends.model import ModelScorer
from mailpulse.host_bridge.core import CoreMismatchError, params_from_registers
from mailpulse.host_bridge.scorer import Scorer
from mailpulse.host_bridge.streamfmt import check_events
from mailpulse.sim.tools import have_simulator

P = get_params("small-r4")


def _session(s: Scorer, seed: int = 2, n: int = 300) -> None:
    """Load a model with intervals on, seed every bound, score a batch with events (route ids past
    R included) and one event alone; everything equals the reference computed here."""
    rng = np.random.default_rng(seed)
    cfg = CoreConfig.random(P, rng)
    x = rng.integers(P.in_min, P.in_max + 1, size=(n, P.d))
    routes, lats = random_route_events(rng, n, P.r)
    rc = RouteConfig(1, 5, 10)
    s.load_model(cfg, routes=rc)
    lower = (rng.integers(0x300, 0xA00, size=P.r) << ADAPT_FRAC).astype(np.int64)
    upper = lower + (rng.integers(0x100, 0x600, size=P.r) << ADAPT_FRAC)
    upper[-1] = (1 << 24) - 1                         # above the cap: the core caps it
    for r in range(P.r):
        s.seed_route(r, lower=int(lower[r]), upper=int(upper[r]))
    lo0 = np.array([route_seed(int(v)) for v in lower])
    up0 = np.array([route_seed(int(v)) for v in upper])
    assert [b.tolist() for b in s.route_bounds()] == [lo0.tolist(), up0.tolist()]
    got = s.score_batch(x, np.arange(n), routes=routes, latencies=lats)
    want = score(P, cfg, x, np.arange(n))
    ri = route_intervals(routes, lats, lo0, up0, rc)
    assert got.score.tolist() == want.score.tolist() and got.anomaly.tolist() == want.anomaly.tolist()
    assert got.below is not None and got.above is not None
    assert got.below.tolist() == ri.below.tolist() and got.above.tolist() == ri.above.tolist()
    assert ri.below.sum() and ri.above.sum(), "the case flags both sides"
    assert [b.tolist() for b in s.route_bounds()] == [ri.lower.tolist(), ri.upper.tolist()]
    one = s.score_event(x[0], 77, 1, 0xFFFF)          # the largest latency: above any capped bound
    ri1 = route_intervals([1], [0xFFFF], ri.lower, ri.upper, rc)
    assert one[3:] == (77, int(ri1.below[0]), int(ri1.above[0])) and one[5] == 1


def test_model_backend_routes() -> None:
    with ModelScorer(P, batch_size=97) as s:      # several chunks
        assert s.identify().params.r == P.r
        _session(s)


@pytest.mark.xdist_group("rtl_identity")
@pytest.mark.parametrize("top", ["axi", "spi"])
def test_sim_backend_routes(top: str) -> None:
    """The simulated RTL: the AXI top streams the events in its beats, the SPI top pushes them."""
    pytest.importorskip("cocotb", reason="cocotb is not installed")
    if not have_simulator("icarus"):
        pytest.skip("icarus is not installed")
    from mailpulse.host_bridge.backends.sim import SimScorer

    with SimScorer(P, simulator="icarus", top=top) as s:
        assert s.identify().params.r == P.r
        _session(s, seed=3, n=60 if top == "spi" else 200)


def test_hostile_route_values_get_one_sentence() -> None:
    x = np.zeros((2, P.d), dtype=np.int64)
    bad_batches: list[tuple[dict[str, list[Any]], str]] = [
        ({"routes": [0, -1]}, "route ids must be in 0..65535, not -1"),
        ({"routes": [0, 65536]}, "route ids must be in 0..65535, not 65536"),
        ({"latencies": [1.5, 2]}, "latencies must be integers"),
        ({"latencies": [float("nan"), 2]}, "latencies must be integers"),
        ({"routes": ["a", "b"]}, "route ids must be integers"),
        ({"routes": [1, 2, 3]}, "2 samples but 3 route ids"),
    ]
    with ModelScorer(P) as s:
        for kw, text in bad_batches:
            with pytest.raises(ValueError) as e:
                s.score_batch(x, routes=kw.get("routes"), latencies=kw.get("latencies"))
            assert text in str(e.value) and "\n" not in str(e.value), (kw, str(e.value))
        seeds: list[tuple[int, Any, str]] = [(4, 1, "route 4 is outside 0..3"), (-1, 1, "route -1 is outside 0..3"),
                                             (0, 1 << 24, "an integer in 0..16777215, not 16777216"),
                                             (0, 2.5, "an integer in 0..16777215, not 2.5")]
        for route, value, text in seeds:
            with pytest.raises(ValueError, match=re.escape(text)):
                s.seed_route(route, lower=value)
        with pytest.raises(ValueError, match=r"a latency is an integer in 0\.\.65535, not 70000"):
            s.score_event(x[0], 1, 0, 70000)
        with pytest.raises(ValueError, match=r"a route id is an integer in 0\.\.65535, not -3"):
            s.score_event(x[0], 1, -3, 7)
        cfg = CoreConfig.random(P, np.random.default_rng(1))
        as_text: Any = "19"                                      # a ratio as text, as from a config file
        for rc, text in ((RouteConfig(1, 256, 10), "route interval ratio must be an integer in 0..255, not 256"),
                         (RouteConfig(1, -1, 10), "route interval ratio must be an integer in 0..255, not -1"),
                         (RouteConfig(1, as_text, 10), "route interval ratio must be an integer in 0..255, not '19'"),
                         (RouteConfig(1, 19, 16), "route interval step_exp must be an integer in 0..15, not 16")):
            with pytest.raises(CoreMismatchError) as mismatch:   # the core is not touched
                s.load_model(cfg, routes=rc)
            assert str(mismatch.value) == f"the model does not fit the core: {text}", str(mismatch.value)
    with ModelScorer(get_params("small")) as s:
        with pytest.raises(ValueError, match=r"has no route intervals \(R = 0\)"):
            s.score_batch(x, routes=[0, 1])
        with pytest.raises(ValueError, match=r"has no route intervals"):
            s.route_bounds()
    assert check_events(P, 2)[0].tolist() == [0xFFFF, 0xFFFF]   # no events given: not tracked


def test_params_register_names_the_routes() -> None:
    """PARAMS.ROUTES_LOG2 round-trips R; a set without routes reads 0 there."""
    from mailpulse.hdl.regmap import RegisterMap

    for name, r in (("small", 0), ("small-r1", 1), ("full-r16", 16), ("zynq-r64", 64)):
        rm = RegisterMap(get_params(name))
        p = params_from_registers(rm["PARAMS"].reset, rm["WIDTHS"].reset)
        assert p.r == r and p.name == name, (name, p)
