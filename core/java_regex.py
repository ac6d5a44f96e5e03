"""Java regular expressions (``java.util.regex``) for Flume's interceptors, run on Python's ``re``.

Flume's interceptors take Java patterns (``regex``, ``searchPattern``, ``matching``, ``fromListSeparator``) and
Java replacement strings (``replaceString``).  The two syntaxes mostly agree; :func:`translate` rewrites a Java
pattern into a Python pattern that matches the same strings where they do not:

* ``\\d \\w \\s`` and their negations are ASCII-only in Java (unless ``(?U)``): written out as ASCII classes.
* ``.`` excludes every Java line terminator (``\\n \\r \\u0085 \\u2028 \\u2029``), not only ``\\n``; ``$`` and ``\\Z``
  also match before a final ``\\r\\n``, ``\\r``, ...; ``(?m)`` splits lines on all of them and ``(?m)^`` does not
  match at the very end; ``(?d)`` (UNIX_LINES) goes back to ``\\n`` alone.  This matters for CRLF bodies.
* ``(?i)`` folds ASCII letters only, unless ``(?u)`` or ``(?U)`` is on; ``\\b`` stays Unicode-aware, as in Java.
* inline flags (``(?i)``, ``(?-s)``, ``(?x)`` ...) may stand anywhere and last to the end of their group.
* ``(?<name>...)``, ``\\k<name>``, ``\\Q...\\E``, ``\\z``, ``\\Z``, ``\\h \\H \\v \\V \\R``, ``\\e``, ``\\cX``,
  ``\\0ooo``, ``\\x{h...}``, ``\\uD83D\\uDE00`` surrogate pairs, the POSIX classes ``\\p{Lower}`` ...
  ``\\p{Space}`` (ASCII).
* character classes: ``]`` first is literal, nested classes are unions, ``&&`` intersects, ``[^...]`` negates the
  whole class (Java 9+ semantics; Java 8 negated only the non-nested part), whitespace and ``#`` comments are
  ignored inside classes under ``(?x)``.
* ``\\12`` is read as Java reads it (the longest group number that exists so far, then literal digits); a
  reference to a group that does not exist never matches, as in Java.
* Java rejects what Python would take literally: ``{`` that starts no valid quantifier, ``{,n}``, ``(?#...)``,
  a stray ``\\E``, unknown escapes such as ``\\y``; so does this module.

Refused with an error because ``re`` has no equivalent: ``\\G``, ``\\X``, ``\\p{...}`` other than the POSIX classes
(Unicode categories, scripts, ``javaLowerCase``...), look-behind whose width varies (Python needs fixed width), a
back-reference to a group that is still open.  Possessive quantifiers (``a*+``) and atomic groups (``(?>...)``)
need Python 3.11 or later.
"""
from __future__ import annotations

import functools
import re
import sys
import unicodedata
from dataclasses import dataclass


class JavaRegexError(ValueError):
    """The pattern (or replacement) is invalid in Java, or uses a Java feature Python's ``re`` cannot run."""


_FLAGS = "idmsuxU"                       # Java's inline flag letters
_TERMINATORS = "\\n\\r\\x85\\u2028\\u2029"   # Java's line terminators, as a class body
_ASCII_SHORTHAND = {"d": "0-9", "w": "a-zA-Z_0-9", "s": " \\t\\n\\x0b\\f\\r"}
_JAVA_SHORTHAND = {"h": " \\t\\xa0\\u1680\\u180e\\u2000-\\u200a\\u202f\\u205f\\u3000",
                   "v": "\\n\\x0b\\f\\r\\x85\\u2028\\u2029"}
_POSIX = {
    "Lower": "a-z", "Upper": "A-Z", "ASCII": "\\x00-\\x7f", "Alpha": "a-zA-Z", "Digit": "0-9",
    "Alnum": "a-zA-Z0-9", "Punct": "\\x21-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7e", "Graph": "\\x21-\\x7e",
    "Print": "\\x20-\\x7e", "Blank": " \\t", "Cntrl": "\\x00-\\x1f\\x7f", "XDigit": "0-9a-fA-F",
    "Space": " \\t\\n\\x0b\\f\\r",
}
_ANY = "(?s:.)"
_NEVER = "(?!)"

