"""The streaming core's projections as DSP48 multiply-add chains (``ScorerCore(dsp=True)``).

Projections 2j ("lo") and 2j+1 ("hi") share one chain of multiply-adds.  With the lane width
W = offset_bits + 1 (the diff width), feature d is multiplied by::

    A[j][d] = w_lo + w_hi * 2**W            (a signed (W + 3)-bit constant per commit)

and the chain starts from::

    C[j] = (2**(W-1) - o_lo) + (-o_hi) * 2**W.

Its sum is exactly ``(diff_lo + 2**(W-1)) + diff_hi * 2**W`` with ``0 <= diff_lo + 2**(W-1) < 2**W``
(``|diff| < 2**(W-1)``, ``docs/fixed-point.md``), so bits W-1:0 are diff_lo with the top bit
inverted and bits 2W-1:W are diff_hi, both exact.  Every partial sum is below 2**43 in magnitude,
so 2W-bit registers (arithmetic mod 2**(2W)) are exact.  Yosys/Vivado map each step
``P <= P + A * x`` (registered) onto one DSP48E1 (multiplier, post-adder, P register): no LUTs for
the terms, the adder tree or the offset subtraction.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, Module, Signal, signed

from .lane import stage_reg, sync
from .params import CoreParams

__all__ = ["DSPProjections"]


class DSPProjections:
    """The active pair constants of the chains (control state, reset), their commit load and the
    chains themselves.

    Parameters
    ----------
    params : CoreParams
    plan : dict
        :func:`mailpulse.hdl.plan.dsp_plan` of ``params``.
    """

    def __init__(self, params: CoreParams, plan: dict[str, int]) -> None:
        self.params = params
        self.plan = plan
        D, w = params.d, plan["lane_bits"]
        pairs = -(-params.k // 2)
        # w_lo (2 bits) and upper = w_hi - [w_lo < 0] (3 bits) per feature: A = Cat(sext(w_lo), upper)
        self.wlo = [Signal(D * 2, name=f"dsp_wlo{j}") for j in range(pairs)]
        self.up = [Signal(D * 3, name=f"dsp_up{j}") for j in range(pairs)]
        self.clo = [Signal(w, name=f"dsp_clo{j}", init=1 << (w - 1)) for j in range(pairs)]
        self.chi = [Signal(signed(w), name=f"dsp_chi{j}") for j in range(pairs)]

    def load(self, m: Module, ld_valid: Any, ld_index: Any, ld_w: Any, neg_off: Any) -> None:
        """Commit load of the pair constants.  Loads come in index order (the front end's copy does
        0..K-1), so when projection 2j+1 loads, ``prev_w`` holds the weights of 2j."""
        p = self.params
        D, w = p.d, self.plan["lane_bits"]
        prev_w = Signal(D * 2, reset_less=True)
        up_even = Signal(D * 3)    # w_hi = 0 (fixed up by the odd load, if any)
        up_odd = Signal(D * 3)
        for d in range(D):
            wl = ld_w[2 * d:2 * d + 2].as_signed()
            pw_sign = prev_w[2 * d + 1]
            m.d.comb += [up_even[3 * d:3 * d + 3].eq(-wl[1].as_unsigned()),
                         up_odd[3 * d:3 * d + 3].eq(wl - pw_sign)]
        clo_val = Cat(neg_off[:w - 1], ~neg_off[w - 1])    # -o + 2**(W-1), in 0 .. 2**W - 1
        with m.If(ld_valid):
            m.d.sync += prev_w.eq(ld_w)
            for k in range(p.k):
                j = k // 2
                with m.If(ld_index == k):
                    if k % 2 == 0:
                        m.d.sync += [self.wlo[j].eq(ld_w), self.up[j].eq(up_even),
                                     self.clo[j].eq(clo_val), self.chi[j].eq(0)]
                    else:
                        m.d.sync += [self.up[j].eq(up_odd), self.chi[j].eq(neg_off)]

    def diffs(self, m: Module, x: list[Signal], en: Any) -> list[Any]:
        """The K diffs (``p - o``, signed W bits) from the chains, ``chain_len`` stages after ``x``."""
        p = self.params
        D, K, w = p.d, p.k, self.plan["lane_bits"]
        # x[d] delayed by d stages: the chain's step d uses it (shared by all chains)
        xdel = []
        for d in range(D):
            v = x[d]
            for t in range(d):
                r = stage_reg(signed(p.in_bits), f"x{d}_d{t + 1}")
                sync(m, en, r.eq(v))
                v = r
            xdel.append(v)
        diffs: list[Any] = []
        for j in range(len(self.wlo)):
            acc: Any = Cat(self.clo[j], self.chi[j]).as_signed()
            for d in range(D):
                wl = self.wlo[j][2 * d:2 * d + 2]
                a = Cat(wl, wl[1].replicate(w - 2), self.up[j][3 * d:3 * d + 3]).as_signed()
                r = stage_reg(signed(2 * w), f"chain{j}_{d}")
                sync(m, en, r.eq(acc + a * xdel[d]))
                acc = r
            tot = acc
            diffs.append(Cat(tot[:w - 1], ~tot[w - 1]).as_signed())
            if 2 * j + 1 < K:
                diffs.append(tot[w:2 * w].as_signed())
        return diffs
