"""The command line's frame: every command declared once and loaded only when it runs, one sentence
(and status 2) naming the extra when an optional package is missing, ``python -m mailpulse``."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mailpulse.cli import COMMANDS, main
from mailpulse.errors import OPTIONAL_PACKAGES

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_every_command_has_its_parser(capsys: pytest.CaptureFixture[str]) -> None:
    """Each command's module fills in its parser: its usage has more than the stub's ``[-h]``."""
    assert len({c.name for c in COMMANDS}) == len(COMMANDS)
    for c in COMMANDS:
        module = importlib.import_module(f"mailpulse.cli.{c.module}")
        assert callable(getattr(module, c.adder)), f"mailpulse.cli.{c.module} has no {c.adder}"
        with pytest.raises(SystemExit) as exc:
            main([c.name, "--help"])
        assert exc.value.code == 0
        usage = capsys.readouterr().out.split("\n\n")[0]
        assert usage.startswith(f"usage: mailpulse {c.name} [-h] "), usage
        assert len(usage) > len(f"usage: mailpulse {c.name} [-h]"), usage


def test_help_imports_no_command_module() -> None:
    r = _run("import sys\nfrom mailpulse.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
             "    assert e.code == 0\nprint(sorted(m for m in sys.modules if m.startswith('mailpulse.') "
             "and m not in ('mailpulse.cli', 'mailpulse.errors')))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    assert "node      the edge node" in r.stdout


def test_a_command_loads_only_its_module() -> None:
    r = _run("import sys\nfrom mailpulse.cli import main\nrc = main(['hdl', 'regmap', '--config', 'small'])\n"
             "print(rc, sorted(m for m in sys.modules if m.startswith('mailpulse.cli.')))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "0 ['mailpulse.cli.hdl']"


@pytest.mark.parametrize(("command", "package", "sentence"), [
    ("hdl", "amaranth", "mailpulse hdl needs Amaranth: pip install 'mailpulse[hdl]'"),
    ("node", "paho", "mailpulse node needs paho-mqtt: pip install 'mailpulse[node]'"),
    ("collector", "prometheus_client",
     "mailpulse collector needs prometheus-client: pip install 'mailpulse[collector]'"),
])
def test_a_missing_optional_package_is_one_sentence(command: str, package: str, sentence: str) -> None:
    """The package is made unimportable in a child interpreter (as if it were not installed)."""
    r = _run(f"import sys\nsys.modules[{package!r}] = None\nfrom mailpulse.cli import main\n"
             f"sys.exit(main([{command!r}, '--help']))")
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"mailpulse: error: {sentence}\n"
    assert r.stdout == ""


def test_optional_packages_name_the_extras_of_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for module, (_name, dist, extra) in OPTIONAL_PACKAGES.items():
        names = [req.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
                 for req in extras[extra]]
        assert dist.lower() in names, f"{module}: {dist} is not in the [{extra}] extra of pyproject.toml"


def test_python_dash_m_mailpulse() -> None:
    r = subprocess.run([sys.executable, "-m", "mailpulse", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("mailpulse ")
    r = subprocess.run([sys.executable, "-m", "mailpulse", "nosuch"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "invalid choice: 'nosuch'" in r.stderr


def test_group_without_sub_command_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node"]) == 2
    assert "check-config" in capsys.readouterr().out
