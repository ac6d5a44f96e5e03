"""``regex_filter``: Flume's RegexFilteringInterceptor, keeps or drops events by a regex on the body.

Properties, as in Flume: ``regex`` (``.*``) and ``excludeEvents`` (false: keep the events the regex is found in;
true: drop them).  The regex is *searched for* in the body (Java ``Matcher.find()``), not matched against all
of it.  The body is read as UTF-8 (Flume uses the JVM's default charset, UTF-8 on a usual Linux); bytes that
are not UTF-8 read as U+FFFD.  The regex is Java's syntax: see :mod:`core.java_regex`.
"""
from __future__ import annotations

from dataclasses import dataclass

from core import java_regex
from core.event import Event
from core.options import opt
from workers.interceptors.base import Interceptor, InterceptorContext


@dataclass(frozen=True)
class RegexFilterConfig:
    regex: str = opt("regex", ".*", check=java_regex.check, doc="Java regex searched for in the body")
    exclude_events: bool = opt("excludeEvents", False, doc="drop the events it is found in (else keep only them)")


class RegexFilteringInterceptor(Interceptor):
    Config = RegexFilterConfig

    def __init__(self, name: str, config: RegexFilterConfig, context: InterceptorContext):
        super().__init__(name, config, context)
        self.pattern = java_regex.compile_java(config.regex)

    def intercept(self, event: Event) -> Event | None:
        found = self.pattern.search(event.body.decode("utf-8", "replace")) is not None
        return event if found != self.config.exclude_events else None
