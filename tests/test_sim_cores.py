"""Bulk verification of every core that ships, and the register-level scenarios the bulk runs miss.

* ``mailpulse sim verify --core folded`` (the iCE40 SPI top's folded core and front end, the
  ``full`` set of the HX8K) and ``--core lut`` (the streaming core with LUT projections, the
  ``zynq`` set of the ECP5 builds): >= 1M samples each, adversarial configurations on every odd
  index, the counters preset across the 32-bit wrap on every third (``--core streaming`` is
  ``tests/test_sim_bulk.py``); the folded core also on ``small`` and ``zynq``.  ``--core spi-stream``
  (the ECP5 SPI top's core) on fewer samples.
* The preset of the counters really happens and really wraps, on both harnesses.
* The scenarios of :mod:`mailpulse.sim.scenarios` on the top of every shipped core (the AXI tops
  through ``bulk.cpp``'s script mode, the register-bus tops through ``bus.cpp``), bit-exact against
  ``EmulatedCore``: the counter wrap, shadow writes between ``COMMIT`` and its copy, and
  ``COMMIT_THRESHOLD`` racing a push (it found that a COMMIT_THRESHOLD written while a pushed
  sample was in the core changed that sample's flag: the write now waits for the push).
* The adversarial recipes reach the corners they are for.
"""

from __future__ import annotations

import os
from pathlib import Path

import mailpulse.sim.bulk as bulk
import numpy as np
import pytest
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import score
from mailpulse.sim import bulk_push as bp
from mailpulse.sim.adversarial import KINDS, adversarial_case, corners
from mailpulse.sim.scenarios import SCENARIOS, run_scenario
from mailpulse.sim.tools import have_simulator
from mailpulse.sim.verilated import build_harness, harness_header

from mailpulse.cli import main

SOAK = os.environ.get("MAILPULSE_SOAK") == "1"
SEED = os.environ.get("MAILPULSE_SIM_SEED", "1")


def need_verilator() -> None:
    if not have_simulator("verilator"):
        pytest.skip("simulator verilator is not installed")


def _verify(capsys: pytest.CaptureFixture[str], core: str, config: str, samples: int, configs: int) -> None:
    rc = main(["sim", "verify", "--core", core, "--config", config, "--samples", str(samples),
               "--configs", str(configs), "--seed", SEED])
    out = capsys.readouterr().out
    assert out == f"verified {samples} samples x {configs} configs: 0 mismatches\n", out
    assert rc == 0


@pytest.mark.xdist_group("sim_verilator_bus")
def test_verify_folded_million(capsys: pytest.CaptureFixture[str]) -> None:
    need_verilator()
    samples, configs = (1_000_000, 12) if SOAK else (200_000, 5)
    _verify(capsys, "folded", "full", samples, configs)


