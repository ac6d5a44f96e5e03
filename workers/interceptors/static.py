"""``static``: Flume's StaticInterceptor, one fixed header on every event.

Properties, as in Flume: ``key`` (``key``), ``value`` (``value``) and ``preserveExisting`` (**true**, unlike the
timestamp and host interceptors: a header already on the event is kept).
"""
from __future__ import annotations

from dataclasses import dataclass

from core.event import Event
from core.options import opt
from workers.interceptors.base import HeaderInterceptor


@dataclass(frozen=True)
class StaticConfig:
    key: str = opt("key", "key", doc="the header name")
    value: str = opt("value", "value", doc="the header value")
    preserve_existing: bool = opt("preserveExisting", True, doc="keep the header if the event already has it")


class StaticInterceptor(HeaderInterceptor):
    Config = StaticConfig

    @property
    def header(self) -> str:
        return self.config.key

    def value(self, event: Event) -> str:
        return self.config.value
