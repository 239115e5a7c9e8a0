"""Featurise + score in batches: bit-exact with hdl.reference.score; replay end to end; the CLI summary line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import CoreConfig, score
from mailpulse.pi_firmware.events import DeliveryEvent, Event, MessageEvent, Scored, dumps
from mailpulse.pi_firmware.pipeline import (
    CountingSink,
    ListSink,
    Pipeline,
    ScoringSetup,
    bridge_scorer,
    featurise,
    load_scoring_model,
    untrained_model,
)
from mailpulse.pi_firmware.postfix import PostfixParser
from mailpulse.pi_firmware.replay import replay
from mailpulse.pi_firmware.synthlog import Expected, generate

from mailpulse import features as F
from mailpulse.backends import open_scorer
from mailpulse.cli import main
from mailpulse.errors import UserError
from mailpulse.modelfile import InputScaling, TrainedModel


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _verdict(e: Event) -> Scored:
    """The scorer's verdict on ``e`` (every event out of a pipeline has one)."""
    assert e.scored is not None, e
    return e.scored


def _random_model(seed: int = 3) -> ScoringSetup:
    p = get_params("small")
    return ScoringSetup(p, CoreConfig.random(p, np.random.default_rng(seed)), _identity, "random")


@pytest.fixture(scope="module")
def log_lines() -> list[str]:
    return list(generate(6000, seed=11))


@pytest.mark.parametrize("batch", [1, 7, 4096])
def test_batched_scores_equal_reference(log_lines: list[str], batch: int) -> None:
    m = _random_model()
    lines = log_lines[:2500]
    evs0 = list(PostfixParser("n", year=2026).feed(lines))
    x = np.array([F.encode(e.raw_features(), e.KIND) for e in evs0])     # the slow, per-event path
    m.config.threshold = int(np.percentile(score(m.params, m.config, x).score, 80))
    sink = ListSink()
    pipe = Pipeline(m.scorer(), sink, batch_size=batch)
    pipe.submit_many(PostfixParser("n", year=2026).feed(lines))
    pipe.close()
    evs = sink.items
    assert len(evs) == len(evs0) > 200 and pipe.stats.events == len(evs)
    assert (np.array([e.x for e in evs]) == x).all()
    ref = score(m.params, m.config, x)
    verdicts = [_verdict(e) for e in evs]
    assert [v.score for v in verdicts] == ref.score.tolist()
    assert [v.anomaly for v in verdicts] == ref.anomaly.astype(bool).tolist()
    assert [v.argmax for v in verdicts] == ref.argmax.tolist()
    assert sink.anomalies == int(ref.anomaly.sum()) and 0 < sink.anomalies < len(evs)


def test_mixed_kinds_in_one_batch(log_lines: list[str]) -> None:
    evs = list(PostfixParser("n", year=2026).feed(log_lines[:300]))
    msg = MessageEvent(0.0, "n", key="k", size=1000, recipients=2, mime={"images": [{"pixels": 64}]})
    batch = [evs[0], msg, evs[1]]
    x = featurise(batch)
    assert x[1].tolist() == F.encode(msg.raw_features(), "message")
    assert x[1][F.NAMES.index("delay_connect_ms")] == F.MISSING
    assert x[0][F.NAMES.index("image_pixels")] == F.MISSING


def test_bridge_model_backend_gives_the_same_integers(log_lines: list[str]) -> None:
    m = _random_model(5)
    evs = list(PostfixParser("n", year=2026).feed(log_lines))
    a, b = ListSink(), ListSink()
    p1 = Pipeline(m.scorer(), a, 512)
    p1.submit_many(evs)
    p1.close()
    evs2 = list(PostfixParser("n", year=2026).feed(log_lines))
    with open_scorer("model", m.params) as s:
        p2 = Pipeline(bridge_scorer(s, m), b, 512)
        p2.submit_many(evs2)
        p2.close()
    assert [_verdict(e) for e in a.items] == [_verdict(e) for e in b.items]


def test_untrained_model_never_flags(log_lines: list[str]) -> None:
    sink = CountingSink()
    pipe = Pipeline(untrained_model().scorer(), sink)
    pipe.submit_many(PostfixParser("n", year=2026).feed(log_lines))
    pipe.close()
    assert sink.events > 0 and sink.anomalies == 0


def test_replay_counts(tmp_path: Path) -> None:
    exp = Expected()
    log = tmp_path / "mail.log"
    log.write_text("".join(generate(8000, seed=5, garbage_every=1000, expected=exp)))
    s = replay(log, CountingSink(), year=2026)
    assert (s.lines, s.events, s.unparsed) == (exp.lines, exp.events, exp.garbage)
    assert (s.sent, s.deferred, s.bounced, s.expired) == tuple(exp.status[k] for k in
                                                               ("sent", "deferred", "bounced", "expired"))


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[node]\nid = "n1"\nsite = "s1"\nstate_dir = "{tmp_path}/state"\n[postfix]\nyear = 2026\n')
    return cfg


