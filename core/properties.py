"""Java ``.properties`` files as Flume reads them, plus Flume 1.10's ``${env:VAR}`` value substitution.

Follows ``java.util.Properties.load``: ``#``/``!`` comments, ``key = value``, ``key: value`` or ``key value``,
backslash line continuation, ``\\t \\n \\uXXXX`` escapes; the last of repeated keys wins.  Unlike Java,
trailing white space of a value is dropped (Flume trims numbers anyway, and a stray blank after a path is a
classic mistake).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


@dataclass(frozen=True)
class Line:
    number: int          # 1-based line where the logical line starts
    key: str
    value: str


def parse(text: str) -> list[Line]:
    """Parse properties text into logical lines, in file order (duplicates kept; callers take the last)."""
    lines: list[Line] = []
    # Java ends lines at \n, \r and \r\n only (str.splitlines would also split at form feeds and more).
    physical = re.split(r"\r\n|\r|\n", text)
    i = 0
    while i < len(physical):
        start = i
        raw = physical[i].lstrip(" \t\f")
        i += 1
        if not raw or raw[0] in "#!":
            continue
        while _continues(raw) and i < len(physical):
            raw = raw[:-1] + physical[i].lstrip(" \t\f")
            i += 1
        if _continues(raw):
            raw = raw[:-1]
        key, value = _split(raw)
        lines.append(Line(start + 1, _unescape(key), _unescape(value).rstrip()))
    return lines


def _continues(raw: str) -> bool:
    trailing = len(raw) - len(raw.rstrip("\\"))
    return trailing % 2 == 1


def _split(raw: str) -> tuple[str, str]:
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "=: \t\f":
            break
        i += 1
    key = raw[:i]
    rest = raw[i:].lstrip(" \t\f")
    if rest[:1] in ("=", ":") and (i >= len(raw) or raw[i] in " \t\f=:"):
        rest = rest[1:].lstrip(" \t\f")
    return key, rest


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch != "\\" or i + 1 >= len(s):
            out.append(ch)
            i += 1
            continue
        nxt = s[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", s[i + 2:i + 6] or ""):
            out.append(chr(int(s[i + 2:i + 6], 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")


def substitute(value: str, environ: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Expand ``${env:VAR}`` and ``${env:VAR:-default}``; ``$${`` is a literal ``${``.

    Returns ``(value, problems)``; each problem is a sentence about one reference that could not be expanded.
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []

    def expand(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "${"
        ref = m.group(1)
        if not ref.startswith("env:"):
            problems.append(f"unsupported reference '${{{ref}}}' (Flumery expands ${{env:VAR}} "
                            f"and ${{env:VAR:-default}})")
            return m.group(0)
        name, sep, default = ref[4:].partition(":-")
        if name in env:
            return env[name]
        if sep:
            return default
        problems.append(f"environment variable '{name}' is not set (referenced as '${{{ref}}}')")
        return m.group(0)

    return _REFERENCE.sub(expand, value), problems
