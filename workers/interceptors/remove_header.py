"""``remove_header``: Flume's RemoveHeaderInterceptor, removes headers by name, by list or by regex.

Properties, as in Flume, all optional: ``withName`` (one header name), ``fromList`` (names split by the Java regex
``fromListSeparator``, default ``\\s*,\\s*``, as Java's ``String.split``) and ``matching`` (a Java regex that must
match the *whole* header name).  With none of them, events pass unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

from core import java_regex
from core.event import Event
from core.options import opt
from workers.interceptors.base import Interceptor, InterceptorContext

DEFAULT_SEPARATOR = r"\s*,\s*"


@dataclass(frozen=True)
class RemoveHeaderConfig:
    with_name: str | None = opt("withName", None, doc="a header to remove")
    from_list: str | None = opt("fromList", None, doc="headers to remove, split by fromListSeparator")
    from_list_separator: str = opt("fromListSeparator", DEFAULT_SEPARATOR, check=java_regex.check,
                                   doc="Java regex separating the names of fromList")
    matching: str | None = opt("matching", None, check=java_regex.check,
                               doc="Java regex: headers whose whole name matches are removed")


class RemoveHeaderInterceptor(Interceptor):
    Config = RemoveHeaderConfig

    def __init__(self, name: str, config: RemoveHeaderConfig, context: InterceptorContext):
        super().__init__(name, config, context)
        separator = java_regex.compile_java(config.from_list_separator)
        self.names = set() if config.from_list is None else set(java_regex.split(separator, config.from_list))
        if config.with_name is not None:
            self.names.add(config.with_name)
        self.matching = None if config.matching is None else java_regex.compile_java(config.matching)

    def removes(self, header: str) -> bool:
        return header in self.names or (self.matching is not None and self.matching.fullmatch(header) is not None)

    def intercept(self, event: Event) -> Event:
        kept = {k: v for k, v in event.headers.items() if not self.removes(k)}
        return event if len(kept) == len(event.headers) else event._replace(headers=kept)
