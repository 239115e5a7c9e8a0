"""The trainer: learn the scorer's projections, bins, tables and threshold from history.

The scorer core computes, per sample, ``score = sum_k table[k][bin_k(w_k . x)]`` (see
:mod:`mailpulse.hdl.reference`).  The trainer chooses every register of that sum, unsupervised:

1. **Input scaling** (:func:`fit_scaling`).  Per feature, ``center`` = median and ``scale`` maps
   the robust half-range ``max(q(1-e) - median, median - q(e))`` (``e`` = :data:`SCALING_QUANTILE`)
   to :data:`SCALING_TARGET` counts, leaving 8x headroom before the 16-bit inputs saturate.
   Data that is already the node's fixed-point vector (feature schema other than ``odds``) is
   used as is.
2. **Projections** (:func:`choose_projections`), sparse with weights in ``{-1, 0, +1}``: first one
   1-sparse projection per feature (an HBOS-like per-feature histogram; a constant feature gets
   none).  Then 2-sparse ones for the feature pairs whose dependence is significant
   (:func:`dependent_pairs`: mutual information of a 16x16 quantile histogram above twice that
   of the same pair with one feature permuted); independent pairs get none, because for them
   the 1-sparse histograms already give the joint density and more projections only add noise.
   Each dependent pair gets both axes ``x_i + x_j`` and ``x_i - x_j`` (for standardised features
   these are the pair's principal axes: "magnitude" outliers show on the first, outliers that
   break the correlation on the second).  Pairs are taken in :func:`order_pairs` order: a
   spanning forest of the least redundant dependent pairs, then the rest by coverage, until K is
   full; when one slot is left, the axis with the higher held-out log-likelihood in standardised
   units (:func:`heldout_loglik`: projection pursuit, fit on one half, scored on the other) wins.
3. **Bins** (:func:`fit_bins`): per projection, the bin width ``2**shift`` is the smallest power
   of two whose ``B - 2`` inner bins span the central ``1 - 2 e`` of the projected data, placed
   where they cover the most samples; bins ``0`` and ``B - 1`` are the tails (everything the
   core clamps).
4. **Tables** (:func:`fit_table`): ``-log`` density with add-one (Laplace) smoothing, tail bins
   divided by the extent of the data they hold, shifted so each table's minimum is 0 (a
   per-projection constant does not change the ranking).  These float tables are the *float
   reference*; the core's tables are ``rint(table * table_scale)`` with ``table_scale`` mapping
   the largest entry to the 16-bit maximum, so quantisation costs almost nothing.
5. **Threshold**: the ``1 - rate`` quantile of the quantised training scores, so at most the
   target false-alarm rate of the training data scores above it.

Deterministic for a given seed.  ``train`` fails with ``UserError`` when the data do not fit the
parameter set (more features than D, fewer than 2 samples).
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from mailpulse.hdl import reference as hm
from mailpulse.hdl.params import CoreParams

from mailpulse import __version__
from mailpulse.datasets import Dataset
from mailpulse.errors import UserError
from mailpulse.modelfile import ODDS_SCHEMA, InputScaling, TrainedModel, scale_features

#: Version of the training method, recorded in every model file.
TRAINER_VERSION = "loda-pp-1"
#: Tail quantile used by the input scaling and by the histogram ranges.
SCALING_QUANTILE = 1e-3
#: Counts that the robust half-range of a feature maps to (16-bit inputs saturate at 32767).
SCALING_TARGET = 4096
#: Tail quantile left outside the inner bins of each histogram (per side).
RANGE_QUANTILE = 1e-3
#: Pseudo-count added to every bin (Laplace smoothing).
SMOOTHING = 1.0
#: Samples used to estimate the mutual information of feature pairs.
MI_SAMPLES = 50_000
#: Default target false-alarm rate on the training data.
DEFAULT_FALSE_ALARM_RATE = 1e-3

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    """Progress reporter for the command line."""
    print(f"train: {msg}", file=sys.stderr, flush=True)


# -- input scaling ----------------------------------------------------------------------------

def fit_scaling(x: FloatArray, params: CoreParams, *, identity: bool = False) -> InputScaling:
    """Per-feature robust centring and scaling to the core's 16-bit inputs.

    A constant feature gets ``scale = 0`` (always 0, it carries no information).  With
    ``identity``, the data must already be integers in the 16-bit range.
    """
    n_feat = x.shape[1]
    if identity:
        if not (np.all(x == np.rint(x)) and x.min() >= params.in_min and x.max() <= params.in_max):
            raise UserError("feature vectors of a node schema must be 16-bit integers (the node's fixed-point x)")
        return InputScaling.identity(params.d, n_feat)
    center = np.median(x, axis=0)
    lo = np.quantile(x, SCALING_QUANTILE, axis=0)
    hi = np.quantile(x, 1 - SCALING_QUANTILE, axis=0)
    half = np.maximum(hi - center, center - lo)
    full = np.max(np.abs(x - center), axis=0)
    half = np.where(half > 0, half, full)
    scale = np.where(half > 0, SCALING_TARGET / np.where(half > 0, half, 1.0), 0.0)
    pad = params.d - n_feat
    return InputScaling([float(c) for c in center] + [0.0] * pad, [float(s) for s in scale] + [0.0] * pad, n_feat)


# -- bins and tables --------------------------------------------------------------------------

@dataclass
class Histogram:
    """One projection's bin placement and float table."""

    offset: int
    shift: int
    table: FloatArray
    loglik: float = 0.0


