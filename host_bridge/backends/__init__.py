"""Backends of :class:`mailpulse.host_bridge.scorer.Scorer` and the factory that opens one by name."""

from __future__ import annotations

from typing import Any

from mailpulse.hdl.params import CoreParams, get_params

from mailpulse.errors import UserError

from ..scorer import Scorer

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
        from .model import ModelScorer

        return ModelScorer(p, **options)
    if backend == "sim":
        from .sim import SimScorer

        return SimScorer(p, **options)
    if backend == "pynq":
        from .pynq import PynqScorer

        return PynqScorer(p, **options)
    if backend == "ice40":
        from .ice40 import Ice40Scorer

        return Ice40Scorer(p, **options)
    raise UserError(f"unknown scorer backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def detect_backend() -> str:
    """What ``auto`` picks: ``pynq`` on a Zynq running PYNQ (an FPGA manager and the pynq
    package), ``ice40`` on a board with ``/dev/spidev0.0`` and the ``spidev`` and ``gpiod``
    packages, else ``model`` (the bit-exact reference in software; ``sim`` is never picked
    automatically: it is for development)."""
    import importlib.util
    from pathlib import Path

    if Path("/sys/class/fpga_manager/fpga0").exists() and importlib.util.find_spec("pynq") is not None:
        return "pynq"
    if (Path("/dev/spidev0.0").exists() and importlib.util.find_spec("spidev") is not None
            and importlib.util.find_spec("gpiod") is not None):
        return "ice40"
    return "model"
