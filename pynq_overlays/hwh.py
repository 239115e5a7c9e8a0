"""Generate the ``.hwh`` (hardware handoff) of the mailpulse block design from the register map.

The block design is the one ``pynq_overlays/tcl.py`` builds in Vivado for a Zynq-7020
(PYNQ-Z2): the PS7, the scorer IP on ``M_AXI_GP0`` and an AXI DMA (simple mode) with 64-bit
streams, the width of the ``S_AXI_HP0`` port both DMA masters use.  The MM2S stream reaches the
scorer's dense ``s_axis`` (20 bytes per sample for D = 8, :mod:`mailpulse.hdl.beats`) through an
AXI4-Stream data width converter (8 to 20 bytes); the scorer's 64-bit ``m_axis`` feeds S2MM
directly.  The file carries what PYNQ reads: the modules
and their VLNVs, the PS memory map (base address and range of each IP), the IP parameters and
the scorer's registers and fields, all taken from :class:`mailpulse.hdl.regmap.RegisterMap`.
The scorer's IP parameters ``D``, ``K``, ``B`` and ``R`` (route intervals, 0 for none) come from the
same :class:`~mailpulse.hdl.params.CoreParams` as its ``PARAMS`` register (``R`` is
``PARAMS.ROUTES_LOG2`` decoded); the driver takes its parameters from them
(:func:`mailpulse.pynq_overlays.driver.params_from_description`), and the stream widths follow R
(a sample beat with routes is 4 bytes longer: 24 bytes for D = 8).

Register arrays appear as one register per element, named ``NAME_i`` (``FEATURE_0``,
``WEIGHTS_31``).  The ``TABLE`` window (up to 8192 words) is declared as an address block with
``USAGE="memory"`` of its own instead of thousands of registers.  When Vivado builds the real
design it writes its own ``.hwh`` next to the ``.bit``; ``tests/test_pynq_hwh.py`` defines what that
file must agree on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from mailpulse.hdl.beats import RESULT_BEAT_BITS, sample_beat_bits
from mailpulse.hdl.params import CoreParams, get_params
from mailpulse.hdl.regmap import ADDR_BITS, VLNV, RegisterMap

#: Where the overlay's files live (package data).
OVERLAY_DIR = Path(__file__).resolve().parent / "mailpulse"
#: The parameter set of the shipped Zynq overlay.
OVERLAY_PARAMS = "zynq"
#: Instance names in the block design (the overlay's attribute names).
SCORER_INSTANCE = "mailpulse_0"
DMA_INSTANCE = "axi_dma_0"
PS_INSTANCE = "processing_system7_0"
DMA_VLNV = "xilinx.com:ip:axi_dma:7.1"
CONV_INSTANCE = "axis_dwidth_converter_0"
CONV_VLNV = "xilinx.com:ip:axis_dwidth_converter:1.1"
#: Width of the DMA's streams and memory-mapped masters: the PS7's HP0 port (64 bits).
DMA_STREAM_BITS = 64
assert RESULT_BEAT_BITS == DMA_STREAM_BITS, "the result beat goes to S2MM without a width converter"
PS_VLNV = "xilinx.com:ip:processing_system7:5.5"


@dataclass(frozen=True)
class AddressPlan:
    """Where the PS sees each IP on ``M_AXI_GP0`` (Vivado's default assignment)."""

    scorer_base: int = 0x43C0_0000
    scorer_range: int = 1 << ADDR_BITS
    dma_base: int = 0x4040_0000
    dma_range: int = 0x1_0000
    fclk0_mhz: int = 100


#: AXI DMA (PG021) registers that the simple-mode driver uses: name, offset, access.
DMA_REGISTERS = (
    ("MM2S_DMACR", 0x00, "read-write"), ("MM2S_DMASR", 0x04, "read-write"),
    ("MM2S_SA", 0x18, "read-write"), ("MM2S_SA_MSB", 0x1C, "read-write"),
    ("MM2S_LENGTH", 0x28, "read-write"),
    ("S2MM_DMACR", 0x30, "read-write"), ("S2MM_DMASR", 0x34, "read-write"),
    ("S2MM_DA", 0x48, "read-write"), ("S2MM_DA_MSB", 0x4C, "read-write"),
    ("S2MM_LENGTH", 0x58, "read-write"),
)

_ACCESS = {"RO": "read-only", "RW": "read-write", "WO": "write-only"}

#: Ports of the scorer's Verilog top ``mailpulse_axi`` (docs/interfaces.md), as (name, dir, width).
AXIL_SIGNALS = (
    ("AWADDR", "I", ADDR_BITS), ("AWPROT", "I", 3), ("AWVALID", "I", 1), ("AWREADY", "O", 1),
    ("WDATA", "I", 32), ("WSTRB", "I", 4), ("WVALID", "I", 1), ("WREADY", "O", 1),
    ("BRESP", "O", 2), ("BVALID", "O", 1), ("BREADY", "I", 1),
    ("ARADDR", "I", ADDR_BITS), ("ARPROT", "I", 3), ("ARVALID", "I", 1), ("ARREADY", "O", 1),
    ("RDATA", "O", 32), ("RRESP", "O", 2), ("RVALID", "O", 1), ("RREADY", "I", 1),
)


def _axis_signals(width: int, master: bool) -> tuple[tuple[str, str, int], ...]:
    out, inp = ("O", "I") if master else ("I", "O")
    return (("TDATA", out, width), ("TVALID", out, 1), ("TREADY", inp, 1), ("TLAST", out, 1))


def _sub(parent: ET.Element, tag: str, **attrs: str | int) -> ET.Element:
    return ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})