# Escapes with one translation whatever the flags.  Java's \b counts Unicode letters and digits as word characters.
_FIXED_ESCAPES = {
    "A": "\\A",
    "z": "\\Z",
    "R": "(?:\\r\\n|[\\n\\x0b\\f\\r\\x85\\u2028\\u2029])",
    "b": "(?u:\\b)",
    "B": "(?u:\\B)",
}


def _escape_char(ch: str) -> str:
    """``ch`` as a literal that means itself both inside and outside a Python character class."""
    if ch.isascii() and ch.isalnum():
        return ch
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _need_python_311(feature: str, at: int) -> None:
    # Python's re learnt possessive quantifiers and atomic groups in 3.11.
    if sys.version_info < (3, 11):
        raise JavaRegexError(f"{feature} need Python 3.11 or later near index {at}")


@dataclass
class _Frame:
    saved_flags: frozenset        # the flags to restore when the group closes
    closers: int = 0              # scoped-flag groups opened inside this group, closed with it
    group: int | None = None      # capturing group number


@dataclass
class _Union:
    """Members of one operand of a Java character class: class-body text and whole one-char fragments."""

    body: str = ""
    fragments: tuple = ()

    def empty(self) -> bool:
        return not self.body and not self.fragments

    def add_body(self, text: str) -> None:
        self.body += text

    def add_fragment(self, fragment: str) -> None:
        self.fragments += (fragment,)

    def simple(self) -> bool:
        return not self.fragments

    def fragment(self) -> str:
        parts = ([f"[{self.body}]"] if self.body else []) + list(self.fragments)
        if not parts:
            return _NEVER
        return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _class_fragment(operands: list[_Union], negate: bool) -> str:
    """One Python fragment matching one character of a Java class (union of members, ``&&`` between operands)."""
    operands = [u for u in operands if not u.empty()] or [_Union()]
    if len(operands) == 1 and operands[0].simple() and operands[0].body:
        return f"[{'^' if negate else ''}{operands[0].body}]"
    fragments = [u.fragment() for u in operands]
    joined = "".join(f"(?={f})" for f in fragments[:-1]) + fragments[-1]
    if len(fragments) > 1:
        joined = f"(?:{joined})"
    return f"(?:(?!{joined}){_ANY})" if negate else joined


def _py_flags(flags: frozenset) -> str:
    """The Python scoped flags giving Java's case rule: ASCII folding unless UNICODE_CASE (u) or U is on."""
    if "i" not in flags:
        return "u-i"
    return "ui" if ("u" in flags or "U" in flags) else "ai"


