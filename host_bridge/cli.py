"""``mailpulse score`` and ``mailpulse bitstream load``: thin layers over host_bridge library calls."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np
from mailpulse.hdl.params import CoreParams, get_params
from mailpulse.hdl.reference import CoreConfig, ScoreResult

from mailpulse.errors import UserError

from .backends import BACKENDS, open_scorer


# -- model files ---------------------------------------------------------------------------
def save_core_config(path: Path, params: CoreParams, cfg: CoreConfig) -> Path:
    """Write a raw register image of a model (``.npz``: weights, offsets, shifts, tables,
    threshold, params).  For bring-up and tests; trained models use ``mailpulse.modelfile``."""
    cfg.validate(params)
    np.savez(path, params=np.array(params.name), weights=cfg.weights, offsets=cfg.offsets, shifts=cfg.shifts,
             tables=cfg.tables, threshold=np.array(int(cfg.threshold), dtype=np.int64))
    return Path(path)


def load_model_any(path: Path) -> tuple[Any, CoreConfig, CoreParams | None]:
    """(model object, its CoreConfig, its parameter set if it names one) from a model file.

    A ``.npz`` with a ``tables`` array is a raw register image (:func:`save_core_config`);
    anything else goes to ``mailpulse.modelfile.load_model``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "tables" in z.files:
                try:
                    raw_params = get_params(str(z["params"]))
                except ValueError as e:
                    raise UserError(f"{path}: {e}") from None
                cfg = CoreConfig(weights=z["weights"].astype(np.int64), offsets=z["offsets"].astype(np.int64),
                                 shifts=z["shifts"].astype(np.int64), tables=z["tables"].astype(np.int64),
                                 threshold=int(z["threshold"]))
                return None, cfg, raw_params
    try:
        from mailpulse.modelfile import load_model
    except ImportError:
        raise UserError(f"cannot read {path}: mailpulse.modelfile (the trainer's model format) is not installed") from None
    model = load_model(path)
    p = getattr(model, "params", None)
    named = get_params(p) if isinstance(p, str) else p if isinstance(p, CoreParams) else None
    return model, model.core_config(), named


# -- score ---------------------------------------------------------------------------------
def score_file(backend: str, model_path: Path, data_path: Path, *, params: str | None = None,
               limit: int | None = None, options: dict[str, Any] | None = None) -> ScoreResult:
    """Score every sample of a data file with a model through one backend.

    The parameter set is the model's, else ``params``, else ``small``.  Tags are the file's, else
    the sample indices.  Raises ``UserError`` for bad files or a model that does not fit.
    """
    from .data import read_data, to_fixed_point

    model, cfg, model_params = load_model_any(model_path)
    if model_params is not None and params is not None and model_params.name != params:
        raise UserError(f"the model is for parameter set {model_params.name}, not {params}")
    try:
        p = model_params or get_params(params or "small")
    except ValueError as e:
        raise UserError(str(e)) from None
    raw, tags = read_data(data_path)
    x = to_fixed_point(raw, model, p.d)
    if limit is not None:
        x = x[:limit]
        tags = None if tags is None else tags[:limit]
    with open_scorer(backend, p, **(options or {})) as scorer:
        scorer.identify()
        scorer.load_model(cfg)
        return scorer.score_batch(x, tags)


