"""``mailpulse hdl build`` and ``mailpulse hdl synth``: thin layers over :mod:`mailpulse.hdl.build`.

``mailpulse.hdl.cli`` calls :func:`register_hdl` with the ``mailpulse hdl`` sub-parsers.  Exit status: 0 when
the report passes its targets, 1 when the build or synthesis ran but a target is missed (or a tool
failed), 2 for bad input (unknown platform/config, a missing tool).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mailpulse.errors import UserError

from .params import PARAMETER_SETS
from .platforms import PLATFORMS


def register_hdl(hdl_subparsers: Any) -> None:
    """Add ``build`` and ``synth`` to the ``mailpulse hdl`` sub-command parsers."""
    p = hdl_subparsers.add_parser(
        "build",
        help="place and route the SPI top for an iCE40/ECP5 board with open tools (YoWASP)",
        description="Build a bitstream of the mailpulse_spi top with Yosys + nextpnr (YoWASP) and print "
                    "utilisation and fmax against the parameter set's target.",
    )
    p.add_argument("--platform", required=True, choices=list(PLATFORMS), help="the board")
    p.add_argument("--config", default=None, choices=sorted(PARAMETER_SETS),
                   help="parameter set (default: the board's: " +
                        ", ".join(f"{k} -> {b.default_config}" for k, b in PLATFORMS.items()) + ")")
    p.add_argument("-o", "--outdir", default=None, help="build directory (default build/<platform>-<config>)")
    p.add_argument("--core", default=None, choices=["folded", "stream"],
                   help="core inside the SPI top: folded (K clocks/sample) or stream (1 sample/clock); "
                        "default folded on iCE40, stream on ECP5")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_build)

    s = hdl_subparsers.add_parser(
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


def _run(call: Any, as_json: bool) -> int:
    from . import build as b

    try:
        report = call()
    except b.ToolMissing as e:
        raise UserError(str(e)) from None
    except ValueError as e:
        raise UserError(str(e)) from None
    except b.BuildError as e:
        print(f"mailpulse: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.format())
    return 0 if report.passed else 1


def _cmd_build(args: argparse.Namespace) -> int:
    from .build import build

    return _run(lambda: build(args.platform, args.config, args.outdir, seed=args.seed, core=args.core), args.json)


def _cmd_synth(args: argparse.Namespace) -> int:
    from .build import synth_xc7

    return _run(lambda: synth_xc7(args.config, args.outdir), args.json)
