"""``mailpulse collector run|check-config``, ``mailpulse correlate``, ``mailpulse model publish``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

from mailpulse.collector.correlate import correlate_archive, correlate_folder, format_incident
from mailpulse.collector.flink.runner import check_archives
from mailpulse.collector.flink.segments import read_shards
from mailpulse.collector.retrain import publish_model
from mailpulse.collector.service import run_collector
from mailpulse.config.collector import check_config, load_config
from mailpulse.errors import UserError

from . import prints_help
from .flink import correlate_settings


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.client_id:
        cfg.mqtt.client_id = args.client_id
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def ready(c: Any) -> None:
        if c.web is not None:
            print(f"mailpulse collector: dashboard at {c.web.url}, metrics at {c.web.url}metrics", flush=True)

    try:
        return run_collector(cfg, stop, ready=ready)
    except KeyboardInterrupt:
        stop.set()
        return 0
    except OSError as e:
        raise UserError(f"the collector could not start ({e})") from None


def cmd_check_config(args: argparse.Namespace) -> int:
    errors = check_config(args.file, local=not args.elsewhere)
    for e in errors:
        print(e, file=sys.stderr)
    if not errors:
        print(f"{args.file}: ok")
    return 2 if errors else 0


def cmd_correlate(args: argparse.Namespace) -> int:
    if len(args.archive) == 1:
        c = correlate_folder(args.archive[0], args.window)
    else:   # several collector shards: their segments in the merged order (as the Flink job reads them)
        check_archives(args.archive, follow=False)
        c, _ = correlate_archive(read_shards(args.archive), correlate_settings(None, args.window))
    incs = c.all_incidents()
    if args.json:
        json.dump(incs, sys.stdout, indent=1)
        print()
    else:
        print(f"{c.observed} events, {len(incs)} incidents")
        for inc in incs:
            print(format_incident(inc))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    host, _, port = args.broker.partition(":")
    try:
        port_n = int(port) if port else args.port
    except ValueError:
        raise UserError(f"--broker {args.broker!r} must be HOST or HOST:PORT") from None
    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and password is None:
        raise UserError(f"environment variable {args.password_env} (--password-env) is not set")
    topic = publish_model(args.model, args.site, host, port_n, username=args.username, password=password,
                          tls=args.tls, ca_file=args.ca_file)
    print(f"published {args.model} retained to {topic}")
    return 0


def add_collector(c: argparse.ArgumentParser) -> None:
    """``mailpulse collector run|check-config``."""
    sub = c.add_subparsers(dest="collector_command", metavar="COMMAND")
    r = sub.add_parser("run", help="run the collector")
    r.add_argument("--config", required=True, metavar="FILE", help="collector TOML config")
    r.add_argument("--client-id", default=None, metavar="ID",
                   help="MQTT client id over [mqtt] client_id (a shard: e.g. its pod name)")
    r.set_defaults(func=cmd_run)
    k = sub.add_parser("check-config", help="validate a collector config file, one sentence per problem")
    k.add_argument("file", metavar="FILE")
    k.add_argument("--elsewhere", action="store_true",
                   help="the config is for another machine or a pod (a ConfigMap): its files are not looked for here")
    k.set_defaults(func=cmd_check_config)
    c.set_defaults(func=prints_help(c))


def add_correlate(co: argparse.ArgumentParser) -> None:
    """``mailpulse correlate``."""
    co.add_argument("--archive", action="append", required=True, metavar="DIR",
                    help="the collector's archive folder (repeat for each shard of a sharded fleet)")
    co.add_argument("--window", type=float, default=None, metavar="S", help="sliding window in seconds (default 60)")
    co.add_argument("--json", action="store_true", help="print the incidents as JSON")
    co.set_defaults(func=cmd_correlate)


def add_model(m: argparse.ArgumentParser) -> None:
    """``mailpulse model publish``."""
    msub = m.add_subparsers(dest="model_command", metavar="COMMAND")
    p = msub.add_parser("publish", help="validate a model file and publish it retained to a site's model topic")
    p.add_argument("model", metavar="MODEL", help="model file (from 'mailpulse train')")
    p.add_argument("--site", required=True, help="site id")
    p.add_argument("--broker", default="127.0.0.1", metavar="HOST[:PORT]", help="MQTT broker (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1883, help="broker port when --broker has none (default 1883)")
    p.add_argument("--username", default=None)
    p.add_argument("--password-env", default=None, metavar="VAR", help="environment variable holding the password")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca-file", default=None)
    p.set_defaults(func=cmd_publish)
    m.set_defaults(func=prints_help(m))
