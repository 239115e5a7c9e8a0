"""Amaranth platforms of the boards the mailpulse SPI top is built for with open tools.

Each platform is a small, self-contained description of a board on which a Raspberry Pi (or any
SPI master) talks to the ``mailpulse_spi`` top: one clock input, an active-high reset driven by a
host GPIO, the four SPI pins and the ``irq`` output.  No dependency on amaranth-boards: the pin-outs
follow well-known boards (iCEBreaker, the iCE40-HX8K breakout, ULX3S) so that a bitstream can be
tried on them, but only the pins listed here are used.

The clock resource is the board's oscillator (12 MHz on the iCE40 boards, 25 MHz on the ULX3S);
the core runs from a PLL (:mod:`mailpulse.hdl.pll`, instantiated by :class:`mailpulse.hdl.board.BoardTop`)
at the clock :class:`BoardSpec` names for each top and parameter set, a clock the build's timing
report supports.  The ECP5 platforms carry speed grade 6, the grade of the ULX3S.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from amaranth.build import Attrs, Clock, Pins, Resource, Subsignal
from amaranth.vendor import LatticeECP5Platform, LatticeICE40Platform

from .params import base_set

__all__ = [
    "PLATFORMS",
    "BoardSpec",
    "MailpulseECP5_25FPlatform",
    "MailpulseECP5_85FPlatform",
    "MailpulseHX8KPlatform",
    "MailpulseUP5KPlatform",
    "get_board",
]


def _board_resources(clk_hz: float, pins: dict[str, str], attrs: Attrs) -> list[Resource]:
    """The resources every mailpulse board has: ``clk``, ``rst``, ``spi``, ``irq``; and ``sig`` (the
    ``stream-bench`` top's signature) where the board names a pin for it."""
    extra = [Resource("sig", 0, Pins(pins["sig"], dir="o"), attrs)] if "sig" in pins else []
    return [
        *extra,
        Resource("clk", 0, Pins(pins["clk"], dir="i"), Clock(clk_hz), attrs),
        Resource("rst", 0, Pins(pins["rst"], dir="i"), attrs),
        Resource(
            "spi",
            0,
            Subsignal("sck", Pins(pins["sck"], dir="i")),
            Subsignal("cs_n", Pins(pins["cs_n"], dir="i")),
            Subsignal("mosi", Pins(pins["mosi"], dir="i")),
            Subsignal("miso", Pins(pins["miso"], dir="o")),
            attrs,
        ),
        Resource("irq", 0, Pins(pins["irq"], dir="o"), attrs),
    ]


class _ClockedMixin:
    """Shared constructor: the clock constraint is an instance property, not a class constant."""

    pins: ClassVar[dict[str, str]]
    io_attrs: ClassVar[dict[str, str]]
    default_clk = "clk"
    default_rst = "rst"
    connectors: tuple[Any, ...] = ()
    resources: tuple[Any, ...] = ()  # added per instance by _add_board_resources (the clock is a parameter)

    def _add_board_resources(self, clk_hz: float) -> None:
        if not clk_hz > 0:
            raise ValueError(f"the clock frequency must be positive, not {clk_hz!r}")
        self.clk_hz = float(clk_hz)
        self.add_resources(_board_resources(self.clk_hz, self.pins, Attrs(**self.io_attrs)))  # type: ignore[attr-defined]


class MailpulseUP5KPlatform(_ClockedMixin, LatticeICE40Platform):
    """iCE40 UP5K in the SG48 package (iCEBreaker pin-out; SPI on PMOD1A)."""

    device = "iCE40UP5K"
    package = "SG48"
    pins: ClassVar[dict[str, str]] = {"clk": "35", "rst": "3", "sck": "45", "cs_n": "4",
                                      "mosi": "2", "miso": "47", "irq": "48"}
    io_attrs: ClassVar[dict[str, str]] = {"IO_STANDARD": "SB_LVCMOS"}

    def __init__(self, *, clk_hz: float = 12e6) -> None:
        super().__init__()
        self._add_board_resources(clk_hz)


class MailpulseHX8KPlatform(_ClockedMixin, LatticeICE40Platform):
    """iCE40 HX8K in the CT256 package (iCE40-HX8K breakout pin-out; SPI on header J2)."""

    device = "iCE40HX8K"
    package = "CT256"
    pins: ClassVar[dict[str, str]] = {"clk": "J3", "rst": "P16", "sck": "R15", "cs_n": "P15",
                                      "mosi": "N16", "miso": "M15", "irq": "M16"}
    io_attrs: ClassVar[dict[str, str]] = {"IO_STANDARD": "SB_LVCMOS"}

    def __init__(self, *, clk_hz: float = 12e6) -> None:
        super().__init__()
        self._add_board_resources(clk_hz)


class _MailpulseECP5Platform(_ClockedMixin, LatticeECP5Platform):
    """ECP5 in the caBGA381 package (ULX3S pin-out; SPI on GPIO pairs 0-2)."""

    package = "BG381"
    speed = "6"    # the ULX3S carries the slowest grade (6); grade 8 is about 15 % faster
    pins: ClassVar[dict[str, str]] = {"clk": "G2", "rst": "B10", "sck": "B11", "cs_n": "C11",
                                      "mosi": "A10", "miso": "A11", "irq": "A9", "sig": "B2"}
    io_attrs: ClassVar[dict[str, str]] = {"IO_TYPE": "LVCMOS33"}

    def __init__(self, *, clk_hz: float = 25e6) -> None:
        super().__init__()
        self._add_board_resources(clk_hz)


class MailpulseECP5_25FPlatform(_MailpulseECP5Platform):
    device = "LFE5U-25F"


class MailpulseECP5_85FPlatform(_MailpulseECP5Platform):
    device = "LFE5U-85F"


@dataclass(frozen=True)
class BoardSpec:
    """One ``--platform`` choice of ``mailpulse hdl build``.

    Attributes
    ----------
    name : str
        The CLI name (``ice40-up5k``, ...).
    family : str
        ``ice40`` or ``ecp5``: selects the tools and the report format.
    configs : mapping of top to str
        The tops this board builds (``spi``; ``stream-bench`` where the streaming core fits), each
        with the parameter set it ships (built when ``--config`` is not given).  A set with route
        intervals (``<set>-r<R>``, e.g. ``zynq-r16``) is how a board ships them: the bitstream's
        ``PARAMS.ROUTES_LOG2`` tells the host R.
    factory : callable
        ``factory()`` returns a fresh Amaranth platform (its ``clk`` is the oscillator).
    description : str
        Device, speed grade and package, as printed in reports.
    default_core : str
        The core the SPI top carries unless ``--core`` says otherwise (see ``mailpulse.hdl.build.CORES``).
    osc_mhz : float
        The board's oscillator on the ``clk`` pin: the PLL's input.
    clocks : mapping of (top, core, config) to MHz
        The clock the core runs at (the PLL's output) in each build this board ships, chosen below
        the fmax its timing report gives, with margin (``docs/builds.md``); ``mailpulse hdl build
        --clock`` overrides it.  A build of the same top, core and base set with another route
        count (``zynq`` beside a shipped ``zynq-r16``) runs at the shipped build's clock.
    fallback_mhz : float
        The clock of a build not in ``clocks`` (a conservative one; the report says whether it closes).
    pll_pad : bool
        The ``clk`` pin is the PLL's own input pad (iCE40 ``SB_PLL40_PAD`` instead of ``_CORE``).
    seeds : mapping of (top, core, config) to int
        nextpnr's placer seed for a shipped build whose timing closes at its clock at that seed and
        not at seed 1 (placement is deterministic per seed; other builds use seed 1).  ``mailpulse hdl
        build --seed`` overrides it.
    """

    name: str
    family: str
    configs: Mapping[str, str]
    factory: Callable[[], Any]
    description: str
    default_core: str
    osc_mhz: float
    clocks: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    fallback_mhz: float = 24.0
    pll_pad: bool = False
    seeds: Mapping[tuple[str, str, str], int] = field(default_factory=dict)

    def make(self) -> Any:
        return self.factory()

    @property
    def tops(self) -> tuple[str, ...]:
        """The tops this board builds."""
        return tuple(self.configs)

    def config(self, top: str = "spi") -> str:
        """The parameter set this board ships for ``top``."""
        return self.configs[top]

    def shipped(self) -> list[tuple[str, str, str]]:
        """``(top, core, config)`` of every build this board ships (``core`` is ``""`` for ``stream-bench``)."""
        return [(top, "" if top == "stream-bench" else self.default_core, config)
                for top, config in self.configs.items()]

    def clock_mhz(self, top: str, core: str, config: str) -> float:
        """The core clock of the build ``(top, core, config)`` (``core`` is ``""`` for ``stream-bench``):
        its own, else that of the build of the same top, core and base set (``zynq`` and ``zynq-r4``
        run at the clock of a shipped ``zynq-r16``), else the fallback."""
        if (top, core, config) in self.clocks:
            return self.clocks[top, core, config]
        same = [mhz for (t, c, name), mhz in self.clocks.items()
                if (t, c, base_set(name)) == (top, core, base_set(config))]
        return same[0] if same else self.fallback_mhz

    def seed(self, top: str, core: str, config: str) -> int:
        """nextpnr's placer seed of the build ``(top, core, config)`` (1 unless ``seeds`` names one)."""
        return self.seeds.get((top, core, config), 1)


#: The core clock of each shipped build (MHz), below the fmax its report gives (docs/builds.md).
_ICE40_CLOCKS = {("spi", "folded", "small"): 45.0, ("spi", "folded", "full-r16"): 100.5}
_ECP5_CLOCKS = {("stream-bench", "", "zynq"): 125.0, ("spi", "folded", "zynq-r16"): 100.0}
#: Placer seeds of the builds whose timing at their clock is best at another seed than 1 (with the
#: adaptive threshold unit in the cores: UP5K ``small`` 40.3 / 44.1 / 47.9 MHz at seeds 1 / 2 / 3
#: against its 45 MHz; ECP5 stream-bench 117.1 / 127.3 MHz at seeds 1 / 2 against 125 MHz; with
#: the route intervals and their miss-ratio register HX8K ``full-r16`` 99.5 / 96.4 / 106.8 / 96.8 /
#: 101.9 / 102.2 / 103.5 / 97.6 MHz at seeds 1-8 against its 100.5 MHz, a clock kept for a 25 MHz
#: SPI clock: ``sck`` is at most ``clk / 4``).
_UP5K_SEEDS = {("spi", "folded", "small"): 3}
_HX8K_SEEDS = {("spi", "folded", "full-r16"): 3}
_ECP5_SEEDS = {("stream-bench", "", "zynq"): 2}
#: The SPI tops of the HX8K and the ECP5 boards carry 16 route intervals (``full-r16``: 6441 LC,
#: 84 %; ``zynq-r16``: 5450 LUT4, 124.4 MHz at seed 1 against its 100 MHz); the UP5K has no room
#: for them, the streaming core in ``stream-bench`` does not close with them (docs/builds.md).
_ECP5_CONFIGS = {"spi": "zynq-r16", "stream-bench": "zynq"}

PLATFORMS: dict[str, BoardSpec] = {
    "ice40-up5k": BoardSpec(
        "ice40-up5k", "ice40", {"spi": "small"}, MailpulseUP5KPlatform, "iCE40UP5K-SG48", "folded", 12.0,
        _ICE40_CLOCKS, pll_pad=True, seeds=_UP5K_SEEDS,
    ),
    "ice40-hx8k": BoardSpec(
        "ice40-hx8k", "ice40", {"spi": "full-r16"}, MailpulseHX8KPlatform, "iCE40HX8K-CT256", "folded", 12.0,
        _ICE40_CLOCKS, seeds=_HX8K_SEEDS,
    ),
    "ecp5-25f": BoardSpec(
        "ecp5-25f", "ecp5", _ECP5_CONFIGS, MailpulseECP5_25FPlatform, "LFE5U-25F-6BG381C", "folded", 25.0,
        _ECP5_CLOCKS, fallback_mhz=50.0, seeds=_ECP5_SEEDS,
    ),
    "ecp5-85f": BoardSpec(
        "ecp5-85f", "ecp5", _ECP5_CONFIGS, MailpulseECP5_85FPlatform, "LFE5U-85F-6BG381C", "folded", 25.0,
        _ECP5_CLOCKS, fallback_mhz=50.0, seeds=_ECP5_SEEDS,
    ),
}


def get_board(name: str) -> BoardSpec:
    """Look a board up by its CLI name; ``ValueError`` lists the known ones."""
    try:
        return PLATFORMS[name]
    except KeyError:
        raise ValueError(f"unknown platform {name!r}; known platforms: {', '.join(PLATFORMS)}") from None
