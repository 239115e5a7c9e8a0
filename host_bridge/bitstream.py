"""Bitstream files and how each backend loads one.

File formats are checked *before* any hardware is touched; a wrong or truncated file is a
:class:`~mailpulse.errors.UserError` naming the file and what is wrong with it.

* Xilinx ``.bit`` (Zynq / PYNQ): the header (``0x0009 0FF00FF00FF00FF000 0x0001``, then fields
  ``a`` design, ``b`` part, ``c`` date, ``d`` time, ``e`` data length), the data length matching
  the file, the configuration sync word ``AA 99 55 66`` in the data, and the part.
* iCE40 ``.bin`` (icepack output): an optional comment block ``FF 00 ... 00 FF``, the sync word
  ``7E AA 99 7E``, and the wake-up command ``01 06`` near the end (a truncated file lacks it).

Loading:

* ``pynq``: ``pynq.Overlay(path)`` (FPGA manager on the board); the ``.hwh`` must sit next to the
  ``.bit``.  The project's placeholder bitstream (used by the simulated device) is refused.
* ``ice40``: the Lattice SPI slave configuration sequence (iCE40 programming and configuration
  guide, TN1248 / FPGA-TN-02001) over ``spidev`` + ``gpiod``: ``SPI_SS_B`` low, ``CRESET_B``
  low >= 200 ns, ``CRESET_B`` high, ``CDONE`` must be low, wait >= 1200 us (housekeeping),
  ``SS`` high for 8 dummy clocks, ``SS`` low and the image (SPI mode 3, 1-25 MHz), ``SS`` high and
  >= 100 dummy clocks, ``CDONE`` must go high (within a timeout), >= 49 more clocks to start the
  user design.
* ``sim``: the file is validated and the sequence runs against the simulated device
  (:class:`mailpulse.pynq_overlays.sim_device.SimulatedDevice` for ``.bit``, :class:`FakeIce40` for ``.bin``).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mailpulse.errors import UserError

XILINX_HEADER = bytes.fromhex("0009 0ff00ff00ff00ff000 0001".replace(" ", ""))
XILINX_SYNC = bytes.fromhex("aa995566")
ICE40_SYNC = bytes.fromhex("7eaa997e")
ICE40_WAKEUP = bytes.fromhex("0106")
#: The design name the project's placeholder ``.bit`` carries (no configuration frames).
PLACEHOLDER_DESIGN = "mailpulse_placeholder"


# -- Xilinx .bit ---------------------------------------------------------------------------
@dataclass(frozen=True)
class XilinxBit:
    """A parsed ``.bit`` file."""

    design: str
    part: str
    date: str
    time: str
    data: bytes

    @property
    def is_placeholder(self) -> bool:
        return self.design.split(";")[0] == PLACEHOLDER_DESIGN


def parse_xilinx_bit(raw: bytes, name: str = "the bitstream") -> XilinxBit:
    """Parse and check a Xilinx ``.bit`` image; ``UserError`` says what is wrong."""
    if not raw.startswith(XILINX_HEADER):
        raise UserError(f"{name} is not a Xilinx .bit file (its header is not 00 09 0F F0 0F F0 ...)")
    pos = len(XILINX_HEADER)
    fields: dict[str, str] = {}
    while True:
        if pos >= len(raw):
            raise UserError(f"{name} is truncated inside its header")
        key = chr(raw[pos])
        pos += 1
        if key == "e":
            if pos + 4 > len(raw):
                raise UserError(f"{name} is truncated inside its header")
            (length,) = struct.unpack(">I", raw[pos:pos + 4])
            pos += 4
            data = raw[pos:]
            if len(data) != length:
                raise UserError(f"{name} is truncated or padded: its header announces {length} data bytes, "
                                f"the file holds {len(data)}")
            break
        if key not in "abcd":
            raise UserError(f"{name} has an unknown header field 0x{ord(key):02X}")
        if pos + 2 > len(raw):
            raise UserError(f"{name} is truncated inside its header")
        (n,) = struct.unpack(">H", raw[pos:pos + 2])
        pos += 2
        fields[key] = raw[pos:pos + n].rstrip(b"\0").decode("ascii", "replace")
        pos += n
    if XILINX_SYNC not in data[:1024]:
        raise UserError(f"{name} has no configuration sync word AA 99 55 66 at the start of its data")
    return XilinxBit(fields.get("a", ""), fields.get("b", ""), fields.get("c", ""), fields.get("d", ""), data)


def read_xilinx_bit(path: Path, *, expect_part: str | None = None) -> XilinxBit:
    """Read and check ``path``; with ``expect_part`` (e.g. ``7z020``) also check the part."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read bitstream {path}: {e.strerror}") from None
    bit = parse_xilinx_bit(raw, str(path))
    if expect_part is not None and expect_part not in bit.part:
        raise UserError(f"bitstream {path} is for part {bit.part!r}, this board needs {expect_part}")
    return bit


