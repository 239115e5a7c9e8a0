"""A cocotb test that must fail: it checks that a failing simulation is reported with a waveform.

Used only by ``tests/test_sim_axi.py::test_failure_leaves_waveform``.  It reads ``ID`` and demands
a value one off the documented one, so it fails exactly when the bench itself works.
"""

from __future__ import annotations

import cocotb
from mailpulse.hdl.regmap import CORE_ID

from .tb import TB, settings


@cocotb.test()
async def test_deliberate_failure(dut: object) -> None:
    params, seed, _n, _m = settings()
    tb = TB(dut, params, seed)
    await tb.reset()
    value, _resp = await tb.raw_read(tb.addr("ID"))
    assert value == CORE_ID + 1, f"ID reads 0x{value:08X} (this test is meant to fail here)"
