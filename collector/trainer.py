"""The trainer: learn the scorer's projections, bins, tables and threshold from history.

The scorer core computes, per sample, ``score = sum_k table[k][bin_k(w_k . x)]`` (see
:mod:`mailpulse.hdl.reference`).  The trainer chooses every register of that sum, unsupervised
(labels, when the data have them, are only used to report detection quality):

1. **Inputs.**  Data with at most D features: per feature, ``center`` = median and ``scale``
   maps the robust half-range ``max(q(1-e) - median, median - q(e))`` (``e`` =
   :data:`SCALING_QUANTILE`) to :data:`SCALING_TARGET` counts (:func:`fit_scaling`); node vectors
   (feature schema other than ``odds``) are used as they are.  Wider data: a
   :class:`mailpulse.transform.WideTransform` reduces the F features to D *energy channels*
   (:mod:`.training.wide`), stored in the model file and applied by every scoring path.
2. **Projections.**  One 1-sparse projection per input that varies (a constant input gets
   none).  Then, for data of at most D features, pair axes ``x_i + x_j`` and ``x_i - x_j`` with a
   table weight, each added only while it raises the model's own held-out log likelihood
   (:mod:`.training.selection`), up to K.  Energy channels get no pairs.
3. **Bins** (:mod:`.training.histograms`): Freedman-Diaconis width rounded to a power of two,
   window placed where it holds the most samples.
4. **Tables**: ``-log`` density (Laplace smoothing) times the projection's weight; for energy
   channels ``-log P(value >= bin)``.  These float tables are the *float reference*; the core's
   tables are ``rint(table * table_scale)`` with ``table_scale`` mapping the largest entry to the
   16-bit maximum.
5. **Threshold**: the ``1 - rate`` quantile of the quantised training scores.

Deterministic for a given seed.  ``train`` fails with ``UserError`` when the data cannot be
trained on (fewer than 2 samples, node vectors wider than D, a false-alarm rate outside (0, 1)).
"""

from __future__ import annotations

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
from mailpulse.transform import WideTransform

from .training.histograms import density_table, fit_bins, tail_table
from .training.metrics import (
    METRIC_FORMATS,
    average_precision,
    detection_metrics,
    format_metrics,
    plot_curves,
    roc_auc,
)
from .training.selection import select_pairs
from .training.wide import fit_wide_transform

#: Version of the training method, recorded in every model file.
TRAINER_VERSION = "heldout-pairs-4"
#: Tail quantile used by the input scaling.
SCALING_QUANTILE = 1e-3
#: Counts that the robust half-range of a feature maps to (16-bit inputs saturate at 32767).
SCALING_TARGET = 4096
#: Default target false-alarm rate on the training data.
DEFAULT_FALSE_ALARM_RATE = 1e-3
#: Kinds of core input: a feature (two-sided density tables, pairs allowed) or an energy channel.
LINEAR, ENERGY = "linear", "energy"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    """Progress reporter for the command line."""
    print(f"train: {msg}", file=sys.stderr, flush=True)


# -- inputs -----------------------------------------------------------------------------------

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


@dataclass
class Inputs:
    """How raw samples become the core's inputs, the inputs of the training data, and their kinds."""

    scaling: InputScaling
    transform: WideTransform | None
    xq: IntArray
    kinds: list[str]


def fit_inputs(x: FloatArray, params: CoreParams, feature_schema: str, rng: np.random.Generator) -> Inputs:
    """Input scaling (at most D features) or wide-input transform (more), fit on ``x``."""
    n_feat = x.shape[1]
    if n_feat <= params.d:
        scaling = fit_scaling(x, params, identity=feature_schema != ODDS_SCHEMA)
        return Inputs(scaling, None, scale_features(scaling, x, params), [LINEAR] * params.d)
    if feature_schema != ODDS_SCHEMA:
        raise UserError(f"node feature vectors have at most D={params.d} values; these have {n_feat}")
    transform = fit_wide_transform(x, params.d, rng)
    scaling = InputScaling.identity(params.d)
    return Inputs(scaling, transform, scale_features(scaling, x, params, transform), [ENERGY] * params.d)


# -- projections and tables -------------------------------------------------------------------

@dataclass
class Projection:
    """One projection: weights over the core's D inputs, table weight, kind of table."""

    weights: IntArray
    beta: float
    kind: str


def choose_projections(xq: IntArray, kinds: list[str], params: CoreParams, rng: np.random.Generator,
                       progress: Progress | None = None) -> tuple[list[Projection], float]:
    """Up to K projections (see the module docstring) and the held-out log-likelihood gain of the pairs."""
    varying = [j for j in range(params.d) if np.any(xq[:, j] != xq[0, j])]
    chosen = [Projection(np.eye(params.d, dtype=np.int64)[j], 1.0, kinds[j]) for j in varying[:params.k]]
    linear = [j for j in varying if kinds[j] == LINEAR]
    pairs, gain = select_pairs(xq, linear, params, params.k - len(chosen), rng)
    chosen += [Projection(w, beta, LINEAR) for w, beta in pairs]
    if progress:
        for i, pr in enumerate(chosen):
            progress(f"projection {i + 1}/{params.k}: weights {pr.weights.tolist()} x {pr.beta:g} ({pr.kind})")
    return chosen, gain


