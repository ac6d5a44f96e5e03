"""The event: Flume's ``{headers: map<string,string>, body: bytes}``.

Bodies are bytes from the source to the store (binary-safe, never decoded in between); headers are ``str -> str``.
An event is immutable: a tuple whose headers mapping must not be changed in place (an event can sit in several
channels' batches at once); interceptors make new events with ``event._replace(headers=...)`` (which keeps the id).

Every event has a stable id (``Event.id``), given at its source: from the file and offset for file sources, a
random batch prefix and a number otherwise (:class:`IdRange`).  It stays the same across retries and hops, so a
store that takes a key (Elasticsearch ``_id``, MongoDB ``_id``, an HBase row key) turns a redelivery into an
overwrite.  Towards systems that only know headers it travels as the ``flumery.id`` header.

On the wire a batch is columnar: the task message of a channel carries ``(bodies, headers, ids)``, a list of
bodies, a parallel list of header maps or ``None`` when no event has headers (the common case for raw log lines,
where it saves a million empty maps per million events), and the ids.  msgpack keeps ``bytes`` and ``str`` apart, so nothing is
re-encoded.  A :class:`Batch` is that pair as an object: sources hand batches to the channel processor (a source
reading raw lines never builds an event object per line), and sinks receive batches, which iterate as events and
also expose ``bodies`` directly.
"""
from __future__ import annotations

import secrets
from collections.abc import Sequence
from itertools import chain, repeat
from typing import Mapping, NamedTuple


