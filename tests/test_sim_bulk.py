"""Bulk verification of the RTL against the model (sim/bulk.py, ``mailpulse sim verify``).

* >= 1M random samples (5 random configurations x 200k) of the zynq set through the Verilator
  harness, via the CLI, which must print exactly one line.
* The cocotb/Icarus engine on a few hundred samples.
* The checker itself: a corrupted model makes ``verify`` fail, print the inputs and leave a
  waveform; each kind of corruption of a result is caught.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import sim.bulk as bulk
from hdl.model import score
from hdl.params import get_params
from mailpulse.cli import main
from sim.codec import StreamResults
from sim.tools import have_simulator

SOAK = os.environ.get("MAILPULSE_SOAK") == "1"


def need(sim: str) -> None:
    if not have_simulator(sim):
        pytest.skip(f"simulator {sim} is not installed")


@pytest.mark.xdist_group("sim_verilator_axi")
def test_verify_million_samples(capsys: pytest.CaptureFixture[str]) -> None:
    need("verilator")
    samples, configs = (1_000_000, 20) if SOAK else (200_000, 5)
    rc = main(["sim", "verify", "--config", "zynq", "--samples", str(samples), "--configs", str(configs),
               "--seed", os.environ.get("MAILPULSE_SIM_SEED", "1")])
    out = capsys.readouterr().out
    assert out == f"verified {samples} samples x {configs} configs: 0 mismatches\n", out
    assert rc == 0


@pytest.mark.xdist_group("sim_verilator_axi")
def test_verify_reports_mismatch_with_waveform(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong expectation for sample 123 of config 1: exit 1, the inputs printed, a VCD written."""
    need("verilator")
    real = bulk.score

    def corrupted(params, cfg, x, tags=None):
        r = real(params, cfg, x, tags)
        if len(r) > 123 and int(cfg.offsets[0]) == int(bulk.make_case(params, 1, 1, 1).cfg.offsets[0]):
            r.score[123] += 1
        return r

    monkeypatch.setattr(bulk, "score", corrupted)
    rc = main(["sim", "verify", "--config", "zynq", "--samples", "500", "--configs", "3", "--seed", "1"])
    out = capsys.readouterr().out
    assert rc == 1
    lines = out.splitlines()
    assert lines[0].startswith("verified 500 samples x 3 configs: ") and not lines[0].endswith(": 0 mismatches")
    assert "config 1 sample 123: x=[" in out
    wave = next(line.split("waveform: ", 1)[1] for line in lines if "waveform: " in line)
    assert wave.endswith(".vcd") and os.path.getsize(wave) > 1000, wave


@pytest.mark.xdist_group("sim_icarus_spi")
def test_verify_icarus() -> None:
    need("icarus")
    rep = bulk.verify("small", samples=300, configs=2, seed=3, simulator="icarus")
    assert rep.ok, [m.text for m in rep.mismatches]
    assert rep.summary() == "verified 300 samples x 2 configs: 0 mismatches"


def test_checker_catches_every_field() -> None:
    """check_case flags each corrupted output field, tlast, stray bits and counters."""
    p = get_params("small")
    case = bulk.make_case(p, 9, 0, 300)
    exp = score(p, case.cfg, case.x, case.tags)

    def results() -> StreamResults:
        return StreamResults(score=exp.score.copy(), anomaly=exp.anomaly.copy(), argmax=exp.argmax.copy(),
                             tag=exp.tag.copy(), tlast=case.tlast.copy())

    counters = (300, int(exp.anomaly.sum()))
    assert bulk.check_case(p, case, results(), counters) == []
    for name in ("score", "anomaly", "argmax", "tag", "tlast"):
        r = results()
        arr = getattr(r, name)
        arr[77] = arr[77] ^ 1
        bad = bulk.check_case(p, case, r, counters)
        assert bad and bad[0].index == 77 and f"x={case.x[77].tolist()}" in bad[0].text, name
    r = results()
    r.stray_bits = 1 << 100
    assert bulk.check_case(p, case, r, counters)
    assert bulk.check_case(p, case, results(), (299, counters[1]))
    short = results()
    for name in ("score", "anomaly", "argmax", "tag", "tlast"):
        setattr(short, name, getattr(short, name)[:-1])
    assert bulk.check_case(p, case, short, counters)
    # every case is regenerated identically from (seed, index)
    again = bulk.make_case(p, 9, 0, 300)
    assert np.array_equal(again.x, case.x) and np.array_equal(again.cfg.tables, case.cfg.tables)


def test_cli_rejects_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "verify", "--config", "nope"]) == 2
    assert "parameter set 'nope' is unknown" in capsys.readouterr().err
    assert main(["sim", "verify", "--config", "small", "--samples", "0"]) == 2
    assert "--samples and --configs must be at least 1" in capsys.readouterr().err
