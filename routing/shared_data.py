"""A sink worker process's copy of replicated batches' data: it crosses from Redis to the process once, not once
per channel the process drains.

A batch put into several channels is stored once in Redis, under a shared data key (see :mod:`routing.scripts`).
A process that drains several channels (the agent's shared sink worker) takes with its **share token**: FETCH and
ACKFETCH send a shared batch's data to that process's first take of it and, to its later takes (the same batch in
its other channels), only the data's key.  The process keeps the data here, under that key, for those later takes.
What Redis sends, what this process reads and decodes from the socket, drops by the number of channels it drains.

Contract of :class:`SharedData`:

* :meth:`~SharedData.keep` is given the data of a key as a take received it, and how many other messages referred
  to it then: at most that many takes of this process ask for it later (fewer if some of those messages are in
  channels other processes drain), so it is dropped after that many.  Data under a key never changes (a key is
  named after a random message tag and written once), so a copy is never stale;
* every take that may receive data runs inside :meth:`~SharedData.taking` (from before its request to Redis until
  its data is kept);
* :meth:`~SharedData.get` returns the data of a key a take received only as a key.  The data is here, or on its
  way: a take of another thread that was in progress when the get began received it (Redis answered that take
  first) and keeps it before it ends; the get waits for those takes only, at most ``wait_s``.  Data that is not
  here once they ended (dropped from the bounded copy, or never kept: that take failed, or was Celery's own) is
  read from Redis (``load``).  ``load`` returns None if the data is gone from Redis too (every message referring
  to it was acknowledged since: the take that asks is no longer the holder); ``get`` then returns None;
* bounded: at most ``max_bytes`` of data (least recently used dropped first); data no other take may ask for
  (``uses`` 0) is not kept; thread-safe.
"""
from __future__ import annotations

import itertools
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

MAX_BYTES = 64 * 2 ** 20        # ~500 batches of 1000 access-log lines: more than one process's channels drift
WAIT_S = 0.5                    # at most, for another thread's take: it is read within milliseconds

TOKEN_PREFIX = "w:"             # share tokens are fields of the shared data hash beside 'a' and 'r'

_token = (0, "")


def share_token() -> str:
    """This process's share token (new in a forked child: its copy of the data is its own)."""
    global _token
    if _token[0] != os.getpid():
        _token = (os.getpid(), f"{TOKEN_PREFIX}{uuid.uuid4().hex[:16]}")
    return _token[1]


class SharedData:
    def __init__(self, max_bytes: int = MAX_BYTES, wait_s: float = WAIT_S):
        self.max_bytes, self.wait_s = max_bytes, wait_s
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._uses: dict[bytes, int] = {}       # how many more takes may ask for a key's data
        self._bytes = 0
        self._taking: set[int] = set()          # tickets of the takes in progress
        self._tickets = itertools.count()
        self._changed = threading.Condition()
        self.loads = 0          # data read from Redis by get (for tests and debugging)

    @contextmanager
    def taking(self) -> Iterator[int]:
        """Around a take that may receive data (see the module's contract); yields the take's ticket."""
        with self._changed:
            ticket = next(self._tickets)
            self._taking.add(ticket)
        try:
            yield ticket
        finally:
            with self._changed:
                self._taking.discard(ticket)
                self._changed.notify_all()

    def keep(self, key: bytes, data: bytes, uses: int) -> None:
        with self._changed:
            if uses > 0 and key not in self._data:
                self._data[key] = data
                self._uses[key] = uses
                self._bytes += len(data)
                while self._bytes > self.max_bytes and len(self._data) > 1:
                    self._drop(next(iter(self._data)))
            self._changed.notify_all()

    def get(self, key: bytes, load: Callable[[bytes], bytes | None], ticket: int | None = None) -> bytes | None:
        """The data of ``key`` (see the module's contract); ``ticket``: the asking take's own, not waited for."""
        with self._changed:
            earlier = self._taking - {ticket}
            data = self._changed.wait_for(lambda: self._data.get(key) or not earlier & self._taking, self.wait_s)
            data = data if isinstance(data, bytes) else None
            if data is not None:
                self._uses[key] -= 1
                if self._uses[key] <= 0:
                    self._drop(key)
                else:
                    self._data.move_to_end(key)
                return data
        self.loads += 1
        return load(key)

    def _drop(self, key: bytes) -> None:
        self._bytes -= len(self._data.pop(key))
        del self._uses[key]


# One per process: every channel (connection) of the process shares it, as they share the process's token.
PROCESS = SharedData()