def fit_tables(xq: IntArray, projections: list[Projection], params: CoreParams) -> tuple[hm.CoreConfig, FloatArray]:
    """Core registers with all-zero tables and threshold 0, and the float tables (the reference)."""
    k, b = params.k, params.b
    cfg = hm.CoreConfig.zeros(params)
    cfg.threshold = 0
    ref = np.zeros((k, b), dtype=np.float64)
    for i, pr in enumerate(projections):
        p = xq @ pr.weights
        off, sh = fit_bins(p, params)
        cfg.weights[i], cfg.offsets[i], cfg.shifts[i] = pr.weights, off, sh
        table = tail_table if pr.kind == ENERGY else density_table
        ref[i] = pr.beta * table(p, off, sh, params)
    return cfg, ref


def quantise_tables(ref: FloatArray, params: CoreParams) -> tuple[IntArray, float]:
    """``rint(ref * table_scale)``, the largest entry mapped to the 16-bit maximum."""
    top = float(ref.max())
    table_scale = params.table_max / top if top > 0 else 1.0
    return np.clip(np.rint(ref * table_scale), 0, params.table_max).astype(np.int64), float(table_scale)


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


def _check(data: Dataset, false_alarm_rate: float) -> None:
    if data.n_samples < 2:
        raise UserError(f"the data have {data.n_samples} sample(s); training needs at least 2")
    if not 0.0 < false_alarm_rate < 1.0:
        raise UserError(f"the false-alarm rate must be between 0 and 1 (exclusive), not {false_alarm_rate}")


def train(data: Dataset, params: CoreParams, *, seed: int = 0,
          false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE, feature_schema: str = ODDS_SCHEMA,
          progress: Progress | None = None, now: datetime | None = None) -> TrainResult:
    """Train a model for the core ``params`` on ``data`` (labels, if any, are only evaluated).

    Data of any width: more features than the core's D go through a wide-input transform.
    Raises ``UserError`` for fewer than two samples, node vectors wider than D, or a false-alarm
    rate outside (0, 1).
    """
    t0 = time.perf_counter()
    _check(data, false_alarm_rate)
    n, n_feat = data.X.shape
    rng = np.random.default_rng(seed)
    say = progress if (progress and n >= 20_000) else None
    if say:
        say(f"{n} samples x {n_feat} features from {data.name}, parameter set {params.name}")
    inputs = fit_inputs(data.X, params, feature_schema, rng)
    projections, gain = choose_projections(inputs.xq, inputs.kinds, params, rng, say)
    cfg, ref = fit_tables(inputs.xq, projections, params)
    cfg.tables, table_scale = quantise_tables(ref, params)
    sq = hm.score(params, cfg, inputs.xq).score
    cfg.threshold = int(np.quantile(sq, 1.0 - false_alarm_rate, method="higher"))
    sf = float_scores_from(params, cfg, ref, inputs.xq)
    seconds = time.perf_counter() - t0
    provenance: dict[str, Any] = {
        "data": data.provenance(),
        "trained_at": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seed": int(seed),
        "false_alarm_rate": float(false_alarm_rate),
        "trainer": f"mailpulse {__version__} {TRAINER_VERSION}",
        "projections_used": len(projections),
        "inputs": f"{n_feat} features -> {params.d} energy channels" if inputs.transform else f"{n_feat} features",
        "pair_gain_nats": round(gain, 6),
        "training": {"flagged_rate": round(float(np.mean(sq > cfg.threshold)), 6),
                     "score_median": int(np.median(sq)), "score_max": int(sq.max())},
    }
    metrics: dict[str, float] = {}
    if data.y is not None and 0 < int(data.y.sum()) < n:
        metrics = detection_metrics(data.y, sq, sf, cfg.threshold)
        provenance["training"].update({kk: round(v, 6) for kk, v in metrics.items()})
    model = TrainedModel(params=params, feature_schema=feature_schema, scaling=inputs.scaling, weights=cfg.weights,
                         offsets=cfg.offsets, shifts=cfg.shifts, tables=cfg.tables, threshold=cfg.threshold,
                         reference_tables=ref, table_scale=table_scale, provenance=provenance,
                         transform=inputs.transform)
    if say:
        say(f"done in {seconds:.2f} s: {len(projections)} projections, threshold {cfg.threshold}")
    return TrainResult(model, inputs.xq, sq, sf, seconds, metrics)


def float_scores_from(params: CoreParams, cfg: hm.CoreConfig, ref: FloatArray, xq: IntArray) -> FloatArray:
    """Float reference scores: the core's bins, the float tables."""
    idx = hm.bins(params, cfg, xq)
    return np.asarray(ref[np.arange(params.k)[None, :], idx].sum(axis=1), dtype=np.float64)


# -- evaluation -------------------------------------------------------------------------------

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


__all__ = ["DEFAULT_FALSE_ALARM_RATE", "METRIC_FORMATS", "Evaluation", "TrainResult", "average_precision",
           "evaluate", "fit_scaling", "format_metrics", "plot_curves", "roc_auc", "train", "train_and_score"]
