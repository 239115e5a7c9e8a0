"""Simulation speed of the scorer RTL, in samples per second.

* bulk: the Verilator C++ harness (``mailpulse sim verify``) on small, full and zynq, 2 random
  configurations x 1M samples (the configurations of ``--seed 1``: no stall and 5 % idle), with one
  harness at a time and with one per core (target >= 1M samples/s wall with one per core).  The
  rate covers the whole phase: case generation, harnesses, model (``mailpulse.hdl.reference.score``) and the
  bit-exact comparison;
* cocotb on Verilator: ``SimCore.stream`` (cocotbext-axi drivers), one large frame (target >= 20k/s);
* cocotb on Icarus: the same on Icarus;
* the reference model ``mailpulse.hdl.reference.score`` on the CPU (numpy).

Every engine's results are compared with the model while measuring (a wrong fast number is no
number).  Builds are shared with the tests (``build/sim``); the first run builds them.  Each rate
is given per wall second and per CPU second: of the simulating process (``sim CPU``) and, for the
bulk rows, of everything (``all CPU``: harnesses + generation, model, comparison).  On a shared
machine the wall figure mostly measures the other jobs; on an idle one the bulk wall rate with
one harness per core is about ``cores x all CPU``.
``BENCH_SIM_SAMPLES`` scales the sample counts (default 1).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from mailpulse.hdl.params import get_params
from mailpulse.hdl.reference import CoreConfig, model_writes, score
from mailpulse.sim.bulk import verify
from mailpulse.sim.codec import compare, random_samples
from mailpulse.sim.device import SimCore
from mailpulse.sim.tools import have_simulator

SCALE = float(os.environ.get("BENCH_SIM_SAMPLES", "1"))


def bench_model(name: str, n: int) -> float:
    p = get_params(name)
    rng = np.random.default_rng(1)
    cfg = CoreConfig.random(p, rng)
    x, tags = random_samples(p, rng, n)
    t0 = time.perf_counter()
    score(p, cfg, x, tags)
    return n / (time.perf_counter() - t0)


def bench_device(sim: str, name: str, n: int) -> tuple[float, float]:
    p = get_params(name)
    rng = np.random.default_rng(2)
    cfg = CoreConfig.random(p, rng)
    x, tags = random_samples(p, rng, n)
    with SimCore(name, sim) as dev:
        rm = dev.regmap
        dev.write_many(model_writes(rm, cfg))
        dev.write(rm["CTRL"].address(), rm["CTRL"].field("COMMIT").mask)
        dev.cycles(100)
        t0 = time.perf_counter()
        got = dev.stream(x, tags)
        dt = time.perf_counter() - t0
        cpu = dev.last_cpu_seconds
    if compare(score(p, cfg, x, tags), got):
        raise SystemExit(f"cocotb on {sim}: results differ from the model")
    return n / dt, n / cpu if cpu else 0.0


def main() -> int:
    # (engine, set, jobs, samples/s wall, samples/s per CPU second of the simulator, per CPU second
    # of everything, target)
    rows: list[tuple[str, str, str, float, float, float | None, str]] = []
    for name in ("small", "zynq"):
        r = bench_model(name, int(1_000_000 * SCALE))
        rows.append(("model (numpy mailpulse.hdl.reference.score)", name, "1", r, r, None, ""))
    cores = os.cpu_count() or 1
    if have_simulator("verilator"):
        n = int(1_000_000 * SCALE)
        for name in ("small", "full", "zynq"):
            for jobs in sorted({1, cores}):
                rep = verify(name, n, 2, seed=1, jobs=jobs)
                if not rep.ok:
                    raise SystemExit(f"bulk: {rep.summary()}")
                rows.append(("bulk Verilator harness", name, str(jobs), rep.rate, rep.cpu_rate, rep.total_cpu_rate,
                             ">= 1M" if jobs == cores else ""))
        rows.append(("cocotb on Verilator (SimCore.stream)", "full", "1",
                     *bench_device("verilator", "full", int(30_000 * SCALE)), None, ">= 20k"))
    else:
        print("verilator is not installed: bulk and cocotb-on-Verilator skipped", file=sys.stderr)
    if have_simulator("icarus"):
        rows.append(("cocotb on Icarus (SimCore.stream)", "small", "1",
                     *bench_device("icarus", "small", int(3_000 * SCALE)), None, ""))
    print(f"load average {os.getloadavg()[0]:.1f} on {cores} CPUs")
    print(f"{'engine':38s} {'set':6s} {'jobs':>4s} {'samples/s wall':>15s} {'per sim CPU s':>14s} "
          f"{'per all CPU s':>14s}  target")
    for eng, name, jobs_s, wall, cpu, total, target in rows:
        tot = f"{total:14,.0f}" if total is not None else f"{'':14s}"
        print(f"{eng:38s} {name:6s} {jobs_s:>4s} {wall:15,.0f} {cpu:14,.0f} {tot}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
