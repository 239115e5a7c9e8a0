"""``mailpulse score`` and ``mailpulse bitstream load``: thin layers over
:func:`mailpulse.backends.score_file` and :func:`mailpulse.backends.load_bitstream`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mailpulse.backends import BACKENDS, load_bitstream, score_file, write_scores_csv

from . import prints_help


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if args.backend == "sim" and args.simulator:
        opts["simulator"] = args.simulator
    if args.backend == "pynq" and args.bitfile:
        opts["bitfile"] = args.bitfile
    if args.backend == "ice40":
        opts.update(spi_bus=args.spi_bus, spi_device=args.spi_device, speed_hz=args.speed)
    return opts


def _cmd_score(args: argparse.Namespace) -> int:
    result = score_file(args.backend, Path(args.model), Path(args.data), params=args.params, limit=args.limit,
                        options=_backend_options(args))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            write_scores_csv(f, result)
        print(f"scored {len(result)} samples ({int(result.anomaly.sum())} anomalies) -> {args.out}")
    else:
        write_scores_csv(sys.stdout, result)
    return 0


def _cmd_bitstream_load(args: argparse.Namespace) -> int:
    print(load_bitstream(args.backend, Path(args.file), spi_bus=args.spi_bus, spi_device=args.spi_device,
                         speed_hz=args.speed, gpio_chip=args.gpio_chip, creset=args.creset, ss=args.ss,
                         cdone=args.cdone, params=args.params))
    return 0


def _spi_args(p: argparse.ArgumentParser, speed: int) -> None:
    p.add_argument("--spi-bus", type=int, default=0, help="spidev bus (ice40; default 0)")
    p.add_argument("--spi-device", type=int, default=0, help="spidev chip select (ice40; default 0)")
    p.add_argument("--speed", type=int, default=speed, help=f"SPI clock in Hz (ice40; default {speed})")


def add_score(p: argparse.ArgumentParser) -> None:
    """``mailpulse score``."""
    p.description = ("Score every sample of a data file (.npz, .mat, .jsonl) with a model "
                     "through a backend; prints or writes tag,score,anomaly,argmax CSV.")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="scorer backend (default auto)")
    p.add_argument("--model", required=True, help="model file (mailpulse model, or a raw .npz register image)")
    p.add_argument("--data", required=True, help="samples: .npz (x, tags), .mat (X) or JSON lines")
    p.add_argument("--out", help="CSV output file (default: standard output)")
    p.add_argument("--params", help="parameter set when the model does not name one (default small)")
    p.add_argument("--limit", type=int, help="score only the first N samples")
    p.add_argument("--simulator", choices=("icarus", "verilator"), help="for --backend sim (default: verilator "
                   "if installed, else icarus)")
    p.add_argument("--bitfile", help="overlay .bit for --backend pynq")
    _spi_args(p, 8_000_000)
    p.set_defaults(func=_cmd_score)


def add_bitstream(b: argparse.ArgumentParser) -> None:
    """``mailpulse bitstream load``."""
    bsub = b.add_subparsers(dest="bitstream_command", metavar="ACTION")
    lp = bsub.add_parser("load", help="validate a bitstream file and load it",
                         description="Validate a bitstream (Xilinx .bit header or iCE40 sync word) and load it: "
                                     "pynq through pynq.Overlay, ice40 by the Lattice SPI slave sequence, sim "
                                     "(a .bit) into the simulated PYNQ device.")
    lp.add_argument("--backend", choices=("pynq", "ice40", "sim"), required=True)
    lp.add_argument("file", help="the .bit (pynq, with its .hwh beside it) or the iCE40 .bin")
    _spi_args(lp, 10_000_000)
    lp.add_argument("--gpio-chip", default="/dev/gpiochip0", help="GPIO chip for CRESET_B/SS/CDONE (ice40)")
    lp.add_argument("--creset", type=int, default=25, help="GPIO line of CRESET_B (default 25)")
    lp.add_argument("--ss", type=int, default=23, help="GPIO line of SPI_SS_B during configuration (default 23)")
    lp.add_argument("--cdone", type=int, default=24, help="GPIO line of CDONE (default 24)")
    lp.add_argument("--params", default="zynq", help="parameter set of the simulated device (sim, .bit)")
    lp.set_defaults(func=_cmd_bitstream_load)
    b.set_defaults(func=prints_help(b))
