"""What the sinks of keyed stores (``elasticsearch``, ``mongodb``, ``hbase``) share.

* :class:`StoreConnection`: a client opened lazily on the first write (``Sink.start`` must not fail because the
  store is down), counted as Flume counts connections: ``ConnectionCreatedCount`` when a client was opened and
  answered, ``ConnectionFailedCount`` (and a log line, together) when opening or using it failed on the
  connection, ``ConnectionClosedCount`` when it is closed.  After a failure the client is dropped and the next
  write opens a new one.
* :class:`Progress`: what the store already confirmed of a batch whose write failed part-way, by event id, so
  that the runner's retry of that batch sends only the rest (the confirmed events are not written twice) and
  the events the store refused are dead-lettered once, at the end.
* :func:`mask_uri`: a connection string fit for a log line (no password).
* :func:`escape_headers`: Flume's ``%{header}`` escapes (BucketPath) in a name.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from core import counters as names
from core.counters import fail
from core.errors import RejectedEvents

_HEADER_ESCAPE = re.compile(r"%\{([^}]*)\}")


def mask_uri(uri: str) -> str:
    """``scheme://user:***@host/...``: the URI with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def escape_headers(template: str, headers) -> str:
    """Replace each ``%{name}`` by the event's header ``name`` (empty when it has none), as Flume's BucketPath
    does for index and collection names."""
    if "%{" not in template:
        return template
    return _HEADER_ESCAPE.sub(lambda m: headers.get(m.group(1), ""), template)


def has_header_escapes(template: str) -> bool:
    return "%{" in template


class StoreConnection:
    """A store client opened on first use and counted.  ``open_client()`` must return a client that already
    answered the store (so that ``ConnectionCreatedCount`` means a working connection); ``close_client(c)``
    releases it."""

    def __init__(self, sink, logger: logging.Logger, describe: str, open_client: Callable[[], Any],
                 close_client: Callable[[Any], None]):
        self.sink = sink
        self.log = logger
        self.describe = describe              # where it connects, without secrets
        self.open_client = open_client
        self.close_client = close_client
        self.client: Any = None

    def get(self) -> Any:
        """The open client; opens one if there is none.  Raises what opening raised, after counting it."""
        if self.client is None:
            try:
                self.client = self.open_client()
            except Exception as exc:
                fail(self.sink.counters, names.CONNECTION_FAILED, self.log, logging.WARNING,
                     "%s sink %s: cannot connect to %s: %s", self.kind, self.sink.name, self.describe, exc)
                raise
            self.sink.counters.add(names.CONNECTION_CREATED)
            self.log.info("%s sink %s: connected to %s", self.kind, self.sink.name, self.describe)
        return self.client

    @property
    def kind(self) -> str:
        return getattr(self.sink, "store_kind", type(self.sink).__name__.removesuffix("Sink").lower())

    def failed(self, exc: BaseException) -> None:
        """The connection broke while in use: count it, log it, and drop the client (the next write reconnects).
        A failure to open was counted by :meth:`get` already."""
        if self.client is None:
            return
        fail(self.sink.counters, names.CONNECTION_FAILED, self.log, logging.WARNING,
             "%s sink %s: connection to %s failed: %s", self.kind, self.sink.name, self.describe, exc)
        self.close(count=False)

    def close(self, count: bool = True) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            self.close_client(client)
        except Exception as exc:       # closing a broken client may fail too; it is dropped all the same
            self.log.debug("closing the client of sink %s: %s", self.sink.name, exc)
        if count:
            self.sink.counters.add(names.CONNECTION_CLOSED)


class Progress:
    """Per-event outcome of a batch across the attempts of its write, keyed by event id.

    ``pending(ids)`` returns the batch indices the store has not confirmed or refused yet (forgetting the ids of
    any other batch); the sink writes those, then records each outcome with ``written``/``refused``; when nothing
    is left to retry, ``finish(ids)`` clears the record and raises :class:`RejectedEvents` for the refused ones.
    A worker that dies forgets it: the redelivered batch is then written whole, which keyed writes absorb.
    """

    def __init__(self):
        self.confirmed: set[str] = set()
        self.refused: dict[str, str] = {}

    def pending(self, ids) -> list[int]:
        current = set(ids)
        self.confirmed &= current
        self.refused = {i: r for i, r in self.refused.items() if i in current}
        return [n for n, i in enumerate(ids) if i not in self.confirmed and i not in self.refused]

    def written(self, event_id: str) -> None:
        self.confirmed.add(event_id)

    def refuse(self, event_id: str, reason: str) -> None:
        self.refused[event_id] = reason

    def finish(self, ids) -> None:
        """The batch is settled: forget it; raise RejectedEvents if the store refused some of its events."""
        refused = {n: self.refused[i] for n, i in enumerate(ids) if i in self.refused}
        self.confirmed, self.refused = set(), {}
        if refused:
            raise RejectedEvents(refused)
