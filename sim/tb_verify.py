"""cocotb engine of ``mailpulse sim verify --simulator icarus`` (see :mod:`mailpulse.sim.bulk`).

Regenerates the same cases as the Verilator harness from (seed, config index), runs each from
reset through the ``mailpulse_axi`` top: results and counters (:func:`mailpulse.sim.bulk.check_case`)
and, after the samples, the registers that hold the model's state
(:func:`mailpulse.sim.plans.state_registers`: the adaptive threshold's ``THRESHOLD_ACTIVE`` and
``THRESHOLD_FRAC``) against :class:`~mailpulse.hdl.reference.EmulatedCore`.  Writes the mismatches
and, per configuration, the events its samples reach in the model (:func:`mailpulse.sim.plans.reached`)
as JSON to ``MAILPULSE_SIM_REPORT``.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np

from . import plans
from .bulk import Mismatch, check_case, config_writes, make_case
from .codec import frame_lengths
from .tb import TB, settings


@cocotb.test()
async def test_verify(dut: object) -> None:
    params, seed, n, m = settings()
    tb = TB(dut, params, seed)
    mismatches = []
    reached: dict[int, list[str]] = {}
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
        exp = tb.model.stream(case.x, case.tags)   # the model's state follows: counters, threshold
        bad = check_case(params, case, got, counters, exp=exp)
        for name in plans.state_registers(case.cfg):
            value, want = (await tb.raw_read(tb.addr(name)))[0], tb.model.read(tb.addr(name))
            if value != want:
                bad.append(Mismatch(c, -1, f"config {c} ({case.kind}): {name} reads 0x{value:08X} after the "
                                           f"samples, the model says 0x{want:08X}"))
        mismatches += [{"config": b.config, "index": b.index, "text": b.text} for b in bad]
        reached[c] = sorted(plans.reached(params, case.cfg, case.x))
        if bad:
            break
    path = os.environ.get("MAILPULSE_SIM_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump({"mismatches": mismatches, "samples": int(np.int64(n)), "configs": m, "reached": reached}, fh)
    assert not mismatches, mismatches[0]["text"]
