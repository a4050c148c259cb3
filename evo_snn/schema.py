"""The configuration schema's machinery: how a key is declared, checked and described, and
how pydantic's errors become one ``ConfigError`` line.

A key is declared as ``Annotated[type, key(description, ...)]`` on a frozen dataclass
whose ``__pydantic_config__`` is ``SCHEMA`` (unknown keys and NaN / infinity refused);
``OneOf(table)`` and ``distinct`` are ``AfterValidator`` checks, ``Int`` / ``PosInt`` /
``Str`` / ``Num`` strict scalar types, ``SEED_BOUND`` the bound of every seed.
``validated(cls, data, prefix)`` checks nested dicts against a dataclass's schema and
raises ``ConfigError`` naming the key, the value and what is allowed (``allowed``: the
words generated from the type and the constraints), e.g. ``kd.epochs must be a finite
number > 0, got nan``. ``schema_keys(root)`` reads the schema back, one ``ConfigKey`` per
key (docs/configuration.md). The sections themselves are in ``evo_snn.net_sections`` and
``evo_snn.search_sections``, the whole config in ``evo_snn.config``.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from evo_snn.atomic import to_jsonable


class ConfigError(ValueError):
    """A config file or ``--set`` override is invalid; the message names the key and the fix."""


# ------------------------------------------------------------------ declaring a key
SCHEMA = ConfigDict(extra="forbid", allow_inf_nan=False)
"""pydantic's settings of every section: unknown keys and NaN / infinity are refused."""


def key(description: str, *, null: str | None = None, hint: str | None = None, allowed: str | None = None,
        strict: bool = True, **constraints: Any) -> Any:
    """The schema of one key, for ``Annotated[type, key(...)]``: a pydantic ``Field`` with the
    key's one-line ``description`` and its ``constraints`` (ge, gt, le, lt, multiple_of,
    min_length), strict (no bool for an int, no string for a number) unless told.

    For the error line and the docs: ``null`` says what null means ("null (= search.seed) or
    ..."), ``hint`` is appended to the error, ``allowed`` replaces the words generated from
    the type and the constraints (for lists, mappings and unions).
    """
    extra = {k: v for k, v in (("null", null), ("hint", hint), ("allowed", allowed)) if v is not None}
    if strict:
        constraints["strict"] = True
    return Field(description=description, json_schema_extra=extra or None, **constraints)


class OneOf:
    """``AfterValidator(OneOf(table))``: the value must be one of ``table``'s names."""

    def __init__(self, table: typing.Iterable[str]):
        self.table = tuple(table)

    def __call__(self, value: str) -> str:
        if value not in self.table:
            raise ValueError(f"must be one of {list(self.table)}")
        return value


def distinct(value: tuple) -> tuple:
    """``AfterValidator(distinct)``: the items of a list must differ."""
    if len(set(value)) != len(value):
        raise ValueError("duplicates")
    return value


SEED_BOUND = 2**32  # numpy seeds: [0, 2**32) (written 2**32 in the error line and the docs)

Int = Annotated[int, Strict()]
PosInt = Annotated[int, Strict(), Field(ge=1)]
Str = Annotated[str, Strict()]
Num = Annotated[float, Strict()]


# ------------------------------------------------------------------ the schema, read back
@dataclass(frozen=True)
class ConfigKey:
    """One key of the schema (``schema_keys``, ``evo_snn.config.config_keys``), as
    docs/configuration.md lists it."""

    key: str  # the dotted name, e.g. 'kd.epochs' (the name of ``--set kd.epochs=...``)
    allowed: str  # the values allowed, in words, e.g. 'a finite number > 0'
    default: Any
    description: str


def schema_keys(root: type) -> list[ConfigKey]:
    """Every key of the schema of ``root`` (a dataclass whose fields are plain keys or
    section dataclasses), in declaration order: top-level keys and each section's."""
    out = []
    for f in fields(root):
        section = section_class(root, f.name)
        for cls, g, prefix in ([(section, g, f.name + ".") for g in fields(section)] if section else [(root, f, "")]):
            default = g.default_factory() if g.default_factory is not dataclasses.MISSING else g.default
            out.append(ConfigKey(prefix + g.name, allowed(cls, g.name), default, key_parts(cls, g.name)[1].description))
    return out


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


@functools.cache
def _adapter(cls) -> TypeAdapter:
    return TypeAdapter(cls)


def section_class(cls, name: Any) -> type | None:
    """The dataclass of section ``name`` of ``cls``, or None for a plain key (or no key)."""
    hint = _hints(cls).get(name) if isinstance(name, str) else None
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def key_parts(cls, name: str) -> tuple[Any, FieldInfo, list]:
    """(type, its ``key(...)`` FieldInfo, the other Annotated metadata) of key ``name`` of ``cls``."""
    hint = _hints(cls)[name]
    tp, *meta = typing.get_args(hint) if typing.get_origin(hint) is Annotated else (hint,)
    info = next((m for m in meta if isinstance(m, FieldInfo)), None)
    if info is None or not info.description:
        raise TypeError(f"{cls.__name__}.{name}: declare it as Annotated[type, key('description', ...)]")
    return tp, info, [m for m in meta if m is not info]


