"""Adversarial configurations and samples for the bulk verification (``mailpulse sim verify``).

:func:`CoreConfig.random <mailpulse.hdl.reference.CoreConfig.random>` draws uniformly over the
legal register ranges, so the corners where an RTL is most likely to be wrong are rare in it: a
projection exactly on a bin edge, a clamp at one ends, the widest projection, a saturated table,
a score equal to the threshold.  :func:`adversarial_case` builds configurations and samples that
sit on those corners on purpose, one recipe per :data:`KINDS` entry, each drawn from a seeded
``numpy`` generator (so a case is regenerated from ``(seed, config index)``):

``extreme_weights``
    every weight at ``weight_max`` or ``weight_min`` (all max, all min or mixed signs per
    projection), offsets at ``offset_min``/``offset_max``/centred, shifts 0, ``shift_max`` and
    in between: the widest projections and differences, both clamps.
``bin_edges``
    one-hot weights (+1 or -1 on one feature), and samples whose projection is exactly on a bin
    edge of its projection, one below or one above: ``diff = j << shift + delta`` for
    ``j`` in 0, 1, a middle bin, B-1, B (the clamp edge) and ``delta`` in -1, 0, +1.
``saturated_tables``
    tables all ``table_max`` (the largest score, ``K * table_max``, and argmax ties on every
    projection, which go to the lowest index), all 0, or ``table_max`` in one bin; threshold at
    the largest score or one below it.
``threshold_at_score`` / ``threshold_below_score``
    a random configuration whose threshold is the score of one sample (not flagged: the compare is
    strictly greater) or that score - 1 (flagged); a quarter of the samples are that sample, others
    differ from it by one in one feature.
``extreme_inputs``
    samples all ``in_max``, all ``in_min``, alternating, one feature extreme and the rest 0, and
    zero; weights and offsets partly extreme, thresholds 0, ``2**32 - 1`` and ``2**score_bits``.

Every kind mixes in a quarter of ordinary random samples (:func:`mailpulse.sim.codec.random_samples`
draws), so a recipe cannot hide a fault of the ordinary case.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import CoreConfig, score

__all__ = ["KINDS", "adversarial_case", "adversarial_config", "adversarial_samples"]

KINDS = ("extreme_weights", "bin_edges", "saturated_tables", "threshold_at_score", "threshold_below_score",
         "extreme_inputs")

IntArray = npt.NDArray[np.int64]


def _edge_thresholds(p: CoreParams, rng: np.random.Generator) -> int:
    """A threshold at a corner of the 32-bit compare: 0, 2**32 - 1, 2**score_bits (above every
    score), 2**score_bits - 1, or random."""
    return int(rng.choice([0, 0xFFFFFFFF, 1 << p.score_bits, (1 << p.score_bits) - 1,
                           int(rng.integers(0, 1 << p.score_bits))]))


def _extreme_weights(p: CoreParams, rng: np.random.Generator, cfg: CoreConfig) -> None:
    for k in range(p.k):
        pattern = int(rng.integers(0, 3))
        if pattern == 0:
            cfg.weights[k] = p.weight_max
        elif pattern == 1:
            cfg.weights[k] = p.weight_min
        else:
            cfg.weights[k] = np.where(rng.integers(0, 2, size=p.d) == 1, p.weight_max, p.weight_min)
        shift = int(rng.choice([0, p.shift_max, int(rng.integers(0, p.proj_bits + 1))]))
        cfg.shifts[k] = shift
        cfg.offsets[k] = int(rng.choice([p.offset_min, p.offset_max, 0,
                                         max(p.offset_min, -((p.b << min(shift, p.proj_bits)) // 2))]))


def _one_hot(p: CoreParams, rng: np.random.Generator, cfg: CoreConfig) -> None:
    """Projection k: weight +1 or -1 on feature k % D; shift small enough that several bins fit
    the input range; offset so that the bins start inside the range."""
    cfg.weights[...] = 0
    for k in range(p.k):
        cfg.weights[k, k % p.d] = int(rng.choice([1, -1]))
        shift = int(rng.integers(0, max(1, p.in_bits - p.b.bit_length() + 2)))
        cfg.shifts[k] = shift
        span = p.b << shift
        lo, hi = p.in_min, max(p.in_min, p.in_max - span)
        cfg.offsets[k] = int(rng.integers(lo, hi + 1))


def adversarial_config(p: CoreParams, rng: np.random.Generator, kind: str) -> CoreConfig:
    """A configuration of recipe ``kind`` (thresholds of the ``threshold_*`` kinds are set by
    :func:`adversarial_case`, which knows the samples)."""
    if kind not in KINDS:
        raise ValueError(f"unknown adversarial kind {kind!r}; known: {', '.join(KINDS)}")
    cfg = CoreConfig.random(p, rng)
    if kind == "extreme_weights":
        _extreme_weights(p, rng, cfg)
        cfg.threshold = _edge_thresholds(p, rng)
    elif kind == "bin_edges":
        _one_hot(p, rng, cfg)
    elif kind == "saturated_tables":
        for k in range(p.k):
            style = int(rng.integers(0, 4))
            if style == 0:
                cfg.tables[k] = 0
            elif style == 1:
                cfg.tables[k] = 0
                cfg.tables[k, int(rng.integers(0, p.b))] = p.table_max
            elif style == 2:    # saturated: the largest scores and ties everywhere
                cfg.tables[k] = p.table_max
            else:               # a few values: ties between some projections, the lowest index wins
                cfg.tables[k] = rng.choice([0, 1, p.table_max - 1, p.table_max], size=p.b)
        if rng.integers(0, 2):
            cfg.tables[...] = p.table_max
        top = int(cfg.tables.max(axis=1).sum())
        cfg.threshold = int(rng.choice([top, max(0, top - 1), max(0, top - p.table_max)]))
    elif kind == "extreme_inputs":
        half = rng.integers(0, 2, size=p.k) == 1
        for k in np.flatnonzero(half):
            cfg.weights[k] = np.where(rng.integers(0, 2, size=p.d) == 1, p.weight_max, p.weight_min)
            cfg.offsets[k] = int(rng.choice([p.offset_min, p.offset_max, 0]))
            cfg.shifts[k] = int(rng.choice([0, p.shift_max, p.in_bits]))
        cfg.threshold = _edge_thresholds(p, rng)
    cfg.validate(p)
    return cfg


def _edge_samples(p: CoreParams, cfg: CoreConfig, rng: np.random.Generator, n: int) -> IntArray:
    """Samples whose features put one-hot projections on bin edges (see the module docstring)."""
    x = rng.integers(p.in_min, p.in_max + 1, size=(n, p.d))
    by_feature: list[list[int]] = [[] for _ in range(p.d)]
    for k in range(p.k):
        nz = np.flatnonzero(cfg.weights[k])
        if len(nz) == 1 and abs(int(cfg.weights[k, nz[0]])) == 1:
            by_feature[int(nz[0])].append(k)
    for d in range(p.d):
        if not by_feature[d]:
            continue
        ks = np.asarray(by_feature[d])[rng.integers(0, len(by_feature[d]), size=n)]
        j = rng.choice(np.array([0, 1, p.b // 2, p.b - 1, p.b]), size=n)
        delta = rng.integers(-1, 2, size=n)
        diff = (j << cfg.shifts[ks]) + delta
        proj = cfg.offsets[ks] + diff
        feat = proj * cfg.weights[ks, d]            # weight +-1: x = p / w = p * w
        ok = (feat >= p.in_min) & (feat <= p.in_max)
        x[ok, d] = feat[ok]
    return x


def _extreme_samples(p: CoreParams, rng: np.random.Generator, n: int) -> IntArray:
    style = rng.integers(0, 6, size=n)
    x = np.zeros((n, p.d), dtype=np.int64)
    x[style == 0] = p.in_max
    x[style == 1] = p.in_min
    even = np.arange(p.d) % 2 == 0
    x[style == 2] = np.where(even, p.in_max, p.in_min)
    x[style == 3] = np.where(even, p.in_min, p.in_max)
    one = np.flatnonzero(style == 4)
    x[one, rng.integers(0, p.d, size=len(one))] = rng.choice([p.in_max, p.in_min], size=len(one))
    rnd = np.flatnonzero(style == 5)   # random extremes per feature
    x[rnd] = np.where(rng.integers(0, 2, size=(len(rnd), p.d)) == 1, p.in_max, p.in_min)
    return x


def adversarial_samples(p: CoreParams, cfg: CoreConfig, rng: np.random.Generator, n: int, kind: str,
                        pivot: IntArray | None = None) -> IntArray:
    """``n`` samples (N, D) int64 for recipe ``kind``: a quarter ordinary random ones, the rest
    aimed at the recipe's corners (``pivot``: the sample whose score is the threshold)."""
    x = rng.integers(p.in_min, p.in_max + 1, size=(n, p.d))
    aimed = np.flatnonzero(rng.integers(0, 4, size=n) != 0)
    m = len(aimed)
    if kind == "bin_edges":
        x[aimed] = _edge_samples(p, cfg, rng, m)
    elif kind in ("threshold_at_score", "threshold_below_score") and pivot is not None:
        near = np.repeat(pivot[None, :], m, axis=0)
        nudge = np.flatnonzero(rng.integers(0, 3, size=m) == 0)     # a third one step away
        d = rng.integers(0, p.d, size=len(nudge))
        near[nudge, d] = np.clip(near[nudge, d] + rng.choice([-1, 1], size=len(nudge)), p.in_min, p.in_max)
        x[aimed] = near
    else:
        x[aimed] = _extreme_samples(p, rng, m)
    return x


