"""``mailpulse hdl ...``: Verilog of the tops and the register map in JSON / Markdown.

Thin layer over :func:`write_verilog` and :func:`regmap_text`, which tests call directly.  Amaranth
is imported only when a Verilog command runs, so ``mailpulse --help`` works without it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from mailpulse.errors import UserError

from .params import PARAMETER_SETS, CoreParams, get_params
from .regmap import RegisterMap

__all__ = ["params_or_error", "register", "regmap_text", "write_verilog"]

TOP_NAMES = ("axi", "spi")


def params_or_error(name: str) -> CoreParams:
    """The named parameter set, or a :class:`UserError` that lists the known ones."""
    try:
        return get_params(name)
    except ValueError as e:
        raise UserError(str(e)) from None


def regmap_text(config: str, fmt: str) -> str:
    """The register map of parameter set ``config`` as ``json`` or ``md`` text."""
    rm = RegisterMap(params_or_error(config))
    if fmt == "json":
        return rm.to_json()
    if fmt == "md":
        return registers_markdown(rm)
    raise UserError(f"unknown register map format {fmt!r}; use json or md")


def registers_markdown(rm: RegisterMap) -> str:
    """``docs/registers.md``: the map of one set, plus the array sizes of every parameter set."""
    out = rm.to_markdown().rstrip("\n") + "\n"
    arrays = [r for r in rm if r.count > 1]
    out += "\n## Array sizes per parameter set\n\n"
    out += "| set | D | K | B | " + " | ".join(f"`{r.name}` count" for r in arrays) + " |\n"
    out += "|---|---|---|---|" + "---|" * len(arrays) + "\n"
    for name, p in PARAMETER_SETS.items():
        other = RegisterMap(p)
        out += f"| `{name}` | {p.d} | {p.k} | {p.b} | " + " | ".join(
            str(other[r.name].count) for r in arrays) + " |\n"
    return out


def write_verilog(config: str, top: str, out: Path | None) -> str:
    """Generate the Verilog of ``top`` for parameter set ``config``; write it to ``out`` if given."""
    params = params_or_error(config)
    if top not in TOP_NAMES:
        raise UserError(f"unknown top {top!r}; use one of {', '.join(TOP_NAMES)}")
    try:
        from .tops import generate_verilog
    except ImportError as e:
        raise UserError(f"generating Verilog needs Amaranth ({e.name} is missing); "
                        "install the project with the [hdl] extra") from None
    text = generate_verilog(params, top)
    if out is not None:
        try:
            out.write_text(text)
        except OSError as e:
            raise UserError(f"cannot write {out}: {e.strerror}") from None
    return text


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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mailpulse hdl`` and its sub-commands."""
    hdl = subparsers.add_parser("hdl", help="scorer core: Verilog tops, register map, builds")
    sub = hdl.add_subparsers(dest="hdl_command", metavar="HDL_COMMAND")
    sets = ", ".join(PARAMETER_SETS)

    v = sub.add_parser("verilog", help="generate the Verilog of a top")
    v.add_argument("--config", default="full", help=f"parameter set ({sets}; default full)")
    v.add_argument("--top", default="axi", choices=TOP_NAMES, help="top: axi (mailpulse_axi) or spi (mailpulse_spi)")
    v.add_argument("-o", "--output", type=Path, default=None, help="output file (default: stdout)")
    v.set_defaults(func=_cmd_verilog)

    r = sub.add_parser("regmap", help="print the register map")
    r.add_argument("--config", default="full", help=f"parameter set ({sets}; default full)")
    r.add_argument("--format", default="md", choices=("json", "md"), help="json or md (default md)")
    r.add_argument("-o", "--output", type=Path, default=None, help="output file (default: stdout)")
    r.set_defaults(func=_cmd_regmap)

    try:
        build_cli = importlib.import_module("mailpulse.hdl.build_cli")
    except ModuleNotFoundError as e:
        if e.name not in ("mailpulse.hdl.build_cli",):
            raise
    else:
        build_cli.register_hdl(sub)

    def _help(_args: argparse.Namespace) -> int:
        hdl.print_help()
        return 2

    hdl.set_defaults(func=_help)
