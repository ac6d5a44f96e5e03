"""``seq``: Flume's SequenceGeneratorSource, for tests and demos.

Emits events whose body is the decimal counter ``0, 1, 2, ...`` in batches of ``batchSize`` until
``totalEvents`` were delivered, then idles.  It starts again from 0 when the agent restarts, as Flume's does.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.event import Batch
from core.options import non_negative, opt, positive
from workers.sources.base import Source

LONG_MAX = 2**63 - 1


@dataclass(frozen=True)
class SeqConfig:
    batch_size: int = opt("batchSize", 1, check=positive, doc="events per put")
    total_events: int = opt("totalEvents", LONG_MAX, check=non_negative, doc="events to emit, then idle")


class SeqSource(Source):
    Config = SeqConfig

    def serve(self) -> None:
        sent = 0
        total, step = self.config.total_events, self.config.batch_size
        while sent < total and not self.stopping.is_set():
            n = min(step, total - sent)
            if not self.deliver(Batch([str(i).encode() for i in range(sent, sent + n)])):
                return
            sent += n
