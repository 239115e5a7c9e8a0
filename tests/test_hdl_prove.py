"""The formal proofs (mailpulse.hdl.prove, SymbiYosys): every property job passes, and every fault job
fails on the property it breaks - a property that cannot fail would prove nothing.

One pytest case per SymbiYosys job, so that ``-n 2`` runs two at once.  A job whose run is long
(the k-induction of a harness under a loaded machine) is bounded by ``JOB_TIMEOUT``.  The jobs of
``mailpulse hdl prove --all`` that ``make test`` does not run are a soak test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mailpulse.hdl import prove as pv
from mailpulse.hdl.formal import SPI_BUS_BOUND

from mailpulse.cli import main

OUT = Path(__file__).resolve().parent.parent / "build" / "formal" / "pytest"
#: Seconds one job may take here (the slowest of make test's took ~18 s on this machine, of the soak ~70 s).
JOB_TIMEOUT = 900.0

#: The property each fault must break (a substring of its name in hdl/formal.py); a job that checks
#: the properties only (no white-box invariants) sees the loss where the result comes out.
BROKEN_BY = {
    "ready_ignores_clear": "no write into table",
    "stall_ignores_full_buffer": "samples in = out",
    "push_during_commit": "no sample taken while a commit is pending",
    "no_time_out": "answered within the bound",
    "miss_direction_swapped": "bounds = the shadow's",
    "no_upper_clamp": "bounds in 0..HI",
    "range_check_off": "untracked id or disabled: no flag",
    "range_check_off_pipelined": "untracked id or disabled: no flag",
    "seed_uncapped": "bounds in 0..HI",
    "seed_lost": "bounds = the shadow's",
    "seed_lost_pipelined": "bounds = the shadow's",
}
BROKEN_BY_PROPS_ONLY = {"stall_ignores_full_buffer": "stream order"}


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    try:
        pv.tool_bin(OUT)
    except pv.ToolMissing as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("job", pv.default_jobs(), ids=lambda j: j.name)
def test_property_holds(job: pv.ProofJob) -> None:
    r = pv.run_job(job, OUT, timeout=JOB_TIMEOUT)
    assert r.ok, r.line()


@pytest.mark.soak
@pytest.mark.parametrize("job", [j for j in pv.all_jobs() if j not in pv.default_jobs()], ids=lambda j: j.name)
def test_property_holds_soak(job: pv.ProofJob) -> None:
    r = pv.run_job(job, OUT, timeout=JOB_TIMEOUT)
    assert r.ok, r.line()


@pytest.mark.parametrize("job", pv.fault_jobs(), ids=lambda j: j.name)
def test_fault_breaks_its_property(job: pv.ProofJob) -> None:
    r = pv.run_job(job, OUT, timeout=JOB_TIMEOUT)
    opts = dict(job.options)
    fault = opts["fault"]
    broken = BROKEN_BY_PROPS_ONLY.get(fault, BROKEN_BY[fault]) if opts.get("props_only") else BROKEN_BY[fault]
    assert r.status == "FAIL", r.line()
    assert any(broken in f for f in r.failed), r.line()


def test_every_fault_names_the_property_it_breaks() -> None:
    assert {dict(j.options)["fault"] for j in pv.fault_jobs()} <= set(BROKEN_BY)


def test_spi_proof_needs_the_bus_bound() -> None:
    """With a bus that may answer one clock later than SPI_BUS_BOUND the first read word can reach
    the bridge after the dummy byte ended: the induction fails on the word the host reads."""
    job = pv.ProofJob("spi", "formal", "prove", 6, (("bus_bound", SPI_BUS_BOUND + 1),), expect="UNKNOWN")
    r = pv.run_job(job, OUT, timeout=JOB_TIMEOUT)
    assert r.status != "PASS", r.line()
    assert any("read word" in f for f in r.failed), r.line()


def test_list_says_how_each_job_proves_what_where(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hdl", "prove", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(pv.default_jobs())
    spi = next(line for line in out if line.startswith("spi-"))
    assert "k-induction of depth 6" in spi and "SPIBridgeHarness on formal (D=2 K=2 B=4)" in spi
    zynq = next(line for line in out if line.startswith("stream-free_tables-props_only-zynq-bmc"))
    assert "bounded check of 24 cycles from reset" in zynq and "on zynq (D=8 K=32 B=128)" in zynq
