"""Base class of interceptors.

Contract: ``intercept_batch(events)`` returns the events to keep, in order, possibly changed (as new
:class:`~core.event.Event` objects: an event may be shared, so never mutate one) and possibly fewer.  It runs in
the source's process before the channel selector, as Flume's interceptor chain does, and must not block.
Built as ``Interceptor(name, config, InterceptorContext(agent, source))``.

:class:`HeaderInterceptor` is the base of the interceptors that set one header (timestamp, host, static, uuid):
they say which header and what value; it applies Flume's ``preserveExisting`` rule once for all of them.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.component import Component
from core.event import Event


@dataclass(frozen=True)
class InterceptorContext:
    """What an interceptor gets: the agent and the source whose chain it belongs to."""

    agent: str = ""
    source: str = ""


class Interceptor(Component):

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


class HeaderInterceptor(Interceptor):
    """Sets one header on every event; an event that has it already keeps it when ``preserve_existing``.

    Subclasses give :attr:`header` (the header's name) and :meth:`value`; their config has a
    ``preserve_existing`` field (Flume's ``preserveExisting``, whose default differs by interceptor).
    """

    @property
    def header(self) -> str:
        raise NotImplementedError

    def value(self, event: Event) -> str | None:
        """The header's value for ``event``; None leaves the event as it is."""
        raise NotImplementedError

    def intercept(self, event: Event) -> Event:
        header = self.header
        if self.config.preserve_existing and header in event.headers:
            return event
        value = self.value(event)
        if value is None:
            return event
        return event._replace(headers={**event.headers, header: value})