def _num(x: Any) -> str:
    if x == SEED_BOUND:
        return "2**32"
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def allowed(cls, name: str) -> str:
    """The values key ``name`` of section ``cls`` allows, in words (the error line's and the
    docs' text): from its type and constraints, or its ``key(allowed=...)``."""
    tp, info, meta = key_parts(cls, name)
    extra = info.json_schema_extra or {}
    if "allowed" in extra:
        return extra["allowed"]
    args = typing.get_args(tp)
    nullable = typing.get_origin(tp) is Union and type(None) in args
    if nullable:
        (tp,) = [a for a in args if a is not type(None)]
    one_of = [m.func for m in meta if isinstance(m, AfterValidator) and isinstance(m.func, OneOf)]
    if one_of:
        text = f"one of {list(one_of[0].table)}"
    elif typing.get_origin(tp) is Literal:
        text = f"one of {list(typing.get_args(tp))}"
    elif tp is bool:
        text = "true, false" if nullable else "true or false"
    elif tp in (int, float):
        text = _number_words(tp, info)
    elif tp is str:
        text = "a string"
    else:
        raise TypeError(f"{cls.__name__}.{name}: give key(allowed=...) for {tp}")
    if nullable:
        text = f"null ({extra['null']}) or {text}" if "null" in extra else f"{text} or null"
    return text


def _number_words(tp: type, info: FieldInfo) -> str:
    """The values an int or float key allows, in words, from its constraints (gt, ge, lt,
    le, multiple_of), e.g. 'an integer in [0, 2**32)', 'a multiple of 4 (>= 4)'."""
    bound = {k: getattr(c, k) for c in info.metadata for k in ("gt", "ge", "lt", "le", "multiple_of") if hasattr(c, k)}
    lo = ("(", bound["gt"], ">") if "gt" in bound else ("[", bound["ge"], ">=") if "ge" in bound else None
    hi = (")", bound["lt"], "<") if "lt" in bound else ("]", bound["le"], "<=") if "le" in bound else None
    noun = "an integer" if tp is int else "a number" if lo and hi else "a finite number"
    if "multiple_of" in bound:
        noun = f"a multiple of {_num(bound['multiple_of'])}"
    if lo and hi:
        return f"{noun} in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    if lo or hi:
        (_, value, op) = lo or hi
        return f"{noun} ({op} {_num(value)})" if "multiple_of" in bound else f"{noun} {op} {_num(value)}"
    return noun


# ------------------------------------------------------------------ one error line
def _show(value: Any) -> str:
    """A value as the error line shows it: tuples as lists."""
    return repr(to_jsonable(value))


def _locate(cls, loc: tuple) -> tuple[type, list[str], Any]:
    """(the section class, the section names walked, the key there or None) of an error location."""
    owner, walked = cls, []
    for part in loc:
        sub = section_class(owner, part)
        if sub is None:
            return owner, walked, part
        owner, walked = sub, walked + [part]
    return owner, walked, None


def _value_at(data: Any, names: list[str], default: Any) -> Any:
    for n in names:
        if not isinstance(data, dict) or n not in data:
            return default
        data = data[n]
    return data


def _one_line(error: ValidationError, cls, data: Any, prefix: str) -> str:
    """pydantic's errors as one line naming the key, the value and what is allowed."""
    errors = error.errors()
    unknown = [e for e in errors if e["type"] == "unexpected_keyword_argument"]
    if unknown:
        owner, walked, _ = _locate(cls, unknown[0]["loc"])
        names = [str(e["loc"][-1]) for e in unknown if _locate(cls, e["loc"])[1] == walked]
        path = prefix + "".join(f"{w}." for w in walked)
        return f"unknown key(s) {[path + n for n in names]}; known: {sorted(f.name for f in fields(owner))}"
    lines: dict[str, str] = {}
    for e in errors:
        owner, walked, name = _locate(cls, e["loc"])
        if name is None:  # a section (or the whole config) that is not a mapping
            where = prefix + ".".join(walked) if walked else (prefix.rstrip(".") or "config")
            lines.setdefault(where, f"{where}: expected a mapping, got {type(e['input']).__name__}")
            continue
        path = prefix + ".".join([*walked, str(name)])
        if path in lines:
            continue
        value = _value_at(data, [*walked, name], e["input"])
        hint = (key_parts(owner, name)[1].json_schema_extra or {}).get("hint")
        lines[path] = f"{path} must be {allowed(owner, name)}, got {_show(value)}" + (f"; {hint}" if hint else "")
    first, *others = lines.values()
    return first + (f" (also bad: {', '.join(list(lines)[1:])})" if others else "")


def validated(cls, data: Any, prefix: str):
    """``data`` (nested dicts) validated against the schema of ``cls``: a ``cls``; raises
    ConfigError (one line) where pydantic finds an unknown key or a bad value."""
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as e:
        raise ConfigError(_one_line(e, cls, data, prefix)) from None
