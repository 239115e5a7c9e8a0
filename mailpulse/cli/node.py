"""``mailpulse inspect`` and ``mailpulse node check-config|replay|inspect|run|probe``.

Each command is a thin layer over a library call that the tests make directly:
:func:`mailpulse.config.node.check_config`, :func:`mailpulse.pi_firmware.replay.replay_node`,
:func:`mailpulse.pi_firmware.maildir.inspect_file`, :func:`mailpulse.pi_firmware.node.build_node`
and :class:`mailpulse.pi_firmware.probe.Prober`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from mailpulse.config.node import MimeLimits, check_config, load_config
from mailpulse.errors import UserError
from mailpulse.pi_firmware.maildir import inspect_file
from mailpulse.pi_firmware.node import build_node
from mailpulse.pi_firmware.probe import ProbeError, Prober
from mailpulse.pi_firmware.replay import replay_node
from mailpulse.routes import ROUTE_CONFIG

from . import COMMANDS, prints_help


def replay_command(args: argparse.Namespace) -> int:
    """``node replay``: examples of unparsed lines, then the summary line, on standard output."""
    if args.config is None and not args.no_publish:
        raise UserError("node replay needs --config (the broker to publish to), or --no-publish to count only")
    cfg = load_config(args.config, require_secrets=not args.no_publish) if args.config is not None else None
    # a core with route intervals (<set>-r<R>) is fed with the collector's route registers, as by `node run`
    summary = replay_node(cfg, args.log, publish=not args.no_publish, flush_timeout=args.flush_timeout,
                          routes=ROUTE_CONFIG)
    if summary.unflushed is not None and cfg is not None:
        print(f"mailpulse: the broker did not acknowledge every event within {args.flush_timeout} s; "
              f"{summary.unflushed} rows stay in the spool {cfg.spool.path}", file=sys.stderr)
    for line in summary.example_lines():
        print(line)
    print(summary.line(), flush=True)
    return 0


def check_config_command(args: argparse.Namespace) -> int:
    """``node check-config``: one sentence per problem, or a one-line summary."""
    cfg, errors = check_config(args.config, require_secrets=not args.no_secrets)
    if errors:
        for e in errors:
            print(f"{args.config}: {e}", file=sys.stderr)
        return 2
    assert cfg is not None
    parts = [f"node {cfg.site}/{cfg.node_id}", f"scorer {cfg.scorer.backend}/{cfg.scorer.params}",
             f"model {cfg.scorer.model or 'untrained'}",
             f"broker {cfg.mqtt.host}:{cfg.mqtt.port}{' tls' if cfg.mqtt.tls else ''}",
             f"postfix log {cfg.postfix.log or 'off'}", f"maildir {cfg.maildir.path or 'off'}",
             f"probe routes {len(cfg.probe.routes)}"]
    print(f"{args.config}: ok: " + ", ".join(parts))
    return 0


def inspect_command(args: argparse.Namespace) -> int:
    """``inspect`` / ``node inspect``: what the parsers see in one message, as JSON."""
    limits = MimeLimits()
    if getattr(args, "config", None):
        limits = load_config(args.config, require_secrets=False).mime
    doc = inspect_file(args.file, limits)
    try:
        print(json.dumps(doc, indent=None if args.compact else 2, ensure_ascii=False), flush=True)
    except BrokenPipeError:   # the reader went away (``| head``): not an error of ours, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def run_command(args: argparse.Namespace) -> int:
    """``node run``: the daemon, until SIGTERM."""
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # a core with route intervals tracks with the collector's registers, so its flags are the tracker's
    node = build_node(load_config(args.config), args.model, routes=ROUTE_CONFIG)
    return int(node.run())


def probe_command(args: argparse.Namespace) -> int:
    """``node probe``: run probes and print each measurement as one JSON line."""
    cfg = load_config(args.config)
    routes = [r.name for r in cfg.probe.routes]
    if args.route:
        if args.route not in routes:
            raise UserError(f"{args.config} has no probe route named {args.route!r} "
                            f"(routes: {', '.join(routes) or 'none'})")
        routes = [args.route]
    if not routes:
        raise UserError(f"{args.config} has no [[probe.routes]] to probe")
    prober = Prober(cfg.node_id, cfg.probe, cache_dir=cfg.state_dir)
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
        time.sleep(cfg.probe.interval_s)


def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="an RFC 5322 message file (.eml)")
    p.add_argument("--config", help="node config whose [mime] limits apply")
    p.add_argument("--compact", action="store_true", help="one line of JSON")
    p.set_defaults(func=inspect_command)


def add_inspect(p: argparse.ArgumentParser) -> None:
    """``mailpulse inspect``."""
    _inspect_arguments(p)


def add_node(node: argparse.ArgumentParser) -> None:
    """``mailpulse node`` and its sub-commands."""
    node_sub = node.add_subparsers(dest="node_command", metavar="NODE_COMMAND")
    node.set_defaults(func=prints_help(node))
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
    _inspect_arguments(node_sub.add_parser("inspect", help=next(c.help for c in COMMANDS if c.name == "inspect")))
    q = node_sub.add_parser("run", help="run the node daemon (observe, score, publish) until SIGTERM")
    q.add_argument("--config", required=True, help="node config TOML file")
    q.add_argument("--model", help="model file to start with (default: the last one received, or untrained)")
    q.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    q.set_defaults(func=run_command)
    pr = node_sub.add_parser("probe", help="send 4K probes on the configured routes and print the measurements")
    pr.add_argument("--config", required=True, help="node config TOML file")
    pr.add_argument("--route", help="only this route")
    pr.add_argument("--once", action="store_true", help="one probe per route, then exit (status 1 if any is not ok)")
    pr.add_argument("--full", action="store_true", help="include the per-hop details")
    pr.set_defaults(func=probe_command)
