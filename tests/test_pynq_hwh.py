"""The shipped overlay files: the .hwh as pynqmetadata reads it, and the Vivado TCL, against hdl/regmap.py."""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from mailpulse.hdl.beats import sample_bytes
from mailpulse.hdl.params import get_params
from mailpulse.hdl.regmap import ADDR_BITS, VLNV, RegisterMap
from mailpulse.host_bridge.core import params_from_registers
from mailpulse.pynq_overlays.hwh import (
    CONV_INSTANCE,
    DMA_INSTANCE,
    DMA_VLNV,
    OVERLAY_DIR,
    OVERLAY_PARAMS,
    SCORER_INSTANCE,
    AddressPlan,
    generate_hwh,
)
from mailpulse.pynq_overlays.tcl import generate_bd_tcl, generate_package_tcl
from mailpulse.pynq_overlays.tcl import main as tcl_main

HWH = OVERLAY_DIR / "mailpulse.hwh"
ACCESS = {"RO": "read-only", "RW": "read-write", "WO": "write-only"}


def parse_hwh(path: Path) -> Any:
    """The runtime view PYNQ builds from a .hwh (pynqmetadata, as pynq's EmbeddedDevice does)."""
    frontends = pytest.importorskip("pynqmetadata.frontends", reason="pynqmetadata (comes with pynq) is absent")
    runtime = pytest.importorskip("pynqmetadata.views.runtime", reason="pynqmetadata (comes with pynq) is absent")
    return runtime.RuntimeMetadataParser(frontends.Metadata(input=path))


@pytest.fixture(scope="module")
def parsed() -> Any:
    return parse_hwh(HWH)


def test_shipped_files_are_the_generated_ones() -> None:
    """Generated artefacts are rebuilt and diffed: the shipped files match the register map."""
    assert HWH.read_text(encoding="utf-8") == generate_hwh(OVERLAY_PARAMS, design="mailpulse")
    assert (OVERLAY_DIR / "package_ip.tcl").read_text(encoding="utf-8") == generate_package_tcl(OVERLAY_PARAMS)
    assert (OVERLAY_DIR / "build_overlay.tcl").read_text(encoding="utf-8") == generate_bd_tcl()


def test_scorer_ip_vlnv_address_and_range(parsed: Any) -> None:
    plan = AddressPlan()
    ip = parsed.ip_dict[SCORER_INSTANCE]
    assert ip["type"] == VLNV
    assert ip["phys_addr"] == plan.scorer_base
    assert ip["addr_range"] == 1 << ADDR_BITS == plan.scorer_range
    prm = ip["parameters"]
    p = get_params(OVERLAY_PARAMS)
    assert (int(prm["D"]), int(prm["K"]), int(prm["B"]), int(prm["R"]), prm["PARAMS_NAME"]) == (
        p.d, p.k, p.b, p.r, p.name)


def test_every_register_and_field_matches_the_map(parsed: Any) -> None:
    regmap = RegisterMap(get_params(OVERLAY_PARAMS))
    regs = dict(parsed.ip_dict[SCORER_INSTANCE]["registers"])
    expected = 0
    for reg in regmap:
        if reg.name == "TABLE":
            continue
        for i in range(reg.count):
            name = reg.name if reg.count == 1 else f"{reg.name}_{i}"
            assert name in regs, f"register {name} missing from the .hwh"
            got = regs.pop(name)
            expected += 1
            assert got["address_offset"] == reg.address(i), name
            assert got["size"] == 32
            assert got["access"] == ACCESS[reg.access], name
            fields = got["fields"]
            assert set(fields) == {f.name for f in reg.fields}, name
            for f in reg.fields:
                assert (fields[f.name]["bit_offset"], fields[f.name]["bit_width"]) == (f.lsb, f.width), (name, f.name)
    assert regs == {}, f"registers in the .hwh that the map does not declare: {sorted(regs)}"
    assert expected > 20


