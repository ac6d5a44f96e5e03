"""Base class of sink processors (Flume's sink groups).

Contract: ``write(batch)`` writes the batch through one of the group's sinks, chosen by the processor's
policy, and returns only when a sink confirmed it; if no sink could, it raises and the batch stays in its
channel, unacknowledged.
"""
from __future__ import annotations


class SinkProcessor:
    Config: type

    def __init__(self, name: str, config, sinks: list):
        self.name = name
        self.config = config
        self.sinks = sinks

    @staticmethod
    def check_sinks(config, sinks: list[str]) -> list[tuple[str, str]]:
        """(property, message) for each problem with the group's sink list."""
        return []

    @property
    def batch_size(self) -> int:
        return max(s.batch_size for s in self.sinks)

    def write(self, batch):
        """Write ``batch`` through one sink; return that sink.  Raise if none could write."""
        raise NotImplementedError
