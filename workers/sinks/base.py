"""Base class of sinks.

Contract for every sink: ``write(batch)`` returns only after the store confirmed every event of the batch
durably (file_roll: written and fsynced).  On any failure it raises; the batch is then still unacknowledged in
its channel and is written again later, so a store sees a batch at least once.  Where the store can take a key,
a sink should make a repeated write an overwrite.  A sink instance is used by one thread at a time; ``start``
is called before the first write and ``stop`` after the last.  A batch (:class:`core.event.Batch`) iterates as
events and also offers ``batch.bodies``, the list of bodies, for sinks that write bodies only.  Built as
``Sink(name, config, SinkContext(agent, data_dir, metrics))``.

Counters: the runner counts drains, batches and failed writes.  A sink that talks to a store counts its own
connection counters (``ConnectionCreatedCount``, ``ConnectionFailedCount``, ``ConnectionClosedCount``) on
``self.counters``, which counts nowhere when the context has no metrics store (unit tests).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.component import Component


@dataclass(frozen=True)
class SinkContext:
    """What a sink gets: its agent, the data directory for state it keeps on disk, and the process's metrics
    store (anything with ``group(kind, name)``; None counts nowhere)."""

    agent: str
    data_dir: Path
    metrics: Any = None


class _NoCounters:
    def add(self, counter: str, n: int = 1) -> None:
        pass


class Sink(Component):

    @property
    def batch_size(self) -> int:
        """Events the runner gathers from the channel for one write (Flume's batchSize)."""
        return getattr(self.config, "batch_size", 100)

    @property
    def counters(self):
        """This sink's counters (``add(name, n)``), shared with the runner's counts of it."""
        metrics = getattr(self.context, "metrics", None)
        return metrics.group("SINK", self.name) if metrics is not None else _NoCounters()

    def start(self) -> None:
        """Prepare to write.  Should not fail because the store is unreachable (connect in ``write`` instead):
        a sink that cannot start is retried before each write, and its writes fail meanwhile."""

    def write(self, batch) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Close what ``start`` opened; called once, after the last write."""
