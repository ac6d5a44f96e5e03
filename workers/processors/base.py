"""Base class of sink processors (Flume's sink groups).

Contract: ``write(batch)`` writes the batch through one of the group's sinks, chosen by the processor's
policy, and returns only when a sink confirmed it; if no sink could, it raises and the batch stays in its
channel, unacknowledged.  Built as ``SinkProcessor(name, config, ProcessorContext(sinks))``; its ``check``
hook gets the group's sink names as ``refs``.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.component import Component


@dataclass(frozen=True)
class ProcessorContext:
    """What a sink processor gets: the group's sinks, built, in the order the group lists them."""

    sinks: list


class SinkProcessor(Component):
    def __init__(self, name: str, config, context: ProcessorContext):
        super().__init__(name, config, context)
        self.sinks = list(context.sinks)

    @property
    def batch_size(self) -> int:
        return max(s.batch_size for s in self.sinks)

    def write(self, batch):
        """Write ``batch`` through one sink; return that sink.  Raise if none could write."""
        raise NotImplementedError