def adversarial_case(p: CoreParams, rng: np.random.Generator, n: int, kind: str) -> tuple[CoreConfig, IntArray]:
    """A configuration and ``n`` samples (N, D) int64 of recipe ``kind``."""
    cfg = adversarial_config(p, rng, kind)
    pivot = None
    if kind in ("threshold_at_score", "threshold_below_score"):
        pivot = rng.integers(p.in_min, p.in_max + 1, size=p.d)
        s = int(score(p, cfg, pivot[None, :]).score[0])
        cfg.threshold = s if kind == "threshold_at_score" else max(0, s - 1)
        if s == 0 and kind == "threshold_below_score":
            cfg.tables[...] = np.maximum(cfg.tables, 1)     # a score of 0 has no "one below"
            s = int(score(p, cfg, pivot[None, :]).score[0])
            cfg.threshold = s - 1
    return cfg, adversarial_samples(p, cfg, rng, n, kind, pivot)


def corners(p: CoreParams, cfg: CoreConfig, x: npt.ArrayLike) -> dict[str, int]:
    """How often ``x`` (N, D) hits each corner under ``cfg`` (counts over samples, or over
    (sample, projection) pairs for the per-projection ones): the measure the tests hold the
    recipes to."""
    xs = np.asarray(x, dtype=np.int64)
    proj = xs @ cfg.weights.T
    diff = proj - cfg.offsets[None, :]
    sh = cfg.shifts[None, :]
    edge = np.zeros_like(diff, dtype=bool)
    for j in (0, 1, p.b - 1, p.b):
        at = j << sh
        edge |= (diff >= at - 1) & (diff <= at + 1)
    shifted = diff >> sh
    vals = cfg.tables[np.arange(p.k)[None, :], np.clip(shifted, 0, p.b - 1)]
    total = vals.sum(axis=1)
    top = vals.max(axis=1, keepdims=True)
    widest = p.d * p.weight_min * p.in_min        # the largest |projection|: every weight and input at its minimum
    return {
        "bin_edge": int((edge & (sh > 0)).sum()),
        "clamp_low": int((shifted < 0).sum()),
        "clamp_high": int((shifted >= p.b).sum()),
        "widest_projection": int((np.abs(proj) == widest).sum()),
        "extreme_inputs": int(np.all((xs == p.in_max) | (xs == p.in_min), axis=1).sum()),
        "score_at_threshold": int((total == cfg.threshold).sum()),
        "score_one_above_threshold": int((total == cfg.threshold + 1).sum()),
        "largest_score": int((total == p.k * p.table_max).sum()),
        "argmax_tie": int(((vals == top).sum(axis=1) > 1).sum()),
    }
