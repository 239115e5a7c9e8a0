"""Deterministic synthetic Postfix logs, shaped like a busy relay's (for tests, benchmarks, demos).

Each message gets the lines Postfix writes for it, interleaved with the other messages in flight:
``postscreen`` CONNECT / PASS OLD, ``smtpd`` connect / TLS / ``client=`` / disconnect, ``cleanup``
``message-id=``, ``qmgr`` ``from=``, one delivery line per recipient (``smtp`` to remote relays, after
its TLS line, ``local`` and ``virtual`` for local mailboxes, ``lmtp``, ``pipe``), ``qmgr`` ``removed``.
About one message in a hundred is an address-verification probe (``verify``'s ``double-bounce``
sender, ``status=deliverable`` or ``undeliverable``).  A fraction of attempts are deferred and
retried later (``qmgr`` re-logs ``from=``), some bounce (with the ``bounce`` notification) and some
expire.  The expected counts are returned alongside, so tests can check the parser exactly.
"""

from __future__ import annotations

import heapq
import json
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

_MON = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass
class Expected:
    """What a parser must find in the generated log."""

    lines: int = 0
    status: dict[str, int] = field(default_factory=lambda: {"sent": 0, "deferred": 0, "bounced": 0, "expired": 0,
                                                            "deliverable": 0, "undeliverable": 0})
    garbage: int = 0

    @property
    def events(self) -> int:
        return sum(self.status.values())


def _stamp(t: float, rfc3339: bool) -> str:
    # A fixed calendar (2026, days of 86400 s from Nov 1, UTC) keeps the output independent of the
    # local time zone and of the date the generator runs.
    day, sec = divmod(int(t), 86400)
    hh, rem = divmod(sec, 3600)
    mm, ss = divmod(rem, 60)
    mon, dom = 10, 1 + day
    while dom > 30 and mon == 10:
        mon, dom = 11, dom - 30
    if rfc3339:
        frac = int((t - int(t)) * 1e6)
        return f"2026-{mon + 1:02d}-{dom:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{frac:06d}+00:00"
    return f"{_MON[mon]} {dom:2d} {hh:02d}:{mm:02d}:{ss:02d}"


