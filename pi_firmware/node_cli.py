"""``mailpulse node run`` and ``mailpulse node probe``: thin layers over :mod:`mailpulse.pi_firmware.node`
and :mod:`mailpulse.pi_firmware.probe`.  :func:`register_node` is called by ``mailpulse.pi_firmware.cli`` with the
``node`` sub-command's sub-parsers."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from mailpulse.errors import UserError

from .journal import JournalSource

__all__ = ["build_node", "load_node_config", "probe_command", "register_node", "run_command"]


def load_node_config(path: str | Path) -> Any:
    """The node's whole config (:func:`mailpulse.pi_firmware.config.load_config`), errors as ``UserError``."""
    from .config import load_config

    return load_config(path)


def build_node(cfg: Any, model_path: str | None = None) -> Any:
    """The :class:`~mailpulse.pi_firmware.node.Node` of a loaded config: sources, scorer, model."""
    from .maildir import MaildirWatcher
    from .node import Node, PostfixLogSource
    from .pipeline import load_scoring_model

    sections = cfg.sections
    sources: list[Any] = []
    if cfg.postfix.log:
        sources.append(PostfixLogSource(cfg.postfix.log, cfg.node_id, state_file=cfg.postfix.state_file,
                                        from_start=cfg.postfix.from_start, poll_s=cfg.postfix.poll_s,
                                        year=cfg.postfix.year or None, max_queue_ids=cfg.postfix.max_queue_ids))
    if cfg.journal.enabled:
        sources.append(JournalSource(cfg.journal, cfg.node_id, year=cfg.postfix.year or None,
                                     max_queue_ids=cfg.postfix.max_queue_ids))
    if cfg.maildir.path:
        sources.append(MaildirWatcher(cfg.maildir.path, cfg.node_id, cfg.maildir.state_file, limits=cfg.mime,
                                      max_seen=cfg.maildir.max_seen, poll_s=cfg.maildir.poll_s))
    model_file = model_path or cfg.scorer.model
    model = load_scoring_model(model_file, cfg.scorer.params) if model_file else None
    scorer = None
    if cfg.scorer.backend != "model":
        from mailpulse.host_bridge.backends import open_scorer

        scorer = open_scorer(cfg.scorer.backend, cfg.scorer.params)
    try:
        return Node(sections, model=model, scorer=scorer, sources=sources, batch_size=cfg.scorer.batch_size)
    except OSError as e:
        raise UserError(f"the node cannot start: {e}") from None


def run_command(args: argparse.Namespace) -> int:
    """``node run``: the daemon, until SIGTERM."""
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node = build_node(load_node_config(args.config), args.model)
    return int(node.run())


def probe_command(args: argparse.Namespace) -> int:
    """``node probe``: run probes and print each measurement as one JSON line."""
    from .probe import ProbeError, Prober

    sections = load_node_config(args.config).sections
    routes = [r.name for r in sections.probe.routes]
    if args.route:
        if args.route not in routes:
            raise UserError(f"{args.config} has no probe route named {args.route!r} (routes: {', '.join(routes) or 'none'})")
        routes = [args.route]
    if not routes:
        raise UserError(f"{args.config} has no [[probe.routes]] to probe")
    prober = Prober(sections.node.id, sections.probe, cache_dir=Path(sections.node.state_dir))
    rc = 0
    while True:
        for name in routes:
            try:
                events = prober.run(name)
            except ProbeError as e:
                raise UserError(str(e)) from None
            for ev in events:
                out = ev.fields() if args.full else {k: v for k, v in ev.fields().items() if k != "hops"}
                print(json.dumps({"id": ev.id, **out}, default=str), flush=True)
                if ev.outcome != "ok":
                    rc = 1
        if args.once:
            return rc
        time.sleep(sections.probe.interval_s)


def register_node(node_sub: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``probe`` to the ``node`` command's sub-parsers."""
    p = node_sub.add_parser("run", help="run the node daemon (observe, score, publish) until SIGTERM")
    p.add_argument("--config", required=True, help="node config TOML file")
    p.add_argument("--model", help="model file to start with (default: the last one received, or untrained)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run_command)
    q = node_sub.add_parser("probe", help="send 4K probes on the configured routes and print the measurements")
    q.add_argument("--config", required=True, help="node config TOML file")
    q.add_argument("--route", help="only this route")
    q.add_argument("--once", action="store_true", help="one probe per route, then exit (status 1 if any is not ok)")
    q.add_argument("--full", action="store_true", help="include the per-hop details")
    q.set_defaults(func=probe_command)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m mailpulse.pi_firmware.node_cli run --config F``)."""
    parser = argparse.ArgumentParser(prog="mailpulse node")
    register_node(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"mailpulse: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
