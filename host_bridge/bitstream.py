"""Bitstream files and how each backend loads one.

File formats are checked *before* any hardware is touched; a wrong or truncated file is a
:class:`~mailpulse.errors.UserError` naming the file and what is wrong with it.

* Xilinx ``.bit`` (Zynq / PYNQ): the header (``0x0009 0FF00FF00FF00FF000 0x0001``, then fields
  ``a`` design, ``b`` part, ``c`` date, ``d`` time, ``e`` data length), the data length matching
  the file, the configuration sync word ``AA 99 55 66`` in the data, and the part.
* iCE40 ``.bin`` (icepack output): an optional comment block ``FF 00 ... 00 FF``, the sync word
  ``7E AA 99 7E``, and the wake-up command ``01 06`` near the end (a truncated file lacks it).

Loading an iCE40 image: the Lattice SPI slave configuration sequence (iCE40 programming and
configuration guide, TN1248 / FPGA-TN-02001) over ``spidev`` + ``gpiod``: ``SPI_SS_B`` low,
``CRESET_B`` low >= 200 ns, ``CRESET_B`` high, ``CDONE`` must be low, wait >= 1200 us
(housekeeping), ``SS`` high for 8 dummy clocks, ``SS`` low and the image (SPI mode 3, 1-25 MHz),
``SS`` high and >= 100 dummy clocks, ``CDONE`` must go high (within a timeout), >= 49 more clocks to
start the user design (:func:`load_ice40`).  A ``.bit`` is loaded by PYNQ
(:func:`mailpulse.pynq_overlays.overlay.load_overlay`); :func:`mailpulse.backends.load_bitstream`
picks the loader by backend name.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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