def write_scores_csv(out: Any, result: ScoreResult) -> None:
    """CSV with header ``tag,score,anomaly,argmax``, one row per sample, in input order."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["tag", "score", "anomaly", "argmax"])
    for i in range(len(result)):
        w.writerow([int(result.tag[i]), int(result.score[i]), int(result.anomaly[i]), int(result.argmax[i])])


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


# -- bitstream load ------------------------------------------------------------------------
def load_bitstream(backend: str, path: Path, *, spi_bus: int = 0, spi_device: int = 0, speed_hz: int = 10_000_000,
                   gpio_chip: str = "/dev/gpiochip0", creset: int = 25, ss: int = 23, cdone: int = 24,
                   params: str = "zynq") -> str:
    """Load a bitstream with one backend; returns a one-line summary."""
    from . import bitstream as bs

    if backend == "sim":
        return bs.load_sim(path, params=params)
    if backend == "pynq":
        ol = bs.load_pynq(path)
        return f"pynq: {Path(path).name} downloaded; IP: {', '.join(sorted(ol.ip_dict))}"
    if backend == "ice40":
        image = bs.read_ice40_image(path)
        from .backends.ice40 import open_spidev

        spi: Any = open_spidev(spi_bus, spi_device, speed_hz)
        gpio = bs.GpiodLines(gpio_chip, creset=creset, ss=ss, cdone=cdone)
        try:
            try:
                spi.no_cs = True  # SS is driven as a GPIO line during configuration
            except (OSError, AttributeError):
                pass
            rep = bs.load_ice40(image, spi, gpio, timing=bs.Ice40Timing(speed_hz=speed_hz), name=str(path))
        finally:
            gpio.close()
            spi.close()
        return f"ice40: {Path(path).name} ({rep.image_bytes} bytes) configured in {rep.seconds * 1e3:.1f} ms; CDONE high"
    raise UserError(f"bitstream load supports the backends pynq, ice40 and sim, not {backend!r}")


def _cmd_bitstream_load(args: argparse.Namespace) -> int:
    print(load_bitstream(args.backend, Path(args.file), spi_bus=args.spi_bus, spi_device=args.spi_device,
                         speed_hz=args.speed, gpio_chip=args.gpio_chip, creset=args.creset, ss=args.ss,
                         cdone=args.cdone, params=args.params))
    return 0


def _spi_args(p: argparse.ArgumentParser, speed: int) -> None:
    p.add_argument("--spi-bus", type=int, default=0, help="spidev bus (ice40; default 0)")
    p.add_argument("--spi-device", type=int, default=0, help="spidev chip select (ice40; default 0)")
    p.add_argument("--speed", type=int, default=speed, help=f"SPI clock in Hz (ice40; default {speed})")


def register(subparsers: Any) -> None:
    """Add ``score`` and ``bitstream load`` to the ``mailpulse`` command line."""
    p = subparsers.add_parser("score", help="score a data file through a scorer backend",
                              description="Score every sample of a data file (.npz, .mat, .jsonl) with a model "
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

    b = subparsers.add_parser("bitstream", help="load a bitstream into an FPGA")
    bsub = b.add_subparsers(dest="bitstream_command", metavar="ACTION")
    lp = bsub.add_parser("load", help="validate a bitstream file and load it",
                         description="Validate a bitstream (Xilinx .bit header or iCE40 sync word) and load it: "
                                     "pynq through pynq.Overlay, ice40 by the Lattice SPI slave sequence, sim "
                                     "into the simulated device.")
    lp.add_argument("--backend", choices=("pynq", "ice40", "sim"), required=True)
    lp.add_argument("file", help="the .bit (pynq, with its .hwh beside it) or the iCE40 .bin")
    _spi_args(lp, 10_000_000)
    lp.add_argument("--gpio-chip", default="/dev/gpiochip0", help="GPIO chip for CRESET_B/SS/CDONE (ice40)")
    lp.add_argument("--creset", type=int, default=25, help="GPIO line of CRESET_B (default 25)")
    lp.add_argument("--ss", type=int, default=23, help="GPIO line of SPI_SS_B during configuration (default 23)")
    lp.add_argument("--cdone", type=int, default=24, help="GPIO line of CDONE (default 24)")
    lp.add_argument("--params", default="zynq", help="parameter set of the simulated device (sim, .bit)")
    lp.set_defaults(func=_cmd_bitstream_load)
    b.set_defaults(func=lambda _a: (b.print_help(), 2)[1])
