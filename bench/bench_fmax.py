"""Benchmark: every shipped build at the clock its board runs, against a C++ baseline on this CPU.

Usage::

    .venv/bin/python bench/bench_fmax.py [--builds up5k,hx8k,ecp5-spi,ecp5-stream] [--samples N]
                                         [--outdir build/bench] [--seed N] [--skip-builds]

For each shipped build (``mailpulse hdl build`` with the board's defaults, its parameter set
included; the ECP5 streaming core in its ``stream-bench`` top) it prints the PLL clock, the fmax,
whether timing closes at the PLL clock, the resources, and the real scoring rate at the PLL clock:
clock x 1 sample per clock for the streaming core, clock / sample period for the folded core (one
sample in flight; over SPI the iCE40/ECP5 boards are limited far lower by the link).  It adds the
PYNQ-Z2 end-to-end ceiling: 100 MHz FCLK, one 64-bit HP port carrying each sample's dense beat
(``hdl/beats.py``) into the core and its result beat back (reads and writes use the port's
separate channels).

The baseline is ``bench/c/score.cpp`` built here with ``g++ -O3 -march=native``
(``bench/cbaseline.py``): the core's job (sample beats in, result beats out), bit-exact with
``mailpulse.hdl.reference.score`` (checked on 20,000 samples before timing), on N random samples
(default 4,000,000) of each build's parameter set, on one core and on all cores (threads).  The
one-core rate is samples per CPU-second of the scoring thread (on a machine shared with other
jobs the wall clock counts time the thread waited for a core); the all-core rate is the larger of
the measured wall-clock rate and one-core rate x cores (perfect scaling, the CPU's best case).
The ratios are build rate / baseline rate.  The date and the load average are printed with them.
A build whose set carries route intervals (``zynq-r16``) is compared with the baseline of its base
set (``zynq``): the baseline scores, it does not track the routes' latency intervals.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform as host
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cbaseline import CBaseline, ToolMissing
from mailpulse.hdl.beats import RESULT_BYTES, sample_beat, sample_bytes
from mailpulse.hdl.build import BuildError, BuildReport, build, synth_xc7
from mailpulse.hdl.folded import sample_period
from mailpulse.hdl.params import CoreParams, base_set, get_params
from mailpulse.hdl.reference import CoreConfig
from mailpulse.sim.codec import random_samples

#: Shipped builds: name -> (platform, top).
BUILDS = {
    "up5k": ("ice40-up5k", "spi"),
    "hx8k": ("ice40-hx8k", "spi"),
    "ecp5-spi": ("ecp5-25f", "spi"),
    "ecp5-stream": ("ecp5-25f", "stream-bench"),
}
#: The PYNQ-Z2: the PL clock (FCLK0) and the HP port's width.
PYNQ_MHZ = 100.0
PYNQ_HP_BYTES = 8


@dataclass
class CpuRates:
    one_core: float          # samples per CPU-second, one thread
    one_core_wall: float     # samples per wall-second, one thread
    all_wall: float          # samples per wall-second, one thread per core
    cores: int

    @property
    def all_cores(self) -> float:
        return max(self.all_wall, self.one_core * self.cores)


def cpu_rates(p: CoreParams, n: int, seed: int = 0) -> CpuRates:
    lib = CBaseline.build(p)
    rng = np.random.default_rng(seed)
    cfg = CoreConfig.random(p, rng)
    x, tags = random_samples(p, rng, 20_000)
    lib.check(cfg, x, tags)
    x, tags = random_samples(p, rng, n)
    beats = sample_beat(p).pack(n, {"tag": tags, "features": x})
    out = np.empty((n, RESULT_BYTES), dtype=np.uint8)
    best_cpu = best_wall = float("inf")
    for _ in range(3):
        c0, t0 = time.process_time(), time.perf_counter()
        lib.score(beats, cfg, 1, out)
        best_cpu, best_wall = min(best_cpu, time.process_time() - c0), min(best_wall, time.perf_counter() - t0)
    cores = os.cpu_count() or 1
    return CpuRates(n / best_cpu, n / best_wall, lib.rate(cfg, beats, cores), cores)


def build_rate(r: BuildReport) -> tuple[float, str]:
    """(samples/s at the PLL clock, how it is computed)."""
    clock = r.target_mhz * 1e6
    if r.top == "stream-bench" or r.core == "stream":
        return clock, f"{r.target_mhz:.2f} MHz x 1"
    period = sample_period(get_params(r.config))
    return clock / period, f"{r.target_mhz:.2f} MHz / {period}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--builds", default=",".join(BUILDS))
    ap.add_argument("--samples", type=int, default=4_000_000)
    ap.add_argument("--outdir", type=Path, default=Path("build/bench"))
    ap.add_argument("--seed", type=int, default=None, help="nextpnr placer seed (default: each board's for its build)")
    ap.add_argument("--skip-builds", action="store_true", help="only the CPU baseline and the PYNQ-Z2 ceiling")
    args = ap.parse_args(argv)
    todo = [s for s in args.builds.split(",") if s]
    for name in todo:
        if name not in BUILDS:
            ap.error(f"unknown build {name!r}; known: {', '.join(BUILDS)}")

    reports: list[BuildReport] = []
    failures: list[str] = []
    if not args.skip_builds:
        for name in todo:
            plat, top = BUILDS[name]
            try:
                r = build(plat, None, args.outdir / name, seed=args.seed, top=top)
            except BuildError as e:
                failures.append(f"{name}: {str(e).splitlines()[0][:300]}")
                continue
            reports.append(r)
            print(r.format(), flush=True)
        try:
            print(synth_xc7("zynq", args.outdir / "xc7-zynq").format(), flush=True)
        except BuildError as e:
            failures.append(f"xc7: {str(e).splitlines()[0]}")

    try:
        configs = sorted({base_set(r.config) for r in reports} | {"zynq"})
        rates = {c: cpu_rates(get_params(c), args.samples) for c in configs}
    except ToolMissing as e:
        print(f"no C baseline: {e}", file=sys.stderr)
        return 1
    load = os.getloadavg()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cores = os.cpu_count() or 1
    print()
    print(f"{stamp}, {host.processor() or host.machine()} x {cores} cores, load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)")
    print()
    print("| build | set | PLL clock MHz | fmax MHz | closed | LUT4 | FF | RAM | rate | Msamples/s "
          "| x C, 1 core | x C, all cores |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        hw, how = build_rate(r)
        c = rates[base_set(r.config)]
        lut, ff, ram = r.usage["lut"], r.usage["ff"], r.usage["ram"]
        what = f"{r.platform} {r.top}" + (f" ({r.core})" if r.core else "")
        print(f"| {what} | {r.config} | {r.target_mhz:.2f} | {r.fmax_mhz:.1f} | {'yes' if r.timing_met else 'NO'} | "
              f"{lut.used} ({lut.percent:.0f} %) | {ff.used} | {ram.used} | {how} | {hw / 1e6:.2f} | "
              f"{hw / c.one_core:.2f} | {hw / c.all_cores:.2f} |")
    zp = get_params("zynq")
    pynq = min(PYNQ_MHZ * 1e6 * PYNQ_HP_BYTES / sample_bytes(zp), PYNQ_MHZ * 1e6 * PYNQ_HP_BYTES / RESULT_BYTES,
               PYNQ_MHZ * 1e6)
    c = rates["zynq"]
    print(f"| PYNQ-Z2 end to end (ceiling) | zynq | {PYNQ_MHZ:.0f} (FCLK0) | - | - | - | - | - | "
          f"{PYNQ_HP_BYTES} B/clk / {sample_bytes(zp)} B per sample | {pynq / 1e6:.2f} | {pynq / c.one_core:.2f} | "
          f"{pynq / c.all_cores:.2f} |")
    for f in failures:
        print(f"FAILED {f}")
    print()
    for name, c in rates.items():
        p = get_params(name)
        print(f"C baseline {name} (D={p.d}, K={p.k}, B={p.b}), {args.samples} samples, bit-exact with the model: "
              f"1 core {c.one_core / 1e6:.1f} M/s per CPU-s ({c.one_core_wall / 1e6:.1f} M/s wall), "
              f"{c.cores} cores {c.all_wall / 1e6:.1f} M/s wall, all-core figure used {c.all_cores / 1e6:.1f} M/s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