def _params(parent: ET.Element, values: dict[str, str | int]) -> None:
    ps = _sub(parent, "PARAMETERS")
    for k, v in values.items():
        _sub(ps, "PARAMETER", NAME=k, VALUE=v)


def _ports(parent: ET.Element, ports: list[tuple[str, str, int, list[tuple[str, str]]]]) -> None:
    el = _sub(parent, "PORTS")
    for name, direction, width, conns in ports:
        attrs: dict[str, str | int] = {"DIR": direction, "NAME": name, "SIGIS": "undef"}
        if width > 1:
            attrs.update(LEFT=width - 1, RIGHT=0)
        if name in ("aclk", "FCLK_CLK0", "s_axi_lite_aclk", "m_axi_mm2s_aclk", "m_axi_s2mm_aclk"):
            attrs["SIGIS"] = "clk"
        if name in ("aresetn", "axi_resetn"):
            attrs["SIGIS"] = "rst"
        p = _sub(el, "PORT", **attrs)
        if conns:
            c = _sub(p, "CONNECTIONS")
            for inst, port in conns:
                _sub(c, "CONNECTION", INSTANCE=inst, PORT=port)


def _busif(parent: ET.Element, name: str, kind: str, vlnv: str, busname: str,
           portmap: list[tuple[str, str]], params: dict[str, str | int], datawidth: int | None = None) -> None:
    attrs: dict[str, str | int] = {"BUSNAME": busname, "NAME": name, "TYPE": kind, "VLNV": vlnv}
    if datawidth is not None:
        attrs["DATAWIDTH"] = datawidth
    b = _sub(parent, "BUSINTERFACE", **attrs)
    for k, v in params.items():
        _sub(b, "PARAMETER", NAME=k, VALUE=v)
    pm = _sub(b, "PORTMAPS")
    for logical, physical in portmap:
        _sub(pm, "PORTMAP", LOGICAL=logical, PHYSICAL=physical)


def _register(parent: ET.Element, name: str, offset: int, access: str, description: str, reset: int,
              fields: list[tuple[str, int, int, str]]) -> None:
    r = _sub(parent, "REGISTER", NAME=name)
    for k, v in (("DESCRIPTION", description), ("ADDRESS_OFFSET", f"0x{offset:X}"), ("SIZE", 32),
                 ("ACCESS", access), ("IS_ENABLED", "true"), ("RESET_VALUE", f"0x{reset:X}")):
        _sub(r, "PROPERTY", NAME=k, VALUE=v)
    fs = _sub(r, "FIELDS")
    for fname, lsb, width, fdoc in fields:
        f = _sub(fs, "FIELD", NAME=fname)
        for k, v in (("DESCRIPTION", fdoc), ("ADDRESS_OFFSET", lsb), ("ACCESS", access),
                     ("BIT_OFFSET", lsb), ("BIT_WIDTH", width)):
            _sub(f, "PROPERTY", NAME=k, VALUE=v)


def register_entries(regmap: RegisterMap) -> list[tuple[str, int, str, str, int, list[tuple[str, int, int, str]]]]:
    """The hwh register list: (name, offset, access, description, reset, fields); TABLE excluded."""
    out = []
    for reg in regmap:
        if reg.name == "TABLE":
            continue
        fields = [(f.name, f.lsb, f.width, f.doc) for f in reg.fields]
        for i in range(reg.count):
            name = reg.name if reg.count == 1 else f"{reg.name}_{i}"
            out.append((name, reg.address(i), _ACCESS[reg.access], reg.doc, reg.reset, fields))
    return out


