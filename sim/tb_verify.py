"""cocotb engine of ``mailpulse sim verify --simulator icarus`` (see :mod:`mailpulse.sim.bulk`).

Regenerates the same cases as the Verilator harness from (seed, config index), runs each from
reset through the ``mailpulse_axi`` top, and writes the mismatches as JSON to
``MAILPULSE_SIM_REPORT``.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np

from .bulk import check_case, config_writes, make_case
from .codec import frame_lengths
from .tb import TB, settings


@cocotb.test()
async def test_verify(dut: object) -> None:
    params, seed, n, m = settings()
    tb = TB(dut, params, seed)
    mismatches = []
    for c in range(m):
        await tb.reset()
        case = make_case(params, seed, c, n, os.environ.get("MAILPULSE_SIM_ADVERSARIAL", "mixed"), presets=False)
        await tb.write_many(config_writes(tb.regmap, case.cfg))
        await tb.wait_quiet()
        tb.set_stress(case.idle / 1000, case.backpressure / 1000)
        tb.send(case.x, case.tags, frame_lengths(case.tlast), check=False)
        got = await tb.receive(n)
        tb.set_stress(0, 0)
        await tb.wait_quiet()
        counters = ((await tb.raw_read(tb.addr("SAMPLES")))[0], (await tb.raw_read(tb.addr("ANOMALIES")))[0])
        bad = check_case(params, case, got, counters)
        mismatches += [{"config": b.config, "index": b.index, "text": b.text} for b in bad]
        if bad:
            break
    path = os.environ.get("MAILPULSE_SIM_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump({"mismatches": mismatches, "samples": int(np.int64(n)), "configs": m}, fh)
    assert not mismatches, mismatches[0]["text"]