def test_table_window_is_a_memory_block() -> None:
    regmap = RegisterMap(get_params(OVERLAY_PARAMS))
    table = regmap["TABLE"]
    root = ET.parse(HWH).getroot()
    blocks = [b for m in root.iter("MODULE") if m.get("INSTANCE") == SCORER_INSTANCE for b in m.iter("ADDRESSBLOCK")]
    tb = [b for b in blocks if b.get("NAME") == "TABLE"]
    assert len(tb) == 1
    assert int(tb[0].get("BASE_ADDRESS", ""), 16) == table.offset
    assert int(tb[0].get("RANGE", "")) == 4 * table.count
    assert tb[0].get("USAGE") == "memory"


def test_dma_is_simple_mode_with_the_stream_widths(parsed: Any) -> None:
    plan = AddressPlan()
    dma = parsed.ip_dict[DMA_INSTANCE]
    assert dma["type"] == DMA_VLNV
    assert (dma["phys_addr"], dma["addr_range"]) == (plan.dma_base, plan.dma_range)
    prm = dma["parameters"]
    assert prm["c_include_sg"] == "0" and prm["c_micro_dma"] == "0"
    # the HP0 port's width on both sides; the sample beats (20 bytes) come from a width converter
    assert prm["c_m_axis_mm2s_tdata_width"] == "64" and prm["c_s_axis_s2mm_tdata_width"] == "64"
    mod = ET.fromstring(generate_hwh(OVERLAY_PARAMS)).find(f".//MODULE[@INSTANCE='{CONV_INSTANCE}']")
    assert mod is not None, "no width converter in the block design"
    conv = {e.get("NAME"): e.get("VALUE") for e in mod.iter("PARAMETER")}
    assert conv["S_TDATA_NUM_BYTES"] == "8"
    assert conv["M_TDATA_NUM_BYTES"] == str(sample_bytes(get_params(OVERLAY_PARAMS))) == "20"
    assert prm["c_include_mm2s"] == "1" and prm["c_include_s2mm"] == "1"
    assert dma["interrupts"] == {}      # the driver polls; interrupts are not wired
    assert parsed.clock_dict[0]["enable"] == 1


def test_windows_do_not_overlap(parsed: Any) -> None:
    spans = sorted((ip["phys_addr"], ip["phys_addr"] + ip["addr_range"]) for ip in parsed.ip_dict.values()
                   if ip.get("phys_addr") is not None and ip.get("addr_range"))
    for (_a0, a1), (b0, _b1) in itertools.pairwise(spans):
        assert a1 <= b0


def _tcl_words_balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_package_tcl_declares_every_register() -> None:
    p = get_params(OVERLAY_PARAMS)
    regmap = RegisterMap(p)
    text = generate_package_tcl(p)
    assert _tcl_words_balanced(text) and text.count("[") == text.count("]")
    vendor, library, name, version = VLNV.split(":")
    assert "ipx::package_project" in text and f"-vendor {vendor} -library {library}" in text
    assert f"set_property name {name} $core" in text and f"set_property version {version} $core" in text
    declared = dict(re.findall(r"set r \[ipx::add_register (\w+) \$ab\]\n"
                               r"set_property address_offset (0x[0-9A-F]+)", text))
    want = {}
    for reg in regmap:
        if reg.name != "TABLE":
            for i in range(reg.count):
                want[reg.name if reg.count == 1 else f"{reg.name}_{i}"] = f"0x{reg.address(i):04X}"
    assert declared == want
    assert f"set_property base_address 0x{regmap['TABLE'].offset:04X} $tb" in text
    for bus in ("s_axil", "s_axis", "m_axis", "aclk", "aresetn"):
        assert f"ipx::add_bus_interface {bus} $core" in text
    assert "ipx::save_core" in text


