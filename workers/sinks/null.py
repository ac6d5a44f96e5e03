"""``null``: Flume's NullSink, discards every event (for benchmarks and for testing a flow's upstream)."""
from __future__ import annotations

from dataclasses import dataclass

from core.options import opt, positive
from workers.sinks.base import Sink


@dataclass(frozen=True)
class NullConfig:
    batch_size: int = opt("batchSize", 100, check=positive, doc="events taken per transaction")


class NullSink(Sink):
    Config = NullConfig

    def write(self, batch) -> None:
        pass
