"""Detection metrics (ROC AUC, average precision) and the lines and plots ``mailpulse evaluate`` prints.

Implemented with numpy: AUC is the rank-sum statistic (ties count one half), AP the sum over
distinct thresholds of recall step x precision (as scikit-learn computes it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from mailpulse.errors import UserError

if TYPE_CHECKING:
    from mailpulse.collector.trainer import Evaluation

FloatArray = npt.NDArray[np.float64]


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


__all__ = ["METRIC_FORMATS", "average_precision", "detection_metrics", "format_metrics", "plot_curves", "roc_auc"]
