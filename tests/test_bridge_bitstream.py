"""Bitstream files and loaders: format checks before any hardware is touched, the iCE40 SPI slave
configuration sequence against a fake device that enforces the datasheet's rules, and the
``mailpulse bitstream load`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ice40_double import FakeIce40, VirtualClock
from mailpulse.host_bridge.bitstream import (
    Ice40LoadReport,
    Ice40Timing,
    check_ice40_image,
    load_ice40,
    make_xilinx_bit,
    parse_xilinx_bit,
    placeholder_bit,
)
from mailpulse.pynq_overlays.hwh import write_hwh

from mailpulse.cli import main
from mailpulse.errors import UserError


def ice40_image(n: int = 4000, seed: int = 0) -> bytes:
    """An image framed like icepack's output: comment block, sync word, commands, CRC, wake-up."""
    body = np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()
    return (bytes.fromhex("ff0000ff") + bytes.fromhex("7eaa997e") + bytes.fromhex("5100010592002062")
            + body + bytes.fromhex("22aae7010600"))


def test_xilinx_bit_header_is_parsed_and_checked() -> None:
    bit = parse_xilinx_bit(placeholder_bit())
    assert bit.part == "7z020clg400" and bit.is_placeholder
    data = b"\xff" * 8 + bytes.fromhex("aa995566") + bytes(64)
    good = make_xilinx_bit("mailpulse_wrapper;UserID=0XFFFFFFFF;Version=2022.1", "7z020clg400", data)
    assert parse_xilinx_bit(good).design.startswith("mailpulse_wrapper") and not parse_xilinx_bit(good).is_placeholder
    with pytest.raises(UserError, match="truncated or padded"):
        parse_xilinx_bit(good[:-1])
    with pytest.raises(UserError, match=r"not a Xilinx \.bit"):
        parse_xilinx_bit(b"\x00" * 100)
    with pytest.raises(UserError, match="sync word"):
        parse_xilinx_bit(make_xilinx_bit("x", "7z020clg400", bytes(64)))
    with pytest.raises(UserError, match="truncated inside its header"):
        parse_xilinx_bit(good[:20])


def test_ice40_image_checks() -> None:
    img = ice40_image()
    assert check_ice40_image(img) == 4
    with pytest.raises(UserError, match="truncated"):
        check_ice40_image(img[:-100])
    with pytest.raises(UserError, match="sync word"):
        check_ice40_image(bytes.fromhex("ff0000ff") + bytes(200) + bytes.fromhex("0106"))
    with pytest.raises(UserError, match="too short"):
        check_ice40_image(b"\x7e\xaa\x99\x7e")


def _load(img: bytes, fpga: FakeIce40, clock: VirtualClock, timing: Ice40Timing | None = None) -> Ice40LoadReport:
    return load_ice40(img, fpga, fpga, timing=timing, sleep=clock.sleep, now=clock.now)


def test_ice40_sequence_follows_the_datasheet() -> None:
    img = ice40_image(20000)
    clock = VirtualClock()
    fpga = FakeIce40(clock, expected=img)
    fpga.mode = 0                                    # the register bridge's mode before and after
    report = _load(img, fpga, clock)
    assert fpga.violations == []
    assert fpga.user_mode and fpga.received == img
    assert fpga.mode == 0                            # restored for the register bridge
    kinds = [e[1] for e in fpga.events]
    # SS low, CRESET_B pulse, SS high for dummy clocks, SS low for the image, SS high after it
    assert kinds[:3] == ["ss=0", "creset=0", "creset=1"]
    assert kinds[3:6] == ["ss=1", "spi", "ss=0"]
    assert "cdone=1" in kinds and kinds.index("cdone=1") > kinds.index("ss=1", 6)
    t = {k: tt for tt, k, _ in fpga.events if k in ("creset=0", "creset=1")}
    assert t["creset=1"] - t["creset=0"] >= 200e-9
    first_clock = next(tt for tt, k, _ in fpga.events if k == "spi")
    assert first_clock - t["creset=1"] >= 1200e-6
    assert report.image_bytes == len(img)


def test_fake_rejects_short_housekeeping_and_the_loader_reports_it() -> None:
    img = ice40_image()
    clock = VirtualClock()
    fpga = FakeIce40(clock, expected=img)
    with pytest.raises(UserError, match="CDONE did not go high"):
        _load(img, fpga, clock, Ice40Timing(housekeeping_s=100e-6))
    assert any("1200 us" in v for v in fpga.violations)
    assert not fpga.user_mode


def test_fake_rejects_ss_high_at_reset() -> None:
    class StuckSS(FakeIce40):
        def set(self, name: str, value: bool) -> None:
            super().set(name, True if name == "ss" else value)

    img = ice40_image()
    clock = VirtualClock()
    fpga = StuckSS(clock, expected=img)
    with pytest.raises(UserError, match="CDONE did not go high"):
        _load(img, fpga, clock)
    assert any("boots as SPI master" in v for v in fpga.violations)


def test_cdone_stuck_high_and_bad_speed_are_errors() -> None:
    img = ice40_image()
    clock = VirtualClock()

    class CdoneStuck(FakeIce40):
        def get(self, name: str) -> bool:
            return True if name == "cdone" else super().get(name)

    with pytest.raises(UserError, match="did not reset"):
        _load(img, CdoneStuck(clock), clock)
    with pytest.raises(UserError, match=r"1\.\.25 MHz"):
        _load(img, FakeIce40(clock), clock, Ice40Timing(speed_hz=50_000_000))


def test_truncated_image_touches_no_pin() -> None:
    clock = VirtualClock()
    fpga = FakeIce40(clock)
    with pytest.raises(UserError, match="truncated"):
        _load(ice40_image()[:-50], fpga, clock)
    assert fpga.events == []


def test_cli_bitstream_load_sim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pynq", reason="pynq is not installed (the simulated .bit download uses it)")
    img = tmp_path / "scorer.bin"
    img.write_bytes(ice40_image(30000))
    assert main(["bitstream", "load", "--backend", "sim", str(img)]) == 2   # checked, then refused: no such device
    err = capsys.readouterr().err
    assert f"is a valid iCE40 image ({len(ice40_image(30000))} bytes)" in err and "--backend ice40" in err
    bit = tmp_path / "mailpulse.bit"
    bit.write_bytes(placeholder_bit())
    write_hwh(tmp_path / "mailpulse.hwh", "zynq")
    assert main(["bitstream", "load", "--backend", "sim", str(bit)]) == 0
    assert "mailpulse_0" in capsys.readouterr().out
    bad = tmp_path / "bad.bin"
    bad.write_bytes(ice40_image()[:-30])
    assert main(["bitstream", "load", "--backend", "sim", str(bad)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert main(["bitstream", "load", "--backend", "pynq", str(bit)]) == 2
    assert "placeholder" in capsys.readouterr().err