def generate(n_lines: int, seed: int = 1, *, rfc3339: bool = False, garbage_every: int = 0,
             expected: Expected | None = None) -> Iterator[str]:
    """Yield about ``n_lines`` log lines (each ending in ``\\n``); fill ``expected`` as it goes.

    ``garbage_every`` > 0 inserts a line that is not a syslog line every that many lines.
    """
    rng = random.Random(seed)
    vrng = random.Random(seed + 1_000_003)   # address-verification probes (apart: the rest stays as it was)
    exp = expected if expected is not None else Expected()
    host = "relay1"
    heap: list[tuple[float, int, str]] = []
    seq = 0
    t = 0.0
    emitted = 0
    pid = 1000

    def push(at: float, text: str) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (at, seq, text))

    def qid() -> str:
        return f"{rng.getrandbits(40):010X}"

    def pop() -> Iterator[str]:
        nonlocal emitted
        at, _, text = heapq.heappop(heap)
        if garbage_every and emitted and emitted % garbage_every == 0:
            exp.garbage += 1
            exp.lines += 1
            yield "\x00garbage \xff not a syslog line\n"
        emitted += 1
        exp.lines += 1
        yield f"{_stamp(at, rfc3339)} {host} {text}\n"

    domains = ["example.org", "example.net", "mail.example.com", "big.example", "slow.example"]
    t = 1.0
    while emitted + len(heap) < n_lines:
        # a new message every ~10 ms
        t += rng.expovariate(100.0)
        q = qid()
        pid += 1
        ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        nrcpt = 1 if rng.random() < 0.8 else rng.randint(2, 4)
        size = int(rng.lognormvariate(9.5, 1.5)) + 300
        port = rng.randrange(1024, 65536)
        push(t - 0.3, f"postfix/postscreen[800]: CONNECT from [{ip}]:{port} to [192.0.2.1]:25")
        push(t - 0.3, f"postfix/postscreen[800]: PASS OLD [{ip}]:{port}")
        push(t, f"postfix/smtpd[{pid}]: connect from unknown[{ip}]")
        push(t, f"postfix/smtpd[{pid}]: Anonymous TLS connection established from unknown[{ip}]: TLSv1.3 with "
                "cipher TLS_AES_256_GCM_SHA384 (256/256 bits)")
        push(t + 0.001, f"postfix/smtpd[{pid}]: {q}: client=unknown[{ip}]")
        push(t + 0.002, f"postfix/cleanup[{pid + 7}]: {q}: message-id=<{q.lower()}.{seq}@example.com>")
        t_q = t + 0.004
        push(t_q, f"postfix/qmgr[900]: {q}: from=<sender{rng.randrange(500)}@example.com>, size={size}, "
                  f"nrcpt={nrcpt} (queue active)")
        push(t + 0.005, f"postfix/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt={nrcpt} data=1 "
                        f"quit=1 commands=5")
        end = t_q
        for r in range(nrcpt):
            dom = rng.choice(domains)
            to = f"user{rng.randrange(10000)}@{dom}"
            a = round(rng.uniform(0.002, 0.05), 2)
            b = round(rng.uniform(0, 0.02), 2)
            roll = rng.random()
            agent = "smtp" if rng.random() < 0.85 else rng.choice(("local", "virtual", "lmtp", "pipe"))
            relay = (f"mx.{dom}[192.0.2.{rng.randrange(1, 255)}]:25" if agent == "smtp" else
                     {"local": "local", "virtual": "virtual", "lmtp": "private/dovecot-lmtp",
                      "pipe": "spamfilter"}[agent])
            c = round(rng.lognormvariate(-2.5, 0.8), 2)
            d = round(size / 2e6 + rng.uniform(0, 0.05), 2)
            tries = 0
            t_at = t_q + c + d
            while True:
                tries += 1
                delay = round(t_at - t + a, 2)
                if roll < 0.05 and tries < 3:
                    status, dsn, info = "deferred", "4.4.1", "connect to slow.example: Connection timed out"
                    cc, dd = 30.0, 0.0
                elif roll < 0.015 and tries >= 3:
                    status, dsn, info, cc, dd = "bounced", "5.1.1", "host said: 550 5.1.1 no such user", c, d
                else:
                    status, dsn, info, cc, dd = "sent", "2.0.0", "250 2.0.0 Ok: queued", c, d
                if agent == "smtp":
                    push(t_at - dd, f"postfix/smtp[{pid + 20 + r}]: Trusted TLS connection established to "
                                    f"{relay.rsplit(':', 1)[0]}:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 "
                                    "(256/256 bits)")
                push(t_at, f"postfix/{agent}[{pid + 20 + r}]: {q}: to=<{to}>, relay={relay}, delay={delay}, "
                           f"delays={a}/{b}/{cc}/{dd}, dsn={dsn}, status={status} ({info})")
                exp.status[status] += 1
                if status != "deferred":
                    break
                t_at += rng.uniform(300, 900)  # retried later: qmgr takes the message again
                push(t_at - 0.001, f"postfix/qmgr[900]: {q}: from=<sender@example.com>, size={size}, "
                                   f"nrcpt={nrcpt} (queue active)")
            if status == "bounced":
                push(t_at + 0.001, f"postfix/bounce[{pid + 40}]: {q}: sender non-delivery notification: {qid()}")
            end = max(end, t_at)
        if rng.random() < 0.002:  # an expired message: the warning and the expiry, no delivery line
            push(end + 0.01, f"postfix/qmgr[900]: {q}: from=<sender@example.com>, status=expired, "
                             "returned to sender")
            exp.status["expired"] += 1
        push(end + 0.02, f"postfix/qmgr[900]: {q}: removed")
        if vrng.random() < 0.01:
            v = f"{vrng.getrandbits(40):010X}"
            dom = vrng.choice(domains)
            push(t + 0.003, f"postfix/cleanup[{pid + 7}]: {v}: message-id=<{v.lower()}@relay1.example.com>")
            push(t + 0.004, f"postfix/qmgr[900]: {v}: from=<double-bounce@relay1.example.com>, size=251, "
                            "nrcpt=1 (queue active)")
            ok = vrng.random() < 0.8
            status, dsn, info = (("deliverable", "2.1.5", "250 2.1.5 Ok") if ok else
                                 ("undeliverable", "5.1.1", f"host mx.{dom}[192.0.2.9] said: 550 5.1.1 "
                                  "Recipient address rejected: User unknown (in reply to RCPT TO command)"))
            push(t + 0.3, f"postfix/smtp[{pid + 60}]: {v}: to=<check{vrng.randrange(1000)}@{dom}>, "
                          f"relay=mx.{dom}[192.0.2.9]:25, delay=0.3, delays=0/0/0.21/0, dsn={dsn}, status={status} "
                          f"({info})")
            push(t + 0.31, f"postfix/qmgr[900]: {v}: removed")
            exp.status[status] += 1
        # flush what is due (older than a few seconds of log time; retries wait in the heap)
        while heap and heap[0][0] < t - 5:
            yield from pop()
    while heap:
        yield from pop()


