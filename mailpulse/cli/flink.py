"""``mailpulse flink run``: the correlation of one or more collector shards' archives on Apache Flink."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from mailpulse.collector.correlate import CorrelateSettings, format_incident
from mailpulse.collector.flink.runner import JobOptions, run_job
from mailpulse.config.collector import load_config
from mailpulse.errors import UserError

from . import prints_help


def relay_settings(config: str | None) -> tuple[dict[str, str], int]:
    """``[relays] names`` and the interval routes (``[metrics] label_values``) of a collector config."""
    if not config:
        return {}, 50
    cfg = load_config(config)
    return dict(cfg.relays.names), cfg.metrics.label_values


def correlate_settings(config: str | None, window: float | None) -> CorrelateSettings:
    """``[correlate]`` of a collector config (defaults without one), ``--window`` over it."""
    base = load_config(config).correlate if config else CorrelateSettings()
    if window is None:
        return base
    try:
        return CorrelateSettings(**{**base.model_dump(), "window_s": window})
    except ValidationError as e:
        reason = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
        raise UserError(f"--window {window} cannot be used: {reason}") from None


def _print_change(rec: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rec), flush=True)
    else:
        print(f"{rec['kind']}: {format_incident(rec['incident'])}", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    if args.parallelism < 1:
        raise UserError(f"--parallelism {args.parallelism} must be at least 1")
    names, routes = relay_settings(args.config)
    opts = JobOptions(args.archive, correlate_settings(args.config, args.window), names, routes, follow=args.follow,
                      parallelism=args.parallelism, state_dir=args.state_dir, incidents=args.incidents,
                      checkpoint_ms=args.checkpoint_ms, python_mode=args.python_mode)
    final: dict[str, Any] | None = None
    for rec in run_job(opts):
        if rec["type"] == "change" and args.follow:
            _print_change(rec, args.json)
        elif rec["type"] == "final":
            final = rec
    if final is None:
        return 0
    incs = final["incidents"]
    if args.json:
        json.dump(incs, sys.stdout, indent=1)
        print()
    else:
        print(f"{final['observed']} events, {len(incs)} incidents ({final['duplicates']} duplicates dropped, "
              f"{final['damaged']} damaged segments skipped)")
        for inc in incs:
            print(format_incident(inc))
    return 0


def add_flink(f: argparse.ArgumentParser) -> None:
    """``mailpulse flink run``."""
    sub = f.add_subparsers(dest="flink_command", metavar="COMMAND")
    r = sub.add_parser("run", help="correlate collector archives on Apache Flink (a local MiniCluster)")
    r.add_argument("--archive", action="append", required=True, metavar="DIR",
                   help="a collector shard's archive folder (repeat for each shard)")
    r.add_argument("--follow", action="store_true", help="keep reading segments as the collectors close them")
    r.add_argument("--parallelism", type=int, default=2, metavar="N", help="parallel tasks (default 2)")
    r.add_argument("--json", action="store_true",
                   help="incidents as JSON (as 'mailpulse correlate --json'; with --follow one change per line)")
    r.add_argument("--window", type=float, default=None, metavar="S", help="sliding window in seconds")
    r.add_argument("--config", default=None, metavar="FILE",
                   help="collector config whose [correlate], [relays] names and [metrics] label_values to use")
    r.add_argument("--state-dir", default=None, metavar="DIR",
                   help="keep checkpoints here; a new run resumes from the newest")
    r.add_argument("--incidents", default=None, metavar="DIR",
                   help="write the incident changes here (the collector's dashboard and alerts read them)")
    r.add_argument("--checkpoint-ms", type=int, default=2000, metavar="MS", help="checkpoint interval (default 2000)")
    r.add_argument("--python-mode", choices=("thread", "process"), default="thread",
                   help="PyFlink's Python execution mode (default thread: in the JVM, faster)")
    r.set_defaults(func=cmd_run)
    f.set_defaults(func=prints_help(f))
