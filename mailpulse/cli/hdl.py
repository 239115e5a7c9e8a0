"""``mailpulse hdl verilog|regmap|build|synth|prove``: thin layers over :func:`mailpulse.hdl.tops.write_verilog`,
:func:`mailpulse.hdl.regdoc.regmap_text`, :mod:`mailpulse.hdl.build` and :func:`mailpulse.hdl.prove.prove`.

Exit status of ``build`` and ``synth``: 0 when the report passes its targets, 1 when the build or
synthesis ran but a target is missed (or a tool failed), 2 for bad input (unknown platform/config,
a missing tool).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailpulse.errors import UserError
from mailpulse.hdl import build as b
from mailpulse.hdl import prove as pv
from mailpulse.hdl.params import PARAMETER_SETS, get_params
from mailpulse.hdl.platforms import PLATFORMS
from mailpulse.hdl.regdoc import FORMATS, regmap_text
from mailpulse.hdl.tops import TOPS, write_verilog

from . import prints_help


def _cmd_verilog(args: argparse.Namespace) -> int:
    text = write_verilog(args.config, args.top, args.output)
    if args.output is None:
        sys.stdout.write(text)
    return 0


def _cmd_regmap(args: argparse.Namespace) -> int:
    text = regmap_text(args.config, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text)
        except OSError as e:
            raise UserError(f"cannot write {args.output}: {e.strerror}") from None
    return 0


def _run(call: Callable[[], Any], as_json: bool) -> int:
    try:
        report = call()
    except (b.ToolMissing, ValueError) as e:
        raise UserError(str(e)) from None
    except b.BuildError as e:
        print(f"mailpulse: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.format())
    return 0 if report.passed else 1


def _cmd_build(args: argparse.Namespace) -> int:
    return _run(lambda: b.build(args.platform, args.config, args.outdir, seed=args.seed, core=args.core,
                                top=args.top, clock_mhz=args.clock), args.json)


def _cmd_synth(args: argparse.Namespace) -> int:
    return _run(lambda: b.synth_xc7(args.config, args.outdir), args.json)


def _cmd_prove(args: argparse.Namespace) -> int:
    jobs = (pv.all_jobs() if args.all else pv.default_jobs()) + (pv.fault_jobs() if args.faults else [])
    if args.only:
        jobs = [j for j in jobs if any(o in j.name for o in args.only)]
        if not jobs:
            raise UserError(f"no proof job matches {', '.join(args.only)}; `mailpulse hdl prove --list` lists them")
    if args.list:
        for j in jobs:
            print(j.describe())
        return 0
    try:
        results = pv.prove(jobs, args.outdir, parallel=args.jobs, log=print, timeout=args.timeout)
    except pv.ToolMissing as e:
        raise UserError(str(e)) from None
    bad = [r for r in results if not r.ok]
    print(f"{len(results) - len(bad)} of {len(results)} proof jobs as expected" + (
        "" if not bad else "; not: " + ", ".join(r.job.name for r in bad)))
    return 1 if bad else 0


def _config_name(name: str) -> str:
    """A parameter set's name (``<set>-r<R>`` too), or argparse's one-sentence error."""
    try:
        get_params(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def add_hdl(hdl: argparse.ArgumentParser) -> None:
    """``mailpulse hdl`` and its sub-commands."""
    sub = hdl.add_subparsers(dest="hdl_command", metavar="HDL_COMMAND")
    sets = ", ".join(PARAMETER_SETS)

    v = sub.add_parser("verilog", help="generate the Verilog of a top")
    v.add_argument("--config", default="full", help=f"parameter set ({sets}; default full)")
    v.add_argument("--top", default="axi", choices=tuple(TOPS),
                   help="top: axi (mailpulse_axi), spi (mailpulse_spi), or a verification top: axi_lut, bus, "
                        "bus_stream (docs/verification.md)")
    v.add_argument("-o", "--output", type=Path, default=None, help="output file (default: stdout)")
    v.set_defaults(func=_cmd_verilog)

    r = sub.add_parser("regmap", help="print the register map")
    r.add_argument("--config", default="full", help=f"parameter set ({sets}; default full)")
    r.add_argument("--format", default="md", choices=FORMATS, help="json or md (default md)")
    r.add_argument("-o", "--output", type=Path, default=None, help="output file (default: stdout)")
    r.set_defaults(func=_cmd_regmap)

    p = sub.add_parser(
        "build",
        help="place and route a top for an iCE40/ECP5 board with open tools (YoWASP)",
        description="Build a bitstream of the mailpulse_spi top (or of the stream-bench top: the streaming "
                    "core fed and drained on chip) with Yosys + nextpnr (YoWASP), its core on a PLL clock, "
                    "and print utilisation, the PLL's clock, fmax and whether timing closes at that clock.",
    )
    p.add_argument("--platform", required=True, choices=list(PLATFORMS), help="the board")
    p.add_argument("--config", default=None, type=_config_name,
                   help="parameter set (default: the board's: " +
                        ", ".join(f"{k} -> {brd.config()}" + "".join(f" ({t}: {c})" for t, c in brd.configs.items()
                                                                   if t != "spi")
                                  for k, brd in PLATFORMS.items()) +
                        "; <set>-r<R>: the set with R route intervals, e.g. full-r16)")
    p.add_argument("-o", "--outdir", default=None,
                   help="build directory (default build/<platform>-<config>[-stream-bench])")
    p.add_argument("--top", default="spi", choices=list(b.BOARD_TOPS),
                   help="spi (mailpulse_spi, default) or stream-bench (the streaming core with its stream "
                        "handshake, fed and drained on chip; ECP5 boards)")
    p.add_argument("--core", default=None, choices=["folded", "stream"],
                   help="core inside the SPI top: folded (K clocks/sample, the default) or stream "
                        "(1 sample/clock, no stream ports)")
    p.add_argument("--clock", type=float, default=None, metavar="MHZ",
                   help="core clock to ask the board's PLL for (default: the board's clock for this build)")
    p.add_argument("--seed", type=int, default=None,
                   help="nextpnr placer seed (default: the board's for this build, see docs/builds.md)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_build)

    s = sub.add_parser(
        "synth",
        help="Yosys resource estimate of the AXI top for Xilinx 7-series (xc7z020)",
        description="Synthesise the mailpulse_axi top with Yosys synth_xilinx and print LUT/FF/BRAM/DSP use "
                    "as a share of an xc7z020. There is no open 7-series place-and-route, so no fmax.",
    )
    s.add_argument("--family", required=True, choices=["xc7"], help="device family (only xc7)")
    s.add_argument("--config", default="zynq", choices=sorted(PARAMETER_SETS), help="parameter set (default zynq)")
    s.add_argument("-o", "--outdir", default=None, help="work directory (default build/xc7-<config>)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(func=_cmd_synth)

    f = sub.add_parser(
        "prove",
        help="formal proofs with SymbiYosys: k-induction on the formal set, bounded checks of the shipped sets",
        description="Run the formal proofs of docs/verification.md (yowasp-sby, boolector): k-induction of the "
                    "streaming core (LUT, DSP), the folded core, the register bus and the SPI bridge on the formal "
                    "set; bounded checks and cover runs of both cores on every shipped set to latency + 8 cycles. "
                    "Each job prints PASS/FAIL, its time, and the names of failed properties with the "
                    "counterexample trace.",
    )
    f.add_argument("--only", action="append", default=[], metavar="TEXT",
                   help="run only the jobs whose name contains TEXT (repeatable)")
    f.add_argument("--faults", action="store_true",
                   help="also run the fault-injection jobs, each of which must FAIL")
    f.add_argument("--all", action="store_true",
                   help="also the deeper bounded checks of the shipped sets (two latencies + 8 cycles), which "
                        "make test does not run")
    f.add_argument("--jobs", type=int, default=None, help="proofs at once (default: one per core)")
    f.add_argument("--timeout", type=float, default=None, help="seconds per job (default: none)")
    f.add_argument("-o", "--outdir", type=Path, default=None, help="work directory (default build/formal)")
    f.add_argument("--list", action="store_true", help="list the jobs and exit")
    f.set_defaults(func=_cmd_prove)

    hdl.set_defaults(func=prints_help(hdl))
