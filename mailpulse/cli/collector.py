"""``mailpulse collector init|add-node|remove-node|add-consumer|run|check-config``, ``mailpulse correlate``,
``mailpulse model publish``."""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

from mailpulse.collector.archive import skipped_summary
from mailpulse.collector.correlate import correlate_archive, correlate_folder, format_incident
from mailpulse.collector.flink.runner import check_archives
from mailpulse.collector.flink.segments import read_shards
from mailpulse.collector.intervals import IntervalBook
from mailpulse.collector.provision import Deployment, init_deployment, open_deployment
from mailpulse.collector.retrain import publish_model
from mailpulse.collector.service import run_collector
from mailpulse.config.collector import MqttSettings, check_config, load_config
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
            w = cfg.web
            who = (f"log in as {w.username}" if w.auth else "AUTHENTICATION IS OFF ([web] auth = false)")
            print(f"mailpulse collector: dashboard at {c.web.url}, metrics at {c.web.url}metrics ({who})", flush=True)

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
    skipped: collections.Counter[str] = collections.Counter()
    if len(args.archive) == 1:
        c = correlate_folder(args.archive[0], args.window, skipped, IntervalBook())
    else:   # several collector shards: their segments in the merged order (as the Flink job reads them)
        check_archives(args.archive, follow=False)
        book = IntervalBook()
        c, _ = correlate_archive(read_shards(args.archive, skipped), correlate_settings(None, args.window),
                                 book.names, book)
    where = ", ".join(args.archive)
    if skipped:
        print(skipped_summary(skipped, f"archive {where}"), file=sys.stderr)
    if c.skipped_skewed:
        print(f"archive {where}: {c.skipped_skewed} events of nodes with a skewed clock were not correlated",
              file=sys.stderr)
    incs = c.all_incidents()
    if args.json:
        json.dump(incs, sys.stdout, indent=1)
        print()
    else:
        print(f"{c.observed} events, {len(incs)} incidents")
        for inc in incs:
            print(format_incident(inc))
    return 0


def _site_node(value: str) -> tuple[str, str]:
    site, sep, node = value.partition("/")
    if not sep or not site or not node:
        raise UserError(f"{value!r} must be SITE/NODE (e.g. lab/pi-01)")
    return site, node


def _print_node(dep: Deployment, site: str, node: str) -> None:
    b = dep.bundle(site, node)
    print(f"node {site}/{node}: MQTT user {b.user}; its files are in {b.dir}/ (node.toml, secrets.toml, ca.crt, "
          f"node.crt, node.key)")


def cmd_init(args: argparse.Namespace) -> int:
    dep = init_deployment(args.dir, hosts=args.host or ["localhost", "127.0.0.1"], port=args.port,
                          plaintext_port=args.plaintext_port, listen=args.listen, web_host=args.web_host,
                          web_port=args.web_port, web_hosts=args.web_name, node_dir=args.node_dir,
                          nodes=[_site_node(v) for v in args.node])
    print(f"deployment written to {dep.root}")
    print(f"  broker     mosquitto -c {dep.mosquitto_conf}   ({dep.url}: TLS, client certificate + password, ACL"
          + (f"; PLAINTEXT listener on {dep.plaintext_port}" if dep.plaintext_port else "") + ")")
    print(f"  collector  mailpulse collector run --config {dep.collector_config}")
    print(f"  dashboard  https://{dep.state['web_host']}:{dep.state['web_port']}/  (user mailpulse, password "
          f"web_password in {dep.collector_secrets}; CA {dep.ca_file})")
    print(f"  prometheus {dep.collector_dir / 'prometheus.yml'} (read-only credential)")
    for site, node in (_site_node(v) for v in args.node):
        _print_node(dep, site, node)
    print(f"  nodes      mailpulse collector add-node {dep.root} SITE/NODE")
    return 0


def cmd_add_node(args: argparse.Namespace) -> int:
    dep = open_deployment(args.dir)
    site, node = _site_node(args.node)
    dep.add_node(site, node)
    _print_node(dep, site, node)
    print(f"reload the broker so that it knows the node: kill -HUP $(pidof mosquitto)  "
          f"(config {dep.mosquitto_conf})")
    return 0


def cmd_remove_node(args: argparse.Namespace) -> int:
    dep = open_deployment(args.dir)
    site, node = _site_node(args.node)
    dep.remove_node(site, node)
    print(f"node {site}/{node} removed: password and ACL gone, certificate revoked; reload the broker "
          f"(kill -HUP $(pidof mosquitto)) to lock it out now")
    return 0


