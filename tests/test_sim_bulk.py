"""Bulk verification of the RTL against the model (sim/bulk.py, ``mailpulse sim verify``).

* >= 1M random samples (5 random configurations x 200k) of the zynq set through the Verilator
  harness, via the CLI, which must print exactly one line.
* The cocotb/Icarus engine on a few hundred samples of four configurations (two of them adaptive).
* The checker itself: a corrupted model makes ``verify`` fail, print the inputs and leave a
  waveform; each kind of corruption of a result is caught.
* The harness' one-eval-per-clock scheme: on a stand-in top whose ``s_axis.tready`` follows
  ``m_axis.tready`` combinationally it detects that, falls back to two evals and stays exact.
"""

from __future__ import annotations

import os
from pathlib import Path

import mailpulse.sim.bulk as bulk
import numpy as np
import pytest
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import score
from mailpulse.sim.codec import StreamResults
from mailpulse.sim.tools import have_simulator

from mailpulse.cli import main

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
    # the small set: the failure builds the traced harness, which for small takes a third of the time
    rc = main(["sim", "verify", "--config", "small", "--samples", "500", "--configs", "3", "--seed", "1"])
    out = capsys.readouterr().out
    assert rc == 1
    lines = out.splitlines()
    assert lines[0].startswith("verified 500 samples x 3 configs: ") and not lines[0].endswith(": 0 mismatches")
    assert f"config 1 ({bulk.case_kind(1)}) sample 123: x=[" in out
    wave = next(line.split("waveform: ", 1)[1] for line in lines if "waveform: " in line)
    assert wave.endswith(".vcd") and os.path.getsize(wave) > 1000, wave


@pytest.mark.xdist_group("sim_icarus_spi")
def test_verify_icarus() -> None:
    """The cocotb engine on four configurations: 2 and 3 adapt their threshold (ADAPT_AT), and on
    these samples it moves and is clamped at T_MAX; flags, counters, THRESHOLD_ACTIVE and
    THRESHOLD_FRAC after the samples are compared with the model."""
    need("icarus")
    rep = bulk.verify("small", samples=300, configs=4, seed=3, simulator="icarus")
    assert rep.ok, [m.text for m in rep.mismatches]
    assert rep.summary() == "verified 300 samples x 4 configs: 0 mismatches"
    adaptive = [c for c in range(4) if c % bulk.ADAPT_EVERY in bulk.ADAPT_AT]
    assert sorted(rep.reached) == [0, 1, 2, 3], rep.reached
    for c in adaptive:
        assert {"adapt:moved", "adapt:free", "adapt:t_max"} <= set(rep.reached[c]), (c, rep.reached)


@pytest.mark.xdist_group("sim_icarus_spi")
def test_verify_icarus_routes() -> None:
    """The cocotb engine on a set with routes: the events travel in the beats, the bounds are seeded
    after the commit and read back after the samples; the counts and the route events reached
    (a miss that widened its bound among them) are reported."""
    need("icarus")
    rep = bulk.verify("small-r4", samples=300, configs=3, seed=3, simulator="icarus")
    assert rep.ok, [m.text for m in rep.mismatches]
    assert rep.route_events == 900 and 0 < rep.route_tracked < 900, rep.summary()
    assert rep.route_below > 0 and rep.route_above > 0, rep.summary()
    assert any({"routes:below", "routes:above", "routes:widened", "routes:untracked"} <= set(ev)
               for ev in rep.reached.values()), rep.reached


