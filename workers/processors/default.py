"""``default``: Flume's DefaultSinkProcessor, a single sink (what every sink outside a sink group runs in)."""
from __future__ import annotations

from dataclasses import dataclass

from workers.processors.base import SinkProcessor


@dataclass(frozen=True)
class DefaultProcessorConfig:
    pass


class DefaultSinkProcessor(SinkProcessor):
    Config = DefaultProcessorConfig

    @classmethod
    def check(cls, config, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        if len(refs) > 1:
            return [("type", f"the default processor runs exactly one sink (group has {len(refs)}); "
                             "use failover or load_balance")]
        return []

    def write(self, batch):
        sink = self.sinks[0]
        sink.write(batch)
        return sink
