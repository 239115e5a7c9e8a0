"""Received: chains of real messages (data/mail) and synthetic edge cases."""

from __future__ import annotations

import email
import email.policy
import itertools
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from mailpulse.pi_firmware.received import parse_chain, parse_date, parse_received

SOAK = os.environ.get("MAILPULSE_SOAK") == "1"


def _chain(path: Path) -> list:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
    return parse_chain([str(v) for v in msg.get_all("Received") or []])


def test_real_chain_oldest_first_with_tz_comments(repo_data: Path) -> None:
    hops = _chain(repo_data / "mail" / "sa_001.eml")
    assert [h.by for h in hops] == ["milkplus", "trna.ximian.com", "trna.ximian.com", "dogma.slashnull.org",
                                    "dogma.slashnull.org", "mail.netnoteinc.com"]
    # "+0000 (Eire)" and "-0400" and "(EDT)" all resolve to UTC
    assert hops[-1].to_json()["timestamp"] == "2001-05-15T23:40:33.000Z"
    assert hops[0].to_json()["timestamp"] == "2001-05-15T21:31:22.000Z"
    assert [h.delay_s for h in hops] == [2.0, 3283.0, 4464.0, 2.0, 0.0, None]
    assert hops[4].from_ == "jm@localhost"          # sendmail's "(from jm@localhost)" comment
    assert hops[-1].ip == "212.17.35.15" and hops[-1].id == "830E5115158" and hops[-1].with_ == "ESMTP"


def test_negative_delays_are_reported(repo_data: Path) -> None:
    hops = _chain(repo_data / "mail" / "sa_dkim_MultipleReceived_08.eml")
    assert [h.delay_s for h in hops] == [2.0, -3456.0, None]
    hops = _chain(repo_data / "mail" / "sa_002.eml")
    assert -1.0 in [h.delay_s for h in hops]


def test_crlf_and_lf_files_agree(repo_data: Path) -> None:
    a = [h.to_json() for h in _chain(repo_data / "mail" / "sa_crlf-endings.eml")]
    b = [h.to_json() for h in _chain(repo_data / "mail" / "sa_009.eml")]
    assert a == b and len(a) == 2 and a[0]["delay_s"] == -50147.0


def test_two_digit_year_and_named_zone(repo_data: Path) -> None:
    hops = _chain(repo_data / "mail" / "sa_mime2.eml")
    assert hops[-1].to_json()["timestamp"] == "1991-10-08T14:29:39.000Z"   # "Tue, 8 Oct 91 07:29:39 PDT"
    assert hops[0].from_ is None and hops[0].by == "greenbush.bellcore.com" and hops[0].id == "AA00616"


def test_missing_and_bad_dates() -> None:
    hops = parse_chain([
        "from c by d with ESMTP id 3; Thu, 26 Nov 2026 10:00:05 +0000",
        "from b by c id 2",                                   # no date at all
        "from a by b with SMTP id 1; not a date (really)",    # unparseable
        "from z by a; Thu, 26 Nov 2026 10:00:00 +0000",
    ])
    assert [h.ts is None for h in hops] == [False, True, True, False]
    assert [h.delay_s for h in hops] == [None, None, None, None]
    assert hops[0].to_json()["timestamp"] == "2026-11-26T10:00:00.000Z"
    assert parse_date("Thu, 26 Nov 2026 10:00:00") == parse_date("Thu, 26 Nov 2026 10:00:00 +0000")


def test_folded_field_with_nested_comments() -> None:
    h = parse_received('from mx.example (mx.example\r\n [192.0.2.1] (may be (forged)))\r\n\tby relay.example '
                       '(Postfix) with ESMTPS id <ABC123@relay> for <u@example.org>;\r\n Thu, 26 Nov 2026 '
                       '10:00:00 -0800 (PST)')
    assert (h.from_, h.by, h.with_, h.id, h.for_, h.ip) == ("mx.example", "relay.example", "ESMTPS", "ABC123@relay",
                                                           "u@example.org", "192.0.2.1")
    assert h.to_json()["timestamp"] == "2026-11-26T18:00:00.000Z"


@settings(max_examples=8000 if SOAK else 400, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=8))
def test_any_text_parses(values: list[str]) -> None:
    hops = parse_chain(values)
    assert len(hops) == len(values)
    for a, b in itertools.pairwise(hops):
        if a.delay_s is not None:
            assert a.ts is not None and b.ts is not None and a.delay_s == b.ts - a.ts


@settings(max_examples=4000 if SOAK else 200, deadline=None)
@given(st.text(alphabet="()\\\"; abc\r\n\t", max_size=200))
def test_unbalanced_comments_and_quotes(value: str) -> None:
    parse_received(value)