@pytest.mark.xdist_group("sim_verilator_bus")
@pytest.mark.parametrize("config", ["small", "zynq"])
def test_verify_folded_other_sets(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The folded core on the other shipped sets (the UP5K's ``small``; ``zynq``), fewer samples."""
    need_verilator()
    samples, configs = (1_000_000, 6) if SOAK else (100_000, 3)
    _verify(capsys, "folded", config, samples, configs)


@pytest.mark.xdist_group("sim_verilator_lut")
def test_verify_lut_million(capsys: pytest.CaptureFixture[str]) -> None:
    need_verilator()
    samples, configs = (1_000_000, 20) if SOAK else (200_000, 5)
    _verify(capsys, "lut", "zynq", samples, configs)


@pytest.mark.xdist_group("sim_verilator_bus")
def test_verify_spi_stream(capsys: pytest.CaptureFixture[str]) -> None:
    need_verilator()
    samples, configs = (1_000_000, 6) if SOAK else (20_000, 3)
    _verify(capsys, "spi-stream", "small", samples, configs)


def _run(top: str, exe: Path, p, case: bulk.Case, wd: Path) -> tuple[int, int]:
    wd.mkdir()
    if top.startswith("bus"):
        proc, t0 = bp.start_bulk(exe, p, bulk.config_writes(bulk.RegisterMap(p), case.cfg), case.x, case.tags, wd, 4,
                                 0, case.preset)
        return bp.finish_bulk(proc, t0, wd).counters
    proc, t0 = bulk._start_harness(exe, p, case, wd, 4)
    return bulk._finish_harness(proc, t0, wd).counters


@pytest.mark.xdist_group("sim_verilator_bus")
@pytest.mark.parametrize("top", ["bus", "axi_lut"])
def test_counter_preset_wraps(top: str, tmp_path: Path) -> None:
    """A preset case: SAMPLES and ANOMALIES read back below the counts of the run (both wrapped)
    and as the model says; without the preset they read the plain counts."""
    need_verilator()
    p = get_params("full" if top == "bus" else "zynq")
    exe = build_harness(p, top=top)
    case = bulk.make_case(p, 4, bulk.PRESET_EVERY - 1, 3000, adversarial="off")
    case.cfg.threshold = 0                                  # nearly every sample flagged: ANOMALIES wraps too
    case.cfg.tables = np.maximum(case.cfg.tables, 1)
    anomalies = int(score(p, case.cfg, case.x, case.tags).anomaly.sum())
    want = case.counters(anomalies)
    assert case.preset != (0, 0) and want[0] < len(case.x) and want[1] < anomalies, "the preset must wrap both"
    assert _run(top, exe, p, case, tmp_path / "preset") == want
    case.preset = (0, 0)
    assert _run(top, exe, p, case, tmp_path / "plain") == (len(case.x), anomalies)


#: --core -> (harness top, parameter set): the builds the bulk tests above make anyway.
SCENARIO_TOPS = {"streaming": ("axi", "zynq"), "lut": ("axi_lut", "zynq"), "folded": ("bus", "full"),
                 "spi-stream": ("bus_stream", "small")}


@pytest.mark.xdist_group("sim_verilator_bus")
@pytest.mark.parametrize("core", sorted(SCENARIO_TOPS))
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(core: str, name: str, tmp_path: Path) -> None:
    need_verilator()
    top, config = SCENARIO_TOPS[core]
    p = get_params(config)
    exe = build_harness(p, top=top)
    r = run_scenario(exe, p, name, int(SEED), tmp_path)
    assert r.ops > 100 and r.cycles > 1000
    assert r.mismatches == [], "\n".join(r.mismatches)


@pytest.mark.parametrize("kind", KINDS)
def test_adversarial_recipes_reach_their_corners(kind: str) -> None:
    """Each recipe hits its corners far more often than uniform random configurations and samples."""
    goals = {
        "extreme_weights": ("widest_projection", "clamp_low", "clamp_high"),
        "bin_edges": ("bin_edge",),
        "saturated_tables": ("argmax_tie",),
        "threshold_at_score": ("score_at_threshold",),
        "threshold_below_score": ("score_one_above_threshold",),
        "extreme_inputs": ("extreme_inputs", "clamp_low", "clamp_high"),
    }[kind]
    for name in ("small", "full", "zynq"):
        p = get_params(name)
        hits = {g: 0 for g in goals}
        for s in range(3):
            cfg, x = adversarial_case(p, np.random.default_rng([s, 9]), 4000, kind)
            cfg.validate(p)
            assert x.min() >= p.in_min and x.max() <= p.in_max
            c = corners(p, cfg, x)
            for g in goals:
                hits[g] += c[g]
        assert all(v >= 300 for v in hits.values()), (name, kind, hits)
    largest = sum(corners(get_params("full"), *adversarial_case(get_params("full"), np.random.default_rng([s, 3]),
                                                                 2000, "saturated_tables"))["largest_score"]
                  for s in range(4))
    assert largest > 0


def test_bulk_cases_mix_recipes_and_presets() -> None:
    p = get_params("small")
    kinds = [bulk.make_case(p, 1, c, 10).kind for c in range(2 * len(KINDS))]
    assert kinds[0::2] == ["random"] * len(KINDS) and sorted(kinds[1::2]) == sorted(KINDS)
    assert {bulk.make_case(p, 1, c, 10, adversarial="only").kind for c in range(len(KINDS))} == set(KINDS)
    assert {bulk.make_case(p, 1, c, 10, adversarial="off").kind for c in range(8)} == {"random"}
    presets = [bulk.make_case(p, 1, c, 1000).preset for c in range(6)]
    assert [pr != (0, 0) for pr in presets] == [c % bulk.PRESET_EVERY == bulk.PRESET_EVERY - 1 for c in range(6)]
    with pytest.raises(ValueError, match="adversarial setting"):
        bulk.make_case(p, 1, 0, 10, adversarial="some")


def test_harness_header_follows_the_declarations() -> None:
    """The C++ harnesses get beat sizes and addresses only from hdl/beats.py and hdl/regmap.py."""
    from mailpulse.hdl.beats import RESULT_BEAT, sample_beat
    from mailpulse.hdl.regmap import RegisterMap
    p = get_params("full")
    h = harness_header(p, {})
    rm = RegisterMap(p)
    assert f"#define MP_SAMPLE_BYTES {sample_beat(p).nbytes}\n" in h
    assert f"#define MP_RESULT_BYTES {RESULT_BEAT.nbytes}\n" in h
    assert f"#define MP_ADDR_PUSH 0x{rm['PUSH'].address():04X}u" in h
    assert "MP_SAMPLES_REG" not in h