def _scorer_module(mods: ET.Element, params: CoreParams, plan: AddressPlan) -> None:
    regmap = RegisterMap(params)
    _vendor, _library, name, version = VLNV.split(":")
    m = _sub(mods, "MODULE", COREREVISION=1, FULLNAME=f"/{SCORER_INSTANCE}", HWVERSION=version,
             INSTANCE=SCORER_INSTANCE, IPTYPE="PERIPHERAL", IS_ENABLE=1, MODCLASS="PERIPHERAL",
             MODTYPE=name, VLNV=VLNV)
    _sub(m, "DOCUMENTS")
    blocks = _sub(m, "ADDRESSBLOCKS")
    regs_block = _sub(blocks, "ADDRESSBLOCK", ACCESS="read-write", INTERFACE="s_axil", NAME="registers",
                      RANGE=plan.scorer_range, USAGE="register")
    regs_el = _sub(regs_block, "REGISTERS")
    for entry in register_entries(regmap):
        _register(regs_el, *entry)
    table = regmap["TABLE"]
    _sub(blocks, "ADDRESSBLOCK", ACCESS="write-only", BASE_ADDRESS=f"0x{table.offset:X}", INTERFACE="s_axil",
         NAME="TABLE", RANGE=4 * table.count, USAGE="memory")
    _params(m, {
        "Component_Name": f"mailpulse_{SCORER_INSTANCE}", "EDK_IPTYPE": "PERIPHERAL",
        "PARAMS_NAME": params.name, "D": params.d, "K": params.k, "B": params.b, "R": params.r,
        "IN_BITS": params.in_bits, "TABLE_BITS": params.table_bits,
        "C_S_AXIL_BASEADDR": f"0x{plan.scorer_base:08X}",
        "C_S_AXIL_HIGHADDR": f"0x{plan.scorer_base + plan.scorer_range - 1:08X}",
    })
    ports: list[tuple[str, str, int, list[tuple[str, str]]]] = [
        ("aclk", "I", 1, [(PS_INSTANCE, "FCLK_CLK0")]),
        ("aresetn", "I", 1, []),
    ]
    ports += [(f"s_axil__{s.lower()}", d, w, []) for s, d, w in AXIL_SIGNALS]
    sbits = sample_beat_bits(params)
    ports += [(f"s_axis__{s.lower()}", d, w, [(CONV_INSTANCE, f"m_axis_{s.lower()}")])
              for s, d, w in _axis_signals(sbits, master=False)]
    ports += [(f"m_axis__{s.lower()}", d, w, [(DMA_INSTANCE, f"s_axis_s2mm_{s.lower()}")])
              for s, d, w in _axis_signals(RESULT_BEAT_BITS, master=True)]
    _ports(m, ports)
    bifs = _sub(m, "BUSINTERFACES")
    _busif(bifs, "s_axil", "SLAVE", "xilinx.com:interface:aximm:1.0", "ps7_0_axi_periph_M01_AXI",
           [(s, f"s_axil__{s.lower()}") for s, _d, _w in AXIL_SIGNALS],
           {"ADDR_WIDTH": ADDR_BITS, "DATA_WIDTH": 32, "PROTOCOL": "AXI4LITE", "HAS_WSTRB": 1,
            "FREQ_HZ": plan.fclk0_mhz * 1_000_000}, datawidth=32)
    _busif(bifs, "s_axis", "TARGET", "xilinx.com:interface:axis:1.0", f"{CONV_INSTANCE}_M_AXIS",
           [(s, f"s_axis__{s.lower()}") for s, _d, _w in _axis_signals(sbits, False)],
           {"TDATA_NUM_BYTES": sbits // 8, "HAS_TLAST": 1, "HAS_TREADY": 1, "HAS_TKEEP": 0})
    _busif(bifs, "m_axis", "INITIATOR", "xilinx.com:interface:axis:1.0", f"{SCORER_INSTANCE}_m_axis",
           [(s, f"m_axis__{s.lower()}") for s, _d, _w in _axis_signals(RESULT_BEAT_BITS, True)],
           {"TDATA_NUM_BYTES": RESULT_BEAT_BITS // 8, "HAS_TLAST": 1, "HAS_TREADY": 1, "HAS_TKEEP": 0})


def _conv_module(mods: ET.Element, params: CoreParams) -> None:
    """The AXI4-Stream data width converter from the DMA's 8-byte beats to the sample beat."""
    sbits = sample_beat_bits(params)
    m = _sub(mods, "MODULE", COREREVISION=25, FULLNAME=f"/{CONV_INSTANCE}", HWVERSION="1.1", INSTANCE=CONV_INSTANCE,
             IPTYPE="PERIPHERAL", IS_ENABLE=1, MODCLASS="PERIPHERAL", MODTYPE="axis_dwidth_converter",
             VLNV=CONV_VLNV)
    _sub(m, "DOCUMENTS")
    _params(m, {"S_TDATA_NUM_BYTES": DMA_STREAM_BITS // 8, "M_TDATA_NUM_BYTES": sbits // 8, "HAS_TLAST": 1,
                "HAS_TKEEP": 1, "HAS_MI_TKEEP": 0, "Component_Name": f"mailpulse_{CONV_INSTANCE}"})
    ports: list[tuple[str, str, int, list[tuple[str, str]]]] = [
        ("aclk", "I", 1, [(PS_INSTANCE, "FCLK_CLK0")]),
        ("aresetn", "I", 1, []),
    ]
    ports += [(f"s_axis_{s.lower()}", d, w, [(DMA_INSTANCE, f"m_axis_mm2s_{s.lower()}")])
              for s, d, w in _axis_signals(DMA_STREAM_BITS, master=False)]
    ports += [(f"m_axis_{s.lower()}", d, w, [(SCORER_INSTANCE, f"s_axis__{s.lower()}")])
              for s, d, w in _axis_signals(sbits, master=True)]
    _ports(m, ports)
    bifs = _sub(m, "BUSINTERFACES")
    _busif(bifs, "S_AXIS", "TARGET", "xilinx.com:interface:axis:1.0", f"{DMA_INSTANCE}_M_AXIS_MM2S",
           [(s, f"s_axis_{s.lower()}") for s, _d, _w in _axis_signals(DMA_STREAM_BITS, False)],
           {"TDATA_NUM_BYTES": DMA_STREAM_BITS // 8, "HAS_TLAST": 1, "HAS_TKEEP": 1})
    _busif(bifs, "M_AXIS", "INITIATOR", "xilinx.com:interface:axis:1.0", f"{CONV_INSTANCE}_M_AXIS",
           [(s, f"m_axis_{s.lower()}") for s, _d, _w in _axis_signals(sbits, True)],
           {"TDATA_NUM_BYTES": sbits // 8, "HAS_TLAST": 1, "HAS_TKEEP": 0})


def _dma_module(mods: ET.Element, plan: AddressPlan) -> None:
    m = _sub(mods, "MODULE", COREREVISION=21, FULLNAME=f"/{DMA_INSTANCE}", HWVERSION="7.1", INSTANCE=DMA_INSTANCE,
             IPTYPE="PERIPHERAL", IS_ENABLE=1, MODCLASS="PERIPHERAL", MODTYPE="axi_dma", VLNV=DMA_VLNV)
    _sub(m, "DOCUMENTS")
    blocks = _sub(m, "ADDRESSBLOCKS")
    b = _sub(blocks, "ADDRESSBLOCK", ACCESS="read-write", INTERFACE="S_AXI_LITE", NAME="Reg", RANGE=4096,
             USAGE="register")
    regs = _sub(b, "REGISTERS")
    for name, off, acc in DMA_REGISTERS:
        _register(regs, name, off, acc, f"AXI DMA {name} (PG021)", 0, [(name, 0, 32, name)])
    values: dict[str, str | int] = {
        "C_INCLUDE_SG": 0, "C_SG_LENGTH_WIDTH": 26, "C_MICRO_DMA": 0, "C_INCLUDE_MM2S": 1,
        "C_INCLUDE_S2MM": 1, "C_M_AXI_MM2S_DATA_WIDTH": DMA_STREAM_BITS, "C_M_AXI_S2MM_DATA_WIDTH": DMA_STREAM_BITS,
        "C_M_AXIS_MM2S_TDATA_WIDTH": DMA_STREAM_BITS, "C_S_AXIS_S2MM_TDATA_WIDTH": DMA_STREAM_BITS,
        "C_INCLUDE_MM2S_DRE": 0,
        "C_INCLUDE_S2MM_DRE": 0, "C_MM2S_BURST_SIZE": 16, "C_S2MM_BURST_SIZE": 16, "C_ADDR_WIDTH": 32,
    }
    values.update({k.lower(): v for k, v in list(values.items())})
    values.update({"C_BASEADDR": f"0x{plan.dma_base:08X}", "C_HIGHADDR": f"0x{plan.dma_base + plan.dma_range - 1:08X}"})
    _params(m, values)
    ports: list[tuple[str, str, int, list[tuple[str, str]]]] = [
        ("s_axi_lite_aclk", "I", 1, [(PS_INSTANCE, "FCLK_CLK0")]),
        ("axi_resetn", "I", 1, []),
    ]
    ports += [(f"m_axis_mm2s_{s.lower()}", d, w, [(CONV_INSTANCE, f"s_axis_{s.lower()}")])
              for s, d, w in _axis_signals(DMA_STREAM_BITS, master=True)]
    ports += [(f"s_axis_s2mm_{s.lower()}", d, w, [(SCORER_INSTANCE, f"m_axis__{s.lower()}")])
              for s, d, w in _axis_signals(DMA_STREAM_BITS, master=False)]
    _ports(m, ports)
    bifs = _sub(m, "BUSINTERFACES")
    _busif(bifs, "S_AXI_LITE", "SLAVE", "xilinx.com:interface:aximm:1.0", "ps7_0_axi_periph_M00_AXI", [],
           {"ADDR_WIDTH": 10, "DATA_WIDTH": 32, "PROTOCOL": "AXI4LITE"}, datawidth=32)
    _busif(bifs, "M_AXIS_MM2S", "INITIATOR", "xilinx.com:interface:axis:1.0", f"{DMA_INSTANCE}_M_AXIS_MM2S",
           [(s, f"m_axis_mm2s_{s.lower()}") for s, _d, _w in _axis_signals(DMA_STREAM_BITS, True)],
           {"TDATA_NUM_BYTES": DMA_STREAM_BITS // 8, "HAS_TLAST": 1})
    _busif(bifs, "S_AXIS_S2MM", "TARGET", "xilinx.com:interface:axis:1.0", f"{SCORER_INSTANCE}_m_axis",
           [(s, f"s_axis_s2mm_{s.lower()}") for s, _d, _w in _axis_signals(DMA_STREAM_BITS, False)],
           {"TDATA_NUM_BYTES": DMA_STREAM_BITS // 8, "HAS_TLAST": 1})
    for name in ("M_AXI_MM2S", "M_AXI_S2MM"):
        _busif(bifs, name, "MASTER", "xilinx.com:interface:aximm:1.0", "axi_mem_intercon_M00_AXI", [],
               {"DATA_WIDTH": 64, "PROTOCOL": "AXI4"}, datawidth=64)
    mm = _sub(m, "MEMORYMAP")
    for name in ("M_AXI_MM2S", "M_AXI_S2MM"):
        _sub(mm, "MEMRANGE", ADDRESSBLOCK="HP0_DDR_LOWOCM", BASENAME="C_BASEADDR", BASEVALUE="0x00000000",
             HIGHNAME="C_HIGHADDR", HIGHVALUE="0x1FFFFFFF", INSTANCE=PS_INSTANCE, IS_DATA="TRUE",
             IS_INSTRUCTION="TRUE", MASTERBUSINTERFACE=name, MEMTYPE="MEMORY", SLAVEBUSINTERFACE="S_AXI_HP0")


def _ps_module(mods: ET.Element, plan: AddressPlan) -> None:
    m = _sub(mods, "MODULE", CONFIGURABLE="TRUE", COREREVISION=6, FULLNAME=f"/{PS_INSTANCE}", HWVERSION="5.5",
             INSTANCE=PS_INSTANCE, IPTYPE="PERIPHERAL", IS_ENABLE=1, IS_PL="FALSE", MODTYPE="processing_system7",
             VLNV=PS_VLNV)
    _sub(m, "DOCUMENTS")
    values: dict[str, str | int] = {"C_FCLK_CLK0_FREQ": plan.fclk0_mhz * 1_000_000, "PCW_USE_S_AXI_HP0": 1,
                                    "PCW_USE_M_AXI_GP0": 1, "PCW_S_AXI_HP0_DATA_WIDTH": 64}
    for i in range(4):
        values[f"PCW_FPGA_FCLK{i}_ENABLE"] = 1 if i == 0 else 0
        values[f"PCW_FCLK{i}_PERIPHERAL_CLKSRC"] = "IO PLL"
        values[f"PCW_FCLK{i}_PERIPHERAL_DIVISOR0"] = 5 if i == 0 else 1
        values[f"PCW_FCLK{i}_PERIPHERAL_DIVISOR1"] = 2 if i == 0 else 1
        values[f"PCW_FPGA{i}_PERIPHERAL_FREQMHZ"] = plan.fclk0_mhz if i == 0 else 50
        values[f"PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ"] = f"{plan.fclk0_mhz if i == 0 else 10:.6f}"
    _params(m, values)
    _ports(m, [("FCLK_CLK0", "O", 1, [(SCORER_INSTANCE, "aclk"), (DMA_INSTANCE, "s_axi_lite_aclk"),
                                      (CONV_INSTANCE, "aclk")]),
               ("FCLK_RESET0_N", "O", 1, [])])
    bifs = _sub(m, "BUSINTERFACES")
    _busif(bifs, "M_AXI_GP0", "MASTER", "xilinx.com:interface:aximm:1.0", "processing_system7_0_M_AXI_GP0", [],
           {"DATA_WIDTH": 32, "PROTOCOL": "AXI3", "ADDR_WIDTH": 32}, datawidth=32)
    _busif(bifs, "S_AXI_HP0", "SLAVE", "xilinx.com:interface:aximm:1.0", "axi_mem_intercon_M00_AXI", [],
           {"DATA_WIDTH": 64, "PROTOCOL": "AXI3"}, datawidth=64)
    mm = _sub(m, "MEMORYMAP")
    _sub(mm, "MEMRANGE", ADDRESSBLOCK="Reg", BASENAME="C_BASEADDR", BASEVALUE=f"0x{plan.dma_base:08X}",
         HIGHNAME="C_HIGHADDR", HIGHVALUE=f"0x{plan.dma_base + plan.dma_range - 1:08X}", INSTANCE=DMA_INSTANCE,
         IS_DATA="TRUE", IS_INSTRUCTION="TRUE", MASTERBUSINTERFACE="M_AXI_GP0", MEMTYPE="REGISTER",
         SLAVEBUSINTERFACE="S_AXI_LITE")
    _sub(mm, "MEMRANGE", ADDRESSBLOCK="registers", BASENAME="C_S_AXIL_BASEADDR",
         BASEVALUE=f"0x{plan.scorer_base:08X}", HIGHNAME="C_S_AXIL_HIGHADDR",
         HIGHVALUE=f"0x{plan.scorer_base + plan.scorer_range - 1:08X}", INSTANCE=SCORER_INSTANCE,
         IS_DATA="TRUE", IS_INSTRUCTION="TRUE", MASTERBUSINTERFACE="M_AXI_GP0", MEMTYPE="REGISTER",
         SLAVEBUSINTERFACE="s_axil")
    per = _sub(m, "PERIPHERALS")
    _sub(per, "PERIPHERAL", INSTANCE=DMA_INSTANCE)
    _sub(per, "PERIPHERAL", INSTANCE=SCORER_INSTANCE)


def generate_hwh(params: CoreParams | str = OVERLAY_PARAMS, plan: AddressPlan | None = None,
                 design: str = "mailpulse") -> str:
    """The ``.hwh`` text of the block design for one parameter set (deterministic: no timestamp)."""
    p = get_params(params) if isinstance(params, str) else params
    plan = plan or AddressPlan()
    root = ET.Element("EDKSYSTEM", {"EDWVERSION": "1.2", "TIMESTAMP": "generated by mailpulse from hdl/regmap.py",
                                    "VIVADOVERSION": "2022.1"})
    _sub(root, "SYSTEMINFO", ARCH="zynq", BOARD="tul.com.tw:pynq-z2:part0:1.0", DEVICE="7z020", NAME=design,
         PACKAGE="clg400", SPEEDGRADE="-1")
    _sub(root, "EXTERNALPORTS")
    _sub(root, "EXTERNALINTERFACES")
    mods = _sub(root, "MODULES")
    _dma_module(mods, plan)
    _conv_module(mods, p)
    _scorer_module(mods, p, plan)
    _ps_module(mods, plan)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_hwh(path: Path, params: CoreParams | str = OVERLAY_PARAMS, plan: AddressPlan | None = None) -> Path:
    """Write :func:`generate_hwh` to ``path`` (the design name is the file's stem)."""
    path = Path(path)
    path.write_text(generate_hwh(params, plan, design=path.stem), encoding="utf-8")
    return path