class _Translator:
    """Reads a Java pattern left to right and writes the equivalent Python pattern (see the module docstring).

    It tracks what Java's parser tracks: the inline flags in force (restored when a group closes), the capturing
    groups opened so far (for back-references) and whether a quantifier may follow.
    """

    def __init__(self, pattern: str):
        self.p = pattern
        self.i = 0
        self.out: list[str] = []
        self.flags: frozenset = frozenset()
        self.frames = [_Frame(frozenset())]
        self.groups = 0
        self.names: dict[str, int] = {}
        self.open_groups: set[int] = set()
        self.can_quantify = False

    # -- helpers ------------------------------------------------------------------------------------------
    def error(self, message: str, at: int | None = None) -> JavaRegexError:
        return JavaRegexError(f"{message} near index {self.i if at is None else at}")

    def peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.p[j] if j < len(self.p) else ""

    def take(self) -> str:
        if self.i >= len(self.p):
            raise self.error("Unexpected end of pattern")
        ch = self.p[self.i]
        self.i += 1
        return ch

    def emit(self, text: str) -> None:
        self.out.append(text)

    def atom(self, text: str) -> None:
        self.emit(text)
        self.can_quantify = True

    def skip_comments_mode(self) -> bool:
        """Under (?x), skip whitespace and a #-comment; True when something was skipped."""
        ch = self.peek()
        if ch in " \t\n\x0b\f\r":
            self.i += 1
            return True
        if ch == "#":
            while self.i < len(self.p) and not self._line_end(self.p[self.i]):
                self.i += 1
            return True
        return False

    def _line_end(self, ch: str) -> bool:
        return ch == "\n" if "d" in self.flags else ch in "\n\r\x85\u2028\u2029"

    # -- main loop ----------------------------------------------------------------------------------------
    def run(self) -> str:
        while self.i < len(self.p):
            if "x" in self.flags and self.skip_comments_mode():
                continue
            self.step(self.take())
        if len(self.frames) > 1:
            raise self.error("Unclosed group", len(self.p))
        self.emit(")" * self.frames[0].closers)
        return "".join(self.out)

    def step(self, c: str) -> None:
        if c == "\\":
            self.escape()
        elif c == "[":
            self.atom(self.char_class())
        elif c == "(":
            self.open_group()
        elif c == ")":
            self.close_group()
        elif c in "*+?":
            self.quantifier(c)
        elif c == "{":
            self.brace_quantifier()
        elif c == "|":
            self.emit("|")
            self.can_quantify = False
        elif c == ".":
            self.atom(self.dot())
        elif c == "^":
            self.atom(self.caret())
        elif c == "$":
            self.atom(self.dollar())
        else:
            self.atom(_escape_char(c))

    # -- quantifiers --------------------------------------------------------------------------------------
    def quantifier(self, c: str) -> None:
        if not self.can_quantify:
            raise self.error(f"Dangling meta character '{c}'", self.i - 1)
        self.emit(c + self.quantifier_suffix())
        self.can_quantify = False

    def quantifier_suffix(self) -> str:
        if self.peek() == "?":
            self.i += 1
            return "?"
        if self.peek() == "+":
            _need_python_311("possessive quantifiers", self.i)
            self.i += 1
            return "+"
        return ""

    def brace_quantifier(self) -> None:
        start = self.i - 1
        found = re.compile(r"(\d+)(?:(,)(\d*))?\}").match(self.p, self.i)
        if not self.can_quantify or not found:
            raise self.error("Illegal repetition", start)
        low, comma, high = found.groups()
        if high and int(high) < int(low):
            raise self.error("Illegal repetition range", found.end() - 1)
        self.i = found.end()
        self.emit("{" + str(int(low)) + (comma or "") + (str(int(high)) if high else "") + "}"
                  + self.quantifier_suffix())
        self.can_quantify = False

    # -- groups and flags ---------------------------------------------------------------------------------
    def push(self, opening: str, group: int | None = None) -> None:
        self.frames.append(_Frame(self.flags, 0, group))
        if group is not None:
            self.open_groups.add(group)
        self.emit(opening)
        self.can_quantify = False

    def open_group(self) -> None:
        start = self.i - 1
        if self.peek() != "?":
            self.groups += 1
            self.push("(", self.groups)
            return
        self.i += 1
        c = self.take()
        if c == ":":
            self.push("(?:")
        elif c in "=!":
            self.push("(?" + c)
        elif c == ">":
            _need_python_311("atomic groups", start)
            self.push("(?>")
        elif c == "<":
            self.angle_group()
        elif c in _FLAGS or c == "-":
            self.i -= 1
            self.inline_flags()
        else:
            raise self.error("Unknown inline modifier", self.i - 1)

    def angle_group(self) -> None:
        c = self.take()
        if c in "=!":
            self.push("(?<" + c)
            return
        if not (c.isascii() and c.isalpha()):
            raise self.error("Unknown look-behind group", self.i - 1)
        name = c + self.read_name_rest()
        if name in self.names:
            raise self.error(f"Named capturing group <{name}> is already defined", self.i - 1)
        self.groups += 1
        self.names[name] = self.groups
        self.push(f"(?P<{name}>", self.groups)

    def read_name_rest(self) -> str:
        name = ""
        while self.peek().isascii() and self.peek().isalnum():
            name += self.take()
        if self.take() != ">":
            raise self.error("named capturing group is missing trailing '>'", self.i - 1)
        return name

    def inline_flags(self) -> None:
        on, off, negative = set(), set(), False
        while True:
            c = self.take()
            if c in _FLAGS:
                (off if negative else on).add(c)
            elif c == "-" and not negative:
                negative = True
            elif c in "):":
                break
            else:
                raise self.error("Unknown inline modifier", self.i - 1)
        new = frozenset((self.flags | on) - off)
        if c == ":":
            self.push("(?:" if _py_flags(new) == _py_flags(self.flags) else f"(?{_py_flags(new)}:")
        elif _py_flags(new) != _py_flags(self.flags):
            # Java's (?i) lasts to the end of the enclosing group; Python wants a scoped group for that.
            self.emit(f"(?{_py_flags(new)}:")
            self.frames[-1].closers += 1
            self.can_quantify = False
        self.flags = new

    def close_group(self) -> None:
        if len(self.frames) == 1:
            raise self.error("Unmatched closing ')'", self.i - 1)
        frame = self.frames.pop()
        self.emit(")" * frame.closers + ")")
        self.flags = frame.saved_flags
        self.open_groups.discard(frame.group)
        self.can_quantify = True

    # -- anchors and dot ----------------------------------------------------------------------------------
    def dot(self) -> str:
        if "s" in self.flags:
            return _ANY
        return "[^\\n]" if "d" in self.flags else f"[^{_TERMINATORS}]"

    def caret(self) -> str:
        if "m" not in self.flags:
            return "^"
        # Java: after any line terminator but not between \r and \n, and never at the end of the input.
        if "d" in self.flags:
            return "(?:\\A|(?<=\\n))(?=[\\s\\S])"
        return f"(?:\\A|(?<=[{_TERMINATORS}]))(?!(?<=\\r)\\n)(?=[\\s\\S])"

    def dollar(self) -> str:
        if "m" in self.flags:
            if "d" in self.flags:
                return "(?=\\n|\\Z)"
            return "(?=(?<!\\r)\\n|[\\r\\x85\\u2028\\u2029]|\\Z)"
        return self.end_anchor()

    def end_anchor(self) -> str:
        """Java's non-multiline ``$`` and ``\\Z``: the end, or before one final line terminator."""
        if "d" in self.flags:
            return "(?=\\n?\\Z)"
        return "(?=(?:\\r\\n|(?<!\\r)\\n|[\\r\\x85\\u2028\\u2029])?\\Z)"

    # -- escapes ------------------------------------------------------------------------------------------
    def escape(self) -> None:
        start = self.i - 1
        if self.i >= len(self.p):
            raise self.error("Unexpected internal error", self.i)
        c = self.take()
        if c in _FIXED_ESCAPES:
            self.atom(_FIXED_ESCAPES[c])
        elif c in "123456789":
            self.backref(int(c))
        elif c == "Q":
            for ch in self.quoted():
                self.atom(_escape_char(ch))
        elif c in "dDwWsShHvV":
            self.atom(self.shorthand(c))
        elif c == "Z":
            self.atom(self.end_anchor())
        elif c == "k":
            self.named_backref()
        elif c in "pP":
            body = self.property_class(start)
            self.atom(f"[^{body}]" if c == "P" else f"[{body}]")
        elif c in "GX":
            raise self.error(f"\\{c} is not supported by Python's re", start)
        else:
            self.atom(_escape_char(self.escaped_char(c, start)))

    def shorthand(self, c: str) -> str:
        if c in "hHvV":                     # Java's horizontal/vertical whitespace, whatever the flags
            body = _JAVA_SHORTHAND[c.lower()]
        elif "U" in self.flags:
            return "\\" + c                 # UNICODE_CHARACTER_CLASS: Python's own Unicode classes
        else:
            body = _ASCII_SHORTHAND[c.lower()]
        return f"[^{body}]" if c.isupper() else f"[{body}]"

    def backref(self, number: int) -> None:
        # Java: further digits belong to the reference only while the number names a group opened so far.
        while self.peek().isdigit() and number * 10 + int(self.peek()) <= self.groups:
            number = number * 10 + int(self.take())
        self.emit_backref(number, f"\\{number}")

    def named_backref(self) -> None:
        if self.take() != "<":
            raise self.error("\\k is not followed by '<' for named capturing group", self.i - 1)
        c = self.take()
        if not (c.isascii() and c.isalpha()):
            raise self.error("capturing group name does not start with a Latin letter", self.i - 1)
        name = c + self.read_name_rest()
        if name not in self.names:
            raise self.error(f"named capturing group <{name}> does not exist", self.i - 1)
        self.emit_backref(self.names[name], f"(?P={name})")

    def emit_backref(self, number: int, python: str) -> None:
        if number > self.groups:
            self.atom(_NEVER)                # Java compiles it; a group that does not exist never matches
        elif number in self.open_groups:
            raise self.error(f"a back-reference to group {number} inside that group is not supported by "
                             "Python's re")
        else:
            self.atom(f"(?:{python})")

    def quoted(self) -> str:
        end = self.p.find("\\E", self.i)
        end = len(self.p) if end < 0 else end
        text = self.p[self.i:end]
        self.i = min(end + 2, len(self.p))
        return text

    def property_class(self, start: int) -> str:
        if self.peek() == "{":
            close = self.p.find("}", self.i)
            if close < 0:
                raise self.error("Unclosed character family", len(self.p))
            name = self.p[self.i + 1:close]
            self.i = close + 1
        else:
            name = self.take()
        if name in _POSIX and "U" not in self.flags:
            return _POSIX[name]             # (\p{IsAlpha} is Unicode's Alphabetic property, not POSIX)
        raise self.error(f"\\p{{{name}}} is not supported by Python's re (supported: the POSIX classes "
                         + ", ".join(f"\\p{{{n}}}" for n in _POSIX) + ")", start)

    def escaped_char(self, c: str, start: int) -> str:
        """The single character written as ``\\`` + ``c`` + what follows (Java's escapes for one character)."""
        simple = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "a": "\x07", "e": "\x1b"}
        if c in simple:
            return simple[c]
        if c == "0":
            return self.octal()
        if c == "c":
            return chr(ord(self.take()) ^ 64)
        if c == "x":
            return self.hex_escape()
        if c == "u":
            return self.unicode_escape()
        if c == "N":
            return self.named_char(start)
        if c.isascii() and c.isalnum():
            raise self.error("Illegal/unsupported escape sequence", self.i - 1)
        return c

    def octal(self) -> str:
        digits = ""
        while len(digits) < 3 and self.peek() and self.peek() in "01234567":
            if len(digits) == 2 and digits[0] > "3":
                break
            digits += self.take()
        if not digits:
            raise self.error("Illegal octal escape sequence", self.i)
        return chr(int(digits, 8))

    def hex_escape(self) -> str:
        if self.peek() == "{":
            close = self.p.find("}", self.i)
            digits = self.p[self.i + 1:close] if close > 0 else ""
            if not re.fullmatch(r"[0-9a-fA-F]{1,8}", digits) or int(digits, 16) > 0x10FFFF:
                raise self.error("Illegal hexadecimal escape sequence", self.i)
            self.i = close + 1
            return chr(int(digits, 16))
        digits = self.p[self.i:self.i + 2]
        if not re.fullmatch(r"[0-9a-fA-F]{2}", digits):
            raise self.error("Illegal hexadecimal escape sequence", self.i)
        self.i += 2
        return chr(int(digits, 16))

    def unicode_escape(self) -> str:
        digits = self.p[self.i:self.i + 4]
        if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
            raise self.error("Illegal Unicode escape sequence", self.i)
        self.i += 4
        code = int(digits, 16)
        low = re.compile(r"\\u(d[c-f][0-9a-f]{2})", re.IGNORECASE).match(self.p, self.i)
        if 0xD800 <= code <= 0xDBFF and low:
            # Java reads \\uD83D\\uDE00 as one code point (its strings are UTF-16).
            self.i = low.end()
            return chr(0x10000 + ((code - 0xD800) << 10) + (int(low.group(1), 16) - 0xDC00))
        return chr(code)

    def named_char(self, start: int) -> str:
        close = self.p.find("}", self.i)
        if self.peek() != "{" or close < 0:
            raise self.error("Unclosed character name escape sequence", self.i)
        name = self.p[self.i + 1:close]
        self.i = close + 1
        try:
            return unicodedata.lookup(name)
        except KeyError:
            raise self.error(f"Unknown character name [{name}]", start) from None

    # -- character classes --------------------------------------------------------------------------------
    def char_class(self) -> str:
        """Translate a Java class; ``self.i`` is just after its ``[``.  Returns a one-character fragment."""
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        operands: list[_Union] = []
        union = _Union()
        while True:
            if self.i >= len(self.p):
                raise self.error("Unclosed character class", len(self.p) - 1)
            if "x" in self.flags and self.skip_comments_mode():
                continue
            c = self.take()
            if c == "]" and (not union.empty() or operands):
                break
            if c == "[":
                union.add_fragment(self.char_class())
            elif c == "&" and self.peek() == "&":
                self.i += 1
                operands.append(union)
                union = _Union()
            elif c == "\\":
                self.class_escape(union)
            else:
                self.class_member(union, c)
        operands.append(union)
        return _class_fragment(operands, negate)

    def class_escape(self, union: _Union) -> None:
        start = self.i - 1
        c = self.take()
        if c in "dDwWsS":
            if "U" in self.flags:
                union.add_body("\\" + c)
            elif c.islower():
                union.add_body(_ASCII_SHORTHAND[c])
            else:
                union.add_fragment(f"[^{_ASCII_SHORTHAND[c.lower()]}]")
        elif c in "hHvVpP":
            body = _JAVA_SHORTHAND[c.lower()] if c in "hHvV" else self.property_class(start)
            if c.isupper():
                union.add_fragment(f"[^{body}]")    # a negated set cannot sit inside a Python class
            else:
                union.add_body(body)
        elif c == "Q":
            for ch in self.quoted():
                union.add_body(_escape_char(ch))
        else:
            self.class_member(union, self.escaped_char(c, start))

    def class_member(self, union: _Union, ch: str) -> None:
        """A single character, or a range if ``-`` and an end character follow."""
        if self.peek() == "-" and self.peek(1) not in ("]", "[", ""):
            self.i += 1
            end_start = self.i
            end = self.take()
            if end == "\\":
                c = self.take()
                if c in "dDwWsShHvVpPQ":
                    raise self.error("Illegal character range", end_start)
                end = self.escaped_char(c, end_start)
            if end < ch:
                raise self.error("Illegal character range", self.i - 1)
            union.add_body(f"{_escape_char(ch)}-{_escape_char(end)}")
            return
        union.add_body(_escape_char(ch))


