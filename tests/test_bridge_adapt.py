"""The host bridge with the adaptive threshold: a model with ``ADAPT`` enabled loads through the
register protocol, the ``model`` backend scores exactly as :func:`mailpulse.hdl.reference.score`
(flags and the threshold's accumulator), and ``set_threshold`` seeds it between batches."""

from __future__ import annotations

import numpy as np
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import ADAPT_FRAC, AdaptConfig, CoreConfig, score
from mailpulse.host_bridge.backends.model import ModelScorer


def test_model_backend_adapts_like_the_reference() -> None:
    p = get_params("full")
    rng = np.random.default_rng(21)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(6000, p.d))
    s = score(p, cfg, x).score
    cfg.threshold = int(np.quantile(s, 0.2))
    cfg.adapt = AdaptConfig(1, 4, 12, int(np.quantile(s, 0.1)), int(np.quantile(s, 0.99)))
    sc = ModelScorer(p, batch_size=1000)
    with sc:
        sc.load_model(cfg)
        got = sc.score_batch(x[:4000], np.arange(4000))
        exp = score(p, cfg, x[:4000], np.arange(4000))
        assert np.array_equal(got.anomaly, exp.anomaly) and np.array_equal(got.score, exp.score)
        assert exp.acc is not None and sc.client.threshold_accumulator() == exp.acc
        assert sc.client.thresholds()[1] == exp.acc >> ADAPT_FRAC
        # the flag rate moved toward 2**-4 from the seed's 0.8
        assert abs(exp.anomaly[2000:].mean() - 1 / 16) < 0.03
        seed = int(np.quantile(s, 0.5))
        sc.set_threshold(seed)
        assert sc.client.threshold_accumulator() == seed << ADAPT_FRAC
        got2 = sc.score_batch(x[4000:])
        exp2 = score(p, cfg, x[4000:], acc=seed << ADAPT_FRAC)
        assert np.array_equal(got2.anomaly, exp2.anomaly)
        assert sc.client.threshold_accumulator() == exp2.acc
        assert sc.counters().anomalies == int(exp.anomaly.sum() + exp2.anomaly.sum())
