"""``uuid``: Flume's morphline UUIDInterceptor, a random UUID in a header (the event's id).

Flume ships it in the morphline Solr sink module with no short alias
(``org.apache.flume.sink.solr.morphline.UUIDInterceptor$Builder``); Flumery also accepts ``uuid``.  Properties, as
in Flume: ``headerName`` (``id``), ``preserveExisting`` (true) and ``prefix`` (empty, put before the UUID).
The value is a random (version 4) UUID in lower-case hex, as Java's ``UUID.randomUUID().toString()``.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from core.event import Event
from core.options import opt
from workers.interceptors.base import HeaderInterceptor


@dataclass(frozen=True)
class UUIDConfig:
    header_name: str = opt("headerName", "id", doc="the header that receives the UUID")
    preserve_existing: bool = opt("preserveExisting", True, doc="keep the header if the event already has it")
    prefix: str = opt("prefix", "", doc="text put before the UUID")


class UUIDInterceptor(HeaderInterceptor):
    Config = UUIDConfig

    @property
    def header(self) -> str:
        return self.config.header_name

    def value(self, event: Event) -> str:
        return self.config.prefix + str(uuid.uuid4())
