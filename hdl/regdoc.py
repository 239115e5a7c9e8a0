"""The register map as text: its JSON (``hdl/regmap_<set>.json``) and the Markdown of
``docs/registers.md`` (the map of one set, plus the array sizes of every set).

Pure Python, like :mod:`mailpulse.hdl.regmap` it renders: ``mailpulse hdl regmap`` and the test
that keeps the checked-in files current call :func:`regmap_text`.
"""

from __future__ import annotations

from mailpulse.errors import UserError

from .params import PARAMETER_SETS, params_or_error
from .regmap import RegisterMap

__all__ = ["FORMATS", "registers_markdown", "regmap_text"]

#: The text formats of :func:`regmap_text`.
FORMATS = ("json", "md")


def regmap_text(config: str, fmt: str) -> str:
    """The register map of parameter set ``config`` as ``json`` or ``md`` text."""
    rm = RegisterMap(params_or_error(config))
    if fmt == "json":
        return rm.to_json()
    if fmt == "md":
        return registers_markdown(rm)
    raise UserError(f"unknown register map format {fmt!r}; use json or md")


def registers_markdown(rm: RegisterMap) -> str:
    """``docs/registers.md``: the map of one set, plus the array sizes of every parameter set."""
    out = rm.to_markdown().rstrip("\n") + "\n"
    arrays = [r for r in rm if r.count > 1]
    out += "\n## Array sizes per parameter set\n\n"
    out += "| set | D | K | B | " + " | ".join(f"`{r.name}` count" for r in arrays) + " |\n"
    out += "|---|---|---|---|" + "---|" * len(arrays) + "\n"
    for name, p in PARAMETER_SETS.items():
        other = RegisterMap(p)
        out += f"| `{name}` | {p.d} | {p.k} | {p.b} | " + " | ".join(
            str(other[r.name].count) for r in arrays) + " |\n"
    return out
