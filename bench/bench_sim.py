"""Simulation speed of the scorer RTL, in samples per second.

* bulk: the Verilator C++ harness (``mailpulse sim verify``), simulation time only (target >= 1M/s)
  on the full and zynq sets;
* cocotb on Verilator: ``SimCore.stream`` (cocotbext-axi drivers), one large frame (target >= 20k/s);
* cocotb on Icarus: the same on Icarus;
* the reference model ``hdl.model.score`` on the CPU (numpy).

Every engine's results are compared with the model while measuring (a wrong fast number is no
number).  Builds are shared with the tests (``build/sim``); the first run builds them.  Each rate
is given per wall second and per CPU second of the simulating process: on a shared machine the
wall figure mostly measures the other jobs.
``BENCH_SIM_SAMPLES`` scales the sample counts (default 1).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from hdl.model import CoreConfig, model_writes, score
from hdl.params import get_params
from sim.bulk import verify
from sim.codec import compare, random_samples
from sim.device import SimCore
from sim.tools import have_simulator

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
    # (engine, set, samples/s wall, samples/s per CPU second of the simulator, target)
    rows: list[tuple[str, str, float, float, str]] = []
    for name in ("small", "zynq"):
        r = bench_model(name, int(1_000_000 * SCALE))
        rows.append(("model (numpy hdl.model.score)", name, r, r, ""))
    if have_simulator("verilator"):
        n = int(200_000 * SCALE)
        for name in ("full", "zynq"):
            rep = verify(name, n, 5, seed=1)
            if not rep.ok:
                raise SystemExit(f"bulk: {rep.summary()}")
            rows.append(("bulk Verilator harness", name, rep.rate, rep.cpu_rate, ">= 1M"))
        rows.append(("cocotb on Verilator (SimCore.stream)", "full",
                     *bench_device("verilator", "full", int(30_000 * SCALE)), ">= 20k"))
    else:
        print("verilator is not installed: bulk and cocotb-on-Verilator skipped", file=sys.stderr)
    if have_simulator("icarus"):
        rows.append(("cocotb on Icarus (SimCore.stream)", "small",
                     *bench_device("icarus", "small", int(3_000 * SCALE)), ""))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'engine':40s} {'set':6s} {'samples/s wall':>15s} {'per CPU s':>12s}  target")
    for eng, name, wall, cpu, target in rows:
        print(f"{eng:40s} {name:6s} {wall:15,.0f} {cpu:12,.0f}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
