"""The ``mailpulse`` command line: one sub-command per job, each a thin layer over a library call.

Each part registers its sub-commands from its own ``cli`` module (``mailpulse.hdl.cli``, ``mailpulse.sim.cli``, ...)
through a ``register(subparsers)`` function; a part whose optional dependencies are absent still
shows its commands and says what to install when one is run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __doc__ as _package_doc
from . import __version__
from .errors import UserError

#: Modules that add sub-commands, in the order they appear in ``mailpulse --help``.
COMMAND_MODULES = [
    "mailpulse.hdl.cli",
    "mailpulse.sim.cli",
    "mailpulse.collector.train_cli",
    "mailpulse.host_bridge.cli",
    "mailpulse.pi_firmware.cli",
    "mailpulse.pi_firmware.image_cli",
    "mailpulse.collector.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailpulse", description=_package_doc)
    parser.add_argument("--version", action="version", version=f"mailpulse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (e.name == name or name.startswith(e.name + ".")):
                continue  # that part is not written yet
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
