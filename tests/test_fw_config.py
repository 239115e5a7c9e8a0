"""Node config: typed loading, one sentence per problem, secrets file mode, the generated docs table."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from mailpulse.cli import main
from mailpulse.config import node as C
from mailpulse.config.base import is_secret
from mailpulse.config.collector import CollectorConfig
from mailpulse.errors import UserError

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
[node]
id = "pi-01"
site = "hq"
state_dir = "{d}/state"
secrets_file = "{d}/secrets.toml"

[mqtt]
host = "127.0.0.1"
port = 8883
tls = true
username = "pi-01"

[scorer]
backend = "model"
params = "small"

[postfix]
log = "{d}/mail.log"

[maildir]
path = "{d}/Maildir"

[mime]
max_depth = 16

[[probe.routes]]
name = "chain"
smtp_host = "127.0.0.1"
smtp_port = 2525
mail_from = "probe@example.org"
rcpt_to = "sink@example.org"
imap_host = "127.0.0.1"
imap_port = 1143
imap_username = "sink"
"""


def _good(tmp_path: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
    sec = tmp_path / "secrets.toml"
    sec.write_text('mqtt_password = "s3cret"\n[probe.chain]\nimap_password = "imap-pw"\n')
    sec.chmod(0o600)
    cfg = tmp_path / "node.toml"
    cfg.write_text(GOOD.format(d=tmp_path))
    return cfg


def test_good_config_loads_typed(tmp_path: Path) -> None:
    cfg = C.load_config(_good(tmp_path))
    assert (cfg.site, cfg.node_id) == ("hq", "pi-01")
    assert cfg.mqtt.password == "s3cret" and cfg.mqtt.port == 8883
    assert cfg.probe.routes[0].imap_password == "imap-pw"
    assert cfg.scorer.backend == "model" and cfg.mime.max_depth == 16
    assert cfg.postfix.state_file == str(tmp_path / "state" / "postfix.pos")


def test_secrets_file_must_be_private(tmp_path: Path) -> None:
    path = _good(tmp_path)
    (tmp_path / "secrets.toml").chmod(0o644)
    _, errors = C.check_config(path)
    assert len(errors) == 1 and "chmod 600" in errors[0]


def test_password_in_the_config_is_refused(tmp_path: Path) -> None:
    path = _good(tmp_path)
    path.write_text(path.read_text().replace('username = "pi-01"', 'username = "pi-01"\npassword = "x"'))
    _, errors = C.check_config(path)
    assert any("password must not be in the config file" in e for e in errors)


def test_every_problem_is_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nid = "pi 01"\nsite = "hq"\n[mqtt]\nport = 99999\n[scorer]\nbackend = "fpga"\n'
                   '[postfix]\npoll_s = -1\ncolour = "red"\n[mime]\nmax_depth = 0\n')
    cfg, errors = C.check_config(bad)
    assert cfg is None
    joined = "\n".join(errors)
    for fragment in ("[node] id 'pi 01'", "port 99999", "backend 'fpga'", "unknown key 'colour'", "max_depth"):
        assert fragment in joined, (fragment, errors)
    assert all("\n" not in e and len(e) < 300 for e in errors)
    with pytest.raises(UserError, match="more problems"):
        C.load_config(bad)


@pytest.mark.parametrize("text,fragment", [
    ("[node\n", "not valid TOML"), ('[bogus]\nx = 1\n', "unknown section [bogus]"),
    ('node = 3\n', "must be a table"), ("[node]\nsite = \"hq\"\n", "'id'"),
])
def test_structural_problems(tmp_path: Path, text: str, fragment: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    _, errors = C.check_config(p)
    assert errors and fragment in errors[0]


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "check-config", str(_good(tmp_path))]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["node", "check-config", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1


def test_every_key_is_documented() -> None:
    def walk(model: type[BaseModel], where: str) -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            nested = next((t for t in (field.annotation, *get_args(field.annotation))
                           if isinstance(t, type) and issubclass(t, BaseModel)), None)
            if nested is not None:
                out += walk(nested, f"{where}.{name}")
            elif not is_secret(field) and not (field.description or "").strip():
                out.append(f"{where}.{name}")
        return out

    missing = walk(C.NodeConfig, "node") + walk(CollectorConfig, "collector")
    assert not missing, f"give these keys a Field(description=...): {missing}"


def test_systemd_unit(tmp_path: Path) -> None:
    unit = ROOT / "pi_firmware" / "mailpulse-node.service"
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections[current] = {}
        elif line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            sections[current].setdefault(k, v)
    svc = sections["Service"]
    assert svc["User"] == "mailpulse" and svc["Group"] == "mailpulse"
    assert svc["ExecStart"].endswith("mailpulse node run --config /etc/mailpulse/node.toml")
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict" and svc["CapabilityBoundingSet"] == ""
    assert svc["KillSignal"] == "SIGTERM"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify with the executable pointed at something that exists
    fake = tmp_path / "mailpulse-node.service"
    fake.write_text(unit.read_text().replace("/usr/local/bin/mailpulse", "/bin/true"))
    r = subprocess.run([analyze, "verify", str(fake)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "mailpulse-node.service" in ln]
    assert not problems, problems


@pytest.mark.parametrize("url,expect", [
    ("mqtts://broker.example.org", ("broker.example.org", 8883, True)),
    ("mqtt://127.0.0.1:1884", ("127.0.0.1", 1884, False)),
    ("http://x", "must look like"), ("mqtt://u:p@x:1", "credentials"),
])
def test_broker_url(tmp_path: Path, url: str, expect: object) -> None:
    p = tmp_path / "c.toml"
    p.write_text(f'[node]\nid = "a"\nsite = "b"\n[mqtt]\nurl = "{url}"\n')
    cfg, errors = C.check_config(p)
    if isinstance(expect, tuple):
        assert cfg is not None, errors
        m = cfg.mqtt
        assert (m.host, m.port, m.tls) == expect
    else:
        assert any(str(expect) in e for e in errors), errors
