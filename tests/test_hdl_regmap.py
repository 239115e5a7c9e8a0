"""The register map's declaration (kinds, field resets, PUSH operands) and the front end that follows it.

The behaviour of every register over the bus is tested in test_hdl_regs.py against the model; here:
the declaration is self-consistent, reset values come from the fields, and the front end refuses to
elaborate a declared field it has nothing to connect to (so a new field cannot silently read 0).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from amaranth.hdl import Fragment
from mailpulse.hdl.params import PARAMETER_SETS, get_params
from mailpulse.hdl.regmap import CORE_ID, CORE_VERSION, THRESHOLD_RESET, Field, Kind, Register, RegisterMap
from mailpulse.hdl.regs import RegisterFile


@pytest.mark.parametrize("name", sorted(PARAMETER_SETS))
def test_resets_and_access_follow_the_declaration(name: str) -> None:
    p = get_params(name)
    rm = RegisterMap(p)
    for r in rm:
        assert r.reset == sum((f.reset << f.lsb) for f in r.fields), r.name
        assert r.access == {"const": "RO", "status": "RO", "storage": "RW"}.get(r.kind.value, "WO"), r.name
        if r.access == "WO":
            assert r.reset == 0, r.name
    assert rm["ID"].reset == CORE_ID
    major, minor, patch = CORE_VERSION
    assert rm["VERSION"].value(MAJOR=major, MINOR=minor, PATCH=patch) == rm["VERSION"].reset
    assert rm["PARAMS"].value(D=p.d, K=p.k, B_LOG2=p.b_log2, WEIGHT_BITS=p.weight_bits,
                              SHIFT_BITS=p.shift_bits) == rm["PARAMS"].reset
    assert rm["THRESHOLD"].reset == rm["THRESHOLD_ACTIVE"].reset == THRESHOLD_RESET
    assert [r.name for r in rm if r.kind is Kind.PUSH] == ["PUSH"] and rm["PUSH"].operands == ("FEATURE", "TAG")
    with pytest.raises(ValueError, match=r"does not fit field STATUS\.BUSY"):
        rm["STATUS"].value(BUSY=2)


def _with(rm: RegisterMap, new: Register) -> RegisterMap:
    """``rm`` with its register of ``new``'s name replaced by ``new``."""
    rm.registers = tuple(new if r.name == new.name else r for r in rm.registers)
    rm._by_name = {r.name: r for r in rm.registers}
    return rm


@pytest.mark.parametrize(("reg", "kind"), [("STATUS", "status"), ("CTRL", "action")])
def test_front_end_refuses_a_field_it_cannot_connect(reg: str, kind: str) -> None:
    p = get_params("small")
    rf = RegisterFile(p, latency=20)
    r = rf.regmap[reg]
    rf.regmap = _with(rf.regmap, replace(r, fields=(*r.fields, Field("NEW", 20, 1, "not connected"))))
    with pytest.raises(ValueError, match="NEW"):
        Fragment.get(rf, None)


def test_declaration_checks() -> None:
    p = get_params("small")
    rm = RegisterMap(p)
    with pytest.raises(AssertionError, match="does not fit"):
        _with(rm, replace(rm["LATENCY"], fields=(Field("CYCLES", 0, 8, "cycles", reset=256),)))._check()
    rm = RegisterMap(p)
    with pytest.raises(AssertionError, match=r"live .* storage"):
        _with(rm, replace(rm["PUSH"], operands=("FEATURE", "OFFSET")))._check()
    rm = RegisterMap(p)
    with pytest.raises(AssertionError, match="declares a reset"):
        _with(rm, replace(rm["CTRL"], fields=(Field("COMMIT", 0, 1, "x", reset=1),)))._check()


def test_live_kind_declaration_and_connection() -> None:
    """A ``LIVE`` register (``ROUTE_BOUND`` of a set with routes) reads and writes (RW); it must
    not be shadow and has one unsigned field at bit 0; the front end refuses a live register it
    has no port for, and without routes the map has none of the route registers or fields."""
    p = get_params("small-r4")
    rm = RegisterMap(p)
    bound = rm["ROUTE_BOUND"]
    assert (bound.kind, bound.access, bound.count, bound.shadow) == (Kind.LIVE, "RW", 2 * p.r, False)
    assert "ROUTE" in rm["PUSH"].operands
    assert rm["PARAMS"].reset >> rm["PARAMS"].field("ROUTES_LOG2").lsb == 3
    for bad in (replace(bound, shadow=True), replace(bound, fields=(Field("B", 1, 8, "x"),)),
                replace(bound, fields=(Field("B", 0, 8, "x", signed=True),))):
        with pytest.raises(AssertionError, match="live register ROUTE_BOUND"):
            _with(RegisterMap(p), bad)._check()
    rf = RegisterFile(p, latency=20)
    extra = replace(bound, name="ROUTE_BOUND2", offset=0x0600)
    rf.regmap.registers = (*rf.regmap.registers, extra)
    rf.regmap._by_name[extra.name] = extra
    with pytest.raises(ValueError, match="live not connected for ROUTE_BOUND2"):
        Fragment.get(rf, None)
    plain = RegisterMap(get_params("small"))
    assert not [r for r in plain if r.kind is Kind.LIVE or r.name == "ROUTE"]
    assert {f.name for f in plain["ADAPT"].fields} == {"ENABLE", "ALPHA_EXP", "STEP_EXP"}
    assert plain["PARAMS"].reset == RegisterMap(get_params("small"))["PARAMS"].reset