def fit_bins(p: IntArray, params: CoreParams) -> tuple[int, int]:
    """Offset and shift for projected samples ``p``: inner bins cover the central mass."""
    b = params.b
    inner = b - 2
    lo, hi = np.quantile(p, [RANGE_QUANTILE, 1 - RANGE_QUANTILE])
    span = max(float(hi - lo), 1.0)
    shift = max(math.ceil(math.log2(span / inner)), 0) if span > inner else 0
    shift = min(shift, params.shift_max)
    length = inner << shift
    ps = np.sort(p)
    # The window [a, a + length) holding the most samples; centre the data it holds inside it.
    ends = np.searchsorted(ps, ps + length, side="left")
    i = int(np.argmax(ends - np.arange(len(ps))))
    a, z = int(ps[i]), int(ps[ends[i] - 1])
    offset = (a + z) // 2 - length // 2 - (1 << shift)
    return int(np.clip(offset, params.offset_min, params.offset_max)), shift


def bin_index(p: IntArray, offset: int, shift: int, params: CoreParams) -> IntArray:
    """The core's bin of projected values (same arithmetic as :func:`mailpulse.hdl.reference.bins`)."""
    return np.clip((p - offset) >> shift, 0, params.b - 1)


def fit_table(p: IntArray, offset: int, shift: int, params: CoreParams) -> FloatArray:
    """Float ``-log`` density table (minimum 0) of ``p`` for the given bins."""
    b = params.b
    idx = bin_index(p, offset, shift, params)
    counts = np.bincount(idx, minlength=b).astype(np.float64)
    width = np.full(b, float(1 << shift))
    lo_edge = offset + (1 << shift)
    hi_edge = offset + (b - 1) * (1 << shift)
    width[0] = max(width[0], float(lo_edge - int(p.min())))
    width[b - 1] = max(width[b - 1], float(int(p.max()) - hi_edge + 1))
    dens = (counts + SMOOTHING) / (len(p) + SMOOTHING * b) / width
    t = -np.log(dens)
    return t - t.min()


