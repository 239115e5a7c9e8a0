"""PLL divider settings for the board builds: iCE40 ``SB_PLL40_*`` and ECP5 ``EHXPLLL``.

Pure Python (no Amaranth): the same exhaustive searches as Project IceStorm's ``icepll`` and
Project Trellis' ``ecppll``, so a requested frequency gives the divider settings (and the exact
output frequency) those tools give; ``tests/test_build_cli.py`` compares them with the YoWASP
builds of both tools.  :class:`mailpulse.hdl.board.BoardTop` turns a setting into the primitive.

iCE40, SIMPLE feedback (iCE40 sysCLOCK PLL design guide)::

    f_pfd = f_in / (DIVR + 1)          10 .. 133 MHz
    f_vco = f_pfd * (DIVF + 1)         533 .. 1066 MHz
    f_out = f_vco / 2**DIVQ            16 .. 275 MHz, DIVQ 1..6

ECP5, feedback from CLKOP (as ``ecppll`` generates it)::

    f_pfd = f_in / CLKI_DIV            3.125 .. 400 MHz
    f_out = f_pfd * CLKFB_DIV          10 .. 400 MHz
    f_vco = f_out * CLKOP_DIV          400 .. 800 MHz

Ties on the output frequency go to the first setting found (``icepll``) or to the VCO closest to
600 MHz (``ecppll``).  Frequencies are computed as exact fractions; the tools use floating point,
which only matters for ties that are not ties in exact arithmetic.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["ECP5PLL", "ICE40PLL", "PLLError", "ecp5_pll", "ice40_pll", "pll_for"]


class PLLError(ValueError):
    """No divider setting reaches the requested frequency (the message says why)."""


@dataclass(frozen=True)
class ICE40PLL:
    """An iCE40 PLL setting (SIMPLE feedback); frequencies in MHz."""

    f_in: float
    f_out: float
    divr: int
    divf: int
    divq: int
    filter_range: int
    f_vco: float

    family = "ice40"

    def describe(self) -> str:
        return (f"SB_PLL40 {self.f_in:g} MHz -> {self.f_out:.3f} MHz (DIVR {self.divr}, DIVF {self.divf}, "
                f"DIVQ {self.divq}, FILTER_RANGE {self.filter_range}, VCO {self.f_vco:.1f} MHz)")


@dataclass(frozen=True)
class ECP5PLL:
    """An ECP5 ``EHXPLLL`` setting (feedback from CLKOP); frequencies in MHz."""

    f_in: float
    f_out: float
    clki_div: int
    clkfb_div: int
    clkop_div: int
    clkop_cphase: int
    f_vco: float

    family = "ecp5"

    def describe(self) -> str:
        return (f"EHXPLLL {self.f_in:g} MHz -> {self.f_out:.3f} MHz (CLKI_DIV {self.clki_div}, "
                f"CLKFB_DIV {self.clkfb_div}, CLKOP_DIV {self.clkop_div}, VCO {self.f_vco:.1f} MHz)")


def _ice40_filter_range(f_pfd: Fraction) -> int:
    for limit, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if f_pfd < limit:
            return value
    return 6


def ice40_pll(f_in: float, f_out: float) -> ICE40PLL:
    """The ``icepll`` setting for ``f_in`` -> ``f_out`` (MHz).  :class:`PLLError` when either
    frequency is outside the PLL's range (input 10-133 MHz, output 16-275 MHz)."""
    if not 10 <= f_in <= 133:
        raise PLLError(f"an iCE40 PLL takes 10-133 MHz at its input, not {f_in:g} MHz")
    if not 16 <= f_out <= 275:
        raise PLLError(f"an iCE40 PLL gives 16-275 MHz, not {f_out:g} MHz")
    fin, want = Fraction(f_in), Fraction(f_out)
    best: tuple[Fraction, int, int, int] | None = None
    for divr in range(16):
        f_pfd = fin / (divr + 1)
        if not 10 <= f_pfd <= 133:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533 <= f_vco <= 1066:
                continue
            for divq in range(1, 7):
                fout = f_vco / 2**divq
                if best is None or abs(fout - want) < abs(best[0] - want):
                    best = (fout, divr, divf, divq)
    if best is None:
        raise PLLError(f"no iCE40 PLL setting gives {f_out:g} MHz from {f_in:g} MHz")
    fout, divr, divf, divq = best
    f_pfd = fin / (divr + 1)
    return ICE40PLL(float(fin), float(fout), divr, divf, divq, _ice40_filter_range(f_pfd),
                    float(f_pfd * (divf + 1)))


def ecp5_pll(f_in: float, f_out: float) -> ECP5PLL:
    """The ``ecppll`` setting for ``f_in`` -> ``f_out`` (MHz), CLKOP fed back, 0 degrees.
    :class:`PLLError` when the output is outside 10-400 MHz or the input outside 8-400 MHz."""
    if not 8 <= f_in <= 400:
        raise PLLError(f"an ECP5 PLL takes 8-400 MHz at its input, not {f_in:g} MHz")
    if not 10 <= f_out <= 400:
        raise PLLError(f"an ECP5 PLL gives 10-400 MHz, not {f_out:g} MHz")
    fin, want = Fraction(f_in), Fraction(f_out)
    best: tuple[Fraction, Fraction, int, int, int] | None = None
    for clki_div in range(1, 129):
        f_pfd = fin / clki_div
        if not Fraction(3125, 1000) <= f_pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            fout = f_pfd * clkfb_div
            # the output dividers that put the VCO in 400..800 MHz, in ecppll's order
            lo, hi = max(1, -(-400 // fout)), min(128, 800 // fout)
            for clkop_div in range(int(lo), int(hi) + 1):
                f_vco = fout * clkop_div
                err = abs(fout - want)
                if best is None or err < abs(best[0] - want) or (
                        err == abs(best[0] - want) and abs(f_vco - 600) < abs(best[1] - 600)):
                    best = (fout, f_vco, clki_div, clkfb_div, clkop_div)
    if best is None:
        raise PLLError(f"no ECP5 PLL setting gives {f_out:g} MHz from {f_in:g} MHz")
    fout, f_vco, clki_div, clkfb_div, clkop_div = best
    cphase = _ecppll_cphase(f_in, clki_div, clkfb_div, clkop_div)
    return ECP5PLL(float(fin), float(fout), clki_div, clkfb_div, clkop_div, cphase, float(f_vco))


def _f32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


def _ecppll_cphase(f_in: float, clki_div: int, clkfb_div: int, clkop_div: int) -> int:
    """CLKOP_CPHASE as ``ecppll`` sets it: the primary output shifted by half its period in VCO
    counts (as Lattice's tools do), i.e. about ``CLKOP_DIV / 2``, computed in ``ecppll``'s single
    precision (so 100 MHz from 25 MHz, CLKOP_DIV 6, gives 2, not 3).  The phase of the fed-back
    output does not change the frequency; it is kept identical so the settings match the tool's."""
    fpfd = _f32(_f32(f_in) / clki_div)
    fvco = _f32(_f32(fpfd * clkfb_div) * clkop_div)
    fout = _f32(fvco / clkop_div)
    ns_phase = _f32(1.0 / (fout * 1e6) * 0.5)
    return int(ns_phase * (fvco * 1e6))


def pll_for(family: str, f_in: float, f_out: float) -> ICE40PLL | ECP5PLL:
    """The setting for ``family`` (``ice40`` or ``ecp5``)."""
    if family == "ice40":
        return ice40_pll(f_in, f_out)
    if family == "ecp5":
        return ecp5_pll(f_in, f_out)
    raise PLLError(f"no PLL model for the {family} family")
