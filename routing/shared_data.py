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
* :meth:`~SharedData.get` returns the data of a key a take received only as a key.  The data is here, or on its
  way (another thread of this process took it first and is reading its reply): it waits up to ``wait_s`` for it.
  A key whose data was dropped from here (the copy is bounded) is read from Redis at once (``load``), without
  waiting; so is one that did not come within ``wait_s`` (the thread that took it first failed before keeping it).
  ``load`` returns None if the data is gone from Redis too (every message referring to it was acknowledged since:
  the take that asks is no longer the holder); ``get`` then returns None;
* bounded: at most ``max_bytes`` of data (least recently used dropped first), at most ``max_dropped`` keys
  remembered as dropped; thread-safe.  Data no other take may ask for (``uses`` 0) is not kept (its key is remembered as dropped).
"""
from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_BYTES = 64 * 2 ** 20        # ~500 batches of 1000 access-log lines: more than one process's channels drift
MAX_DROPPED = 20_000            # dropped keys remembered (~100 bytes each), so a lagging channel does not wait
WAIT_S = 0.5                    # another thread's take of the same data is read within milliseconds

TOKEN_PREFIX = "w:"             # share tokens are fields of the shared data hash beside 'a' and 'r'

_token = (0, "")


def share_token() -> str:
    """This process's share token (new in a forked child: its copy of the data is its own)."""
    global _token
    if _token[0] != os.getpid():
        _token = (os.getpid(), f"{TOKEN_PREFIX}{uuid.uuid4().hex[:16]}")
    return _token[1]


class SharedData:
    def __init__(self, max_bytes: int = MAX_BYTES, max_dropped: int = MAX_DROPPED, wait_s: float = WAIT_S):
        self.max_bytes, self.wait_s = max_bytes, wait_s
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._uses: dict[bytes, int] = {}       # how many more takes may ask for a key's data
        self._bytes = 0
        self._dropped: set[bytes] = set()
        self._dropped_order: deque[bytes] = deque(maxlen=max_dropped)
        self._changed = threading.Condition()
        self.loads = 0          # data read from Redis by get (for tests and debugging)

    def keep(self, key: bytes, data: bytes, uses: int) -> None:
        with self._changed:
            if uses <= 0:
                self._forget(key)
            elif key not in self._data:
                self._data[key] = data
                self._uses[key] = uses
                self._bytes += len(data)
                while self._bytes > self.max_bytes and len(self._data) > 1:
                    self._drop(next(iter(self._data)))
            self._changed.notify_all()

    def get(self, key: bytes, load: Callable[[bytes], bytes | None]) -> bytes | None:
        with self._changed:
            data = self._data.get(key)
            if data is None and key not in self._dropped:
                data = self._changed.wait_for(lambda: self._data.get(key) or key in self._dropped, self.wait_s)
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
        self._forget(key)

    def _forget(self, key: bytes) -> None:
        """Remember ``key`` as dropped: a take that asks for it reads it from Redis without waiting."""
        if len(self._dropped_order) == self._dropped_order.maxlen:
            self._dropped.discard(self._dropped_order[0])
        self._dropped_order.append(key)
        self._dropped.add(key)


# One per process: every channel (connection) of the process shares it, as they share the process's token.
PROCESS = SharedData()