def heldout_loglik(p: IntArray, params: CoreParams, split: IntArray) -> float:
    """Mean held-out log density of ``p``, in units of its standard deviation.

    The histogram is fit on the first half of ``split`` and evaluated on the second half; adding
    ``log(std)`` makes projections of different spread comparable, so a higher value means a
    more structured (less Gaussian-like) direction: the projection-pursuit index, measured on
    data the histogram did not see so that noise is not rewarded.
    """
    h = len(split) // 2
    tr, te = p[split[:h]], p[split[h:]]
    offset, shift = fit_bins(tr, params)
    b = params.b
    idx = bin_index(tr, offset, shift, params)
    counts = np.bincount(idx, minlength=b).astype(np.float64)
    width = np.full(b, float(1 << shift))
    width[0] = max(width[0], float(offset + (1 << shift) - int(tr.min())))
    width[b - 1] = max(width[b - 1], float(int(tr.max()) - offset - (b - 1) * (1 << shift) + 1))
    logd = np.log((counts + SMOOTHING) / (len(tr) + SMOOTHING * b) / width)
    return float(logd[bin_index(te, offset, shift, params)].mean() + math.log(float(np.std(tr)) + 1.0))


# -- projections ------------------------------------------------------------------------------

def mutual_information(a: IntArray, b: IntArray, bins: int = 16) -> float:
    """Mutual information (nats) of two features from a 2-D histogram of their quantile bins.

    Zero (up to estimation noise) when the features are independent, whatever their marginals;
    ties (discrete features) just make some quantile bins empty.
    """
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    ia = np.searchsorted(np.quantile(a, qs), a, side="right")
    ib = np.searchsorted(np.quantile(b, qs), b, side="right")
    joint = np.bincount(ia * bins + ib, minlength=bins * bins).reshape(bins, bins) / len(a)
    pa, pb = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])))


def dependent_pairs(xq: IntArray, features: list[int], rng: np.random.Generator) -> dict[tuple[int, int], float]:
    """Feature pairs whose dependence is significant, with their mutual information.

    A pair counts as dependent when its mutual information exceeds twice that of the same pair
    with one feature randomly permuted (the estimator's bias under independence).  Independent
    pairs are left out: for them the product of the 1-sparse histograms already is the joint
    density, and a 2-sparse projection would only add noise to the score.
    """
    sub = xq[rng.permutation(len(xq))[:MI_SAMPLES]]
    out: dict[tuple[int, int], float] = {}
    for i, j in itertools.combinations(features, 2):
        mi = mutual_information(sub[:, i], sub[:, j])
        if mi > 2.0 * mutual_information(sub[:, i], rng.permutation(sub[:, j])):
            out[(i, j)] = mi
    return out


def order_pairs(dep: dict[tuple[int, int], float], features: list[int], rng: np.random.Generator
                ) -> list[tuple[int, int]]:
    """Dependent pairs in the order they get projections.

    First a spanning forest of least redundant pairs (Kruskal on ascending mutual information:
    every feature joined to the others through its weakest significant dependence), then the
    other pairs, each time the one whose features are so far least covered (ties in a
    seed-dependent order), so that K is spread over complementary feature combinations rather
    than spent on near-duplicate features.
    """
    tie = {g: int(t) for t, g in zip(rng.permutation(len(dep)), sorted(dep))}
    parent = {j: j for j in features}

    def root(j: int) -> int:
        while parent[j] != j:
            j = parent[j]
        return j

    forest: list[tuple[int, int]] = []
    for g in sorted(dep, key=lambda g: (dep[g], tie[g])):
        a, b = root(g[0]), root(g[1])
        if a != b:
            parent[a] = b
            forest.append(g)
    uses = dict.fromkeys(features, 0)
    for i, j in forest:
        uses[i] += 1
        uses[j] += 1
    left = sorted((g for g in dep if g not in forest), key=lambda g: tie[g])
    order = list(forest)
    while left:
        best = min(left, key=lambda g: (uses[g[0]] + uses[g[1]], max(uses[g[0]], uses[g[1]]), tie[g]))
        left.remove(best)
        uses[best[0]] += 1
        uses[best[1]] += 1
        order.append(best)
    return order


