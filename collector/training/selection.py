"""Which projections beyond one per input to use, and each one's table weight: by held-out likelihood.

The core's score ``S(x) = sum_k beta_k T_k(w_k . x)`` is read as an unnormalised model
``p(x) ~ exp(-S(x))``.  With one ``-log`` density table per input (``beta = 1``) it is the
independence model ``q(x) = prod_d p_d(x_d)``, normalised.  A pair projection ``u = x_i +/- x_j``
added with weight ``beta`` gives ``p(x) = q(x) exp(-beta T_u(u)) / Z`` with
``Z = E_q[exp(-beta T_u(u))]``, and ``Z`` can be estimated without any density model: rows drawn
from ``q`` are the held-out rows with every column permuted independently.  So the held-out log
likelihood gain of the model over the independence model is, exactly in expectation,

    gain = -mean_heldout(beta T_u) - log mean_permuted(exp(-beta T_u))

(a table fit on one half of the rows, measured on the other half).  :func:`select_pairs` adds, one
at a time, the pair axis and weight (``beta`` in :data:`BETAS`) that raise this gain most, until
no candidate raises it by :data:`MIN_GAIN` nats per sample or the K slots are full.  A pair whose
features are independent gains nothing (its table then only adds noise to the sum), a strong
single feature keeps its full weight, and a pair axis that merely repeats what the per-input
tables already say gets a small weight or none.

The gain is averaged over repeated random half splits (more of them for small data, where one
split is noisy).  The splits come from a generator with a fixed seed (:data:`SPLIT_SEED`), not from
the training seed: the same rows always give the same choice.  Where two candidates' gains are
within the estimation noise of each other (glass, 214 rows, one free slot in ``small``), another
set of splits can pick the other one; ``docs/trainer.md`` gives the size of that effect.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams

from .histograms import table_values

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Table weights a pair projection may get.
BETAS = (0.25, 0.5, 0.75, 1.0)
#: A projection is added only if it raises the held-out log likelihood by this much (nats/sample).
MIN_GAIN = 1e-3
#: Rows the selection looks at (a random subset of larger data).
SELECT_ROWS = 20_000
#: Repeated half splits: about this many rows in all, between MIN_SPLITS and MAX_SPLITS splits.
SPLIT_ROWS = 60_000
MIN_SPLITS, MAX_SPLITS = 2, 16
#: Seed of the split generator (fixed: the selection is a function of the rows it looks at).
SPLIT_SEED = 20_241_126
#: Rows of the permuted reference sample (the held-out half, permuted as often as needed).
REFERENCE_ROWS = 4096
#: The two axes of a pair: for robustly standardised inputs, its principal axes.
PAIR_AXES = ((1, 1), (1, -1))


@dataclass
class Split:
    """One half split: fit rows, held-out rows, and the held-out rows with columns permuted."""

    fit: IntArray
    heldout: IntArray
    reference: IntArray


def make_splits(x: IntArray, rng: np.random.Generator) -> list[Split]:
    """Repeated random half splits of ``x`` (see :data:`SPLIT_ROWS`)."""
    n = len(x)
    count = int(np.clip(math.ceil(SPLIT_ROWS / max(n, 1)), MIN_SPLITS, MAX_SPLITS))
    out = []
    for _ in range(count):
        perm = rng.permutation(n)
        fit, held = x[perm[: n // 2]], x[perm[n // 2:]]
        reps = max(1, -(-REFERENCE_ROWS // max(len(held), 1)))
        ref = np.concatenate([np.column_stack([rng.permutation(held[:, j]) for j in range(x.shape[1])])
                              for _ in range(reps)])
        out.append(Split(fit, held, ref))
    return out


def pair_candidates(features: list[int], params: CoreParams) -> list[IntArray]:
    """Weight vectors of both axes of every pair of ``features``."""
    out = []
    for i, j in itertools.combinations(features, 2):
        for a, b in PAIR_AXES:
            w = np.zeros(params.d, dtype=np.int64)
            w[i], w[j] = a, b
            out.append(w)
    return out


def _gains(held: FloatArray, ref: FloatArray) -> FloatArray:
    """Held-out gain per leading index, averaged over splits.

    ``held`` (..., S) are mean table sums on the held-out rows, ``ref`` (..., S, L) the table sums
    on the reference rows: ``-held - log mean(exp(-ref))``, computed without overflow.
    """
    low = ref.min(axis=-1)
    log_mean_exp = -low + np.log(np.mean(np.exp(low[..., None] - ref), axis=-1))
    return np.asarray(np.mean(-held - log_mean_exp, axis=-1), dtype=np.float64)


def select_pairs(xq: IntArray, features: list[int], params: CoreParams, room: int,
                 rng: np.random.Generator) -> tuple[list[tuple[IntArray, float]], float]:
    """Up to ``room`` pair projections with their table weights, and the held-out gain reached.

    ``xq`` are the core's inputs; ``features`` the inputs that carry a one-input table; ``rng``
    draws the rows looked at when there are more than :data:`SELECT_ROWS`.
    """
    if room <= 0 or len(features) < 2:
        return [], 0.0
    rows = np.sort(rng.choice(len(xq), SELECT_ROWS, replace=False)) if len(xq) > SELECT_ROWS else np.arange(len(xq))
    splits = make_splits(xq[rows], np.random.default_rng(SPLIT_SEED))
    cands = pair_candidates(features, params)
    # Per candidate and split: mean table value on the held-out rows, values on the reference rows.
    held = np.array([[table_values(sp.fit @ w, sp.heldout @ w, params).mean() for sp in splits] for w in cands])
    ref = np.array([[table_values(sp.fit @ w, sp.reference @ w, params) for sp in splits] for w in cands])
    betas = np.asarray(BETAS)[:, None]
    cur_held, cur_ref = np.zeros(len(splits)), np.zeros(ref.shape[1:])
    gain = 0.0
    chosen: list[tuple[IntArray, float]] = []
    left = list(range(len(cands)))
    while len(chosen) < room and left:
        best = (gain + MIN_GAIN, -1, 0.0)
        for c in left:
            g = _gains(cur_held[None, :] + betas * held[c][None, :], cur_ref[None] + betas[:, :, None] * ref[c][None])
            i = int(np.argmax(g))
            if g[i] > best[0]:
                best = (float(g[i]), c, float(BETAS[i]))
        if best[1] < 0:
            break
        gain, c, beta = best
        left.remove(c)
        cur_held = cur_held + beta * held[c]
        cur_ref = cur_ref + beta * ref[c]
        chosen.append((cands[c], beta))
    return chosen, gain


__all__ = ["BETAS", "MIN_GAIN", "select_pairs"]
