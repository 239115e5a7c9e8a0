"""The fleet simulation, short (:mod:`mailpulse.lab.fleet`, the code of ``bench/bench_fleet.py``).

16 real node publishers (MqttSink + Spool, own credentials, TLS, ACL, persistent sessions) in two
worker processes, two secure Mosquitto deployments ("data centres"), two collector shards, the
Flink job following both archives.  A split fault (``min_anomalies - 1`` anomalies per data
centre) is named by the global correlation and by the Flink job, by neither shard alone; one
shard is killed with SIGKILL mid-run and restarted: nothing lost, nothing archived twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from server_fixtures import require

from mailpulse.lab.fleet import FleetPlan, run_fleet

pytestmark = pytest.mark.xdist_group("flink")
ROOT = Path(__file__).resolve().parents[1]

PLAN = FleetPlan(nodes=16, workers=2, sites_per_dc=2, faults=1, warm_s=8.0, fault_every_s=6.0, tail_s=10.0,
                 train_lines=60_000, pool_lines=12_000, flink_batch=False)


def test_fleet_split_fault_and_shard_kill() -> None:
    require("mosquitto")
    if not (ROOT / ".venv-flink" / "bin" / "python").exists():
        pytest.skip("the Flink venv (.venv-flink, made by 'make setup') is not there")
    res = run_fleet(PLAN)
    text = json.dumps(res, indent=1)
    relay = res["faults"][0]["relay"]
    # every event the nodes spooled is archived exactly once by (node, id), across the shard kill
    assert res["kill"] is not None, text
    assert res["produced"] > 0 and res["produced_twice"] == 0, text
    assert (res["lost"], res["duplicated"], res["unexpected"]) == (0, 0, 0), text
    assert res["left_in_spools"] == 0, text
    assert res["events_per_s"] >= 0.5 * PLAN.nodes * PLAN.rate, text
    # the split fault: the nodes scored its events anomalous; no shard alone names the relay, both do
    assert res["faults"][0]["events"] == 2 * PLAN.split, text
    for shard, causes in res["correlate_shards"].items():
        assert relay not in causes, (shard, text)
    assert relay in res["correlate_global"], text
    assert relay in res["flink_incidents"] and res["faults"][0]["found"], text