def choose_projections(xq: IntArray, n_feat: int, params: CoreParams, rng: np.random.Generator,
                       progress: Progress | None = None) -> list[IntArray]:
    """Up to K sparse weight vectors (length D), chosen as described in the module docstring."""
    informative = [j for j in range(n_feat) if np.any(xq[:, j] != xq[0, j])]
    chosen: list[IntArray] = []

    def add(w: IntArray) -> None:
        chosen.append(w)
        if progress:
            progress(f"projection {len(chosen)}/{params.k}: weights {w[:n_feat].tolist()}")

    for j in informative[:params.k]:
        add(_weights(params, (j,), (1,)))
    if len(chosen) == params.k:
        return chosen
    split = rng.permutation(len(xq))
    for g in order_pairs(dependent_pairs(xq, informative, rng), informative, rng):
        room = params.k - len(chosen)
        if room == 0:
            break
        axes = [_weights(params, g, (1, 1)), _weights(params, g, (1, -1))]
        if room == 1:
            axes.sort(key=lambda w: -heldout_loglik(xq @ w, params, split))
        for w in axes[:room]:
            add(w)
    return chosen


def _weights(params: CoreParams, idx: tuple[int, ...], pattern: tuple[int, ...]) -> IntArray:
    w = np.zeros(params.d, dtype=np.int64)
    w[list(idx)] = pattern
    return w


# -- training ---------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """A trained model and the training data's scores."""

    model: TrainedModel
    xq: IntArray
    score_quantised: IntArray
    score_float: FloatArray
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


def train(data: Dataset, params: CoreParams, *, seed: int = 0,
          false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE, feature_schema: str = ODDS_SCHEMA,
          progress: Progress | None = None, now: datetime | None = None) -> TrainResult:
    """Train a model for the core ``params`` on ``data`` (labels, if any, are only evaluated).

    Raises ``UserError`` if the data have more features than the core's D, fewer than two
    samples, or the false-alarm rate is outside (0, 1).
    """
    t0 = time.perf_counter()
    x = data.X
    n, n_feat = x.shape
    if n_feat > params.d:
        raise UserError(f"the data have {n_feat} features but parameter set {params.name!r} scores "
                        f"D={params.d}; select at most {params.d} features before training")
    if n < 2:
        raise UserError(f"the data have {n} sample(s); training needs at least 2")
    if not 0.0 < false_alarm_rate < 1.0:
        raise UserError(f"the false-alarm rate must be between 0 and 1 (exclusive), not {false_alarm_rate}")
    rng = np.random.default_rng(seed)
    say = progress if (progress and n >= 20_000) else None
    if say:
        say(f"{n} samples x {n_feat} features from {data.name}, parameter set {params.name}")
    scaling = fit_scaling(x, params, identity=feature_schema != ODDS_SCHEMA)
    xq = scale_features(scaling, x, params)
    ws = choose_projections(xq, n_feat, params, rng, say)
    k, b = params.k, params.b
    weights = np.zeros((k, params.d), dtype=np.int64)
    offsets = np.zeros(k, dtype=np.int64)
    shifts = np.zeros(k, dtype=np.int64)
    ref = np.zeros((k, b), dtype=np.float64)
    for i, w in enumerate(ws):
        p = xq @ w
        off, sh = fit_bins(p, params)
        weights[i], offsets[i], shifts[i] = w, off, sh
        ref[i] = fit_table(p, off, sh, params)
    top = float(ref.max())
    table_scale = params.table_max / top if top > 0 else 1.0
    tables = np.clip(np.rint(ref * table_scale), 0, params.table_max).astype(np.int64)
    cfg = hm.CoreConfig(weights, offsets, shifts, tables, 0)
    sq = hm.score(params, cfg, xq).score
    threshold = int(np.quantile(sq, 1.0 - false_alarm_rate, method="higher"))
    sf = float_scores_from(params, cfg, ref, xq)
    seconds = time.perf_counter() - t0
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    provenance: dict[str, Any] = {
        "data": data.provenance(),
        "trained_at": stamp,
        "seed": int(seed),
        "false_alarm_rate": float(false_alarm_rate),
        "trainer": f"mailpulse {__version__} {TRAINER_VERSION}",
        "projections_used": len(ws),
        "training": {"flagged_rate": round(float(np.mean(sq > threshold)), 6),
                     "score_median": int(np.median(sq)), "score_max": int(sq.max())},
    }
    metrics: dict[str, float] = {}
    if data.y is not None and 0 < int(data.y.sum()) < n:
        metrics = detection_metrics(data.y, sq, sf, threshold)
        provenance["training"].update({kk: round(v, 6) for kk, v in metrics.items()})
    model = TrainedModel(params=params, feature_schema=feature_schema, scaling=scaling, weights=weights,
                  offsets=offsets, shifts=shifts, tables=tables, threshold=threshold,
                  reference_tables=ref, table_scale=float(table_scale), provenance=provenance)
    if say:
        say(f"done in {seconds:.2f} s: {len(ws)} projections, threshold {threshold}")
    return TrainResult(model, xq, sq, sf, seconds, metrics)


