"""Benchmark: fmax and utilisation of every open-tool build, the xc7 estimate, and the hardware
scoring rate against the CPU (the bit-exact reference model and PyOD's LODA).

Usage::

    .venv/bin/python bench/bench_fmax.py [--platforms ice40-up5k,ice40-hx8k,ecp5-25f] [--samples N]
                                         [--outdir build/bench] [--seed 1] [--skip-builds]

Each board is built with its default parameter set and core (``ecp5-85f`` is also built when the
25F does not fit).  The hardware rate is fmax x samples per clock: 1 for the streaming core (fully
pipelined; the Zynq IP and the ECP5 timing check), 1 / (latency + 1) for the folded core of the
iCE40 SPI tops (one sample in flight; its real rate is bounded far lower by the SPI link: ~D+2
register writes per sample).  The CPU rates are measured here on N random samples (default
1,000,000) of each build's own parameter set: ``mailpulse.hdl.reference.score`` (numpy, integer, bit-exact) and
``pyod.models.loda.LODA`` fit + decision_function with the same number of projections (K) and
bins (B).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from mailpulse.hdl.build import BuildError, BuildReport, SynthReport, build, synth_xc7
from mailpulse.hdl.folded import sample_period
from mailpulse.hdl.params import get_params
from mailpulse.hdl.platforms import PLATFORMS
from mailpulse.hdl.reference import CoreConfig, score


def cpu_rates(n: int, config: str = "full", seed: int = 0) -> dict[str, float]:
    """Samples per second of the reference model and of PyOD LODA on n random samples of ``config``."""
    p = get_params(config)
    rng = np.random.default_rng(seed)
    x = rng.integers(p.in_min, p.in_max + 1, size=(n, p.d), dtype=np.int64)
    cfg = CoreConfig.random(p, rng)
    t0 = time.perf_counter()
    score(p, cfg, x)
    rates = {"model": n / (time.perf_counter() - t0)}
    try:
        from pyod.models.loda import LODA
    except ImportError:
        print("pyod is not installed: no LODA rate", file=sys.stderr)
        return rates
    xf = x.astype(np.float64)
    det = LODA(n_bins=p.b, n_random_cuts=p.k, random_state=seed)
    t0 = time.perf_counter()
    det.fit(xf)
    det.decision_function(xf)
    rates["loda"] = n / (time.perf_counter() - t0)
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--platforms", default="ice40-up5k,ice40-hx8k,ecp5-25f")
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--outdir", type=Path, default=Path("build/bench"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-builds", action="store_true", help="only the CPU rates")
    args = ap.parse_args(argv)

    reports: list[BuildReport] = []
    failures: list[str] = []
    synth: SynthReport | None = None
    if not args.skip_builds:
        todo = [s for s in args.platforms.split(",") if s]
        for name in todo:
            if name not in PLATFORMS:
                ap.error(f"unknown platform {name!r}")
        for name in todo:
            try:
                r = build(name, None, args.outdir / name, seed=args.seed)
            except BuildError as e:
                first = str(e).splitlines()
                failures.append(f"{name}: " + " ".join(x for x in first if "ERROR" in x or "failed" in x)[:300])
                if name == "ecp5-25f" and "ecp5-85f" not in todo:
                    todo.append("ecp5-85f")
                continue
            reports.append(r)
            print(r.format(), flush=True)
            if name == "ecp5-25f" and not r.fits and "ecp5-85f" not in todo:
                todo.append("ecp5-85f")
        try:
            synth = synth_xc7("zynq", args.outdir / "xc7-zynq")
            print(synth.format(), flush=True)
        except BuildError as e:
            failures.append(f"xc7: {str(e).splitlines()[0]}")

    configs = sorted({r.config for r in reports} | {"full"})
    rates_by = {c: cpu_rates(args.samples, c) for c in configs}

    print()
    print("| platform | config | core | LUT4 | FF | RAM | fmax MHz | target | met | samples/clk | Msamples/s "
          "| x model | x LODA |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        rates = rates_by[r.config]
        period = 1 if r.core == "stream" else sample_period(get_params(r.config))
        per_clk = 1.0 / period
        hw = r.fmax_mhz * 1e6 * per_clk
        lut, ff, ram = r.usage["lut"], r.usage["ff"], r.usage["ram"]
        cells = [
            r.platform, r.config, r.core,
            f"{lut.used} ({lut.percent:.0f} %)", f"{ff.used} ({ff.percent:.0f} %)", f"{ram.used} ({ram.percent:.0f} %)",
            f"{r.fmax_mhz:.1f}", f"{r.target_mhz:.0f}", "yes" if r.timing_met else "NO",
            "1" if period == 1 else f"1/{period}", f"{hw / 1e6:.1f}", f"{hw / rates['model']:.0f}",
            f"{hw / rates['loda']:.0f}" if "loda" in rates else "-",
        ]
        print("| " + " | ".join(cells) + " |")
    if synth is not None:
        print(f"| xc7z020 (estimate) | {synth.config} | stream | {synth.lut} ({synth.percent('lut'):.1f} %) | "
              f"{synth.ff} ({synth.percent('ff'):.1f} %) | {synth.bram36:g} BRAM36 ({synth.percent('bram36'):.0f} %) | "
              f"- | 150 | - | 1 | - | - | - |")
    for f in failures:
        print(f"FAILED {f}")
    print()
    for c in configs:
        p = get_params(c)
        rates = rates_by[c]
        print(f"CPU, {args.samples} samples, {c} (D={p.d}, K={p.k}, B={p.b}):")
        print(f"  mailpulse.hdl.reference.score      {rates['model'] / 1e6:8.3f} Msamples/s")
        if "loda" in rates:
            print(f"  pyod LODA fit+score  {rates['loda'] / 1e6:8.3f} Msamples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