def test_replay_cli_summary_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = Expected()
    log = tmp_path / "mail.log"
    log.write_text("".join(generate(3000, seed=9, expected=exp)))
    assert main(["node", "replay", "--config", str(_config(tmp_path)), "--log", str(log), "--no-publish"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    m = re.fullmatch(r"lines (\d+) events (\d+) sent (\d+) deferred (\d+) bounced (\d+) expired (\d+) "
                     r"unparsed (\d+) lines_per_s (\d+) deliverable (\d+) undeliverable (\d+)", out[0])
    assert m, out
    assert [int(v) for v in m.groups()[:7]] == [exp.lines, exp.events, exp.status["sent"], exp.status["deferred"],
                                                exp.status["bounced"], exp.status["expired"], 0]
    assert [int(v) for v in m.groups()[8:]] == [exp.status["deliverable"], exp.status["undeliverable"]]


def test_replay_cli_missing_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "replay", "--config", str(_config(tmp_path)), "--log", str(tmp_path / "nope.log"),
                 "--no-publish"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1


def _model_file(tmp_path: Path, schema: str) -> Path:
    m = _random_model(8)
    p = m.params
    model = TrainedModel(p, schema, InputScaling.identity(p.d), m.config.weights, m.config.offsets, m.config.shifts,
                  m.config.tables, 123456, m.config.tables.astype(float), 1.0, {"version": "test-1"})
    return model.save(tmp_path / f"model-{schema}.json")


def test_model_file_is_scored_bit_exactly(tmp_path: Path, log_lines: list[str]) -> None:
    sm = load_scoring_model(_model_file(tmp_path, str(F.SCHEMA_VERSION)), "small")
    assert sm.version == "test-1" and sm.config.threshold == 123456
    sink = ListSink()
    pipe = Pipeline(sm.scorer(), sink, 300)
    pipe.submit_many(PostfixParser("n", year=2026).feed(log_lines[:3000]))
    pipe.close()
    x = np.array([e.x for e in sink.items])
    ref = score(sm.params, sm.config, x)
    assert [_verdict(e).score for e in sink.items] == ref.score.tolist()


def test_model_of_another_schema_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="feature schema"):
        load_scoring_model(_model_file(tmp_path, "odds"))


def test_fast_payload_json_equals_the_encoded_payload(tmp_path: Path) -> None:
    """DeliveryEvent.payload_json (the replay's hot path) writes exactly json of payload(), also for
    quotes, backslashes, non-ASCII, undecodable log bytes, non-finite numbers and missing fields."""
    log = tmp_path / "mail.log"
    log.write_text("".join(generate(6000, seed=11, rfc3339=True)))
    sink = ListSink()
    replay(log, sink, year=2026)
    odd = [
        DeliveryEvent(1.5, "n-1", "h\u00e9", "4ABC", "smtp", 'q"uo\\te@x', "sent", "r\u2028[1]", 0.25,
                      (0.0, 1e-7, 3.0, 12345.678), "2.0.0", "s\udcff@x", 10, 1, "<m\tid>", "Nov  1 00:00:00",
                      "line \udcfe text", 2),
        DeliveryEvent(math.inf, "n", "h", "Q", "error", "", "bounced", None, math.inf, (math.nan, 0.0, 0.0, 0.0),
                      None),
        DeliveryEvent(0.0, "n", "h", "Q", "virtual", "v@x", "deferred"),
        DeliveryEvent(2.0, "n", "h", "Q2", "smtp", "w@x", "sent", "mx[1.2.3.4]:25", 0.5),
        DeliveryEvent(3.0, "n", "h", "Q3", "smtp", "w@x", "sent", "mx[1.2.3.4]:25", 9.0),
    ]
    odd[0].scored = Scored(7, True, 3)
    odd[1].scored = Scored(0, False, 99)          # argmax outside the vector: argmax_feature null
    odd[3].scored = Scored(1, False, 0, below=True, above=False)      # a core's route interval flags
    odd[4].scored = Scored(2, True, 0, below=False, above=True)
    for e in [*sink.items, *odd]:
        fast = e.payload_json()
        assert fast == dumps(e.payload()), e
        doc = json.loads(fast.decode("utf-8"))     # strict UTF-8, strict JSON
        assert doc["id"] == e.id and len(doc["x"]) == 8
    assert json.loads(odd[1].payload_json())["fields"]["delay"] is None
    assert [(json.loads(e.payload_json()).get("below"), json.loads(e.payload_json()).get("above"))
            for e in odd[2:]] == [(None, None), (True, False), (False, True)]
    assert len({e.id for e in sink.items}) == len(sink.items)
