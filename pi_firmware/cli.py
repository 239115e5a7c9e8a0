"""Command line of the node firmware: ``mailpulse inspect`` and ``mailpulse node ...``.

``node check-config``, ``node replay`` and ``node inspect`` live here; ``node run`` and
``node probe`` are added by :mod:`mailpulse.pi_firmware.node_cli`.  Each command is a thin layer over a
library function that the tests call directly (:func:`mailpulse.pi_firmware.config.check_config`,
:func:`replay`, :func:`mailpulse.pi_firmware.maildir.inspect_file`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

from mailpulse.errors import UserError

from .pipeline import CountingSink, Sink
from .replay import ReplaySummary, replay

if TYPE_CHECKING:
    from .pubproc import InProcessPublisher, PublisherProcess


def replay_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from .config import load_config

    out = out or sys.stdout
    if args.config is None and not args.no_publish:
        raise UserError("node replay needs --config (the broker to publish to), or --no-publish to count only")
    cfg = load_config(args.config, require_secrets=not args.no_publish) if args.config is not None else None
    pub: InProcessPublisher | PublisherProcess | None = None
    sink: Sink
    if cfg is None or args.no_publish:
        sink = CountingSink()
    else:
        try:   # paho-mqtt is optional (the node extra)
            from .pubproc import publisher
        except ImportError as e:
            raise UserError(f"publishing is not available in this build ({e}); use --no-publish") from None
        sink = pub = publisher(cfg.sections)   # a second process for JSON, spool and MQTT when a core is free
    t0 = time.perf_counter()
    try:
        if cfg is None:   # --no-publish without a config: the defaults
            summary = replay(args.log, sink)
        else:
            summary = replay(args.log, sink, node=cfg.node_id, params=cfg.scorer.params, model=cfg.scorer.model,
                             batch_size=cfg.scorer.batch_size, year=cfg.postfix.year or None,
                             max_queue_ids=cfg.postfix.max_queue_ids,
                             backend="model" if cfg.scorer.backend in ("model", "auto") else cfg.scorer.backend)
        if pub is not None:
            # publishing: the rate counts until the broker has acknowledged every event
            flushed = pub.flush(args.flush_timeout)
            summary.seconds = time.perf_counter() - t0
            if not flushed:
                print(f"mailpulse: the broker did not acknowledge every event within {args.flush_timeout} s; "
                      f"{pub.left} rows stay in the spool {pub.spool_path}", file=sys.stderr)
    finally:
        if pub is not None:
            pub.close(5.0)
    for line in summary.example_lines():
        print(line, file=out)
    print(summary.line(), file=out, flush=True)
    return 0


def check_config_command(args: argparse.Namespace) -> int:
    from .config import check_config

    cfg, errors = check_config(args.config, require_secrets=not args.no_secrets)
    if errors:
        for e in errors:
            print(f"{args.config}: {e}", file=sys.stderr)
        return 2
    assert cfg is not None
    parts = [f"node {cfg.site}/{cfg.node_id}", f"scorer {cfg.scorer.backend}/{cfg.scorer.params}",
             f"model {cfg.scorer.model or 'untrained'}",
             f"broker {cfg.sections.mqtt.host}:{cfg.sections.mqtt.port}{' tls' if cfg.sections.mqtt.tls else ''}",
             f"postfix log {cfg.postfix.log or 'off'}", f"maildir {cfg.maildir.path or 'off'}",
             f"probe routes {len(cfg.sections.probe.routes)}"]
    print(f"{args.config}: ok: " + ", ".join(parts))
    return 0


def inspect_command(args: argparse.Namespace) -> int:
    from .maildir import inspect_file
    from .mime import MimeLimits

    limits = MimeLimits()
    if getattr(args, "config", None):
        from .config import load_config

        limits = load_config(args.config, require_secrets=False).mime
    doc = inspect_file(args.file, limits)
    try:
        print(json.dumps(doc, indent=None if args.compact else 2, ensure_ascii=False), flush=True)
    except BrokenPipeError:   # the reader went away (``| head``): not an error of ours, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="print what the parsers see in one message (hops, MIME tree, features) as JSON")
    p.add_argument("file", help="an RFC 5322 message file (.eml)")
    p.add_argument("--config", help="node config whose [mime] limits apply")
    p.add_argument("--compact", action="store_true", help="one line of JSON")
    p.set_defaults(func=inspect_command)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``inspect`` and ``node`` (with its sub-commands) to the ``mailpulse`` command line."""
    _add_inspect(subparsers)
    node = subparsers.add_parser("node", help="the edge node: run, probe, replay logs, check its config")
    node_sub = node.add_subparsers(dest="node_command", metavar="NODE_COMMAND")
    node.set_defaults(func=lambda a: (node.print_help(), 2)[1])
    p = node_sub.add_parser("check-config", help="validate a node config file, one sentence per problem")
    p.add_argument("config", help="node config TOML file")
    p.add_argument("--no-secrets", action="store_true", help="do not require the secrets (on a build machine)")
    p.set_defaults(func=check_config_command)
    r = node_sub.add_parser("replay", help="feed a Postfix log through parse, join, featurise, score (and publish)")
    r.add_argument("--config", help="node config TOML file (needed to publish; --no-publish uses the defaults)")
    r.add_argument("--log", required=True, help="Postfix log file (syslog, RFC 5424 or a journalctl export)")
    r.add_argument("--no-publish", action="store_true", help="score but do not publish (counts only)")
    r.add_argument("--flush-timeout", type=float, default=300.0,
                   help="seconds to wait for the broker to acknowledge every event (default 300)")
    r.set_defaults(func=replay_command)
    _add_inspect(node_sub)
    try:
        from .node_cli import register_node
    except ImportError:  # the publishing side is optional (paho-mqtt)
        return
    register_node(node_sub)


__all__ = ["ReplaySummary", "register", "replay"]
