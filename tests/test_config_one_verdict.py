"""One node config type, one verdict: ``mailpulse node check-config`` and ``mailpulse image flash``
accept and refuse the same files.

Each case is a node config (and the secrets that go with it) fed to both: ``node check-config`` on
this machine, with the secrets in the file the config names (mode 0600) and any environment
variable it names set; ``image flash``'s validation (``make_node``) with the same secrets given as
``--secrets``.  What only the node can check - that the files the config names exist there - is
the one intended difference (:func:`test_files_on_the_pi_are_checked_on_the_pi`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mailpulse.pi_firmware import image as img

from mailpulse.cli import main
from mailpulse.errors import UserError

SECRETS_FILE = 'secrets_file = "{d}/secrets.toml"\n'
ROUTE = """
[[probe.routes]]
name = "chain"
smtp_host = "relay.example.org"
smtp_port = 587
mail_from = "probe@example.org"
rcpt_to = "sink@example.org"
imap_host = "imap.example.org"
imap_port = 993
imap_username = "sink"
"""
IMAP = {"probe.chain.imap_password": "imap-pw"}


def node(extra: str = "", body: str = "") -> str:
    return f'[node]\nid = "pi-01"\nsite = "hq"\nstate_dir = "{{d}}/state"\n{extra}\n{body}'


@dataclass
class Case:
    text: str
    ok: bool
    secrets: dict[str, str] | None = None
    env: dict[str, str] = field(default_factory=dict)


CASES = {
    # accepted by both
    "minimal": Case(node(), True),
    "mqtts url (docs/config.md's example broker)": Case(node(body='[mqtt]\nurl = "mqtts://broker.example.org:8883"\n'),
                                                       True),
    "mqtt url with a port": Case(node(body='[mqtt]\nurl = "mqtt://10.0.0.5:1884"\nusername = "pi-01"\n'), True),
    "backend auto": Case(node(body='[scorer]\nbackend = "auto"\nparams = "full"\n'), True),
    "spool synchronous in lower case": Case(node(body='[spool]\nsynchronous = "full"\n'), True),
    "ca file that exists, with TLS": Case(node(body='[mqtt]\nhost = "b"\ntls = true\nca_file = "{d}/ca.pem"\n'), True),
    "route, IMAP password in the secrets file": Case(node(SECRETS_FILE, ROUTE), True, {"mqtt_password": "pw", **IMAP}),
    "route, IMAP password from the environment": Case(
        node(body=ROUTE + 'imap_password_env = "MP_TEST_IMAP"\n'), True, env={"MP_TEST_IMAP": "imap-pw"}),
    "route with SMTP AUTH, both passwords in the file": Case(
        node(SECRETS_FILE, ROUTE + 'smtp_username = "probe"\n'), True, {"probe.chain.smtp_password": "s", **IMAP}),
    # refused by both
    "url and host both given": Case(node(body='[mqtt]\nurl = "mqtts://b:8883"\nhost = "b"\n'), False),
    "url with credentials": Case(node(body='[mqtt]\nurl = "mqtts://u:p@b:8883"\n'), False),
    "url of another scheme": Case(node(body='[mqtt]\nurl = "http://b"\n'), False),
    "bad node id": Case(node().replace('"pi-01"', '"pi 01"'), False),
    "bad site id": Case(node().replace('"hq"', '"h/q"'), False),
    "unknown key": Case(node(body='[mqtt]\nhots = "b"\n'), False),
    "unknown section": Case(node(body='[mqt]\nhost = "b"\n'), False),
    "port of the wrong type": Case(node(body='[mqtt]\nport = "8883"\n'), False),
    "port out of range": Case(node(body="[mqtt]\nport = 70000\n"), False),
    "empty broker host": Case(node(body='[mqtt]\nhost = ""\n'), False),
    "boolean of the wrong type": Case(node(body='[mqtt]\ntls = "yes"\n'), False),
    "password in the config file": Case(node(SECRETS_FILE, '[mqtt]\npassword = "x"\n'), False, {"mqtt_password": "x"}),
    "ca_file without TLS": Case(node(body='[mqtt]\ntls = false\nca_file = "{d}/ca.pem"\n'), False),
    "fleet timeout shorter than a heartbeat": Case(node(body="[fleet]\nheartbeat_s = 10\ntimeout_s = 5\n"), False),
    "probe poll longer than its timeout": Case(
        node(SECRETS_FILE, ROUTE + "timeout_s = 1.0\npoll_interval_s = 2.0\n"), False, IMAP),
    "two routes of one name": Case(node(SECRETS_FILE, ROUTE + ROUTE), False, IMAP),
    "sender that is not an address": Case(node(SECRETS_FILE, ROUTE.replace("probe@example.org", "probe")), False, IMAP),
    "image quality out of range": Case(node(body="[probe]\nimage_quality = 101\n"), False),
    "unknown parameter set": Case(node(body='[scorer]\nparams = "huge"\n'), False),
    "unknown backend": Case(node(body='[scorer]\nbackend = "gpu"\n'), False),
    "zero MIME depth": Case(node(body="[mime]\nmax_depth = 0\n"), False),
    "missing secret: a route with no way to get its IMAP password": Case(node(body=ROUTE), False),
    "missing secret: the secrets file lacks the IMAP password": Case(node(SECRETS_FILE, ROUTE), False,
                                                                    {"mqtt_password": "pw"}),
    "missing secret: SMTP AUTH without its password": Case(node(SECRETS_FILE, ROUTE + 'smtp_username = "p"\n'), False,
                                                          IMAP),
    "missing secrets: a secrets file named but none given": Case(node(SECRETS_FILE), False),
    "a secret for a route that does not exist": Case(node(SECRETS_FILE, ROUTE), False,
                                                    {**IMAP, "probe.chian.imap_password": "x"}),
}


def _secrets_toml(secrets: dict[str, str]) -> str:
    nested: dict[str, Any] = {}
    for key, value in secrets.items():
        *tables, leaf = key.split(".")
        cur = nested
        for t in tables:
            cur = cur.setdefault(t, {})
        cur[leaf] = value
    return img.dump_toml(nested)


def check_config_accepts(d: Path, case: Case) -> bool:
    if case.secrets is not None:
        sf = d / "secrets.toml"
        sf.write_text(_secrets_toml(case.secrets))
        sf.chmod(0o600)
    path = d / "node.toml"
    path.write_text(case.text.format(d=d))
    return main(["node", "check-config", str(path)]) == 0


def image_flash_accepts(d: Path, case: Case) -> bool:
    try:
        img.make_node(case.text.format(d=d), "node.toml", secrets=case.secrets)
    except UserError:
        return False
    return True


@pytest.mark.parametrize("name", list(CASES))
def test_check_config_and_image_flash_agree(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    verdicts = {"node check-config": check_config_accepts(tmp_path, case),
                "image flash": image_flash_accepts(tmp_path, case)}
    err = capsys.readouterr().err
    assert verdicts == {"node check-config": case.ok, "image flash": case.ok}, err
    if not case.ok:   # one sentence per problem, no traceback
        assert err and "Traceback" not in err and all(line.startswith(str(tmp_path)) for line in err.splitlines())


def test_enough_cases() -> None:
    assert sum(c.ok for c in CASES.values()) >= 8 and sum(not c.ok for c in CASES.values()) >= 20


def test_files_on_the_pi_are_checked_on_the_pi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The one intended difference: a model file (or CA file, Maildir, log folder) is looked for
    where the config is used.  On the node, check-config refuses a missing one; image flash, on a
    PC, cannot see the Pi's files and leaves that check to the node."""
    case = Case(node(body='[scorer]\nmodel = "{d}/model.json"\n'), True)
    assert image_flash_accepts(tmp_path, case)
    assert not check_config_accepts(tmp_path, case)
    assert "[scorer] model" in capsys.readouterr().err
    (tmp_path / "model.json").write_text("{}")
    assert check_config_accepts(tmp_path, case)
