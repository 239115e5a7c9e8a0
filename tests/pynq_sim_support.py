"""Helpers for the PYNQ tests: an overlay folder (generated .hwh + placeholder .bit) and an active
simulated device.  Not a test module (no ``test_`` prefix)."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynq
from mailpulse.hdl.params import CoreParams
from mailpulse.host_bridge.bitstream import placeholder_bit
from mailpulse.pynq_overlays.hwh import write_hwh
from mailpulse.pynq_overlays.sim_device import CorePort, EmulatedPort, SimulatedDevice


def make_overlay_dir(root: Path, params: CoreParams, name: str = "mailpulse") -> Path:
    """``root/<name>.bit`` (placeholder) + ``root/<name>.hwh`` (generated for ``params``); returns the .bit."""
    root.mkdir(parents=True, exist_ok=True)
    write_hwh(root / f"{name}.hwh", params)
    bit = root / f"{name}.bit"
    bit.write_bytes(placeholder_bit())
    return bit


@contextlib.contextmanager
def active_device(port: CorePort) -> Iterator[SimulatedDevice]:
    """A :class:`SimulatedDevice` made ``pynq.Device.active_device`` for the block, then removed."""
    # binds the driver by VLNV, as the pynq.lib entry point does
    importlib.import_module("mailpulse.pynq_overlays.driver")

    saved: Any = pynq.Device.__dict__.get("_active_device")
    dev = SimulatedDevice(port).activate()
    try:
        yield dev
    finally:
        if saved is None:
            with contextlib.suppress(AttributeError):
                del pynq.Device._active_device
        else:
            pynq.Device.active_device = saved

__all__ = ["EmulatedPort", "active_device", "make_overlay_dir"]
