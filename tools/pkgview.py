"""Build ``build/pkgview/mailpulse``: the installed package's tree, made of symbolic links.

The design keeps the parts in top-level folders and installs them as sub-packages of one import
package (``pyproject.toml``'s ``package-dir``: ``mailpulse.hdl`` is ``hdl/``).  Tools that find
modules by walking directories (mypy, import-linter's grimp) need that package as one tree; this
script makes it from the same ``package-dir`` table, so the two cannot disagree.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(out: Path = ROOT / "build" / "pkgview") -> Path:
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = out / "mailpulse"
    if out.exists():
        shutil.rmtree(out)
    top.mkdir(parents=True)
    for entry in sorted((ROOT / table["mailpulse"]).iterdir()):
        if entry.name != "__pycache__":
            (top / entry.name).symlink_to(entry)
    for name, folder in table.items():
        if name != "mailpulse":
            (top / name.split(".", 1)[1]).symlink_to(ROOT / folder, target_is_directory=True)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "pkgview"))
