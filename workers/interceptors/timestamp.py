"""``timestamp``: Flume's TimestampInterceptor, the interception time (epoch milliseconds) in a header.

Properties, as in Flume: ``headerName`` (``timestamp``) and ``preserveExisting`` (false: a header already on the
event is replaced).  The value is ``System.currentTimeMillis()`` as a decimal string, taken per event.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from core.event import Event
from core.options import opt
from workers.interceptors.base import HeaderInterceptor


@dataclass(frozen=True)
class TimestampConfig:
    header_name: str = opt("headerName", "timestamp", doc="the header that receives the time in ms")
    preserve_existing: bool = opt("preserveExisting", False, doc="keep the header if the event already has it")


class TimestampInterceptor(HeaderInterceptor):
    Config = TimestampConfig

    @property
    def header(self) -> str:
        return self.config.header_name

    def value(self, event: Event) -> str:
        return str(time.time_ns() // 1_000_000)