#: The formats :func:`reformat` writes (every format the parser reads).
FORMATS = ("rfc3164", "rfc3164-precise", "rfc3164-pri", "rfc3339", "rfc5424", "short-iso", "short-iso-precise",
           "short-full", "short-unix", "json")

_RFC3339_LINE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{6})\+00:00 "
                           r"(\S+) ([^\[\s]+)\[(\d+)\]: (.*)")


def reformat(line: str, fmt: str) -> str:
    """A line of :func:`generate` with ``rfc3339=True`` written in another format of :data:`FORMATS`
    (UTC times; RFC 3164 forms in local time as syslog writes them).  A line of another shape (the
    garbage lines) is returned as it is."""
    m = _RFC3339_LINE.fullmatch(line.rstrip("\n"))
    if m is None or fmt == "rfc3339":
        return line
    y, mo, d, hh, mm, ss, us, host, prog, pid, msg = m.groups()
    dt = datetime(int(y), int(mo), int(d), int(hh), int(mm), int(ss), int(us), tzinfo=UTC)
    unix = f"{int(dt.timestamp())}.{us}"
    local = time.localtime(int(dt.timestamp()))
    stamp3164 = f"{_MON[local.tm_mon - 1]} {local.tm_mday:2d} {local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d}"
    iso = f"{y}-{mo}-{d}T{hh}:{mm}:{ss}"
    out = {
        "rfc3164": f"{stamp3164} {host} {prog}[{pid}]: {msg}",
        "rfc3164-precise": f"{stamp3164}.{us} {host} {prog}[{pid}]: {msg}",
        "rfc3164-pri": f"<22>{stamp3164} {host} {prog}[{pid}]: {msg}",
        "rfc5424": f'<22>1 {iso}.{us}Z {host} {prog} {pid} - [origin software="postfix"] \ufeff{msg}',
        "short-iso": f"{iso}+0000 {host} {prog}[{pid}]: {msg}",
        "short-iso-precise": f"{iso}.{us}+0000 {host} {prog}[{pid}]: {msg}",
        "short-full": f"{dt.strftime('%a')} {y}-{mo}-{d} {hh}:{mm}:{ss} UTC {host} {prog}[{pid}]: {msg}",
        "short-unix": f"{unix} {host} {prog}[{pid}]: {msg}",
        "json": json.dumps({"__REALTIME_TIMESTAMP": f"{int(dt.timestamp())}{us}", "_HOSTNAME": host,
                            "SYSLOG_IDENTIFIER": prog, "SYSLOG_PID": pid, "MESSAGE": msg,
                            "__CURSOR": f"s=1;i={unix}"}),
    }
    return out[fmt] + "\n"


__all__ = ["FORMATS", "Expected", "generate", "reformat"]
