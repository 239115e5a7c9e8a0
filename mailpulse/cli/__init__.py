"""The ``mailpulse`` command line: one sub-command per job, each a thin layer over a library call.

The commands are declared once, in :data:`COMMANDS`: name, one-line help and the module of
``mailpulse.cli`` that implements it.  Parsing happens in two stages so that ``mailpulse --help``
and every command whose optional packages are installed work whatever else is missing: the top
parser knows each command only by its name and help; the module of the command being run is
imported, and adds that command's real parser, only once the command is known.  A module that
fails to import because an optional package is not installed becomes one sentence naming the
extra to install, and status 2.

Each command module has one ``add_<command>(parser)`` per command it implements (``add_score``,
``add_bitstream``, ...), which fills in the parser that :func:`build_parser` made for it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailpulse import __doc__ as _package_doc
from mailpulse import __version__
from mailpulse.errors import UserError, missing_package

__all__ = ["COMMANDS", "Command", "build_parser", "main", "prints_help"]


@dataclass(frozen=True)
class Command:
    """One ``mailpulse`` sub-command: its name, its one-line help, the ``mailpulse.cli`` module
    that implements it."""

    name: str
    module: str
    help: str

    @property
    def adder(self) -> str:
        """The name of the module's function that fills in this command's parser."""
        return "add_" + self.name.replace("-", "_")


#: Every command, in the order ``mailpulse --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    Command("hdl", "hdl", "scorer core: Verilog tops, register map, builds"),
    Command("sim", "sim", "simulate the scorer RTL (cocotb, Verilator, Icarus) against the model"),
    Command("train", "train", "learn a scorer model (projections, tables, threshold) from data"),
    Command("evaluate", "train", "ROC AUC / AP of a model (quantised and float) on labelled data"),
    Command("score", "bridge", "score a data file through a scorer backend"),
    Command("bitstream", "bridge", "load a bitstream into an FPGA"),
    Command("inspect", "node", "print what the parsers see in one message (hops, MIME tree, features) as JSON"),
    Command("node", "node", "the edge node: run, probe, replay logs, check its config"),
    Command("image", "image", "per-node Raspberry Pi OS SD-card images"),
    Command("collector", "collector", "the central collector: ingest, archive, correlate, dashboard, alerts"),
    Command("correlate", "collector", "replay an archive through the correlation and print the incidents"),
    Command("flink", "flink", "the correlation of collector shards' archives on Apache Flink"),
    Command("model", "collector", "publish models to the nodes"),
)


def prints_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The ``func`` of a command group run without a sub-command: its help, status 2."""
    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


def _command_named(argv: Sequence[str]) -> Command | None:
    """The command ``argv`` runs: its first word that is not an option (the top level's own
    options, ``--help`` and ``--version``, take no value)."""
    for word in argv:
        if not word.startswith("-"):
            return next((c for c in COMMANDS if c.name == word), None)
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``mailpulse`` parser; ``command``'s module is imported and adds its full parser.

    Raises :class:`UserError` when that module needs an optional package that is not installed.
    """
    parser = argparse.ArgumentParser(prog="mailpulse", description=_package_doc)
    parser.add_argument("--version", action="version", version=f"mailpulse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for c in COMMANDS:
        p = sub.add_parser(c.name, help=c.help)
        if c.name == command:
            try:
                module = importlib.import_module(f"{__name__}.{c.module}")
            except ImportError as e:
                raise missing_package(e, f"mailpulse {c.name}") from None
            getattr(module, c.adder)(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = _command_named(words)
    try:
        parser = build_parser(command.name if command else None)
    except UserError as e:
        print(f"mailpulse: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(words)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except UserError as e:
        print(f"mailpulse: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)
