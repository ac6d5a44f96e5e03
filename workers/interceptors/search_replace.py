"""``search_replace``: Flume's SearchAndReplaceInterceptor, Java ``replaceAll`` on the body.

Properties, as in Flume: ``searchPattern`` (required, a Java regex), ``replaceString`` (empty when missing; Java
replacement syntax: ``$1``, ``${name}``, and ``\\`` makes the next character literal, so ``\\$`` is a dollar) and
``charset`` (``UTF-8``) used to read the body and to write it back.  Bytes the charset cannot read become U+FFFD
and characters it cannot write become ``?``, as in Java.  A replacement that refers to a group the pattern does
not have is a configuration error here; Flume fails on every matching event instead.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass

from core import java_regex
from core.event import Event
from core.options import opt
from workers.interceptors.base import Interceptor, InterceptorContext


def check_charset(name: str) -> str | None:
    try:
        codecs.lookup(name)
        "".encode(name)               # rejects Python's bytes-to-bytes codecs (hex, zlib, ...)
    except LookupError as exc:
        return f"not a known charset ({exc})"
    return None


class JavaCharset:
    """Decode and encode as Java's ``new String(bytes, cs)`` and ``getBytes(cs)`` do.

    Java's UTF-16 and UTF-32 read a byte-order mark if there is one and are big-endian otherwise; UTF-16 writes
    a big-endian mark first, UTF-32 writes none.  Python's own ``utf-16``/``utf-32`` default to the machine's
    byte order, so those two are handled here.
    """

    def __init__(self, name: str):
        self.codec = codecs.lookup(name).name

    def decode(self, data: bytes) -> str:
        if self.codec in ("utf-16", "utf-32"):
            width = 2 if self.codec == "utf-16" else 4
            for bom, codec in ((codecs.BOM_UTF16_BE if width == 2 else codecs.BOM_UTF32_BE, "be"),
                               (codecs.BOM_UTF16_LE if width == 2 else codecs.BOM_UTF32_LE, "le")):
                if data.startswith(bom):
                    return data[len(bom):].decode(f"{self.codec}-{codec}", "replace")
            return data.decode(f"{self.codec}-be", "replace")
        return data.decode(self.codec, "replace")

    def encode(self, text: str) -> bytes:
        if self.codec == "utf-16":
            return codecs.BOM_UTF16_BE + text.encode("utf-16-be", "replace")
        if self.codec == "utf-32":
            return text.encode("utf-32-be", "replace")
        return text.encode(self.codec, "replace")


@dataclass(frozen=True)
class SearchReplaceConfig:
    search_pattern: str = opt("searchPattern", check=java_regex.check_non_empty, doc="Java regex to replace")
    replace_string: str = opt("replaceString", "", doc="Java replacement text ($1, ${name}, \\$ for a dollar)")
    charset: str = opt("charset", "UTF-8", check=check_charset, doc="charset of the body")

    def problems(self) -> list[tuple[str, str]]:
        try:
            java_regex.parse_replacement(self.replace_string, java_regex.compile_java(self.search_pattern))
        except java_regex.JavaRegexError as exc:
            return [("replaceString", f"{exc} (got '{self.replace_string}')")]
        return []


class SearchAndReplaceInterceptor(Interceptor):
    Config = SearchReplaceConfig

    @classmethod
    def check(cls, config, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        return config.problems()

    def __init__(self, name: str, config: SearchReplaceConfig, context: InterceptorContext):
        super().__init__(name, config, context)
        self.pattern = java_regex.compile_java(config.search_pattern)
        self.replacement = java_regex.parse_replacement(config.replace_string, self.pattern)
        self.charset = JavaCharset(config.charset)

    def intercept(self, event: Event) -> Event:
        text = self.charset.decode(event.body)
        body = self.charset.encode(java_regex.replace_all(self.pattern, self.replacement, text))
        # Flume always re-encodes the body; here too (a body that is not valid text changes even without a match).
        return event._replace(body=body)