def make_xilinx_bit(design: str, part: str, data: bytes, date: str = "2026/01/01", tm: str = "00:00:00") -> bytes:
    """Build a ``.bit`` file around configuration ``data`` (for placeholders and tests)."""
    out = bytearray(XILINX_HEADER)
    for key, text in (("a", design), ("b", part), ("c", date), ("d", tm)):
        b = text.encode("ascii") + b"\0"
        out += key.encode() + struct.pack(">H", len(b)) + b
    out += b"e" + struct.pack(">I", len(data)) + data
    return bytes(out)


def placeholder_bit() -> bytes:
    """A well-formed Zynq-7020 ``.bit`` with no configuration frames: what the simulated device
    loads.  Its design name marks it so that no real board is ever programmed with it."""
    noop = bytes.fromhex("20000000")
    data = b"\xff" * 32 + bytes.fromhex("000000bb11220044ffffffffffffffff") + XILINX_SYNC + noop * 8
    return make_xilinx_bit(f"{PLACEHOLDER_DESIGN};UserID=0XFFFFFFFF;Version=2022.1", "7z020clg400", data)


# -- iCE40 .bin ----------------------------------------------------------------------------
def check_ice40_image(raw: bytes, name: str = "the bitstream") -> int:
    """Check an iCE40 image; returns the offset of the sync word.  ``UserError`` if it is wrong."""
    if len(raw) < 64:
        raise UserError(f"{name} is too short for an iCE40 bitstream ({len(raw)} bytes)")
    pos = 0
    if raw[:2] == b"\xff\x00":               # comment block written by icepack
        end = raw.find(b"\x00\xff", 2)
        if end < 0:
            raise UserError(f"{name} has an unterminated comment block (not an icepack image?)")
        pos = end + 2
    sync = raw.find(ICE40_SYNC, pos, pos + 256)
    if sync < 0:
        raise UserError(f"{name} has no iCE40 sync word 7E AA 99 7E at its start (not an iCE40 bitstream)")
    tail = raw.rstrip(b"\x00")
    if not tail.endswith(ICE40_WAKEUP):
        raise UserError(f"{name} does not end with the iCE40 wake-up command 01 06: the file is truncated")
    return sync


def read_ice40_image(path: Path) -> bytes:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read bitstream {path}: {e.strerror}") from None
    check_ice40_image(raw, str(path))
    return raw


# -- iCE40 SPI slave configuration -----------------------------------------------------------
class GpioLines(Protocol):
    """The three configuration lines, by name: ``creset`` (out, CRESET_B), ``ss`` (out, SPI_SS_B),
    ``cdone`` (in, CDONE).  ``True`` is electrical high."""

    def set(self, name: str, value: bool) -> None: ...

    def get(self, name: str) -> bool: ...

    def close(self) -> None: ...


