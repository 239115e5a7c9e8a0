"""ECP5 builds with YoWASP, at the ULX3S's speed grade (6), each core on its PLL clock:

* ``stream-bench`` on the 25F: the streaming core of the Zynq IP (``zynq``, one sample per clock,
  the stream handshake and the global pipeline enable included) between an on-chip beat source
  and sink (``hdl/streambench.py``), ~16.5k LUT4s.  The issue's goal: >= 125 MHz at grade 6; the
  PLL runs it at 125 MHz and timing must close there.
* the board build (``mailpulse_spi`` with the folded core and the set the board ships, ``zynq-r16``:
  16 route intervals): closes at its 100 MHz PLL clock.

Slow (the stream-bench place and route took 4.8 minutes of one core on 2026-12-04, the SPI build
25 s, 72 s with the 16 route intervals; several times that on a loaded machine): in an xdist group of its own,
so it runs beside the rest of the suite on the other worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mailpulse.hdl.build import BuildReport, ToolMissing, build, tool_env
from mailpulse.hdl.params import get_params
from mailpulse.hdl.platforms import get_board

pytestmark = pytest.mark.xdist_group("build-ecp5")

#: ecppack's .bit: a comment block framed by FF 00 ... 00 FF, then padding, then this preamble.
ECP5_PREAMBLE = bytes.fromhex("FFFFBDB3")
CONFIG = "zynq"
#: The set the ECP5 boards ship in the SPI top: ``zynq`` with route intervals.
SPI_CONFIG = get_board("ecp5-25f").config("spi")
#: The issue's goal for the streaming core at the ULX3S speed grade.
STREAM_GOAL_MHZ = 125.0


def _need_tools() -> None:
    try:
        tool_env("ecp5")
    except ToolMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> BuildReport:
    _need_tools()
    return build("ecp5-25f", CONFIG, tmp_path_factory.mktemp("ecp5-stream"), top="stream-bench")


@pytest.fixture(scope="module")
def spi(tmp_path_factory: pytest.TempPathFactory) -> BuildReport:
    _need_tools()
    return build("ecp5-25f", None, tmp_path_factory.mktemp("ecp5-spi"))


def _check_bitstream(path: Path) -> None:
    data = path.read_bytes()
    assert data[:2] == b"\xff\x00", "ecppack's comment block is missing"
    end = data.index(b"\x00\xff", 2)
    assert b"LFE5U-25F" in data[2:end], data[2:end]
    pre = data.index(ECP5_PREAMBLE, end)
    assert set(data[end + 2:pre]) <= {0xFF}, "only padding may precede the preamble"
    assert len(data) > 100_000


def test_stream_bench_report(bench: BuildReport) -> None:
    r = bench
    p = get_params(CONFIG)
    assert (r.platform, r.config, r.top, r.core) == ("ecp5-25f", CONFIG, "stream-bench", "")
    assert r.device == "LFE5U-25F-6BG381C" and r.osc_mhz == 25.0
    assert "EHXPLLL 25 MHz -> 125.000 MHz" in r.pll
    assert r.fits
    assert r.usage["lut"].available == 24288 and r.usage["ram"].available == 56
    for kind in ("lut", "ff", "ram"):
        assert 0 < r.usage[kind].used <= r.usage[kind].available
    # the streaming core itself is there: K lanes of LUT projections (about 420 LUT4 each) and two
    # table banks of K*B 16-bit entries in 18-kbit DP16KDs (16 kbit of data each)
    assert r.usage["lut"].used > 400 * p.k
    assert r.usage["ram"].used >= 2 * p.k * p.b * 16 // 16384
    assert r.critical_path, "the critical path was not parsed from nextpnr's report"
    _check_bitstream(r.bitstream)


def test_stream_bench_closes_at_its_pll_clock_and_meets_the_goal(bench: BuildReport) -> None:
    """The board's clock for the streaming core (the PLL's 125 MHz) is what nextpnr timed, and
    timing closes there at the board's placer seed for this build (2: 127.3 MHz when this test was
    written, 117.1 MHz at seed 1): the goal, >= 125 MHz at the ULX3S's speed grade 6."""
    r = bench
    assert r.seed == get_board("ecp5-25f").seed("stream-bench", "", CONFIG) == 2
    assert get_board("ecp5-25f").clock_mhz("stream-bench", "", CONFIG) == STREAM_GOAL_MHZ
    assert r.target_mhz == pytest.approx(STREAM_GOAL_MHZ, abs=0.01)
    assert r.timing_met and r.fmax_mhz >= STREAM_GOAL_MHZ, (
        f"stream-bench on ECP5-25F grade 6: fmax {r.fmax_mhz:.1f} MHz < {STREAM_GOAL_MHZ} MHz "
        f"via {r.critical_sources}")


def test_ecp5_spi_board_build_closes_at_its_pll_clock(spi: BuildReport) -> None:
    """The board's default SPI build carries the route intervals (16 routes: 2R bounds of 24 bits in
    flip-flops) and closes at the board's clock at its seed (124.4 MHz at seed 1 when written)."""
    r = spi
    p = get_params(SPI_CONFIG)
    assert (r.top, r.core, r.config) == ("spi", "folded", SPI_CONFIG) and p.r == 16
    want = get_board("ecp5-25f").clock_mhz("spi", "folded", SPI_CONFIG)
    assert r.seed == get_board("ecp5-25f").seed("spi", "folded", SPI_CONFIG)
    assert r.target_mhz == pytest.approx(want, abs=0.01) and "EHXPLLL" in r.pll
    assert r.fits and r.usage["ram"].used >= 2 * p.k * p.b * 16 // 16384
    assert r.usage["ff"].used > 2 * p.r * 24
    assert r.timing_met, f"the ECP5 SPI build: fmax {r.fmax_mhz:.1f} MHz < {want} MHz via {r.critical_sources}"
    _check_bitstream(r.bitstream)
