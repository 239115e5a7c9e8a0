"""The arithmetic stages of one projection lane, shared by the streaming and the folded core.

The streaming core (:class:`mailpulse.hdl.core.ScorerCore`) builds K lanes side by side and stalls
them with a global enable; the folded core (:class:`mailpulse.hdl.folded.FoldedScorerCore`) runs
one lane K times per sample and never stalls.  Both build the lane from these functions, so both
compute exactly :func:`mailpulse.hdl.reference.score` the same way (``docs/fixed-point.md``):

* :func:`weighted_term` - one weight times one feature, the 2-bit weight's product as a mux, with
  one's complement negation (the +1s are folded into the offset, :func:`offset_correction`);
* :func:`add_tree` - the projection's adder tree, registered every ``per_stage`` levels;
* :func:`diff_stage` - projection minus corrected offset, exact in ``offset_bits + 1`` bits;
* :func:`shift_hi_stage` and :func:`clamp_stage` - the right shift in two parts and the clamp to
  a bin index (:func:`shift_levels` keeps only the bits that can still reach the index).

Every function adds to the caller's module and takes the enable of its registers (``en``; None for
a lane that never stalls) and the names to give them: the names are part of the netlist that
place-and-route sees, so each core keeps its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from amaranth.hdl import C, Const, Module, Mux, Signal, signed

from .params import CoreParams, clog2

__all__ = [
    "add_tree",
    "clamp_stage",
    "diff_stage",
    "negative_weights",
    "offset_correction",
    "shift_hi_stage",
    "shift_levels",
    "shift_split",
    "stage_reg",
    "sync",
    "weighted_term",
]


def stage_reg(shape: Any, name: str) -> Signal:
    """A datapath register: reset-less (its value is meaningless until a valid sample reaches it)."""
    return Signal(shape, name=name, reset_less=True)


def sync(m: Module, en: Any, stmts: Any) -> None:
    """``m.d.sync += stmts``, under ``en`` unless it is None."""
    if en is None:
        m.d.sync += stmts
    else:
        with m.If(en):
            m.d.sync += stmts


def weighted_term(m: Module, x: Any, w: Any, tw: int, suffix: str) -> Any:
    """``w * x`` for a 2-bit signed weight, as a ``tw``-bit signed mux (one LUT4 per bit: w, x[i],
    x[i-1]): 0b01 -> x; 0b11 (-1) -> ~x = -x - 1; 0b10 (-2) -> ~(2x) = -2x - 1; 0b00 -> 0.  The
    missing +1 of each negative weight is folded into the offset (:func:`offset_correction`).
    ``tw = in_bits + weight_bits`` holds -2 * -32768 and ~(2 * 32767)."""
    xs = Signal(signed(tw), name=f"xs{suffix}")
    x2 = Signal(signed(tw), name=f"x2{suffix}")
    m.d.comb += [xs.eq(x), x2.eq(x * 2)]
    return Mux(w[0], Mux(w[1], ~xs, xs), Mux(w[1], ~x2, 0))


def add_tree(m: Module, items: Sequence[Any], per_stage: int, name: Callable[[int, int, bool], str],
             en: Any = None, on_stage: Callable[[int], None] | None = None) -> tuple[Any, int]:
    """Sum ``items`` with a binary adder tree, registered every ``per_stage`` levels (and after the
    last); an odd item passes a level unchanged (and is registered with the others).

    ``name(stage, j, passed)`` names register ``j`` of stage ``stage`` (``passed``: the item
    passed the last level unchanged); ``on_stage(stage)`` is called after each registered stage
    (for what travels alongside).  Returns the sum and the number of register stages
    (``ceil(levels / per_stage)``).
    """
    items = list(items)
    level = stage = 0
    while len(items) > 1:
        odd = len(items) % 2 == 1
        nxt = [items[i] + items[i + 1] for i in range(0, len(items) - 1, 2)]
        if odd:
            nxt.append(items[-1])
        items = nxt
        level += 1
        if level % per_stage == 0 or len(items) == 1:
            regs = []
            for j, e in enumerate(items):
                r = stage_reg(e.shape(), name(stage, j, odd and j == len(items) - 1))
                sync(m, en, r.eq(e))
                regs.append(r)
            items = regs
            if on_stage is not None:
                on_stage(stage)
            stage += 1
    return items[0], stage


def diff_stage(m: Module, proj: Any, off: Any, p: CoreParams, name: str, en: Any = None) -> Signal:
    """Register ``proj - off``: exact in ``offset_bits + 1`` signed bits (``off`` is the corrected
    offset, :func:`offset_correction`)."""
    d = stage_reg(signed(p.offset_bits + 1), name)
    sync(m, en, d.eq(proj - off))
    return d


def negative_weights(p: CoreParams, weights: Any) -> Any:
    """The number of negative weights in a packed ``WEIGHTS`` value (a popcount of the sign bits)."""
    wb = p.weight_bits
    return sum((weights[d * wb + wb - 1] for d in range(p.d)), start=Const(0, clog2(p.d + 1) or 1))


def offset_correction(offset: Any, n_neg: Any) -> Any:
    """The offset the lane subtracts: ``offset - n_neg`` (one's complement terms, see
    :func:`weighted_term`), exact in ``offset_bits + 1`` signed bits."""
    return offset.as_signed() - n_neg


def shift_split(p: CoreParams) -> tuple[list[int], list[int]]:
    """The bits of the shift amount that each part takes: part 1 bits 4, 3 and 2; part 2 bits 1, 0."""
    hi = [j for j in reversed(range(p.shift_bits)) if j >= 2]
    lo = [j for j in reversed(range(p.shift_bits)) if j < 2]
    return hi, lo


def shift_levels(m: Module, v: Any, sticky: Any, s: Any, bits: list[int], bl: int) -> tuple[Any, Any]:
    """Right-shift ``v`` by the bits ``bits`` of the shift amount ``s``, one 2:1 mux level each.

    Only the bits that can still reach a ``bl``-bit bin index are kept; the bits shifted past them
    are ORed into ``sticky`` (the overflow that makes the clamp pick the top bin).
    """
    for j in bits:
        amt = 1 << j
        sh = Signal(len(v), name=f"sh{j}")
        m.d.comb += sh.eq(Mux(s[j], v >> amt, v))
        keep = min(len(sh), bl + amt - 1)
        if keep < len(sh):
            sticky = sticky | sh[keep:].any()
        v = sh[:keep]
    return v, sticky


def shift_hi_stage(m: Module, diff: Any, shift: Any, p: CoreParams, suffix: str,
                   en: Any = None) -> tuple[Signal, Signal, Signal]:
    """Part 1 of the shift (bits 4..2 of ``shift``), registered: ``(value, sticky, negative)``."""
    hi, _ = shift_split(p)
    v, sticky = shift_levels(m, diff[:p.offset_bits], C(0, 1), shift, hi, p.b_log2)
    v1 = stage_reg(len(v), f"shv{suffix}")
    st1 = stage_reg(1, f"shst{suffix}")
    neg1 = stage_reg(1, f"shneg{suffix}")
    sync(m, en, [v1.eq(v), st1.eq(sticky), neg1.eq(diff[-1])])
    return v1, st1, neg1


def clamp_stage(m: Module, part1: tuple[Signal, Signal, Signal], shift: Any, p: CoreParams, suffix: str,
                en: Any = None, extra_reg: bool = False) -> Signal:
    """Part 2 of the shift (bits 1..0) and the clamp into the registered bin index: a negative
    difference gives bin 0, an overflow bin B - 1.  ``extra_reg`` puts one more register between
    the shift and the clamp (for the streaming LUT core's fmax)."""
    v1, st1, neg = part1
    _, lo = shift_split(p)
    v2, sticky2 = shift_levels(m, v1, st1, shift, lo, p.b_log2)
    if extra_reg:
        v2r = stage_reg(len(v2), f"shv2{suffix}")
        st2r = stage_reg(1, f"shst2{suffix}")
        neg2 = stage_reg(1, f"shneg2{suffix}")
        sync(m, en, [v2r.eq(v2), st2r.eq(sticky2), neg2.eq(neg)])
        v2, sticky2, neg = v2r, st2r, neg2
    binr = stage_reg(p.b_log2, f"bin{suffix}")
    sync(m, en, binr.eq(Mux(neg, 0, Mux(sticky2, p.b - 1, v2))))
    return binr
