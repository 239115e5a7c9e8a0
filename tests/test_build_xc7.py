"""Yosys ``synth_xilinx`` estimate of the real ``mailpulse_axi`` top for the xc7z020.

``synth_xilinx`` of the ``zynq`` set (K=32) takes several minutes on a busy machine, beyond this
part's test budget: the default run synthesises ``small`` (same top, same flow and parsing);
``MAILPULSE_SOAK=1`` synthesises ``zynq``.  Its 15 % LUT budget is reported, not asserted: it is
not met yet (24 % with the streaming core; see docs/builds.md).
"""

from __future__ import annotations

import os

import pytest

from hdl.build import XC7Z020, SynthReport, ToolMissing, synth_xc7, tool_env
from hdl.params import get_params

pytestmark = pytest.mark.xdist_group("builds")

SOAK = os.environ.get("MAILPULSE_SOAK") == "1"
CONFIG = "zynq" if SOAK else "small"


@pytest.fixture(scope="module")
def zynq(tmp_path_factory: pytest.TempPathFactory) -> SynthReport:
    try:
        tool_env("xc7")
    except ToolMissing as e:
        pytest.skip(str(e))
    return synth_xc7(CONFIG, tmp_path_factory.mktemp("xc7"))


def test_xc7_estimate_parsed(zynq: SynthReport) -> None:
    r = zynq
    p = get_params(CONFIG)
    assert r.config == CONFIG
    # Every projection adds D terms: there is real logic, and it fits the device.
    assert p.k * p.d < r.lut < XC7Z020["lut"]
    assert p.k * p.d < r.ff < XC7Z020["ff"]
    # Two table banks of K*B 16-bit entries: block RAM or LUT RAM holds them.
    table_bits = 2 * p.k * p.b * p.table_bits
    assert r.bram36 * 36 * 1024 >= table_bits or r.lutram * 64 >= table_bits
    assert r.cells, "no cell statistics"
    assert 0 < r.percent("lut") < 100
    text = r.format()
    assert "xc7z020" in text and ("PASS" in text or "FAIL" in text)

