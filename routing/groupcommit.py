"""Group commit: puts that arrive while one is in flight go to Redis together, in one call.

Many sources' threads put small batches at once (an HTTP source answers each request only after its put): one
script call and one round trip each would make the broker connection, not the work, the limit.  A
:class:`GroupCommit` lets the first caller lead: it takes every request waiting (up to a bound), commits them in
one call, hands each caller its own result, then passes the lead to the first caller that arrived meanwhile.  A
caller is answered only when its own request is committed (or refused): never earlier, never with someone else's
outcome, except for an error of the call itself (the broker is unreachable), which concerns every request in it.

Contract of ``commit(items) -> results``: one result per item, in order; an Exception result is raised to that
item's caller alone; if ``commit`` raises, every caller of the group gets that exception.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence


class _Request:
    __slots__ = ("item", "weight", "ready", "done", "result", "error")

    def __init__(self, item, weight: int):
        self.item, self.weight = item, weight
        self.ready = threading.Event()     # set when done, or when handed the lead of the next group
        self.done = False
        self.result = None
        self.error: BaseException | None = None

    def finish(self, result=None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True
        self.ready.set()


class GroupCommit:
    """Serializes calls to ``commit`` and batches the requests waiting meanwhile; thread-safe.

    ``max_items`` and ``max_weight`` bound a group (the first request always goes, however heavy): a group's call
    holds every request of it in memory and in one Redis command.
    """

    def __init__(self, commit: Callable[[list], Sequence], max_items: int = 64, max_weight: int = 4 * 2 ** 20):
        self._commit = commit
        self.max_items, self.max_weight = max_items, max_weight
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._busy = False            # a leader is committing; invariant: waiting requests imply busy

    @property
    def waiting(self) -> int:
        """Requests queued behind the group being committed."""
        with self._lock:
            return len(self._waiting)

    def submit(self, item, weight: int = 0):
        """Commit ``item`` (in a group with others, maybe); return its result, or raise its error."""
        [request] = self._run([_Request(item, weight)])
        if request.error is not None:
            raise request.error
        return request.result

    def submit_many(self, items: Sequence[tuple[object, int]]) -> list:
        """Commit each (item, weight) of ``items`` as :meth:`submit` does, one caller's requests that arrived
        together (in one call when they fit in a group); returns, per item, its result or its error (the exception
        instance, not raised)."""
        requests = self._run([_Request(item, weight) for item, weight in items])
        return [r.result if r.error is None else r.error for r in requests]

    def _run(self, requests: list[_Request]) -> list[_Request]:
        if not requests:
            return requests
        with self._lock:
            self._waiting.extend(requests)
            if not self._busy:
                self._busy = True
                requests[0].ready.set()         # no leader: lead, starting with our first request
        for request in requests:
            request.ready.wait()
            if not request.done:                # handed the lead: this request is first in the queue
                self._lead()
        return requests

    def _take_group(self) -> list[_Request]:
        with self._lock:
            group, weight = [], 0
            for request in self._waiting:
                if group and (len(group) >= self.max_items or weight + request.weight > self.max_weight):
                    break
                group.append(request)
                weight += request.weight
            del self._waiting[:len(group)]
        return group

    def _lead(self) -> None:
        group = self._take_group()
        try:
            results = list(self._commit([r.item for r in group]))
            if len(results) != len(group):
                raise RuntimeError(f"group commit: {len(results)} results for {len(group)} requests")
        except BaseException as exc:            # the call itself failed: it concerns every request of it
            for request in group:
                request.finish(error=exc)
        else:
            for request, result in zip(group, results):
                if isinstance(result, BaseException):
                    request.finish(error=result)
                else:
                    request.finish(result)
        finally:
            with self._lock:
                if self._waiting:
                    self._waiting[0].ready.set()
                else:
                    self._busy = False
