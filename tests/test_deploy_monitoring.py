"""The Prometheus and Grafana files in ``deploy/``: the rules pass ``promtool check rules`` and their
unit tests (``promtool test rules``), every alert has a case that fires it, and every metric that a
rule or a dashboard panel names is one a running collector exports on ``/metrics`` (scraped over
HTTPS with the read-only metrics credential, as Prometheus does, after a node published through a
real broker) or one the rules record."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mailpulse.collector.service import Collector
from prometheus_client.parser import text_string_to_metric_families
from test_collector_ingest import collector_cfg, delivery, envelope, node_client, publish

from mailpulse import topics as T
from mailpulse.lab.webclient import WebClient

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "mailpulse-rules.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "mailpulse.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning.yml"


def promtool() -> str:
    """promtool from `make setup` (.tools/, unpacked from Debian's prometheus package) or PATH."""
    local = ROOT / ".tools" / "prometheus" / "usr" / "bin" / "promtool"
    found = str(local) if local.is_file() else shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (make setup unpacks it from Debian's prometheus package)")
    return found


# --------------------------------------------------------------------------------------------
# metric names in PromQL
# --------------------------------------------------------------------------------------------

_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
                "bool", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """Metric (and recorded series) names a PromQL expression selects: identifiers that are not
    functions, keywords, label names of matchers or grouping clauses, durations or Grafana
    ``$variables``."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^{}]*\}", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    found = re.findall(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e)
    return {name for name, call in found if not call and name not in _NOT_METRICS}


def test_metric_names_extractor() -> None:
    expr = ('histogram_quantile(0.9, sum by (site, relay, le) (rate(mailpulse_relay_delivery_delay_seconds_bucket'
            '{site=~"$site", relay="a b"}[$__rate_interval] offset 15m))) > 5 * mailpulse:x:p90 '
            'and on (site) time() - mailpulse_node_last_seen_timestamp_seconds > bool 3e2')
    assert metric_names(expr) == {"mailpulse_relay_delivery_delay_seconds_bucket", "mailpulse:x:p90",
                                  "mailpulse_node_last_seen_timestamp_seconds"}


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def recorded() -> set[str]:
    return {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable of the dashboard."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r}", t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q.strip())
            assert m, f"variable {v['name']}: {q!r} is not label_values(selector, label)"
            out.append((f"variable {v['name']!r}", m.group(1)))
    return out


# --------------------------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    r = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_unit_tests_of_the_rules() -> None:
    assert RULE_TESTS, "no rule unit tests in deploy/prometheus/tests/"
    r = subprocess.run([promtool(), "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True,
                       timeout=300, cwd=RULE_TESTS[0].parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_fires_in_a_unit_test_and_is_silent_in_another() -> None:
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    fired: set[str] = set()
    silent: set[str] = set()
    for f in RULE_TESTS:
        for case in yaml.safe_load(f.read_text())["tests"]:
            for a in case.get("alert_rule_test", []):
                (fired if a.get("exp_alerts") else silent).add(a["alertname"])
    assert alerts - fired == set(), "alerts no unit test fires"
    assert alerts - silent == set(), "alerts no unit test shows silent"


def test_a_broken_rule_fails_promtool(tmp_path: Path) -> None:
    """The checks can fail: a rule file with a typo in PromQL, and a unit test expecting a wrong value."""
    bad = tmp_path / "bad.yml"
    bad.write_text(RULES.read_text().replace("mailpulse_node_online == 0", "mailpulse_node_online == == 0"))
    r = subprocess.run([promtool(), "check", "rules", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    shutil.copy(RULES, tmp_path / "mailpulse-rules.yml")
    (tmp_path / "tests").mkdir()
    wrong = tmp_path / "tests" / "wrong.yml"
    wrong.write_text(RULE_TESTS[0].read_text().replace("p90 57s", "p90 5s"))
    r = subprocess.run([promtool(), "test", "rules", str(wrong)], capture_output=True, text=True, timeout=300,
                       cwd=wrong.parent)
    assert r.returncode != 0 and "FAILED" in r.stdout + r.stderr


# --------------------------------------------------------------------------------------------
# Grafana
# --------------------------------------------------------------------------------------------


def test_grafana_dashboard_and_provisioning() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "mailpulse" and dash["title"]
    ds = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert ds and ds[0]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert p["fieldConfig"]["defaults"].get("unit"), f"panel {p['title']!r} has no unit"
        if p["type"] == "timeseries":
            assert all(t.get("legendFormat") for t in p["targets"]), f"panel {p['title']!r} has no legend"
    prov = yaml.safe_load(PROVISIONING.read_text())
    assert prov["apiVersion"] == 1
    [provider] = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


# --------------------------------------------------------------------------------------------
# the single source: what a running collector exports
# --------------------------------------------------------------------------------------------


def scrape_names(text: str) -> set[str]:
    """Series names of an exposition: samples, and for a family declared without samples yet (a
    labelled one nobody has touched) the names its type gives its samples."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}
    names = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names.update(fam.name + s for s in suffixes.get(fam.type, ()))
        names.update(s.name for s in fam.samples)
    return names


@pytest.mark.xdist_group("collector-mqtt")
def test_rules_and_dashboard_name_only_exported_metrics(broker: Any, tmp_path: Path) -> None:
    col = Collector(collector_cfg(broker, tmp_path))
    col.start()
    node = node_client(broker, "node-a")
    topic = T.NodeTopics("lab", "node-a")
    try:
        assert col.ingest.wait_connected() and col.web is not None
        status = {"schema": 1, "site": "lab", "node": "node-a", "state": "online", "ts": time.time(),
                  "spool": {"depth": 0}, "postfix_queue": {"queues": {"deferred": {"messages": 2, "bytes": 10,
                                                                                   "oldest_age_s": 60.0}},
                                                           "bad_lines": 0, "error": None, "ts": time.time()}}
        publish(node, topic.status, json.dumps(status).encode(), retain=True)
        publish(node, topic.events, envelope("node-a", [delivery(1)]))
        scraper = WebClient.metrics(col.web.url, col.cfg.web, Path(col.cfg.mqtt.ca_file or ""))  # as Prometheus
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            text = scraper.metrics_text()
            if "mailpulse_postfix_queue_messages{" in text and "mailpulse_relay_deliveries_total{" in text:
                break
            time.sleep(0.1)
    finally:
        col.stop()
        node.loop_stop()
        node.disconnect()
    exported = scrape_names(text)
    assert 'relay="mx.example.net:25"' in text          # a delivery's relay, as a label
    rules = recorded()
    unknown = {}
    for g in rule_groups():
        for r in g["rules"]:
            missing = metric_names(r["expr"]) - exported - rules
            if missing:
                unknown[r.get("record") or r.get("alert")] = sorted(missing)
    for where, expr in dashboard_exprs():
        missing = metric_names(expr) - exported - rules
        if missing:
            unknown[where] = sorted(missing)
    assert unknown == {}, "names neither exported by the collector nor recorded by the rules"
    # and the check itself bites: a misspelt metric is caught
    assert metric_names("rate(mailpulse_relay_deliverys_total[5m])") - exported - rules
