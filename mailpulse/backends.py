"""The scorer backends by name: open one, score a data file through one, load a bitstream with one.

The backends themselves live where their hardware does: ``model``, ``sim`` and ``ice40`` in
:mod:`mailpulse.host_bridge.backends`, ``pynq`` with the overlay in
:mod:`mailpulse.pynq_overlays.backend`.  This module sits above both (``host_bridge`` never imports
the PYNQ side) and is what the node, ``mailpulse score`` and ``mailpulse bitstream load`` call.

The ``sim`` and ``pynq`` backends are imported when they are opened: they need optional packages
(cocotb and a simulator; PYNQ), and a missing one is a sentence naming the extra to install.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any, TextIO

from mailpulse.hdl.params import CoreParams, get_params
from mailpulse.hdl.reference import ScoreResult
from mailpulse.host_bridge import bitstream as bs
from mailpulse.host_bridge.backends.ice40 import Ice40Scorer, open_spidev
from mailpulse.host_bridge.backends.model import ModelScorer
from mailpulse.host_bridge.data import load_model_any, read_data, to_fixed_point
from mailpulse.host_bridge.scorer import Scorer

from .errors import UserError, missing_package

__all__ = ["BACKENDS", "detect_backend", "load_bitstream", "open_scorer", "score_file", "write_scores_csv"]

#: Backend names, in the order ``auto`` tries the hardware ones.
BACKENDS = ("model", "sim", "pynq", "ice40", "auto")


def open_scorer(backend: str, params: CoreParams | str = "small", **options: Any) -> Scorer:
    """Open a scorer by backend name.

    Parameters
    ----------
    backend : str
        ``model``, ``sim``, ``pynq``, ``ice40`` or ``auto`` (see :func:`detect_backend`).
    params : CoreParams or str
        The parameter set the host expects (a name from ``mailpulse.hdl.params`` or a ``CoreParams``).
    **options
        Passed to the backend's constructor (``simulator=`` for sim, ``bitfile=`` for pynq,
        ``spi_bus=``/``gpio_chip=``... for ice40, ``batch_size=`` for all).

    Raises ``UserError`` for an unknown backend or one this machine cannot run.
    """
    p = get_params(params) if isinstance(params, str) else params
    if backend == "auto":
        backend = detect_backend()
    if backend == "model":
        return ModelScorer(p, **options)
    if backend == "ice40":
        return Ice40Scorer(p, **options)
    if backend == "sim":
        try:
            from mailpulse.host_bridge.backends.sim import SimScorer  # cocotb, a simulator, Amaranth
        except ImportError as e:
            raise missing_package(e, "the sim backend") from None
        return SimScorer(p, **options)
    if backend == "pynq":
        try:
            from mailpulse.pynq_overlays.backend import PynqScorer  # pynq (preinstalled on PYNQ boards)
        except ImportError as e:
            raise missing_package(e, "the pynq backend") from None
        return PynqScorer(p, **options)
    raise UserError(f"unknown scorer backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def detect_backend() -> str:
    """What ``auto`` picks: ``pynq`` on a Zynq running PYNQ (an FPGA manager and the pynq
    package), ``ice40`` on a board with ``/dev/spidev0.0`` and the ``spidev`` and ``gpiod``
    packages, else ``model`` (the bit-exact reference in software; ``sim`` is never picked
    automatically: it is for development)."""
    if Path("/sys/class/fpga_manager/fpga0").exists() and importlib.util.find_spec("pynq") is not None:
        return "pynq"
    if (Path("/dev/spidev0.0").exists() and importlib.util.find_spec("spidev") is not None
            and importlib.util.find_spec("gpiod") is not None):
        return "ice40"
    return "model"


# -- score a file ----------------------------------------------------------------------------
def score_file(backend: str, model_path: Path, data_path: Path, *, params: str | None = None,
               limit: int | None = None, options: dict[str, Any] | None = None) -> ScoreResult:
    """Score every sample of a data file with a model through one backend.

    The parameter set is the model's, else ``params``, else ``small``.  Tags are the file's, else
    the sample indices.  Raises ``UserError`` for bad files or a model that does not fit.
    """
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


def write_scores_csv(out: TextIO, result: ScoreResult) -> None:
    """CSV with header ``tag,score,anomaly,argmax``, one row per sample, in input order."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["tag", "score", "anomaly", "argmax"])
    for i in range(len(result)):
        w.writerow([int(result.tag[i]), int(result.score[i]), int(result.anomaly[i]), int(result.argmax[i])])


# -- load a bitstream ------------------------------------------------------------------------
def load_bitstream(backend: str, path: Path | str, *, spi_bus: int = 0, spi_device: int = 0,
                   speed_hz: int = 10_000_000, gpio_chip: str = "/dev/gpiochip0", creset: int = 25, ss: int = 23,
                   cdone: int = 24, params: str = "zynq") -> str:
    """Validate a bitstream and load it with one backend; returns a one-line summary.

    * ``pynq``: the ``.bit`` (and the ``.hwh`` beside it) through ``pynq.Overlay``;
    * ``ice40``: the image by the Lattice SPI slave sequence (:func:`~mailpulse.host_bridge.bitstream.load_ice40`);
    * ``sim``: a ``.bit`` is downloaded into the simulated PYNQ device
      (:class:`~mailpulse.pynq_overlays.sim_device.SimulatedDevice`: header checked, ``.hwh`` parsed,
      the core reset), exactly as on a board.  An iCE40 image is checked and refused: the simulator
      runs the RTL, not a placed-and-routed iCE40 image.
    """
    path = Path(path)
    if backend == "sim":
        return _load_sim(path, params)
    if backend == "pynq":
        try:
            from mailpulse.pynq_overlays.overlay import load_overlay  # pynq (preinstalled on PYNQ boards)
        except ImportError as e:
            raise missing_package(e, "the pynq backend") from None
        ol = load_overlay(path)
        return f"pynq: {path.name} downloaded; IP: {', '.join(sorted(ol.ip_dict))}"
    if backend == "ice40":
        image = bs.read_ice40_image(path)
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
        return f"ice40: {path.name} ({rep.image_bytes} bytes) configured in {rep.seconds * 1e3:.1f} ms; CDONE high"
    raise UserError(f"bitstream load supports the backends pynq, ice40 and sim, not {backend!r}")


def _load_sim(path: Path, params: str) -> str:
    if not path.is_file():
        raise UserError(f"bitstream {path} does not exist")
    with path.open("rb") as f:
        head = f.read(len(bs.XILINX_HEADER))
    if head != bs.XILINX_HEADER:
        image = bs.read_ice40_image(path)
        raise UserError(f"{path} is a valid iCE40 image ({len(image)} bytes), but the simulated device is the "
                        "PYNQ board (a .bit): load iCE40 images with --backend ice40 on the Pi, or score through "
                        "the simulated RTL with `mailpulse score --backend sim`")
    try:
        p = get_params(params)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        from mailpulse.pynq_overlays.overlay import load_overlay  # pynq: the simulated device runs its stack
        from mailpulse.pynq_overlays.sim_device import EmulatedPort, SimulatedDevice
    except ImportError as e:
        raise missing_package(e, "the simulated PYNQ device") from None
    ol = load_overlay(path, download=True, device=SimulatedDevice(EmulatedPort(p)))
    bit = bs.read_xilinx_bit(path)
    return f"sim: {path.name} ({bit.design.split(';')[0]}, {bit.part}) downloaded; IP: {', '.join(sorted(ol.ip_dict))}"
