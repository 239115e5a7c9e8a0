"""Test doubles of an iCE40 in SPI slave configuration mode, for the driver tests of
:func:`mailpulse.host_bridge.bitstream.load_ice40`: they assert the exact GPIO/SPI sequence."""

from __future__ import annotations

from mailpulse.host_bridge.bitstream import check_ice40_image

from mailpulse.errors import UserError


class VirtualClock:
    """A clock for simulated sequences: ``sleep`` advances it, nothing really waits."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(0.0, dt)


class FakeIce40:
    """An iCE40 in SPI slave configuration mode, with its pins, checking TN1248's rules.

    It is both the :class:`GpioLines` and the :class:`ConfigSpi` of :func:`load_ice40`.  It records
    every pin change and SPI transfer in ``events`` (time, what, detail) and every broken rule in
    ``violations``; ``CDONE`` rises only if a valid image arrived with SS low after a correct reset
    and housekeeping, and ``>= 100`` clocks followed it.  ``user_mode`` becomes true after
    ``>= 49`` further clocks.
    """

    def __init__(self, clock: VirtualClock, expected: bytes | None = None) -> None:
        self.clock = clock
        self.expected = expected
        self.mode = 0
        self.max_speed_hz = 1_000_000
        self.pins = {"creset": True, "ss": True, "cdone": False}
        self.events: list[tuple[float, str, str]] = []
        self.violations: list[str] = []
        self.state = "idle"          # idle -> reset -> housekeeping -> ready -> loading -> wait_done -> done -> user
        self._t_reset_fall = 0.0
        self._t_reset_rise = 0.0
        self._image = bytearray()
        self._clocks_after = 0
        self.user_mode = False
        self.received = b""

    def _bad(self, msg: str) -> None:
        self.violations.append(f"t={self.clock.now() * 1e6:.1f}us: {msg}")

    # GpioLines
    def set(self, name: str, value: bool) -> None:
        if name not in ("creset", "ss"):
            raise ValueError(f"{name} is an input")
        old = self.pins[name]
        self.pins[name] = value
        self.events.append((self.clock.now(), f"{name}={'1' if value else '0'}", ""))
        if name == "creset" and old and not value:
            self._t_reset_fall = self.clock.now()
            self.state, self.pins["cdone"], self.user_mode = "reset", False, False
            self._image.clear()
        elif name == "creset" and not old and value:
            if self.clock.now() - self._t_reset_fall < 200e-9:
                self._bad("CRESET_B low for less than 200 ns")
            if self.pins["ss"]:
                self._bad("SPI_SS_B high when CRESET_B rose: the iCE40 boots as SPI master (from flash)")
                self.state = "master"
            else:
                self.state = "housekeeping"
            self._t_reset_rise = self.clock.now()
        elif name == "ss" and self.state == "loading" and value:
            self.received = bytes(self._image)
            ok = self._image_ok()
            self.state = "wait_done" if ok else "failed"
            self._clocks_after = 0

    def get(self, name: str) -> bool:
        return self.pins[name]

    def close(self) -> None:
        return None

    def _image_ok(self) -> bool:
        if self.expected is not None and bytes(self._image) != self.expected:
            self._bad(f"image differs from the file ({len(self._image)} bytes received, {len(self.expected)} expected)")
            return False
        try:
            check_ice40_image(bytes(self._image))
        except UserError as e:
            self._bad(f"invalid image received: {e}")
            return False
        return True

    # ConfigSpi
    def writebytes2(self, data: bytes | list[int]) -> None:
        n = len(data)
        if self.mode != 3:
            self._bad(f"SPI mode {self.mode} during configuration (the iCE40 needs mode 3 here)")
        if not 1_000_000 <= self.max_speed_hz <= 25_000_000:
            self._bad(f"SCK at {self.max_speed_hz} Hz, outside 1..25 MHz")
        if n > 4096:
            self._bad(f"a {n}-byte transfer exceeds spidev's buffer")
        self.events.append((self.clock.now(), "spi", f"{n} bytes, SS={'1' if self.pins['ss'] else '0'}"))
        if self.state == "housekeeping":
            if self.clock.now() - self._t_reset_rise < 1200e-6:
                self._bad("SCK toggled less than 1200 us after CRESET_B rose (housekeeping not finished)")
                self.state = "failed"    # configuration memory not cleared: the device ignores the image
            elif self.pins["ss"]:
                self.state = "ready"
            else:
                self._bad("configuration data sent without the 8 dummy clocks with SS high")
                self.state = "loading"
                self._image += bytes(data)
        elif self.state == "ready":
            if self.pins["ss"]:
                pass                     # more dummy clocks are harmless
            else:
                self.state = "loading"
                self._image += bytes(data)
        elif self.state == "loading":
            self._image += bytes(data)
        elif self.state == "wait_done":
            if not self.pins["ss"]:
                self._bad("dummy clocks after the image sent with SS low")
            self._clocks_after += 8 * n
            if self._clocks_after >= 100:
                self.state, self.pins["cdone"], self._clocks_after = "done", True, self._clocks_after - 100
                self.events.append((self.clock.now(), "cdone=1", ""))
        elif self.state == "done":
            self._clocks_after += 8 * n
            if self._clocks_after >= 49:
                self.state, self.user_mode = "user", True
        elif self.state in ("idle", "reset", "master", "failed", "user"):
            pass
        self.clock.sleep(8 * n / max(self.max_speed_hz, 1))


