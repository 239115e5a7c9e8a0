"""Detection quality of the mailpulse scorer against PyOD peers on the ODDS files in ``data/``.

Protocol (the ODDS literature's): fit on the whole file, score the same file, labels only for
the metrics.  For every ``*.mat`` in ``data/odds/``
and several seeds it runs PyOD IForest, LODA and HBOS with their defaults beside mailpulse's
bit-exact quantised model for the ``small``, ``full`` and ``zynq`` parameter sets, and prints one
Markdown table: ROC AUC and average precision (mean ± std over seeds) and the mean fit time.

Run: ``.venv/bin/python bench/bench_detectors.py [--seeds 5]`` (about a minute on one core).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from mailpulse.collector.trainer import average_precision, roc_auc, train_and_score
from mailpulse.hdl.params import get_params

from mailpulse.datasets import Dataset, load_dataset

ROOT = Path(__file__).resolve().parent.parent


def _pyod(name: str) -> Callable[[Dataset, int], np.ndarray]:
    def run(ds: Dataset, seed: int) -> np.ndarray:
        from pyod.models.hbos import HBOS
        from pyod.models.iforest import IForest
        from pyod.models.loda import LODA

        if name == "IForest":
            det = IForest(random_state=seed)
        elif name == "LODA":
            np.random.seed(seed)              # PyOD's LODA draws its projections from np.random
            det = LODA()
        else:
            det = HBOS()
        det.fit(ds.X)
        return np.asarray(det.decision_scores_, dtype=np.float64)
    return run


def _mailpulse(config: str) -> Callable[[Dataset, int], np.ndarray]:
    def run(ds: Dataset, seed: int) -> np.ndarray:
        return train_and_score(ds, get_params(config), seed=seed).score_quantised.astype(np.float64)
    return run


DETECTORS: list[tuple[str, Callable[[Dataset, int], np.ndarray]]] = [
    ("PyOD IForest", _pyod("IForest")),
    ("PyOD LODA", _pyod("LODA")),
    ("PyOD HBOS", _pyod("HBOS")),
    ("mailpulse small (K=8, B=64)", _mailpulse("small")),
    ("mailpulse full (K=16, B=64)", _mailpulse("full")),
    ("mailpulse zynq (K=32, B=128)", _mailpulse("zynq")),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seeds", type=int, default=5, help="seeds per detector and data set (default 5)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "odds", help="folder of ODDS .mat files")
    args = ap.parse_args(argv)
    files = sorted(args.data.glob("*.mat"))
    if not files:
        print(f"no .mat files in {args.data}", file=sys.stderr)
        return 1
    warnings.filterwarnings("ignore")
    print(f"Train and score on the same file; {args.seeds} seeds; mean ± std; time = mean fit+score seconds.\n")
    print("| data | detector | ROC AUC | AP | time (s) |")
    print("|---|---|---|---|---|")
    for f in files:
        ds = load_dataset(f)
        assert ds.y is not None, f"{f} has no labels"
        label = f"{f.stem} ({ds.n_samples}x{ds.n_features}, {int(ds.y.sum())} anomalies)"
        for name, run in DETECTORS:
            aucs, aps, secs = [], [], []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                s = run(ds, seed)
                secs.append(time.perf_counter() - t0)
                aucs.append(roc_auc(ds.y, s))
                aps.append(average_precision(ds.y, s))
            print(f"| {label} | {name} | {np.mean(aucs):.3f} ± {np.std(aucs):.3f} | "
                  f"{np.mean(aps):.3f} ± {np.std(aps):.3f} | {np.mean(secs):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