@functools.lru_cache(maxsize=256)
def translate(pattern: str) -> str:
    """The Python ``re`` pattern equivalent to Java pattern ``pattern``; raises :class:`JavaRegexError`."""
    return _Translator(pattern).run()


@functools.lru_cache(maxsize=256)
def compile_java(pattern: str) -> re.Pattern:
    """Compile a Java pattern for Python; raises :class:`JavaRegexError` naming what is wrong."""
    python = translate(pattern)
    try:
        return re.compile(python)
    except re.error as exc:
        raise JavaRegexError(f"{exc.msg} (Python's re cannot run this Java pattern)") from None


def check(pattern: str | None) -> str | None:
    """An option check: the error text for a bad Java pattern, else None."""
    if pattern is None:
        return None
    try:
        compile_java(pattern)
    except JavaRegexError as exc:
        return f"invalid regular expression: {exc}"
    return None


def check_non_empty(pattern: str) -> str | None:
    """As :func:`check`, and the pattern must not be empty (Flume: "Must supply a valid regex string")."""
    return "must not be empty" if not pattern else check(pattern)


# --- replacement strings (Matcher.replaceAll) --------------------------------------------------------------

@dataclass(frozen=True)
class Replacement:
    """A parsed Java replacement string: literal text and group numbers, in order."""

    parts: tuple

    def expand(self, match: re.Match) -> str:
        # A group that did not take part in the match adds nothing, as in Java.
        return "".join(p if isinstance(p, str) else (match.group(p) or "") for p in self.parts)


