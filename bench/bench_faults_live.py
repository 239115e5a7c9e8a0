"""Fault soak of the secure set-up (real Mosquitto, node daemons and collector; see
:mod:`mailpulse.lab.faults`): per fault, events produced / archived / lost / duplicated, whether the
collector's counters equal its archive, and the ingest gap after the broker (or the link) returns.

Usage: ``python bench/bench_faults_live.py [--long] [--fault NAME ...]`` (root for the network
partition; ``--long``: 10-minute broker outage, 2-minute partition, three nodes).
"""

from __future__ import annotations

import sys

from mailpulse.lab.faults import main

if __name__ == "__main__":
    sys.exit(main())
