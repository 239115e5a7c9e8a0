"""cocotb testbench of the ``mailpulse_spi`` top with a bit-level SPI mode-0 master (sim/tb_spi.py).

Register reads/writes (single and burst), bad addresses and read-only writes (``STATUS.BUS_ERROR``),
protocol errors, a model load, PUSH/RESULT and ``irq``, all against :class:`mailpulse.hdl.reference.EmulatedCore`.
Icarus on the small set; Verilator on the small set too (the SPI top is the iCE40 one).
"""

from __future__ import annotations

import os

import pytest
from mailpulse.sim.runner import check_cocotb
from mailpulse.sim.tools import have_simulator

TESTS = ["test_spi_registers", "test_spi_model_push", "test_spi_adaptive"]


@pytest.mark.xdist_group("sim_icarus_spi")
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_spi_top(sim: str) -> None:
    if not have_simulator(sim):
        pytest.skip(f"simulator {sim} is not installed")
    env = {"MAILPULSE_SIM_FULL_TABLE": "1"} if sim == "verilator" or os.environ.get("MAILPULSE_SOAK") == "1" else {}
    res = check_cocotb(sim, "spi", "small", "mailpulse.sim.tb_spi", testcase=TESTS, env=env,
                       seed=int(os.environ.get("MAILPULSE_SIM_SEED", "7")), tag="pytest")
    assert sorted(res.passed) == sorted(TESTS)


@pytest.mark.xdist_group("sim_icarus_spi")
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_spi_top_routes(sim: str) -> None:
    """The route intervals on the folded core through SPI (a set with R = 4 routes); on Verilator the
    first access after power-up is a bound read."""
    if not have_simulator(sim):
        pytest.skip(f"simulator {sim} is not installed")
    res = check_cocotb(sim, "spi", "small-r4", "mailpulse.sim.tb_spi", testcase=["test_spi_routes"],
                       seed=int(os.environ.get("MAILPULSE_SIM_SEED", "7")), tag="pytest")
    assert res.passed == ["test_spi_routes"], f"cocotb ran {res.passed}"