def cmd_add_consumer(args: argparse.Namespace) -> int:
    dep = open_deployment(args.dir)
    c = dep.add_consumer(args.user)
    print(f"MQTT user {c.user}: reads every mailpulse topic; files in {c.cert_file.parent}/ (client.crt, client.key, "
          f"secrets.toml); reload the broker (kill -HUP $(pidof mosquitto))")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    if args.config:
        m: MqttSettings = load_config(args.config).mqtt
        topic = publish_model(args.model, args.site, m.host, m.port, username=m.username, password=m.password,
                              tls=m.tls, ca_file=m.ca_file, cert_file=m.cert_file, key_file=m.key_file)
        print(f"published {args.model} retained to {topic}")
        return 0
    host, _, port = args.broker.partition(":")
    try:
        port_n = int(port) if port else (args.port or (1883 if args.no_tls else 8883))
    except ValueError:
        raise UserError(f"--broker {args.broker!r} must be HOST or HOST:PORT") from None
    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and password is None:
        raise UserError(f"environment variable {args.password_env} (--password-env) is not set")
    topic = publish_model(args.model, args.site, host, port_n, username=args.username, password=password,
                          tls=not args.no_tls, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    print(f"published {args.model} retained to {topic}")
    return 0


def add_collector(c: argparse.ArgumentParser) -> None:
    """``mailpulse collector init|add-node|remove-node|add-consumer|run|check-config``."""
    sub = c.add_subparsers(dest="collector_command", metavar="COMMAND")
    i = sub.add_parser("init", help="write a secure deployment: CA, TLS certificates, Mosquitto with passwords and "
                                    "ACL, the collector's config and credentials",
                       description="Write a deployment folder: a private CA, the broker's Mosquitto config (one TLS "
                                   "listener requiring a client certificate and a password, the per-node ACL), the "
                                   "collector's config and secrets (dashboard over HTTPS with a password, a read-only "
                                   "Prometheus credential) and a bundle per node. See docs/operations.md.")
    i.add_argument("dir", metavar="DIR", help="the deployment folder (new or empty)")
    i.add_argument("--host", action="append", default=[], metavar="NAME",
                   help="name or address the nodes reach the broker by (repeatable; the first goes in the URL; "
                        "default localhost, 127.0.0.1)")
    i.add_argument("--port", type=int, default=8883, help="the broker's TLS port (default 8883)")
    i.add_argument("--plaintext-port", type=int, default=0, metavar="PORT",
                   help="ALSO open a plaintext listener (passwords and events in clear; default: none)")
    i.add_argument("--listen", default="", metavar="ADDR", help="address the broker binds (default: all)")
    i.add_argument("--web-host", default="127.0.0.1", help="address the dashboard listens on (default 127.0.0.1)")
    i.add_argument("--web-port", type=int, default=8443, help="the dashboard's HTTPS port (default 8443)")
    i.add_argument("--web-name", action="append", default=[], metavar="NAME",
                   help="a name of the dashboard for its certificate (repeatable)")
    i.add_argument("--node-dir", default="/etc/mailpulse",
                   help="where a node keeps its config and TLS files (default /etc/mailpulse)")
    i.add_argument("--node", action="append", default=[], metavar="SITE/NODE", help="enrol this node too (repeatable)")
    i.set_defaults(func=cmd_init)
    a = sub.add_parser("add-node", help="enrol a node: MQTT user, password, client certificate, ACL, its config bundle")
    a.add_argument("dir", metavar="DIR", help="the deployment folder")
    a.add_argument("node", metavar="SITE/NODE")
    a.set_defaults(func=cmd_add_node)
    rm = sub.add_parser("remove-node", help="lock a node out: password and ACL removed, certificate revoked")
    rm.add_argument("dir", metavar="DIR", help="the deployment folder")
    rm.add_argument("node", metavar="SITE/NODE")
    rm.set_defaults(func=cmd_remove_node)
    ac = sub.add_parser("add-consumer", help="a further MQTT reader (a second collector of a share group)")
    ac.add_argument("dir", metavar="DIR", help="the deployment folder")
    ac.add_argument("user", metavar="USER")
    ac.set_defaults(func=cmd_add_consumer)
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
    p.add_argument("--config", metavar="FILE", help="take the broker, TLS files and credentials from this collector "
                                                    "config (what collector init wrote); the options below are then "
                                                    "not used")
    p.add_argument("--broker", default="127.0.0.1", metavar="HOST[:PORT]", help="MQTT broker (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="broker port when --broker has none (default 8883, 1883 with "
                                                       "--no-tls)")
    p.add_argument("--username", default=None)
    p.add_argument("--password-env", default=None, metavar="VAR", help="environment variable holding the password")
    p.add_argument("--ca-file", default=None, help="CA that verifies the broker")
    p.add_argument("--cert-file", default=None, help="client certificate")
    p.add_argument("--key-file", default=None, help="its private key")
    p.add_argument("--no-tls", action="store_true", help="connect in plaintext (the password crosses in clear)")
    p.set_defaults(func=cmd_publish)
    m.set_defaults(func=prints_help(m))