class FrozenHeaders(dict):
    """A dict that refuses changes: the shared headers of events that have none."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("event headers are immutable; build a new Event instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse


NO_HEADERS: Mapping[str, str] = FrozenHeaders()


ID_HEADER = "flumery.id"


class Event(NamedTuple):
    body: bytes
    headers: Mapping[str, str] = NO_HEADERS
    id: str = ""             # stable event id, assigned at the source (see IdRange); "" = none yet


class IdRange(Sequence):
    """The ids ``<prefix>-<start>``, ``<prefix>-<start+1>``, ... of consecutive events, without a string each.

    Sources that have no natural identity for an event (a command's output, an HTTP request) give a batch one
    random prefix and number its events: the ids stay unique and stable across retries and hops, and cost
    nothing until a sink asks for them.  On the wire an IdRange is ``[prefix, start, count]``.
    """

    __slots__ = ("prefix", "start", "count")

    def __init__(self, prefix: str, start: int, count: int):
        self.prefix, self.start, self.count = prefix, start, count

    @classmethod
    def fresh(cls, count: int) -> "IdRange":
        """A new range: a random 128-bit prefix, as URL-safe base64 (22 characters; a uuid's hex took 32, stored
        with every message of small batches)."""
        return cls(secrets.token_urlsafe(16), 0, count)

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        # Sequence's __iter__ calls __getitem__ per id: five times slower for the 10,000 ids a sink journals.
        prefix = self.prefix
        return iter([f"{prefix}-{n}" for n in range(self.start, self.start + self.count)])

    def __getitem__(self, index):
        if isinstance(index, slice):
            first, stop, step = index.indices(self.count)
            if step != 1:
                return [self[i] for i in range(first, stop, step)]
            return IdRange(self.prefix, self.start + first, max(0, stop - first))
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(index)
        return f"{self.prefix}-{self.start + index}"

    def to_wire(self) -> list:
        return [self.prefix, self.start, self.count]

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented


class IdChain(Sequence):
    """The ids of several batches one after another (a sink gathering channel messages into one write), kept as
    their parts: no id string is made until a sink asks for one, and joining costs nothing per event."""

    __slots__ = ("parts", "count")

    def __init__(self, parts):
        self.parts: list = []
        for part in parts:
            self.parts.extend(part.parts if isinstance(part, IdChain) else [part])
        self.count = sum(map(len, self.parts))

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return chain.from_iterable(self.parts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(index)
        for part in self.parts:
            if index < len(part):
                return part[index]
            index -= len(part)
        raise IndexError(index)

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented


def _ids_to_wire(ids):
    if isinstance(ids, IdRange):
        return ids.to_wire()
    return list(ids) if isinstance(ids, IdChain) else ids


def _ids_from_wire(raw, count: int):
    if raw is None:
        return None
    if (isinstance(raw, list) and len(raw) == 3 and isinstance(raw[0], str) and isinstance(raw[1], int)
            and isinstance(raw[2], int)):
        if raw[2] != count:
            raise ValueError(f"malformed batch: id range of {raw[2]} for {count} events")
        return IdRange(raw[0], raw[1], raw[2])
    if not isinstance(raw, list) or len(raw) != count or not all(type(i) is str for i in raw):
        raise ValueError(f"malformed batch: ids must be a list of strings, one per event (got {raw!r:.80})")
    return raw


class Batch:
    """The events of one put or take, columnar.  Iterating yields :class:`Event` objects.

    ``bodies``: list of bytes; ``headers``: a parallel list of header maps, or None when no event has one;
    ``ids``: a parallel sequence of event ids (a list, or an :class:`IdRange`), or None before ids are given.
    """

    __slots__ = ("bodies", "headers", "ids")

    def __init__(self, bodies: list[bytes], headers: list | None = None, ids: Sequence[str] | None = None):
        self.bodies = bodies
        self.headers = headers
        self.ids = ids

    @classmethod
    def from_events(cls, events: list[Event]) -> "Batch":
        headers = [e.headers for e in events]
        ids = [e.id for e in events]
        if any(ids) and not all(ids):
            fresh = IdRange.fresh(len(ids))
            ids = [i or fresh[n] for n, i in enumerate(ids)]
        return cls([e.body for e in events], headers if any(headers) else None, ids if all(ids) else None)

    def to_wire(self) -> tuple:
        """What a channel message carries: ``(bodies, headers or None, ids or None)``."""
        return self.bodies, self.headers, _ids_to_wire(self.ids)

    @classmethod
    def from_wire(cls, bodies, headers, ids=None) -> "Batch":
        """Validate a batch received from a channel; raise ValueError if it is malformed."""
        if not isinstance(bodies, list) or not set(map(type, bodies)) <= {bytes}:     # C speed: a big batch
            raise ValueError(f"malformed batch: bodies must be a list of bytes (got {bodies!r:.80})")
        if headers is not None:
            if not isinstance(headers, list) or len(headers) != len(bodies):
                raise ValueError("malformed batch: headers must be a list as long as the bodies")
            for h in headers:
                if not isinstance(h, dict) or not all(type(k) is str and type(v) is str for k, v in h.items()):
                    raise ValueError(f"malformed batch: headers must map str to str (got {h!r:.80})")
        return cls(bodies, headers, _ids_from_wire(ids, len(bodies)))

    def with_fresh_ids(self) -> "Batch":
        """This batch with ids for its events, if it has none yet."""
        if self.ids is None:
            self.ids = IdRange.fresh(len(self.bodies))
        return self

    def __len__(self) -> int:
        return len(self.bodies)

    def __getitem__(self, span: slice) -> "Batch":
        """A sub-batch: ``batch[i:j]``."""
        return Batch(self.bodies[span], None if self.headers is None else self.headers[span],
                     None if self.ids is None else self.ids[span])

    def __iter__(self):
        headers = self.headers if self.headers is not None else repeat(NO_HEADERS, len(self.bodies))
        ids = self.ids if self.ids is not None else repeat("", len(self.bodies))
        return map(Event, self.bodies, headers, ids)

    def events(self) -> list[Event]:
        return list(self)

    def extend(self, other: "Batch") -> None:
        """Append ``other``'s events (used when a sink gathers several channel messages into one write)."""
        if self.headers is not None or other.headers is not None:
            mine = self.headers if self.headers is not None else [NO_HEADERS] * len(self.bodies)
            theirs = other.headers if other.headers is not None else [NO_HEADERS] * len(other.bodies)
            self.headers = mine + theirs
        both = self.ids is not None and other.ids is not None
        self.ids = IdChain([self.ids, other.ids]) if both else None
        self.bodies = self.bodies + other.bodies
