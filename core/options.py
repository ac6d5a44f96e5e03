"""Typed component settings built from Flume properties.

Every component declares its settings as a frozen dataclass next to its code.  Each field names the Flume
property it reads with :func:`opt`::

    @dataclass(frozen=True)
    class NetcatConfig:
        bind: str = opt("bind")                              # required: no default
        port: int = opt("port", check=port_number)
        max_line_length: int = opt("max-line-length", 512, check=positive)

:func:`build` turns the properties of one component (``{"max-line-length": "80", ...}``) into that dataclass,
converting by the field's annotation (``str``, ``int``, ``float``, ``bool``, ``list[str]`` = a space-separated
list, ``dict[str, str]`` = every property under a ``prefix.*``).  It never stops at the first problem: it returns
every error, each naming the full key and the bad value, plus a did-you-mean for misspelt property names.

A field may be ``inert``: a Flume property that Flumery accepts so that existing files keep working, but which
has no effect here (for example a file channel's ``checkpointDir``: durability comes from the broker).  Using
one produces a notice, not an error.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable

from core.registry import did_you_mean


@dataclass(frozen=True, order=True)
class ConfigError:
    """One problem in a configuration, as ``key: message``."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


def opt(key: str, default: Any = MISSING, *, check: Callable[[Any], str | None] | None = None,
        inert: str | None = None, doc: str = "") -> Any:
    """Declare a dataclass field read from the Flume property ``key`` (``"mapping.*"`` for a prefix).

    No default means the property is required.  ``check(value)`` returns an error text or None.
    ``inert`` is the reason a property is accepted but has no effect in Flumery.
    """
    meta = {"key": key, "check": check, "inert": inert, "doc": doc}
    if key.endswith(".*"):
        return field(default_factory=dict, metadata=meta)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def build(cls: type, props: dict[str, str], prefix: str,
          builder_keys: tuple[str, ...] = ()) -> tuple[Any | None, list[ConfigError], list[str]]:
    """Build ``cls`` from ``props`` (keys relative to ``prefix``, e.g. ``"a1.sources.r1."``).

    ``builder_keys`` are the properties of the component that the agent's config builder reads itself
    (``type``, ``channel``, ...): they are not in ``props`` but are named among the known properties and
    offered as did-you-mean candidates.  An empty value (``""``) is accepted only where it means what Flume
    makes of it (see :func:`empty_value_problem`).

    Returns ``(config or None, errors, notices)``; config is None exactly when there are errors.
    """
    errors: list[ConfigError] = []
    notices: list[str] = []
    values: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    used: set[str] = set()
    for f in dataclasses.fields(cls):
        key = f.metadata.get("key")
        if key is None:
            continue
        if key.endswith(".*"):
            stem = key[:-1]
            sub = {k[len(stem):]: v for k, v in props.items() if k.startswith(stem)}
            used.update(stem + k for k in sub)
            errors += [ConfigError(prefix + stem + k, EMPTY) for k, v in sub.items() if v == ""]
            values[f.name] = sub
            continue
        if key not in props:
            if f.default is MISSING and f.default_factory is MISSING:
                errors.append(ConfigError(prefix + key, "required property is missing"))
            continue
        used.add(key)
        value, problem = _value(f, props[key], hints[f.name])
        if problem:
            errors.append(ConfigError(prefix + key, problem))
            continue
        if f.metadata.get("inert"):
            notices.append(f"{prefix}{key} = {props[key]}: accepted but has no effect in Flumery "
                           f"({f.metadata['inert']})")
        values[f.name] = value
    known = [*builder_keys, *(f.metadata["key"] for f in dataclasses.fields(cls) if "key" in f.metadata)]
    for key in sorted(set(props) - used):
        errors.append(ConfigError(prefix + key, "unknown property" + did_you_mean(key, known)
                                  + _known_list(known, builder_keys)))
    if errors:
        return None, errors, notices
    return cls(**values), errors, notices


EMPTY = "empty value"


def empty_value_problem(f: dataclasses.Field) -> str | None:
    """Why an empty value is refused for field ``f``, or None where it is accepted.

    Flume drops a property line with an empty value (logging PROPERTY_VALUE_NULL), so the component then uses
    the property's default.  Flumery accepts an empty value exactly where that is the same thing: where the
    default is itself empty (``replaceString``, a file name ``prefix``, an unset ``withName``...).  Elsewhere the
    line would silently mean something other than it says, so it is an error; a required property stays
    required.
    """
    if f.default is MISSING and f.default_factory is MISSING:
        return EMPTY
    default = f.default if f.default is not MISSING else f.default_factory()
    if default in ("", None, [], {}):
        return None
    if isinstance(default, bool):
        default = str(default).lower()
    elif isinstance(default, list):
        default = " ".join(default)
    return (f"{EMPTY}; Flume ignores the line and uses the default '{default}': give a value, or remove "
            f"the line")


def _value(f, raw: str, hint) -> tuple[Any, str | None]:
    """(the converted and checked value of one property, or the reason it is not acceptable)."""
    if raw == "":
        problem = empty_value_problem(f)
        if problem:
            return None, problem
    try:
        value = convert(raw, hint)
    except ValueError as exc:
        return None, f"{exc} (got '{raw}')"
    check = f.metadata.get("check")
    problem = check(value) if check else None
    return (None, f"{problem} (got '{raw}')") if problem else (value, None)


def _known_list(known: list[str], builder_keys: tuple[str, ...]) -> str:
    if len(known) > len(builder_keys):
        return f" (known: {', '.join(known)})"
    return " (this component takes no properties" + (f" but {', '.join(builder_keys)})" if builder_keys else ")")


def convert(raw: str, annotation: Any) -> Any:
    """Convert a property string by a field's annotation; raise ValueError with a short reason."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return None if raw.strip() == "" else convert(raw, inner)
    if annotation is str:
        return raw
    if annotation is bool:
        lowered = raw.strip().lower()
        if lowered not in ("true", "false"):
            raise ValueError("expected true or false")
        return lowered == "true"
    if annotation is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
    if annotation is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError("expected a number") from None
    if origin is list:
        return raw.split()
    raise TypeError(f"unsupported option type {annotation!r}")


# --- reusable checks: each returns an error text or None -------------------------------------------------

def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def port_number(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port (0-65535)"


def one_of(*choices: str, case_sensitive: bool = False) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        pool = choices if case_sensitive else [c.lower() for c in choices]
        probe = value if case_sensitive else value.lower()
        if probe in pool:
            return None
        return f"must be one of {', '.join(choices)}" + did_you_mean(value, choices)
    return check


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(property, default, doc) rows of a config class, for `flumery validate` and the README."""
    rows = []
    for f in dataclasses.fields(cls):
        if "key" not in f.metadata:
            continue
        if f.default is not MISSING:
            default = "" if f.default is None else str(f.default)
            if isinstance(f.default, bool):
                default = default.lower()
        elif f.default_factory is not MISSING:
            default = " ".join(f.default_factory()) if isinstance(f.default_factory(), list) else ""
        else:
            default = "(required)"
        rows.append((f.metadata["key"], default, f.metadata.get("doc", "")))
    return rows
