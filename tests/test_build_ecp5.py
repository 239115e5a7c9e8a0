"""ECP5 bitstream build of the real ``mailpulse_spi`` top with YoWASP: the board's own build,
``zynq`` with the streaming (one sample per clock) core, ~16k LUT4s.

Slow (place and route takes ~6 minutes of one core): it is in an xdist group of its own, so it
runs beside the rest of the suite on the other worker.  The issue's 150 MHz target is asserted.
"""

from __future__ import annotations

import pytest
from mailpulse.hdl.build import BuildReport, ToolMissing, build, tool_env
from mailpulse.hdl.params import get_params

pytestmark = pytest.mark.xdist_group("build-ecp5")

#: ecppack's .bit: a comment block framed by FF 00 ... 00 FF, then padding, then this preamble.
ECP5_PREAMBLE = bytes.fromhex("FFFFBDB3")
CONFIG, CORE = "zynq", "stream"


@pytest.fixture(scope="module")
def ecp5(tmp_path_factory: pytest.TempPathFactory) -> BuildReport:
    try:
        tool_env("ecp5")
    except ToolMissing as e:
        pytest.skip(str(e))
    return build("ecp5-25f", CONFIG, tmp_path_factory.mktemp("ecp5"), core=CORE)


def test_ecp5_25f_report(ecp5: BuildReport) -> None:
    r = ecp5
    p = get_params(CONFIG)
    assert (r.platform, r.config, r.core, r.target_mhz) == ("ecp5-25f", CONFIG, CORE, p.target_mhz)
    assert r.fits
    assert r.usage["lut"].available == 24288 and r.usage["ram"].available == 56
    for kind in ("lut", "ff", "ram"):
        assert 0 < r.usage[kind].used <= r.usage[kind].available
    # Two table banks of K*B 16-bit entries fit in 18-kbit DP16KDs (16 kbit of data each).
    assert r.usage["ram"].used >= 2 * p.k * p.b * 16 // 16384
    assert 10.0 < r.fmax_mhz < 500.0


def test_ecp5_bitstream_preamble(ecp5: BuildReport) -> None:
    data = ecp5.bitstream.read_bytes()
    assert data[:2] == b"\xff\x00", "ecppack's comment block is missing"
    end = data.index(b"\x00\xff", 2)
    assert b"LFE5U-25F" in data[2:end], data[2:end]
    pre = data.index(ECP5_PREAMBLE, end)
    assert set(data[end + 2:pre]) <= {0xFF}, "only padding may precede the preamble"
    assert len(data) > 100_000



def test_ecp5_zynq_meets_150mhz(ecp5: BuildReport) -> None:
    """The issue's target for ``zynq`` on the ECP5 (157 MHz at seed 1 when this test was written;
    the block RAM's clock-to-out into the table-value register is the critical path)."""
    assert ecp5.timing_met, f"zynq on ECP5-25F: fmax {ecp5.fmax_mhz:.1f} MHz < 150 MHz via {ecp5.critical_sources}"
