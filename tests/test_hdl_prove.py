"""The formal proofs (mailpulse.hdl.prove, SymbiYosys): every property job passes, and every fault job
fails on the property it breaks - a property that cannot fail would prove nothing.

One pytest case per SymbiYosys job, so that ``-n 2`` runs two at once.  A job whose run is long
(the k-induction of a harness under a loaded machine) is bounded by ``JOB_TIMEOUT``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mailpulse.hdl import prove as pv

OUT = Path(__file__).resolve().parent.parent / "build" / "formal" / "pytest"
#: Seconds one job may take here (the slowest took ~130 CPU seconds on this machine).
JOB_TIMEOUT = 900.0

#: The property each fault must break (a substring of its name in hdl/formal.py).
BROKEN_BY = {
    "ready_ignores_clear": "no write into table",
    "stall_ignores_full_buffer": "samples in = out",
    "push_during_commit": "no sample taken while a commit is pending",
    "no_time_out": "answered within the bound",
}


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


@pytest.mark.parametrize("job", pv.fault_jobs(), ids=lambda j: j.name)
def test_fault_breaks_its_property(job: pv.ProofJob) -> None:
    r = pv.run_job(job, OUT, timeout=JOB_TIMEOUT)
    fault = dict(job.options)["fault"]
    assert r.status == "FAIL", r.line()
    assert any(BROKEN_BY[fault] in f for f in r.failed), r.line()


def test_every_fault_names_the_property_it_breaks() -> None:
    assert {dict(j.options)["fault"] for j in pv.fault_jobs()} <= set(BROKEN_BY)
