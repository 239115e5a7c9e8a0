"""Generated artifacts: the checked-in register docs/JSON equal a fresh generation, Verilog of every
top for every parameter set generates with the documented module and port names, and the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mailpulse.hdl.params import PARAMETER_SETS
from mailpulse.hdl.regdoc import regmap_text
from mailpulse.hdl.tops import write_verilog

from mailpulse.cli import main
from mailpulse.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(PARAMETER_SETS))
def test_checked_in_regmap_json_is_current(name: str) -> None:
    path = ROOT / "hdl" / f"regmap_{name}.json"
    assert path.read_text() == regmap_text(name, "json"), (
        f"{path} is stale: run `mailpulse hdl regmap --config {name} --format json -o {path.relative_to(ROOT)}`")


def test_checked_in_registers_md_is_current() -> None:
    path = ROOT / "docs" / "registers.md"
    assert path.read_text() == regmap_text("full", "md"), (
        "docs/registers.md is stale: run `mailpulse hdl regmap --config full --format md -o docs/registers.md`")


AXI_PORTS = {"aclk", "aresetn", "s_axil__awaddr", "s_axil__awvalid", "s_axil__awready", "s_axil__wdata",
             "s_axil__wstrb", "s_axil__wvalid", "s_axil__wready", "s_axil__bresp", "s_axil__bvalid",
             "s_axil__bready", "s_axil__araddr", "s_axil__arvalid", "s_axil__arready", "s_axil__rdata",
             "s_axil__rresp", "s_axil__rvalid", "s_axil__rready", "s_axis__tdata", "s_axis__tvalid",
             "s_axis__tready", "s_axis__tlast", "m_axis__tdata", "m_axis__tvalid", "m_axis__tready",
             "m_axis__tlast"}
SPI_PORTS = {"clk", "rst", "spi__sck", "spi__cs_n", "spi__mosi", "spi__miso", "irq"}


def top_ports(text: str, module: str) -> dict[str, str]:
    """Port name -> declaration ("input [255:0]") of ``module``."""
    body = text[text.index(f"module {module}("):]
    body = body[:body.index("endmodule")]
    return {m.group(3): f"{m.group(1)} {m.group(2) or ''}".strip()
            for m in re.finditer(r"^\s*(input|output)\s+(\[\d+:0\]\s+)?\\?([\w$]+)\s*;", body, re.M)}


@pytest.mark.xdist_group("hdl-verilog")
@pytest.mark.parametrize("name", sorted(PARAMETER_SETS))
def test_verilog_for_every_set_and_top(name: str, tmp_path: Path) -> None:
    axi = write_verilog(name, "axi", tmp_path / "axi.v")
    ports = top_ports(axi, "mailpulse_axi")
    assert set(ports) == AXI_PORTS | {"s_axil__awprot", "s_axil__arprot"}
    assert ports["s_axis__tdata"] == "input [159:0]" and ports["m_axis__tdata"] == "output [63:0]"
    assert ports["s_axil__awaddr"] == "input [15:0]"
    assert (tmp_path / "axi.v").read_text() == axi
    spi = write_verilog(name, "spi", None)
    assert set(top_ports(spi, "mailpulse_spi")) == SPI_PORTS


def test_cli_errors_and_regmap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match="unknown parameter set 'huge'"):
        write_verilog("huge", "axi", None)
    with pytest.raises(UserError, match="unknown top"):
        write_verilog("small", "pcie", None)
    assert main(["hdl", "verilog", "--config", "huge", "-o", str(tmp_path / "x.v")]) == 2
    assert "unknown parameter set" in capsys.readouterr().err
    out = tmp_path / "r.json"
    assert main(["hdl", "regmap", "--config", "small", "--format", "json", "-o", str(out)]) == 0
    assert out.read_text() == (ROOT / "hdl" / "regmap_small.json").read_text()