class ConfigSpi(Protocol):
    """The part of ``spidev.SpiDev`` the configuration sequence uses."""

    mode: int
    max_speed_hz: int

    def writebytes2(self, data: bytes | list[int]) -> None: ...


class GpiodLines:
    """:class:`GpioLines` over libgpiod v2 (``gpiod.request_lines``), e.g. on a Raspberry Pi.

    Parameters
    ----------
    chip : str
        GPIO character device (``/dev/gpiochip0`` on a Pi 4, ``/dev/gpiochip4`` on a Pi 5).
    creset, ss, cdone : int
        Line offsets (BCM numbers on a Pi).
    """

    def __init__(self, chip: str = "/dev/gpiochip0", *, creset: int = 25, ss: int = 23, cdone: int = 24) -> None:
        try:
            import gpiod
            from gpiod.line import Direction, Value
        except ImportError:
            raise UserError("iCE40 configuration needs the 'gpiod' package (libgpiod v2 bindings)") from None
        self._value = Value
        self._offsets = {"creset": creset, "ss": ss, "cdone": cdone}
        try:
            self._req = gpiod.request_lines(chip, consumer="mailpulse-ice40", config={
                (creset, ss): gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.ACTIVE),
                cdone: gpiod.LineSettings(direction=Direction.INPUT),
            })
        except OSError as e:
            raise UserError(f"cannot request GPIO lines {creset}/{ss}/{cdone} on {chip} ({e.strerror})") from None

    def set(self, name: str, value: bool) -> None:
        self._req.set_value(self._offsets[name], self._value.ACTIVE if value else self._value.INACTIVE)

    def get(self, name: str) -> bool:
        return bool(self._req.get_value(self._offsets[name]) == self._value.ACTIVE)

    def close(self) -> None:
        self._req.release()


@dataclass(frozen=True)
class Ice40Timing:
    """Timing of the SPI slave configuration (datasheet minimums, with margin where it is free)."""

    creset_low_s: float = 1e-6          # >= 200 ns
    housekeeping_s: float = 1.3e-3      # >= 1200 us (UltraPlus; 800 us on LP/HX)
    dummy_after_bytes: int = 13         # >= 100 clocks with SS high before CDONE is checked
    activation_bytes: int = 7           # >= 49 clocks after CDONE to start the user design
    done_timeout_s: float = 0.05        # CDONE must rise within this (extra clocks are sent meanwhile)
    speed_hz: int = 10_000_000          # 1..25 MHz
    chunk: int = 4096                   # spidev bufsiz


@dataclass
class Ice40LoadReport:
    """What the configuration did: bytes sent, time taken, how many extra clocks CDONE needed."""

    image_bytes: int
    seconds: float
    extra_clock_bytes: int = 0
    steps: list[str] = field(default_factory=list)