#: A stand-in for mailpulse_axi: AXI4-Lite always answers OKAY with 0, the stream is a one-beat
#: register whose s_axis.tready is combinational from m_axis.tready (AXI allows that; the core
#: does not do it) and which returns the low 64 bits of each (160-bit, D = 8) sample beat.
COMB_STUB = """
module mailpulse_axi(input aclk, input aresetn,
  input [15:0] s_axil__awaddr, input [2:0] s_axil__awprot, input s_axil__awvalid, output s_axil__awready,
  input [31:0] s_axil__wdata, input [3:0] s_axil__wstrb, input s_axil__wvalid, output s_axil__wready,
  output reg s_axil__bvalid, output [1:0] s_axil__bresp, input s_axil__bready,
  input [15:0] s_axil__araddr, input [2:0] s_axil__arprot, input s_axil__arvalid, output s_axil__arready,
  output reg s_axil__rvalid, output [31:0] s_axil__rdata, output [1:0] s_axil__rresp, input s_axil__rready,
  input [159:0] s_axis__tdata, input s_axis__tvalid, input s_axis__tlast, output s_axis__tready,
  output [63:0] m_axis__tdata, output m_axis__tvalid, output m_axis__tlast, input m_axis__tready);
  assign s_axil__awready = 1; assign s_axil__wready = 1; assign s_axil__bresp = 0;
  assign s_axil__arready = 1; assign s_axil__rdata = 0; assign s_axil__rresp = 0;
  always @(posedge aclk) begin
    s_axil__bvalid <= s_axil__awvalid & s_axil__wvalid;
    s_axil__rvalid <= s_axil__arvalid;
  end
  reg full; reg [63:0] data; reg last;
  assign s_axis__tready = !full || m_axis__tready;
  assign m_axis__tvalid = full; assign m_axis__tdata = data; assign m_axis__tlast = last;
  always @(posedge aclk) begin
    if (!aresetn) full <= 0;
    else if (s_axis__tvalid && s_axis__tready) begin full <= 1; data <= s_axis__tdata[63:0]; last <= s_axis__tlast; end
    else if (m_axis__tready) full <= 0;
  end
endmodule
"""


@pytest.mark.xdist_group("sim_verilator_axi")
def test_harness_detects_combinational_outputs(tmp_path: Path) -> None:
    need("verilator")
    src = tmp_path / "stub.v"
    src.write_text(COMB_STUB)
    p = get_params("small")
    exe = bulk.verilate_harness(src, tmp_path / "obj", [*bulk.BULK_VERILATOR_ARGS, *bulk.FAST_BUILD_ARGS],
                                header=bulk.harness_header(p, {}))
    case = bulk.make_case(p, 5, 3, 3000)        # index 3: 20% idle, 30% back-pressure
    assert (case.idle, case.backpressure) == (200, 300)
    proc, t0 = bulk._start_harness(exe, p, case, tmp_path, 5)
    run = bulk._finish_harness(proc, t0, tmp_path)
    assert run.comb_outputs > 0
    assert case.beats is not None
    assert np.array_equal(run.words, case.beats.view("<u4")[:, :2]), "the two-eval fallback lost or repeated beats"
    assert np.array_equal(run.tlast, case.tlast)


def test_checker_catches_every_field() -> None:
    """check_case flags each corrupted output field, tlast, stray bits and counters."""
    p = get_params("small")
    case = bulk.make_case(p, 9, 0, 300)
    exp = score(p, case.cfg, case.x, case.tags)

    def results() -> StreamResults:
        return StreamResults(score=exp.score.copy(), anomaly=exp.anomaly.copy(), argmax=exp.argmax.copy(),
                             tag=exp.tag.copy(), tlast=case.tlast.astype(np.int64))

    counters = (300, int(exp.anomaly.sum()))
    assert bulk.check_case(p, case, results(), counters) == []
    for name in ("score", "anomaly", "argmax", "tag", "tlast"):
        r = results()
        arr = getattr(r, name)
        arr[77] = arr[77] ^ 1
        bad = bulk.check_case(p, case, r, counters)
        assert bad and bad[0].index == 77 and f"x={case.x[77].tolist()}" in bad[0].text, name
    r = results()
    r.stray_bits = 1 << 40
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


