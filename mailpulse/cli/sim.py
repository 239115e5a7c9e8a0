"""``mailpulse sim ...``: simulate the scorer RTL and compare it with the reference model.

Sub-commands:

* ``sim verify [--core streaming|lut|folded|spi-stream] --config NAME --samples N --configs M --seed S
  [--adversarial mixed|only|off] [--simulator verilator|icarus]``: bulk verification of one shipped
  core (:func:`mailpulse.sim.bulk.verify`); prints ``verified N samples x M configs: 0 mismatches``
  and exits 0, or prints the first mismatches with their inputs and the waveform path and exits 1.
* ``sim test [--simulator ...] [--config ...] [--top axi|spi]``: run the cocotb testbenches.
"""

from __future__ import annotations

import argparse
import sys

from mailpulse.errors import UserError
from mailpulse.hdl.params import PARAMETER_SETS, get_params
from mailpulse.sim.bulk import ADVERSARIAL, CORES, verify
from mailpulse.sim.runner import SimulationFailed, check_cocotb
from mailpulse.sim.tools import SIMULATORS, ToolMissing

from . import prints_help


def _params_or_error(name: str) -> str:
    try:
        get_params(name)      # a set, or <set>-r<R>: the set with R route intervals
    except ValueError:
        raise UserError(f"parameter set {name!r} is unknown; known sets: {', '.join(sorted(PARAMETER_SETS))} "
                        "(<set>-r<R>: the set with R route intervals, R a power of two up to 64)") from None
    return name


def _cmd_verify(args: argparse.Namespace) -> int:
    name = _params_or_error(args.config)
    if args.samples < 1 or args.configs < 1:
        raise UserError("--samples and --configs must be at least 1")
    log = (lambda s: print(s, file=sys.stderr)) if args.verbose else None
    try:
        rep = verify(name, args.samples, args.configs, seed=args.seed, simulator=args.simulator, log=log,
                     jobs=args.jobs, core=args.core, adversarial=args.adversarial)
    except ToolMissing as e:
        raise UserError(str(e)) from e
    except ValueError as e:     # a combination the engine cannot run (icarus and a register-bus core)
        raise UserError(str(e)) from e
    if rep.ok:
        print(rep.summary())
        if args.verbose:
            print("configurations: " + ", ".join(f"{k} {v}" for k, v in sorted(rep.kinds.items())), file=sys.stderr)
            print(f"{rep.rate:,.0f} samples/s ({rep.jobs} harnesses at once, {rep.wall_seconds:.2f} s wall); "
                  f"{rep.cpu_rate:,.0f} samples per CPU second of the harnesses, {rep.total_cpu_rate:,.0f} per CPU "
                  f"second in all (harnesses + generation, model and comparison)", file=sys.stderr)
            if rep.comb_outputs:
                print(f"note: in {rep.comb_outputs} cycles an output followed an input combinationally, so the "
                      f"harness evaluated twice per clock (slower, still exact)", file=sys.stderr)
        return 0
    print(rep.summary())
    for m in rep.mismatches[:5]:
        print(f"  {m.text}")
    print(f"  reproduce: mailpulse sim verify --core {args.core} --config {name} --samples {args.samples} "
          f"--configs {args.configs} --seed {args.seed} --adversarial {args.adversarial} --simulator {args.simulator}")
    print(f"  waveform: {rep.waveform or 'not written'}")
    return 1


def _cmd_test(args: argparse.Namespace) -> int:
    name = _params_or_error(args.config)
    env = {"MAILPULSE_SIM_SAMPLES": str(args.samples), "MAILPULSE_SIM_CONFIGS": str(args.configs)}
    module = "mailpulse.sim.tb_axi" if args.top == "axi" else "mailpulse.sim.tb_spi"
    try:
        res = check_cocotb(args.simulator, args.top, name, module, env=env, seed=args.seed, tag="cli")
    except ToolMissing as e:
        raise UserError(str(e)) from e
    except SimulationFailed as e:
        print(str(e))
        return 1
    print(f"{len(res.passed)} cocotb tests passed on {args.simulator} ({args.top}, {name}): {', '.join(res.passed)}")
    return 0


def add_sim(p: argparse.ArgumentParser) -> None:
    """``mailpulse sim`` and its sub-commands."""
    sub = p.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")

    v = sub.add_parser("verify", help="bulk random verification of the RTL against mailpulse.hdl.reference")
    v.add_argument("--core", choices=tuple(CORES), default="streaming",
                   help="the core: " + "; ".join(f"{k}: {what}" for k, (_top, what) in CORES.items()))
    v.add_argument("--adversarial", choices=ADVERSARIAL, default="mixed",
                   help="adversarial configurations (mailpulse.sim.adversarial): mixed (every odd config, default), "
                        "only, off")
    v.add_argument("--config", default="full", help="parameter set (small, full, zynq; <set>-r<R>: with R route "
                                                     "intervals, e.g. small-r16)")
    v.add_argument("--samples", type=int, default=100000, help="samples per configuration")
    v.add_argument("--configs", type=int, default=4, help="random configurations")
    v.add_argument("--jobs", type=int, default=None,
                   help="harness processes at once (default: one per core; Verilator only)")
    v.add_argument("--seed", type=int, default=1, help="seed: (seed, config index) regenerates each case")
    v.add_argument("--simulator", choices=SIMULATORS, default="verilator",
                   help="verilator: C++ harness, >1M samples/s; icarus: cocotb bench, small N only")
    v.add_argument("-v", "--verbose", action="store_true", help="per-configuration progress and speed on stderr")
    v.set_defaults(func=_cmd_verify)

    t = sub.add_parser("test", help="run the cocotb testbenches of one top")
    t.add_argument("--config", default="small", help="parameter set (small, full, zynq)")
    t.add_argument("--top", choices=("axi", "spi"), default="axi")
    t.add_argument("--simulator", choices=SIMULATORS, default="icarus")
    t.add_argument("--samples", type=int, default=2000, help="samples per streaming check")
    t.add_argument("--configs", type=int, default=2, help="random configurations in test_random_configs")
    t.add_argument("--seed", type=int, default=1)
    t.set_defaults(func=_cmd_test)
    p.set_defaults(func=prints_help(p))
