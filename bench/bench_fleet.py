"""The fleet benchmark: 512 real MQTT v5 node publishers, two data centres, two collector shards, Flink.

Everything is :mod:`mailpulse.lab.fleet` (read its docstring for the set-up): N nodes (each the
node's own MqttSink + Spool with its own client id, persistent session, last will, retained
status, user, password, client certificate, ACL, TLS) in worker processes publish scored delivery
events at R events/s each to two Mosquitto brokers (one deployment per data centre); two
``mailpulse collector run`` shards archive them; ``mailpulse flink run --follow`` correlates both
archives.  Split faults (anomalies from both data centres, too few in either alone), one shard
killed with SIGKILL mid-run and restarted.

Prints the figures as JSON: events/s, lost / duplicated by (node, id), ingest lag p50/p99 (spool
-> the collector's receive stamp), fault -> incident and ingest -> incident p50/p99, what each
shard alone and both together name (``mailpulse correlate``), CPU seconds and microseconds per
event per stage (clients, brokers, collectors, Flink) from /proc.

Usage: ``python bench/bench_fleet.py [--nodes 512] [--workers 8] [--rate 10] [--faults 4] [--keep]``.
"""

from __future__ import annotations

import sys

from mailpulse.lab.fleet import main

if __name__ == "__main__":
    sys.exit(main())