def load_ice40(image: bytes, spi: ConfigSpi, gpio: GpioLines, *, timing: Ice40Timing | None = None,
               sleep: Callable[[float], None] = time.sleep, now: Callable[[], float] = time.monotonic,
               name: str = "the bitstream") -> Ice40LoadReport:
    """Configure an iCE40 over SPI (slave mode).  Raises ``UserError`` if CDONE misbehaves.

    The image is checked first; the SPI mode is switched to 3 for configuration and restored
    afterwards (the scorer's register bridge uses mode 0).
    """
    check_ice40_image(image, name)
    t = timing or Ice40Timing()
    if not 1_000_000 <= t.speed_hz <= 25_000_000:
        raise UserError(f"iCE40 configuration SCK must be 1..25 MHz, not {t.speed_hz} Hz")
    start = now()
    report = Ice40LoadReport(len(image), 0.0)
    old_mode, old_speed = spi.mode, spi.max_speed_hz
    spi.mode, spi.max_speed_hz = 3, t.speed_hz
    try:
        gpio.set("ss", False)
        gpio.set("creset", False)
        sleep(t.creset_low_s)
        gpio.set("creset", True)
        report.steps.append("reset")
        if gpio.get("cdone"):
            raise UserError("CDONE stayed high after CRESET_B was pulsed: the iCE40 did not reset "
                            "(check the CRESET_B and CDONE wiring)")
        sleep(t.housekeeping_s)
        gpio.set("ss", True)
        spi.writebytes2(bytes(1))
        gpio.set("ss", False)
        report.steps.append("dummy")
        for i in range(0, len(image), t.chunk):
            spi.writebytes2(image[i:i + t.chunk])
        report.steps.append("image")
        gpio.set("ss", True)
        spi.writebytes2(bytes(t.dummy_after_bytes))
        deadline = now() + t.done_timeout_s
        while not gpio.get("cdone"):
            if now() > deadline:
                raise UserError(f"CDONE did not go high after {name} was sent: the iCE40 rejected the image "
                                "(wrong device, corrupt file or an SPI wiring fault)")
            spi.writebytes2(bytes(1))
            report.extra_clock_bytes += 1
        report.steps.append("done")
        spi.writebytes2(bytes(t.activation_bytes))
        report.steps.append("active")
    finally:
        spi.mode, spi.max_speed_hz = old_mode, old_speed
    report.seconds = now() - start
    return report


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


def load_pynq(path: Path, *, download: bool = True, device: Any = None) -> Any:
    """Load a ``.bit`` (+ ``.hwh``) as a ``pynq.Overlay``; refuses the placeholder on a board."""
    path = Path(path)
    bit = read_xilinx_bit(path, expect_part="7z020")
    if not path.with_suffix(".hwh").is_file():
        raise UserError(f"{path.with_suffix('.hwh')} is missing: PYNQ needs the .hwh next to the .bit")
    if bit.is_placeholder and device is None:
        raise UserError(f"{path} is the placeholder bitstream (no logic); build the real one with Vivado "
                        "(docs/pynq.md) or use --backend sim")
    try:
        from mailpulse.pynq_overlays.overlay import MailpulseOverlay
    except ImportError:
        raise UserError("the pynq backend needs the 'pynq' package (preinstalled on PYNQ boards)") from None
    return MailpulseOverlay(str(path.resolve()), download=download, device=device)


def load_sim(path: Path, params: str = "zynq") -> str:
    """Validate a bitstream and run its loading sequence against the simulated device.

    ``.bit``: the simulated ``pynq.Device`` downloads it through ``pynq.Overlay`` (header checked,
    ``.hwh`` parsed).  Anything else is treated as an iCE40 image and configured into a
    :class:`FakeIce40` with the real sequence; any timing rule broken is an error.  Returns a
    one-line summary.
    """
    path = Path(path)
    raw_head = path.read_bytes()[:16] if path.is_file() else b""
    if not path.is_file():
        raise UserError(f"bitstream {path} does not exist")
    if raw_head.startswith(XILINX_HEADER):
        from mailpulse.hdl.params import get_params
        from mailpulse.pynq_overlays.sim_device import EmulatedPort, SimulatedDevice

        dev = SimulatedDevice(EmulatedPort(get_params(params)))
        ol = load_pynq(path, download=True, device=dev)
        bit = read_xilinx_bit(path)
        return f"sim: {path.name} ({bit.design.split(';')[0]}, {bit.part}) downloaded; IP: {', '.join(sorted(ol.ip_dict))}"
    image = read_ice40_image(path)
    clock = VirtualClock()
    fpga = FakeIce40(clock, expected=image)
    report = load_ice40(image, fpga, fpga, sleep=clock.sleep, now=clock.now, name=str(path))
    if fpga.violations or not fpga.user_mode:
        raise UserError(f"simulated iCE40 configuration of {path} broke a timing rule: {fpga.violations[:1]}")
    return (f"sim: {path.name} ({len(image)} bytes) configured into the simulated iCE40 in "
            f"{report.seconds * 1e3:.1f} ms of bus time; CDONE high, user mode")
