"""Pipeline plans of the streaming core: how many adder-tree levels each stage takes, and the latency.

Pure Python (no Amaranth import): the latency is a property of the parameter set that the
register map reads back (``LATENCY``) and the documentation states, computed here once.
"""

from __future__ import annotations

from .params import CoreParams, clog2

__all__ = ["DSP_A_BITS", "MAX_LATENCY", "dsp_plan", "pipeline_plan"]

#: Upper bound on the latency the issue allows; the plans pack tree levels to stay within it.
MAX_LATENCY = 16

#: Widest signed multiplier operand of a Xilinx DSP48E1 (its A port).
DSP_A_BITS = 25


def dsp_plan(params: CoreParams) -> dict[str, int] | None:
    """The projection as DSP multiply-add chains, if it fits; else ``None``.

    Two projections share one chain of DSP48 multiply-adds (see :mod:`mailpulse.hdl.dsp`): one
    registered DSP per feature, ``chain_len`` = D of them per projection pair.  It needs
    ``diff_bits + 3 <= 25`` (the DSP's A port; D <= 8) and a latency within :data:`MAX_LATENCY`
    (one or two score/argmax tree levels per stage).  Stages: input (1), chain (D), shift 1,
    shift 2 + clamp, table read (1 each), score/argmax tree (``tree_stages``), flag compare into
    the output register (1).
    """
    w = params.offset_bits + 1
    if w + 3 > DSP_A_BITS:
        return None
    tree_levels = clog2(params.k)
    for per_t in (1, 2):
        ts = -(-tree_levels // per_t)
        latency = 1 + params.d + 4 + ts
        if latency <= MAX_LATENCY:
            return {"chain_len": params.d, "lane_bits": w, "tree_levels": tree_levels,
                    "tree_per_stage": per_t, "tree_stages": ts, "latency": latency}
    return None


def pipeline_plan(params: CoreParams) -> dict[str, int]:
    """How many tree levels each pipeline stage takes, and the resulting latency.

    Stages: input register (1), weighted terms and projection adder tree (``proj_stages``),
    offset subtraction (1), shift part 1 (1), shift part 2 (1), clamp = bin register (1), table
    read (1), table value register (1), score/argmax tree (``tree_stages``), flag compare into the
    output register (1).  One tree level per stage, unless that would exceed :data:`MAX_LATENCY`;
    then two.

    Returns a dict with ``proj_levels``, ``proj_per_stage``, ``proj_stages``, ``tree_levels``,
    ``tree_per_stage``, ``tree_stages`` and ``latency`` (cycles from the input handshake to the
    output ``valid``).
    """
    proj_levels = clog2(params.d)
    tree_levels = clog2(params.k)
    fixed = 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1   # input, diff, shift1, shift2, clamp/bin, table, table reg, output
    for per_p, per_t in ((1, 1), (1, 2), (2, 2)):
        ps = -(-proj_levels // per_p)
        ts = -(-tree_levels // per_t)
        latency = fixed + ps + ts
        if latency <= MAX_LATENCY:
            break
    else:  # pragma: no cover - cannot happen with D <= 16, K <= 64
        raise ValueError(f"no pipeline plan fits {MAX_LATENCY} cycles for {params}")
    return {
        "proj_levels": proj_levels, "proj_per_stage": per_p, "proj_stages": ps,
        "tree_levels": tree_levels, "tree_per_stage": per_t, "tree_stages": ts,
        "latency": latency,
    }
