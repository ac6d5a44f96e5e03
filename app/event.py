"""The event: Flume's ``{headers: map<string,string>, body: bytes}``.

Bodies are bytes from the source to the store (binary-safe, never decoded in between); headers are ``str -> str``.
On the wire a batch of events is a list of ``[headers, body]`` pairs inside a msgpack-serialized Celery task
message (see :mod:`routing.transport`); msgpack keeps ``bytes`` and ``str`` apart, so nothing is re-encoded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True, slots=True)
class Event:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def with_headers(self, **extra: str) -> "Event":
        """A copy with ``extra`` headers set (events are shared between channels, so never mutate one)."""
        return Event(self.body, {**self.headers, **extra})


def to_wire(events: Iterable[Event]) -> list[list]:
    return [[e.headers, e.body] for e in events]


def from_wire(pairs: Iterable[list]) -> list[Event]:
    """Inverse of :func:`to_wire`; raises ValueError on anything that is not a list of [dict, bytes]."""
    events = []
    for pair in pairs:
        try:
            headers, body = pair
        except (TypeError, ValueError):
            raise ValueError(f"malformed event on the wire: {pair!r:.80}") from None
        if not isinstance(headers, dict) or not isinstance(body, (bytes, bytearray)):
            raise ValueError(f"malformed event on the wire: {pair!r:.80}")
        events.append(Event(bytes(body), headers))
    return events