def float_scores_from(params: CoreParams, cfg: hm.CoreConfig, ref: FloatArray, xq: IntArray) -> FloatArray:
    """Float reference scores: the core's bins, the float tables."""
    idx = hm.bins(params, cfg, xq)
    return np.asarray(ref[np.arange(params.k)[None, :], idx].sum(axis=1), dtype=np.float64)


# -- evaluation -------------------------------------------------------------------------------

def roc_auc(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count one half), by the rank-sum statistic."""
    ya = np.asarray(y).astype(bool)
    sa = np.asarray(s, dtype=np.float64)
    n_pos = int(ya.sum())
    n_neg = len(ya) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise UserError("ROC AUC needs both normal and anomalous labels in the data")
    _, inv, counts = np.unique(sa, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0        # 1-based average rank of each distinct score
    ranks = avg_rank[inv]
    return float((ranks[ya].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Average precision: sum over distinct thresholds of (recall step) x precision."""
    ya = np.asarray(y).astype(bool)
    sa = np.asarray(s, dtype=np.float64)
    if not ya.any():
        raise UserError("average precision needs at least one anomalous label in the data")
    order = np.argsort(-sa, kind="mergesort")
    ys, ss = ya[order], sa[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(~ys)
    last = np.r_[np.nonzero(np.diff(ss))[0], len(ss) - 1]
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / ya.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def detection_metrics(y: npt.ArrayLike, score_q: npt.ArrayLike, score_f: npt.ArrayLike,
                      threshold: int) -> dict[str, float]:
    """AUC/AP of both models, quantisation loss, and rates at the threshold."""
    ya = np.asarray(y).astype(bool)
    sq = np.asarray(score_q)
    auc_q, auc_f = roc_auc(ya, sq), roc_auc(ya, score_f)
    flag = sq > threshold
    return {
        "auc_quantised": auc_q,
        "ap_quantised": average_precision(ya, sq),
        "auc_float": auc_f,
        "ap_float": average_precision(ya, score_f),
        "quantisation_loss": auc_f - auc_q,
        "false_alarm_rate": float(flag[~ya].mean()),
        "detection_rate": float(flag[ya].mean()),
    }


@dataclass
class Evaluation:
    """Scores of a model on a data set, and the metrics when the data are labelled."""

    model: TrainedModel
    data: Dataset
    xq: IntArray
    score_quantised: IntArray
    score_float: FloatArray
    metrics: dict[str, float]


def evaluate(model: TrainedModel, data: Dataset) -> Evaluation:
    """Score ``data`` with ``model``: quantised scores are exactly :func:`mailpulse.hdl.reference.score`'s.

    Raises ``UserError`` if the data have no labels, or only one class.
    """
    if data.y is None:
        raise UserError(f"data {data.name} have no labels (y); evaluation needs labelled data")
    xq = model.scale(data.X)
    cfg = model.core_config()
    sq = hm.score(model.params, cfg, xq).score
    sf = float_scores_from(model.params, cfg, model.reference_tables, xq)
    m = detection_metrics(data.y, sq, sf, model.threshold)
    m["samples"] = float(data.n_samples)
    m["anomalies"] = float(data.y.sum())
    m["threshold"] = float(model.threshold)
    return Evaluation(model, data, xq, sq, sf, m)


def train_and_score(data: Dataset, params: CoreParams, *, seed: int = 0,
                    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
                    progress: Progress | None = None) -> Evaluation:
    """The ODDS protocol: train on the whole file, score the same file."""
    result = train(data, params, seed=seed, false_alarm_rate=false_alarm_rate, progress=progress)
    ev = evaluate(result.model, data)
    ev.metrics["train_seconds"] = result.seconds
    return ev


#: Order and format of the metric lines ``mailpulse evaluate`` prints.
METRIC_FORMATS: list[tuple[str, str]] = [
    ("auc_quantised", "{:.3f}"), ("ap_quantised", "{:.3f}"), ("auc_float", "{:.3f}"), ("ap_float", "{:.3f}"),
    ("quantisation_loss", "{:.4f}"), ("false_alarm_rate", "{:.4f}"), ("detection_rate", "{:.3f}"),
    ("threshold", "{:.0f}"), ("samples", "{:.0f}"), ("anomalies", "{:.0f}"), ("train_seconds", "{:.2f}"),
]


def format_metrics(metrics: dict[str, float]) -> str:
    """One ``name value`` line per metric, in a stable order and format."""
    lines = []
    for name, fmt in METRIC_FORMATS:
        if name in metrics:
            text = fmt.format(metrics[name])
            if text.startswith("-") and float(text) == 0.0:
                text = text[1:]                       # no "-0.0000"
            lines.append(f"{name} {text}")
    return "\n".join(lines)


def plot_curves(ev: Evaluation, path: str) -> None:
    """Write ROC and precision-recall curves (quantised and float) to a PNG file."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib (pip install 'mailpulse[train]')") from None
    assert ev.data.y is not None
    y = ev.data.y.astype(bool)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    for label, s in (("quantised", ev.score_quantised), ("float", ev.score_float)):
        fpr, tpr, rec, prec = _curves(y, np.asarray(s, dtype=np.float64))
        ax1.plot(fpr, tpr, label=f"{label} (AUC {ev.metrics[f'auc_{label}']:.3f})")
        ax2.plot(rec, prec, label=f"{label} (AP {ev.metrics[f'ap_{label}']:.3f})")
    ax1.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax1.set(xlabel="false-alarm rate", ylabel="detection rate", title=f"ROC - {ev.data.name}")
    ax2.set(xlabel="recall", ylabel="precision", title=f"precision-recall - {ev.data.name}")
    ax1.legend(loc="lower right")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise UserError(f"cannot write plot {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)


def _curves(y: npt.NDArray[np.bool_], s: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[np.nonzero(np.diff(ss))[0], len(ss) - 1]
    tp = np.cumsum(ys)[last].astype(np.float64)
    fp = np.cumsum(~ys)[last].astype(np.float64)
    fpr = np.r_[0.0, fp / max(fp[-1], 1.0)]
    tpr = np.r_[0.0, tp / max(tp[-1], 1.0)]
    return fpr, tpr, tp / max(tp[-1], 1.0), tp / (tp + fp)


__all__ = ["Evaluation", "TrainResult", "average_precision", "evaluate", "fit_scaling", "format_metrics",
           "roc_auc", "train", "train_and_score"]
