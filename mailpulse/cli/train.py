"""``mailpulse train`` and ``mailpulse evaluate``: thin layers over :mod:`mailpulse.collector.trainer`."""

from __future__ import annotations

import argparse
import collections
import sys

from mailpulse.collector import trainer
from mailpulse.datasets import Dataset, load_archive, load_dataset
from mailpulse.errors import UserError
from mailpulse.hdl.params import PARAMETER_SETS, params_or_error
from mailpulse.modelfile import ODDS_SCHEMA, load_model


def _rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), not {v}")
    return v


def _data(args: argparse.Namespace) -> Dataset:
    if getattr(args, "archive", None):
        skipped: collections.Counter[str] = collections.Counter()
        ds = load_archive(args.archive, skipped)
        if skipped:
            reasons = ", ".join(f"{r} {n}" for r, n in skipped.most_common())
            print(f"archive {args.archive}: skipped {sum(skipped.values())} entries that are not usable ({reasons})",
                  file=sys.stderr)
        return ds
    if not args.data:
        raise UserError("give the training data with --data FILE or --archive DIR")
    return load_dataset(args.data)


def cmd_train(args: argparse.Namespace) -> int:
    data = _data(args)
    result = trainer.train(data, params_or_error(args.config), seed=args.seed, false_alarm_rate=args.false_alarm_rate,
                           feature_schema=args.feature_schema,
                           progress=None if args.quiet else trainer.stderr_progress)
    try:
        result.model.save(args.out)
    except OSError as e:
        raise UserError(f"cannot write model file {args.out}: {e.strerror or e}") from None
    m = result.model
    print(f"wrote {args.out}: parameter set {m.params.name}, {m.provenance['projections_used']} projections, "
          f"threshold {m.threshold}, trained on {data.n_samples} samples in {result.seconds:.2f} s")
    if result.metrics:
        print(trainer.format_metrics(result.metrics))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if not args.data:
        raise UserError("evaluate needs --data FILE (labelled)")
    data = load_dataset(args.data)
    if args.train_and_score:
        if args.model:
            raise UserError("--train-and-score trains its own model; do not give --model")
        ev = trainer.train_and_score(data, params_or_error(args.config), seed=args.seed,
                                     false_alarm_rate=args.false_alarm_rate)
    else:
        if not args.model:
            raise UserError("evaluate needs --model MODEL, or --train-and-score with --config NAME")
        ev = trainer.evaluate(load_model(args.model), data)
    print(trainer.format_metrics(ev.metrics))
    if args.plot:
        trainer.plot_curves(ev, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


_SETS = ", ".join(PARAMETER_SETS)


def add_train(p: argparse.ArgumentParser) -> None:
    """``mailpulse train``."""
    p.description = ("Train a model file for the scorer core from labelled or unlabelled "
                     "data (labels are only used to report detection quality).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE", help="ODDS .mat, .npz (X, optional y) or .jsonl[.gz] file")
    src.add_argument("--archive", metavar="DIR", help="the collector's archive folder (*.jsonl, *.jsonl.gz)")
    p.add_argument("--config", metavar="NAME", default="full", help=f"core parameter set ({_SETS}; default full)")
    p.add_argument("--out", metavar="MODEL", required=True, help="model file to write (JSON)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same model")
    p.add_argument("--false-alarm-rate", type=_rate, default=trainer.DEFAULT_FALSE_ALARM_RATE, metavar="R",
                   help=f"target flagged fraction of the training data (default {trainer.DEFAULT_FALSE_ALARM_RATE})")
    p.add_argument("--feature-schema", default=ODDS_SCHEMA, metavar="V",
                   help="feature schema version: 'odds' (raw float features, scaled by the model; default) or "
                        "the node schema version (the data are already the node's 16-bit vectors)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_train)


def add_evaluate(e: argparse.ArgumentParser) -> None:
    """``mailpulse evaluate``."""
    e.description = ("Score labelled data with a model file (or train and score on the same "
                     "file) and print one 'metric value' line per metric.")
    e.add_argument("--model", metavar="MODEL", help="model file to evaluate")
    e.add_argument("--data", metavar="FILE", help="labelled data (.mat, .npz, .jsonl[.gz] with labels)")
    e.add_argument("--train-and-score", action="store_true",
                   help="train on --data and score the same file (the ODDS protocol)")
    e.add_argument("--config", metavar="NAME", default="full", help=f"parameter set for --train-and-score ({_SETS})")
    e.add_argument("--seed", type=int, default=0, help="seed for --train-and-score (default 0)")
    e.add_argument("--false-alarm-rate", type=_rate, default=trainer.DEFAULT_FALSE_ALARM_RATE, metavar="R",
                   help="threshold target for --train-and-score")
    e.add_argument("--plot", metavar="FILE.png", help="write ROC and precision-recall curves")
    e.set_defaults(func=cmd_evaluate)
