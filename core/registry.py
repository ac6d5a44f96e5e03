"""One registry per component kind, keyed by Flume's type names.

A registry is a plain dict from a type name to a ``"module:Class"`` path (imported only when used), in the
manner of kombu's transport aliases.  Lookups accept:

* Flume's alias, case-insensitively as Flume does (``TAILDIR`` and ``taildir`` are the same type);
* Flume's fully qualified class name for a built-in component (``org.apache.flume.sink.NullSink``);
* a ``module:Class`` path for a third-party component.

An unknown name raises :class:`UnknownType` whose message says whether the type is a Flume type that Flumery
does not have yet, or a misspelling (with a did-you-mean).
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field

from core.errors import UnknownType


@dataclass
class Registry:
    kind: str                                   # "source", "sink", ... (used in messages)
    types: dict[str, str]                       # alias -> "module:Class"
    flume_classes: dict[str, str] = field(default_factory=dict)   # Flume FQCN -> alias
    not_yet: frozenset[str] = frozenset()       # Flume aliases/FQCNs Flumery does not implement yet

    def resolve(self, name: str) -> type:
        """Return the component class for ``name``; raise :class:`UnknownType` with a helpful message."""
        return _import(self.path_for(name))

    def path_for(self, name: str) -> str:
        name = name.strip()
        alias = self.canonical(name)
        if alias is not None:
            return self.types[alias]
        if ":" in name:
            return name
        raise UnknownType(self._unknown_message(name))

    def canonical(self, name: str) -> str | None:
        """The registry's alias for ``name`` (alias in any case, or a Flume class name), else None."""
        lowered = {alias.lower(): alias for alias in self.types}
        if name.lower() in lowered:
            return lowered[name.lower()]
        alias = self.flume_classes.get(name)
        return alias if alias in self.types else None

    def _unknown_message(self, name: str) -> str:
        available = ", ".join(sorted(self.types)) or "none yet"
        if name in self.not_yet or name.lower() in {n.lower() for n in self.not_yet}:
            return (f"{self.kind} type '{name}' is a Flume type that Flumery does not have yet "
                    f"(available: {available})")
        candidates = list(self.types) + [n for n in self.not_yet if "." not in n]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        close += difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=1, cutoff=0.6)
        hint = ""
        if close:
            match = next(c for c in candidates if c.lower() == close[0].lower())
            hint = f"; did you mean '{match}'?"
        elif "." in name:
            hint = "; third-party components are given as 'module:Class'"
        return f"unknown {self.kind} type '{name}'{hint} (available: {available})"


def _import(path: str) -> type:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise UnknownType(f"'{path}' is not a 'module:Class' path")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownType(f"cannot import module '{module_name}' for '{path}': {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UnknownType(f"module '{module_name}' has no attribute '{attr}' (from '{path}')") from None


def did_you_mean(word: str, choices) -> str:
    """'; did you mean 'x'?' when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
