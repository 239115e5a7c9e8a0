"""The register map as text: its JSON (``hdl/regmap_<set>.json``) and the Markdown of
``docs/registers.md`` (the map of one set, plus the array sizes of every set).

Pure Python, like :mod:`mailpulse.hdl.regmap` it renders: ``mailpulse hdl regmap`` and the test
that keeps the checked-in files current call :func:`regmap_text`.
"""

from __future__ import annotations

from dataclasses import replace

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
    return out + _routes_markdown(rm)


#: R of the route section's example (any R > 0 gives the same registers, ``ROUTE_BOUND`` has 2R).
_DOC_ROUTES = 16


def _routes_markdown(rm: RegisterMap) -> str:
    """What a core with route intervals (R > 0) adds to the map: its registers and fields."""
    with_routes = RegisterMap(replace(rm.params, r=_DOC_ROUTES))
    out = (f"\n## With route intervals (R > 0; shown for R = {_DOC_ROUTES})\n\n"
           "A core elaborated with R routes has these registers and fields too (`PARAMS.ROUTES_LOG2` "
           "= log2(R) + 1); without routes they are absent (the addresses answer with an error, the "
           "fields read 0).\n\n"
           "| register | offset | kind | count | field | bits | reset | description |\n"
           "|---|---|---|---|---|---|---|---|\n")
    base = {r.name: {f.name for f in r.fields} for r in rm}
    for r in with_routes:
        for f in r.fields:
            if f.name in base.get(r.name, set()):
                continue
            bits = f"{f.lsb}" if f.width == 1 else f"{f.lsb + f.width - 1}:{f.lsb}"
            out += (f"| `{r.name}` | 0x{r.offset:04X} | {r.kind.value} | {r.count} | `{f.name}` | {bits} | "
                    f"0x{f.reset:X} | {r.doc + ' ' if r.name not in base else ''}{f.doc} |\n")
    return out