def parse_replacement(replacement: str, pattern: re.Pattern) -> Replacement:
    """Parse ``replacement`` as Java's ``Matcher.replaceAll`` does: ``$n``, ``${name}``, ``\\x`` = literal x.

    Java raises these errors only when a match is found; they are raised here up front, with Java's messages.
    """
    parts: list = []
    literal = ""
    i = 0
    while i < len(replacement):
        c = replacement[i]
        if c == "\\":
            if i + 1 == len(replacement):
                raise JavaRegexError("character to be escaped is missing")
            literal += replacement[i + 1]
            i += 2
        elif c == "$":
            number, i = _group_reference(replacement, i + 1, pattern)
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(number)
        else:
            literal += c
            i += 1
    if literal:
        parts.append(literal)
    return Replacement(tuple(parts))


def _group_reference(text: str, i: int, pattern: re.Pattern) -> tuple[int, int]:
    """The group number referenced after a ``$`` at ``i``, and the index after the reference."""
    if i == len(text):
        raise JavaRegexError("Illegal group reference: group index is missing")
    if text[i] == "{":
        name = re.compile(r"[A-Za-z0-9]*").match(text, i + 1).group()
        end = i + 1 + len(name)
        if not name:
            raise JavaRegexError("named capturing group has 0 length name")
        if end >= len(text) or text[end] != "}":
            raise JavaRegexError("named capturing group is missing trailing '}'")
        if name[0].isdigit():
            raise JavaRegexError(f"capturing group name {{{name}}} starts with digit character")
        if name not in pattern.groupindex:
            raise JavaRegexError(f"No group with name {{{name}}}")
        return pattern.groupindex[name], end + 1
    if not ("0" <= text[i] <= "9"):
        raise JavaRegexError("Illegal group reference")
    number = int(text[i])
    i += 1
    # Java: the first digit always belongs to the reference, further digits while the group exists.
    while i < len(text) and "0" <= text[i] <= "9" and number * 10 + int(text[i]) <= pattern.groups:
        number = number * 10 + int(text[i])
        i += 1
    if number > pattern.groups:
        raise JavaRegexError(f"No group {number}")
    return number, i


def replace_all(pattern: re.Pattern, replacement: Replacement, text: str) -> str:
    """Java's ``Matcher.replaceAll`` (Python 3.7+ handles empty matches next to others as Java does)."""
    return pattern.sub(replacement.expand, text)


def split(pattern: re.Pattern, text: str) -> list[str]:
    """Java's ``String.split(regex)``: no leading empty string from a zero-width match, no trailing empties."""
    pieces: list[str] = []
    index = 0
    for match in pattern.finditer(text):
        if index == 0 and match.start() == 0 and match.end() == 0:
            continue
        pieces.append(text[index:match.start()])
        index = match.end()
    if not pieces and index == 0:
        return [text]
    pieces.append(text[index:])
    while pieces and pieces[-1] == "":
        pieces.pop()
    return pieces
