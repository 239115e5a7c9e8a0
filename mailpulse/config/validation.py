"""Validation errors as sentences: :func:`problems` turns a :class:`pydantic.ValidationError` into
one sentence per problem naming the key, the value and the reason (never the value of a secret),
and :func:`validate` validates a parsed config file with them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from .base import is_secret, local_context, section_model

__all__ = ["problems", "validate"]

_TYPE_WORDS = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
               "string_type": "a string", "list_type": "a list", "model_type": "a table", "dict_type": "a table",
               "model_attributes_type": "a table"}
_BOUNDS = {"greater_than_equal": ("ge", "must be at least"), "greater_than": ("gt", "must be greater than"),
           "less_than_equal": ("le", "must be at most"), "less_than": ("lt", "must be less than")}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class _Where:
    section: str          # "[mqtt]", "[[probe.routes]] chain", "" for the root
    key: str | None       # the field, or None when the error is about the section itself
    field: FieldInfo | None
    model: type[BaseModel]


def _locate(root: type[BaseModel], doc: Any, loc: Sequence[int | str]) -> _Where:
    """Walk an error location through the models (and the document, for route names)."""
    model: type[BaseModel] = root
    field: FieldInfo | None = None
    key: str | None = None
    path: list[str] = []
    section, data, in_tables = "", doc, False
    for i, part in enumerate(loc):
        if isinstance(part, int):
            if in_tables:  # an item of an array of tables: name it by its name key
                item = data[part] if isinstance(data, list) and 0 <= part < len(data) else None
                name = item.get("name") if isinstance(item, Mapping) else None
                section = f"[[{'.'.join(path)}]] {name if isinstance(name, str) and name else f'#{part + 1}'}"
                data, in_tables = item, False
            elif key is not None:  # an item of a plain list
                key = f"{key}[{part + 1}]"
            continue
        sub = model.model_fields.get(part)
        nested = section_model(sub.annotation) if sub is not None else None
        if sub is None or nested is None or (i == len(loc) - 1 and get_origin(sub.annotation) is list):
            field, key = sub, part
            continue
        path.append(part)
        model, field = nested, sub
        data = data.get(part) if isinstance(data, Mapping) else None
        in_tables = get_origin(sub.annotation) is list
        if not in_tables:
            section = f"[{'.'.join(path)}]"
    return _Where(section, key, field, model)


def _sentence(root: type[BaseModel], doc: Any, err: Mapping[str, Any]) -> str:
    loc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
    w = _locate(root, doc, loc)
    sec = w.section or "the config"
    shown = "" if (w.field is not None and is_secret(w.field)) or (w.key or "").endswith("password") else _show(value)
    ctx = err.get("ctx") or {}
    if kind == "missing":
        if w.field is not None and section_model(w.field.annotation) is not None:
            return f"the config is missing the section [{loc[-1]}]."
        return f"{sec} is missing the key {loc[-1]!r}."
    if kind == "extra_forbidden":
        known = ", ".join(k for k, f in w.model.model_fields.items() if not is_secret(f))
        if not w.section:
            return f"the config has an unknown section [{loc[-1]}] (known: {known})."
        return f"{sec} has an unknown key {loc[-1]!r} (known: {known})."
    what = f"{sec} {w.key}" if w.key else sec
    if kind == "value_error":
        msg = str(ctx.get("error", err["msg"])).rstrip(".")
        if w.key:
            return f"{what} {shown} {msg}."
        return f"{sec} {msg}." if w.section else f"{msg}."
    if kind in _TYPE_WORDS:
        return f"{what} must be {_TYPE_WORDS[kind]}, not {shown}."
    if kind == "literal_error":
        return f"{what} {shown} is not one of {ctx.get('expected', '')}."
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        bound = ctx.get(name)
        return f"{what} {shown} {words} {f'{bound:g}' if isinstance(bound, float) else bound}."
    return f"{what} {shown}: {err['msg']}."


def problems(err: ValidationError, root: type[BaseModel], doc: Any) -> list[str]:
    """One sentence per problem of ``err`` (raised validating ``doc`` as ``root``), in file order."""
    out: list[str] = []
    errors = err.errors(include_url=False)
    # unknown sections first: a misspelt section name explains the "missing" ones that follow
    errors.sort(key=lambda e: not (e["type"] == "extra_forbidden" and len(e["loc"]) == 1))
    for e in errors:
        s = _sentence(root, doc, e)
        if s not in out:
            out.append(s)
    return out


_M = TypeVar("_M", bound=BaseModel)


def validate(model: type[_M], doc: Any, *, local: bool) -> tuple[_M | None, list[str]]:
    """Validate a parsed config file as ``model``: (the config, []) or (None, the problems)."""
    try:
        return model.model_validate(doc, context=local_context(local=local)), []
    except ValidationError as e:
        return None, problems(e, model, doc)


