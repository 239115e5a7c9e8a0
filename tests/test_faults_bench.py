"""The fault-scenario bench (:mod:`mailpulse.lab.scenarios`) on the real lab parts, two scenarios:
the relay-a of a two-relay Postfix chain turns slow; the collector opens an incident during the
fault whose root cause is that relay, by its name (``relay-a.mailpulse.test``, from the
``[relays] names`` map: Postfix knows it only as ``127.0.0.1[127.0.0.1]:PORT``), and it resolves
after the fault ends.  Then relay-b recompresses images: no delivery looks different, only the
probes of route b arrive damaged, and the correlation's probe failure test names relay-b."""

from __future__ import annotations

import pytest

from mailpulse.lab.scenarios import Plan, main, run_bench, why_not

pytestmark = pytest.mark.xdist_group("faults-bench")


def test_slow_and_recompressing_relays_are_found_and_named() -> None:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    # history 30 s: the scenarios wait until the correlation's window and history hold the new model's verdicts
    plan = Plan(warmup_events=200, day_s=60.0, fault_s=25.0, recovery_s=15.0, history_s=30.0)
    lines: list[str] = []
    results, summary = run_bench(plan, ["slow_relay", "recompress"], out=lines.append, normal=False)
    assert [r.name for r in results] == ["slow_relay", "recompress"], lines
    r = results[0]
    assert r.found, (lines, summary)
    assert r.root == "relay-a.mailpulse.test", (lines, summary)
    assert r.detect_s is not None and 0 <= r.detect_s <= plan.fault_s + 10, lines
    assert r.resolve_s is not None, (lines, summary)
    assert lines[0].startswith("scenario slow_relay found yes root relay-a.mailpulse.test detect_s ")
    assert summary["traffic"]["refused"] == 0 and summary["traffic"]["sent"] > 0
    rc = results[1]
    assert rc.found and rc.root == "relay-b.mailpulse.test", (lines, summary)
    assert rc.detect_s is not None and 0 <= rc.detect_s <= plan.fault_s + 10, lines


@pytest.mark.parametrize("extra", [["--no-normal"], ["--scenario", "slow_relay"]])
def test_only_normal_refuses_scenarios_and_no_normal(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--quick", "--only-normal", *extra])
    assert e.value.code == 2 and "--only-normal runs no scenario and needs the normal run" in capsys.readouterr().err
