"""Base class of interceptors.

Contract: ``intercept_batch(events)`` returns the events to keep, in order, possibly changed (as new
:class:`~core.event.Event` objects: an event may be shared, so never mutate one) and possibly fewer.  It runs in
the source's process before the channel selector, as Flume's interceptor chain does, and must not block.
"""
from __future__ import annotations


class Interceptor:
    Config: type

    def __init__(self, name: str, config):
        self.name = name
        self.config = config

    def intercept(self, event):
        """One event in, the event to keep (or None to drop it) out."""
        raise NotImplementedError

    def intercept_batch(self, events: list) -> list:
        out = []
        for event in events:
            kept = self.intercept(event)
            if kept is not None:
                out.append(kept)
        return out
