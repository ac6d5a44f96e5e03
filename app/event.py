"""The event: Flume's ``{headers: map<string,string>, body: bytes}``.

Bodies are bytes from the source to the store (binary-safe, never decoded in between); headers are ``str -> str``.
An event is immutable: a tuple whose headers mapping must not be changed in place (an event can sit in several
channels' batches at once); interceptors make new events with :meth:`Event.with_headers` or ``Event(body, h)``.

On the wire a batch is columnar: the task message of a channel carries ``(bodies, headers)``, a list of bodies and
a parallel list of header maps, or ``None`` when no event has headers (the common case for raw log lines, where it
saves a million empty maps per million events).  msgpack keeps ``bytes`` and ``str`` apart, so nothing is
re-encoded.  A :class:`Batch` is that pair as an object: sources hand batches to the channel processor (a source
reading raw lines never builds an event object per line), and sinks receive batches, which iterate as events and
also expose ``bodies`` directly.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple


class FrozenHeaders(dict):
    """A dict that refuses changes: the shared headers of events that have none."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("event headers are immutable; build a new Event instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse


NO_HEADERS: Mapping[str, str] = FrozenHeaders()


class Event(NamedTuple):
    body: bytes
    headers: Mapping[str, str] = NO_HEADERS

    def with_headers(self, **extra: str) -> "Event":
        """A copy with ``extra`` headers set."""
        return Event(self.body, {**self.headers, **extra})


def to_wire(events: list[Event]) -> tuple[list[bytes], list | None]:
    """The batch as a channel message carries it: ``(bodies, headers or None)``."""
    bodies = [e.body for e in events]
    headers = [e.headers for e in events]
    return bodies, (headers if any(headers) else None)


class Batch:
    """The events of one take, columnar.  Iterating yields :class:`Event` objects."""

    __slots__ = ("bodies", "headers")

    def __init__(self, bodies: list[bytes], headers: list | None = None):
        self.bodies = bodies
        self.headers = headers

    @classmethod
    def from_events(cls, events: list[Event]) -> "Batch":
        return cls(*to_wire(events))

    @classmethod
    def from_wire(cls, bodies, headers) -> "Batch":
        """Validate a batch received from a channel; raise ValueError if it is malformed."""
        if not isinstance(bodies, list) or not all(type(b) is bytes for b in bodies):
            raise ValueError(f"malformed batch: bodies must be a list of bytes (got {bodies!r:.80})")
        if headers is not None:
            if not isinstance(headers, list) or len(headers) != len(bodies):
                raise ValueError("malformed batch: headers must be a list as long as the bodies")
            for h in headers:
                if not isinstance(h, dict) or not all(type(k) is str and type(v) is str for k, v in h.items()):
                    raise ValueError(f"malformed batch: headers must map str to str (got {h!r:.80})")
        return cls(bodies, headers)

    def __len__(self) -> int:
        return len(self.bodies)

    def __getitem__(self, span: slice) -> "Batch":
        """A sub-batch: ``batch[i:j]``."""
        return Batch(self.bodies[span], None if self.headers is None else self.headers[span])

    def events(self) -> list[Event]:
        return list(self)

    def __iter__(self):
        if self.headers is None:
            return map(Event, self.bodies)
        return map(Event, self.bodies, self.headers)

    def extend(self, other: "Batch") -> None:
        if self.headers is None and other.headers is None:
            self.bodies += other.bodies
            return
        mine = self.headers if self.headers is not None else [NO_HEADERS] * len(self.bodies)
        theirs = other.headers if other.headers is not None else [NO_HEADERS] * len(other.bodies)
        self.bodies += other.bodies
        self.headers = mine + theirs
