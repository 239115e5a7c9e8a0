"""The wheel as a node installs it: one import package, no lab, and the node extra is enough.

The wheel is built from a copy of the source tree (``pip wheel --no-deps --no-build-isolation``),
installed with only the ``node`` extra into a fresh virtual environment (pip may fetch numpy,
paho-mqtt and Pillow; its cache makes that fast after the first run), and ``mailpulse node
check-config`` and ``mailpulse inspect`` run there under ``python -X importtime``, which lists every
module the run imported.  One xdist group: the install runs beside the rest of the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.xdist_group("wheel")

#: Folders of the source tree that the wheel is built from (pyproject.toml's package-dir).
SOURCES = ("mailpulse", "hdl", "sim", "host_bridge", "pynq_overlays", "pi_firmware", "collector")

#: What a node's run must never import: the HDL, the simulator, the central side, the lab.
NOT_ON_A_NODE = ("amaranth", "cocotb", "cocotb_tools", "cocotbext", "pynq", "scipy", "mailpulse.lab",
                 "mailpulse.sim", "mailpulse.collector", "mailpulse.hdl.core", "mailpulse.hdl.tops",
                 "mailpulse.hdl.build", "mailpulse.pynq_overlays")

NODE_TOML = """\
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
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the tree (no build/ folder left in the checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "sim_build", "*.egg-info")
    for pkg in SOURCES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=ignore)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(base / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (built,) = (base / "dist").glob("mailpulse-*.whl")
    return built


@pytest.fixture(scope="module")
def node_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and its ``node`` extra, nothing else; its python."""
    env_dir = tmp_path_factory.mktemp("node-venv") / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # the test's own pip installs into the new environment (--python): no ensurepip, pip's cache reused
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                        "--disable-pip-version-check", f"{wheel}[node]"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return python


def test_the_only_top_level_package_is_mailpulse(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert tops == {"mailpulse"}, tops
    assert not [n for n in names if n.startswith("mailpulse/lab/")]
    for part in ("hdl", "sim", "host_bridge", "pynq_overlays", "pi_firmware", "collector", "cli"):
        assert f"mailpulse/{part}/__init__.py" in names, part
    assert "mailpulse/__main__.py" in names
    top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    if top_level:
        with zipfile.ZipFile(wheel) as z:
            assert z.read(top_level[0]).decode().split() == ["mailpulse"]


def _imported(python: Path, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m mailpulse ARGS``; (the process, with the import lines taken out
    of its stderr, and every module it imported)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    r = subprocess.run([str(python), "-X", "importtime", "-m", "mailpulse", *args], capture_output=True,
                       text=True, timeout=120, cwd=cwd, env=env)
    modules = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines()
               if line.startswith("import time:") and line.count("|") == 2}
    modules.discard("imported package")
    r.stderr = "".join(line + "\n" for line in r.stderr.splitlines() if not line.startswith("import time:"))
    return r, modules


def _forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in NOT_ON_A_NODE))


def test_node_extra_runs_check_config_and_inspect(node_venv: Path, tmp_path: Path) -> None:
    # nothing of the development install is reachable: the environment has only what the node extra brought
    r = subprocess.run([str(node_venv), "-c", "import importlib.util as u, mailpulse; print(mailpulse.__file__, "
                        "[m for m in ('amaranth', 'cocotb', 'pynq', 'scipy') if u.find_spec(m)])"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    where, found = r.stdout.rsplit(" ", 1)
    assert str(node_venv.parent.parent) in where and found.strip() == "[]", r.stdout

    sec = tmp_path / "secrets.toml"
    sec.write_text('mqtt_password = "s3cret"\n')
    sec.chmod(0o600)
    cfg = tmp_path / "node.toml"
    cfg.write_text(NODE_TOML.format(d=tmp_path))
    r, modules = _imported(node_venv, "node", "check-config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith(f"{cfg}: ok: node hq/pi-01"), r.stdout
    assert "mailpulse.config.node" in modules
    assert _forbidden(modules) == []

    bad = tmp_path / "bad.toml"
    bad.write_text(NODE_TOML.format(d=tmp_path).replace('port = 8883', 'port = "eighty"'))
    r, modules = _imported(node_venv, "node", "check-config", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "port" in r.stderr, r.stderr[-3000:]

    r, modules = _imported(node_venv, "inspect", "--compact", str(ROOT / "data" / "mail" / "sa_001.eml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '"hops"' in r.stdout and "mailpulse.pi_firmware.maildir" in modules
    assert _forbidden(modules) == []

    r, modules = _imported(node_venv, "--help", cwd=tmp_path)
    assert r.returncode == 0 and "node      the edge node" in r.stdout
    assert not [m for m in modules if m.startswith("mailpulse.cli.")]