def test_bulk_cases_adapt_the_threshold() -> None:
    """Configurations at ADAPT_AT (mod ADAPT_EVERY) run with the adaptive threshold, and on their
    samples it moves: the flags differ from those of the seed threshold held still."""
    p = get_params("small")
    for index in range(8):
        case = bulk.make_case(p, 1, index, 4000)
        assert case.cfg.adapt.enable == (index % bulk.ADAPT_EVERY in bulk.ADAPT_AT), index
        if case.cfg.adapt.enable:
            r = score(p, case.cfg, case.x, case.tags)
            assert r.acc is not None, index
            assert not np.array_equal(r.anomaly, (r.score > case.cfg.threshold).astype(np.int64)), index


@pytest.mark.xdist_group("sim_verilator_axi")
@pytest.mark.parametrize("core", ["streaming", "folded"])
def test_verify_catches_a_model_without_adaptation(core: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The RTL adapts its threshold in the bulk configurations that enable it: checked against a
    model that holds the threshold still, configuration 2 (the first adaptive one) mismatches."""
    need("verilator")
    real = bulk.score

    def fixed(params, cfg, x, tags=None, acc=None):
        c = cfg.copy()
        c.adapt.enable = 0
        return real(params, c, x, tags)

    monkeypatch.setattr(bulk, "score", fixed)
    rep = bulk.verify("small", samples=3000, configs=3, seed=1, core=core)
    assert {m.config for m in rep.mismatches} == {2}, [m.text for m in rep.mismatches]


def test_checker_catches_route_flags() -> None:
    """With routes (a ``<set>-r<R>`` set): the cases carry route events in their beats, seeded
    bounds and a route configuration; check_case flags a flipped below or above flag."""
    p = get_params("small-r4")
    case = bulk.make_case(p, 9, 0, 400)
    assert case.routes is not None and case.latencies is not None and len(case.bound_writes) == 2 * p.r
    assert (np.asarray(case.routes) >= p.r).any() and (np.asarray(case.routes) < p.r).any()
    exp = bulk.expected(p, case)
    assert exp.below is not None and exp.above is not None

    def results() -> StreamResults:
        assert exp.below is not None and exp.above is not None
        return StreamResults(score=exp.score.copy(), anomaly=exp.anomaly.copy(), argmax=exp.argmax.copy(),
                             tag=exp.tag.copy(), tlast=case.tlast.astype(np.int64), below=exp.below.copy(),
                             above=exp.above.copy())

    counters = (400, int(exp.anomaly.sum()))
    assert bulk.check_case(p, case, results(), counters) == []
    for name in ("below", "above"):
        r = results()
        arr = getattr(r, name)
        arr[55] ^= 1
        bad = bulk.check_case(p, case, r, counters)
        assert bad and bad[0].index == 55 and f"route={int(case.routes[55])}" in bad[0].text, name


@pytest.mark.xdist_group("sim_verilator_axi")
@pytest.mark.parametrize("core", ["streaming", "folded"])
def test_verify_route_intervals(core: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A set with 16 route intervals through the harness of each core: every event's flags as
    :func:`mailpulse.hdl.reference.route_intervals` says, both flags seen; then a model with one
    flag flipped (in configuration 1) is caught."""
    need("verilator")
    samples = 100_000 if SOAK else 20_000
    assert main(["sim", "verify", "--core", core, "--config", "small-r16", "--samples", str(samples),
                 "--configs", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"verified {samples} samples x 3 configs (route intervals: {3 * samples} events, "), out
    assert out.endswith(": 0 mismatches\n"), out
    real = bulk.expected

    def flipped(params, case):
        r = real(params, case)
        if case.index == 1:
            assert r.below is not None
            r.below[int(np.flatnonzero(r.below)[0])] ^= 1
        return r

    monkeypatch.setattr(bulk, "expected", flipped)
    rep = bulk.verify("small-r16", samples=2000, configs=2, seed=1, core=core)
    assert {m.config for m in rep.mismatches} == {1}, [m.text for m in rep.mismatches]
