"""The fault-scenario bench: labelled mail faults on the real lab parts (Postfix edge -> two relays
-> Postfix mx, Dovecot, Mosquitto, two node daemons, the collector), found and named or not.

Everything is :mod:`mailpulse.lab.scenarios` (read its docstring for the set-up and the scenarios).
Prints one line per scenario, ``scenario NAME found yes|no root HOST detect_s X resolve_s Y``, and
one for the normal-only run, ``normal false_incidents N days D interval_coverage C``; details as JSON
on stderr.

Usage: ``python bench/bench_faults.py [--quick] [--scenario NAME ...] [--no-normal | --only-normal]
[--json FILE] [--keep DIR]``
(root; ``--quick``: one compressed day of 80 s and 30 s faults, under 10 minutes), or
``python bench/bench_faults.py --replay WORK [--set KEY=VALUE ...]``: a kept run's work dir (``--keep``
or ``MAILPULSE_KEEP=1``) replayed offline through the correlation, with the run's ``[correlate]``
settings or others (no root).
"""

from __future__ import annotations

import sys

from mailpulse.lab.scenarios import main

if __name__ == "__main__":
    sys.exit(main())
