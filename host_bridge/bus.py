"""The register bus seam: what every backend can do with the core's 32-bit registers.

A :class:`RegisterBus` reads and writes single registers and runs of consecutive registers
(*bursts*).  Bursts matter: the SPI bridge moves a run of words in one transaction, and PYNQ's
MMIO moves a ``bytes`` write in one device call, so loading a model (thousands of table words) is
bounded by the transport, not by per-word Python overhead.

Implementations here: :class:`EmulatedBus` (the register-level reference model).  Others live with
their transport: ``mailpulse.host_bridge.spi.SpiRegisterBus`` (iCE40 over spidev), the PYNQ driver's MMIO
bus, and the simulated RTL in ``mailpulse.host_bridge.backends.sim``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from mailpulse.hdl.reference import BusError, EmulatedCore


@runtime_checkable
class RegisterBus(Protocol):
    """Register access to one scorer core.  Addresses are byte offsets from ``mailpulse.hdl.regmap``."""

    def read(self, address: int) -> int:
        """One 32-bit read."""
        ...

    def write(self, address: int, value: int) -> None:
        """One 32-bit write."""
        ...

    def read_burst(self, address: int, count: int) -> list[int]:
        """``count`` consecutive 32-bit reads starting at ``address``."""
        ...

    def write_burst(self, address: int, values: Sequence[int]) -> None:
        """Consecutive 32-bit writes starting at ``address``."""
        ...


class BurstMixin:
    """Bursts as loops of single accesses, for buses that have nothing better."""

    def read(self, address: int) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def write(self, address: int, value: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def read_burst(self, address: int, count: int) -> list[int]:
        return [self.read(address + 4 * i) for i in range(count)]

    def write_burst(self, address: int, values: Sequence[int]) -> None:
        for i, v in enumerate(values):
            self.write(address + 4 * i, int(v))


def group_bursts(writes: Iterable[tuple[int, int]], max_words: int = 1 << 16) -> list[tuple[int, list[int]]]:
    """Merge (address, value) writes into runs of consecutive addresses, keeping their order.

    ``max_words`` caps the length of one run (a transport's largest transaction).
    """
    runs: list[tuple[int, list[int]]] = []
    for addr, value in writes:
        if runs:
            start, vals = runs[-1]
            if addr == start + 4 * len(vals) and len(vals) < max_words:
                vals.append(value & 0xFFFFFFFF)
                continue
        runs.append((addr, [value & 0xFFFFFFFF]))
    return runs


class EmulatedBus(BurstMixin):
    """:class:`RegisterBus` over :class:`mailpulse.hdl.reference.EmulatedCore` (the executable spec).

    A bus error (unmapped address, write to a read-only register) raises
    :class:`mailpulse.hdl.reference.BusError`, as AXI ``SLVERR`` does on the other buses.
    """

    def __init__(self, model: EmulatedCore) -> None:
        self.model = model

    def read(self, address: int) -> int:
        reg = self.model.regmap.decode(address)
        if reg is not None and reg[0].name == "LATENCY":
            return 0  # the model has no pipeline
        return self.model.read(address)

    def write(self, address: int, value: int) -> None:
        self.model.write(address, value)


__all__ = ["BurstMixin", "BusError", "EmulatedBus", "RegisterBus", "group_bursts"]
