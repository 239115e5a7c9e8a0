"""cocotb engine of ``mailpulse sim verify --simulator icarus`` (see :mod:`mailpulse.sim.bulk`).

Regenerates the same cases as the Verilator harness from (seed, config index), runs each from
reset through the ``mailpulse_axi`` top: results and counters (:func:`mailpulse.sim.bulk.check_case`)
and, after the samples, the registers that hold the model's state
(:func:`mailpulse.sim.plans.state_registers`: the adaptive threshold's ``THRESHOLD_ACTIVE`` and
``THRESHOLD_FRAC``) against :class:`~mailpulse.hdl.reference.EmulatedCore`.  With routes (a
``<set>-r<R>`` set) the case's bounds are seeded after the commit, its route events travel in the
beats, and every ``ROUTE_BOUND`` is read back after the samples too (the Verilator harnesses
compare only the flags).  Writes the mismatches, per configuration the events its samples reach in
the model (:func:`mailpulse.sim.plans.reached`, with routes also
:func:`mailpulse.sim.plans.route_reached`) and the route counts (events, tracked, below, above) as
JSON to ``MAILPULSE_SIM_REPORT``.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from mailpulse.hdl.reference import route_seed

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
    counts = [0, 0, 0, 0]
    for c in range(m):
        await tb.reset()
        case = make_case(params, seed, c, n, os.environ.get("MAILPULSE_SIM_ADVERSARIAL", "mixed"), presets=False)
        await tb.write_many(config_writes(tb.regmap, case.cfg, case.bound_writes))
        await tb.wait_quiet()
        routes = lats = None
        if params.r and case.routes is not None and case.latencies is not None:
            routes, lats = np.asarray(case.routes, dtype=np.int64), np.asarray(case.latencies, dtype=np.int64)
        tb.set_stress(case.idle / 1000, case.backpressure / 1000)
        tb.send(case.x, case.tags, frame_lengths(case.tlast), check=False, routes=routes, latencies=lats)
        got = await tb.receive(n)
        tb.set_stress(0, 0)
        await tb.wait_quiet()
        counters = ((await tb.raw_read(tb.addr("SAMPLES")))[0], (await tb.raw_read(tb.addr("ANOMALIES")))[0])
        exp = tb.model.stream(case.x, case.tags, routes, lats)   # the model's state: counters, threshold, bounds
        bad = check_case(params, case, got, counters, exp=exp)
        state = [(name, tb.addr(name)) for name in plans.state_registers(case.cfg)]
        state += [(f"ROUTE_BOUND[{i}]", tb.addr("ROUTE_BOUND", i)) for i in range(2 * params.r)]
        for name, addr in state:
            value, want = (await tb.raw_read(addr))[0], tb.model.read(addr)
            if value != want:
                bad.append(Mismatch(c, -1, f"config {c} ({case.kind}): {name} reads 0x{value:08X} after the "
                                           f"samples, the model says 0x{want:08X}"))
        mismatches += [{"config": b.config, "index": b.index, "text": b.text} for b in bad]
        reached[c] = sorted(plans.reached(params, case.cfg, case.x))
        if routes is not None and lats is not None:
            seeds = [route_seed(v) for v in case.bound_writes]
            reached[c] = sorted({*reached[c], *plans.route_reached(routes, lats, seeds[0::2], seeds[1::2],
                                                                    case.cfg.routes)})
            if case.cfg.routes.enable and exp.below is not None and exp.above is not None:
                counts = [counts[0] + n, counts[1] + int((routes < params.r).sum()), counts[2] + int(exp.below.sum()),
                          counts[3] + int(exp.above.sum())]
            else:
                counts[0] += n
        if bad:
            break
    path = os.environ.get("MAILPULSE_SIM_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump({"mismatches": mismatches, "samples": int(np.int64(n)), "configs": m, "reached": reached,
                       "routes": counts}, fh)
    assert not mismatches, mismatches[0]["text"]
