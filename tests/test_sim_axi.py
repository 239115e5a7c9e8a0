"""cocotb testbenches of the ``mailpulse_axi`` top on Icarus and Verilator (sim/tb_axi.py).

Each pytest case runs the cocotb tests of one (simulator, parameter set) through cocotb's runner
and fails with the cocotb messages and the path of a waveform of the failing tests (re-run with
waves).  Sample counts: ``MAILPULSE_SIM_SAMPLES`` / ``MAILPULSE_SIM_CONFIGS`` override the CI
defaults below; ``MAILPULSE_SOAK=1`` multiplies them (10x samples, 3x configurations) and adds the
remaining (simulator, parameter set) pairs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mailpulse.sim.runner import SimulationFailed, check_cocotb
from mailpulse.sim.tools import have_simulator

SOAK = os.environ.get("MAILPULSE_SOAK") == "1"
#: Two xdist groups of about equal length so that -n 2 runs them side by side: the Verilator
#: AXI builds (bulk harness, cocotb) in one, Icarus and the SPI top in the other.
GROUP = {"verilator": "sim_verilator_axi", "icarus": "sim_icarus_spi"}
ALL_TESTS = ["test_registers", "test_random_configs", "test_clamp_and_threshold", "test_push",
             "test_reset_midstream", "test_commit_under_traffic", "test_stream_right_after_reset",
             "test_stalled_results_keep_the_bus_alive", "test_shadow_writes_between_commit_and_copy",
             "test_adaptive_threshold"]
#: The cocotb tests of a parameter set with routes (``<set>-r<R>``).
ROUTE_TESTS = ["test_route_intervals"]


def sim_env(samples: int, configs: int) -> dict[str, str]:
    s_scale, c_scale = (10, 3) if SOAK else (1, 1)
    return {"MAILPULSE_SIM_SAMPLES": os.environ.get("MAILPULSE_SIM_SAMPLES", str(samples * s_scale)),
            "MAILPULSE_SIM_CONFIGS": os.environ.get("MAILPULSE_SIM_CONFIGS", str(configs * c_scale))}


def need(sim: str) -> None:
    if not have_simulator(sim):
        pytest.skip(f"simulator {sim} is not installed")


# (simulator, set, cocotb tests, samples, configs).  Icarus (~4k samples/s) runs every test on the
# small set, Verilator every test on the full set with more samples; the zynq set is covered by the
# bulk test (tests/test_sim_bulk.py: 1M samples, loaded over AXI4-Lite by the Verilator harness).
# MAILPULSE_SOAK=1 adds the remaining (simulator, set) pairs.
CASES = [
    ("icarus", "small", ALL_TESTS, 200, 2),
    ("verilator", "full", ALL_TESTS, 3000, 4),
    # the per-route latency intervals on a set with R = 4 routes (every beat carries a route event)
    ("icarus", "small-r4", ROUTE_TESTS, 200, 1),
    ("verilator", "small-r4", ROUTE_TESTS, 400, 1),
]
if SOAK:
    CASES += [("icarus", "full", ALL_TESTS, 200, 2), ("icarus", "zynq", ALL_TESTS, 200, 2),
              ("verilator", "small", ALL_TESTS, 3000, 4), ("verilator", "zynq", ALL_TESTS, 3000, 4)]


@pytest.mark.parametrize(("sim", "params", "tests", "samples", "configs"),
                         [pytest.param(*c, marks=pytest.mark.xdist_group(GROUP[c[0]])) for c in CASES],
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_axi_top(sim: str, params: str, tests: list[str], samples: int, configs: int) -> None:
    need(sim)
    res = check_cocotb(sim, "axi", params, "mailpulse.sim.tb_axi", testcase=tests, env=sim_env(samples, configs),
                       seed=int(os.environ.get("MAILPULSE_SIM_SEED", "7")), tag="pytest")
    assert sorted(res.passed) == sorted(tests), f"cocotb ran {res.passed}, expected {tests}"


@pytest.mark.xdist_group("sim_icarus_spi")
def test_failure_leaves_waveform() -> None:
    """A failing cocotb test is re-run with waves; the error names the waveform, which exists."""
    need("icarus")
    with pytest.raises(SimulationFailed) as info:
        check_cocotb("icarus", "axi", "small", "mailpulse.sim.tb_selftest", tag="selftest")
    msg = str(info.value)
    assert "test_deliberate_failure: " in msg and "this test is meant to fail here" in msg
    assert "re-run reproduced the failure" in msg
    wave = Path(msg.split("waveform of the re-run: ", 1)[1].split(" ", 1)[0])
    assert wave.suffix in (".fst", ".vcd") and wave.exists() and wave.stat().st_size > 100, msg
