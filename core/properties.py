"""Java ``.properties`` files as Flume reads them, plus Flume 1.10's ``${env:VAR}`` value substitution.

Values that came from the environment may be secrets (a token, a password): :class:`Expanded` remembers them, and
:func:`mask` shows them as ``<from ${env:VAR}>`` in anything printed.

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


# A piece of text this short is masked only in messages about its own key, and only as a whole word: masking
# "1" everywhere would garble every message, and such a value is no secret anyway.
SHORT_SECRET = 6


@dataclass(frozen=True)
class Secret:
    """A piece of a value that came from the environment, and how to show it instead."""

    text: str
    shown: str           # "<from ${env:VAR}>"


@dataclass(frozen=True)
class Expanded:
    value: str                       # every reference expanded
    problems: list[str]              # one sentence per reference that could not be expanded
    secrets: tuple[Secret, ...]      # the pieces of ``value`` taken from the environment
    shown: str                       # ``value`` with each of those pieces shown as ``<from ${env:VAR}>``


def expand(value: str, environ: dict[str, str] | None = None) -> Expanded:
    """Expand ``${env:VAR}`` and ``${env:VAR:-default}``; ``$${`` is a literal ``${``.  A default comes from the
    file and is no secret; a variable's value is."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    secrets: list[Secret] = []
    out: list[str] = []
    shown: list[str] = []
    pos = 0
    for m in _REFERENCE.finditer(value):
        literal = value[pos:m.start()]
        text, secret = _resolve(m, env, problems)
        out += [literal, text]
        shown += [literal, secret.shown if secret else text]
        if secret:
            secrets.append(secret)
        pos = m.end()
    out.append(value[pos:])
    shown.append(value[pos:])
    return Expanded("".join(out), problems, tuple(secrets), "".join(shown))


def _resolve(m: re.Match, env, problems: list[str]) -> tuple[str, Secret | None]:
    """The text of one reference, and the secret it is if it came from the environment."""
    if m.group(0) == "$${":
        return "${", None
    ref = m.group(1)
    if not ref.startswith("env:"):
        problems.append(f"unsupported reference '${{{ref}}}' (Flumery expands ${{env:VAR}} "
                        f"and ${{env:VAR:-default}})")
        return m.group(0), None
    name, sep, default = ref[4:].partition(":-")
    if name in env:
        return env[name], (Secret(env[name], f"<from ${{env:{name}}}>") if env[name] else None)
    if sep:
        return default, None
    problems.append(f"environment variable '{name}' is not set (referenced as '${{{ref}}}')")
    return m.group(0), None


def substitute(value: str, environ: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """:func:`expand`'s ``(value, problems)``."""
    expanded = expand(value, environ)
    return expanded.value, expanded.problems


def mask(text: str, secrets, own: Expanded | None = None) -> str:
    """``text`` fit to print: every piece of ``secrets`` at least :data:`SHORT_SECRET` long shown as
    ``<from ${env:VAR}>``; and if ``text`` is about a key whose value is ``own``, that value where it is quoted
    (``'...'``, as errors quote bad values) and its shorter pieces where they stand as whole words."""
    if own is not None:
        text = text.replace(f"'{own.value}'", f"'{own.shown}'")
    pieces = [s for s in secrets if len(s.text) >= SHORT_SECRET] + list(own.secrets if own else ())
    if not pieces:
        return text
    shown = {s.text: s.shown for s in pieces}
    alternatives = []
    for piece in sorted(shown, key=len, reverse=True):          # the longest first: one pass, nothing masked twice
        pattern = re.escape(piece)
        alternatives.append(pattern if len(piece) >= SHORT_SECRET
                            else rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])")
    return re.sub("|".join(alternatives), lambda m: shown[m.group(0)], text)