def test_build_tcl_builds_the_block_design_and_writes_bit_and_hwh() -> None:
    plan = AddressPlan()
    text = generate_bd_tcl(plan)
    assert _tcl_words_balanced(text) and text.count("[") == text.count("]")
    for needle in ("xilinx.com:ip:processing_system7:5.5", "xilinx.com:ip:axi_dma:7.1", VLNV,
                   "CONFIG.c_include_sg {0}", "CONFIG.c_m_axis_mm2s_tdata_width {64}",
                   "CONFIG.c_s_axis_s2mm_tdata_width {64}", "CONFIG.M_TDATA_NUM_BYTES {20}", "M_AXI_GP0", "S_AXI_HP0",
                   f"0x{plan.scorer_base:08X}", f"0x{plan.dma_base:08X}", "write_bitstream",
                   "[file join $out_dir $design.bit]", "[file join $out_dir $design.hwh]"):
        assert needle in text, needle
    assert f"{DMA_INSTANCE}/M_AXIS_MM2S] [get_bd_intf_pins {CONV_INSTANCE}/S_AXIS]" in text
    assert f"{CONV_INSTANCE}/M_AXIS] [get_bd_intf_pins {SCORER_INSTANCE}/s_axis]" in text
    assert f"{SCORER_INSTANCE}/m_axis] [get_bd_intf_pins {DMA_INSTANCE}/S_AXIS_S2MM]" in text


def test_hwh_for_every_parameter_set_parses(tmp_path: Path) -> None:
    """Each set's .hwh parses; its D/K/B/R are what the PARAMS register it declares decodes to (one
    source: the driver may take them from either), and the sample stream is as wide as the beat."""
    for name in ("small", "full", "small-r4", "zynq-r16"):
        path = tmp_path / f"{name}.hwh"
        path.write_text(generate_hwh(name, design=name), encoding="utf-8")
        ip = parse_hwh(path).ip_dict[SCORER_INSTANCE]
        p = get_params(name)
        rm = RegisterMap(p)
        from_regs = params_from_registers(rm["PARAMS"].reset, rm["WIDTHS"].reset)
        prm = ip["parameters"]
        assert (int(prm["D"]), int(prm["K"]), int(prm["B"]), int(prm["R"])) == (
            from_regs.d, from_regs.k, from_regs.b, from_regs.r) == (p.d, p.k, p.b, p.r)
        assert f"OFFSET_{p.k - 1}" in ip["registers"] and f"OFFSET_{p.k}" not in ip["registers"]
        assert f'<PARAMETER NAME="M_TDATA_NUM_BYTES" VALUE="{sample_bytes(p)}" />' in path.read_text(encoding="utf-8")
        assert f"set up [ipx::add_user_parameter R $core]\nset_property value {p.r} $up" in generate_package_tcl(p)
    assert sample_bytes(get_params("small-r4")) == sample_bytes(get_params("small")) + 4


def test_overlay_files_of_another_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m mailpulse.pynq_overlays.tcl --set zynq-r16 --out DIR`` writes that set's files; a
    set other than the shipped one without ``--out`` and an unknown set are one sentence each."""
    assert tcl_main(["--set", "zynq-r16", "--out", str(tmp_path)]) == 0
    assert generate_hwh("zynq-r16", design="mailpulse") == (tmp_path / "mailpulse.hwh").read_text(encoding="utf-8")
    assert "R=16" in (tmp_path / "package_ip.tcl").read_text(encoding="utf-8")
    for argv, text in ((["--set", "zynq-r16"], "--set zynq-r16 needs --out"),
                       (["--set", "zynq-r3", "--out", str(tmp_path)], "R must be 0 or a power of two"),
                       (["--set", "nope", "--out", str(tmp_path)], "unknown parameter set 'nope'")):
        with pytest.raises(SystemExit) as e:
            tcl_main(argv)
        assert e.value.code == 2 and text in capsys.readouterr().err


def test_fclk_rates_are_available_to_overlay_download(parsed: Any) -> None:
    """pynqmetadata 0.2 reads no FCLK rate for a Zynq-7000; fill_fclk_rates takes the PS7's PCW_ACT_* value."""
    pytest.importorskip("pynq", reason="pynq is not installed")

    from mailpulse.pynq_overlays.overlay import fill_fclk_rates

    clocks = copy.deepcopy(parsed.clock_dict)
    missing = sum(1 for c in clocks.values() if c.get("frequency") is None)
    assert fill_fclk_rates(clocks, parsed.ip_dict, parsed.ps_name) == missing
    assert clocks[0]["frequency"] == float(AddressPlan().fclk0_mhz)
