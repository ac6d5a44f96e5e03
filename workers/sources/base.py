"""Base class of sources.

Contract for every source: it reads events from outside, hands them in batches (:class:`~core.event.Batch`) to
its channel processor (:meth:`Source.deliver`), and acknowledges upstream (HTTP 200, netcat ``OK``, ...) only after
``deliver`` returned True, i.e. after every required channel holds the batch.  While the channels are full
``deliver`` keeps retrying, so the source stops reading (back-pressure) instead of buffering or dropping.

A source is built as ``Source(name, config, SourceContext(...))`` and has three lifecycle hooks, which the base
class calls in order (a subclass never overrides ``start`` or ``stop``):

* ``open()``: acquire what the source reads from (bind its port, open its position file, start its command);
  runs in the agent's thread, so a failure (a port in use) stops the agent's start with a clear error;
* ``serve()``: the main loop, in its own thread; returns when ``self.stopping`` is set (a server's loop returns
  when ``close`` shut it down);
* ``close()``: release what blocks ``serve`` (listening sockets, child processes); called once on stop.

``stop`` makes the source stop accepting, lets an in-flight put finish or abandon it unacknowledged, and returns
when the source's threads have ended.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import counters as names
from core.component import Component
from core.errors import BatchTooLarge, ChannelFullError
from core.event import Batch

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.05
BACKOFF_MAX_S = 1.0
# A full channel is retried sooner: its sinks free room continuously, and a source that sleeps for up to a second
# lets them drain the channel and sit idle (the file benchmark lost a third of its throughput that way).  A retry
# resends one batch, so even a channel full for a long time costs the broker little.
FULL_RETRY_START_S = 0.005
FULL_RETRY_MAX_S = 0.05


@dataclass(frozen=True)
class SourceContext:
    """What a source gets from its agent."""

    agent: str
    processor: Any              # routing.processor.ChannelProcessor (or a test double): where batches go
    counters: Any               # core.counters.Counters of this source
    data_dir: Path | None = None


class Source(Component):
    def __init__(self, name: str, config, context: SourceContext):
        super().__init__(name, config, context)
        self.processor = context.processor
        self.counters = context.counters
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """``open`` here, then ``serve`` in its own thread; returns at once."""
        self.open()
        self.counters.started()
        self.spawn(self.serve, "main")

    def open(self) -> None:
        """Acquire what the source reads from; raise (OSError for a port in use) if it cannot."""

    def serve(self) -> None:
        """The source's main loop, in its own thread; return when ``self.stopping`` is set."""

    def spawn(self, target, label: str) -> threading.Thread:
        thread = threading.Thread(target=self._guard, args=(target,), name=f"source-{self.name}-{label}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def _guard(self, target, *args) -> None:
        try:
            target(*args)
        except Exception:
            log.exception("source %s crashed", self.name)

    def stop(self, timeout_s: float = 10.0) -> None:
        self.stopping.set()
        self.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout_s)
        self.counters.stopped()

    def close(self) -> None:
        """Release what blocks the source's threads (listening sockets, child processes)."""

    # -- delivery --------------------------------------------------------------------------------------------
    def put(self, batch: Batch) -> None:
        """One put attempt (one append batch, e.g. one HTTP request).  Raises ChannelFullError, BatchTooLarge,
        or a broker error; in every case nothing of the batch is in any required channel."""
        self.counters.add(names.EVENT_RECEIVED, len(batch))
        self.counters.add(names.APPEND_BATCH_RECEIVED)
        self._attempt(batch)
        self.counters.add(names.APPEND_BATCH_ACCEPTED)

    def put_many(self, batches: list[Batch]) -> list[Exception | None]:
        """:meth:`put` of each of ``batches`` (e.g. HTTP requests that arrived together), each its own append
        batch and transaction, committed together: returns, per batch, None once it is in every required channel,
        or the exception :meth:`put` would raise (nothing of that batch was put)."""
        for batch in batches:
            self.counters.add(names.EVENT_RECEIVED, len(batch))
            self.counters.add(names.APPEND_BATCH_RECEIVED)
        outcomes = self.processor.process_many(batches)
        for batch, error in zip(batches, outcomes, strict=True):
            if error is None:
                self.counters.add(names.EVENT_ACCEPTED, len(batch))
                self.counters.add(names.APPEND_BATCH_ACCEPTED)
            elif isinstance(error, ChannelFullError):
                self.counters.add(names.CHANNEL_WRITE_FAIL)
        return outcomes

    def _attempt(self, batch: Batch, message_events: int = 0) -> None:
        try:
            if message_events:
                self.processor.process(batch, message_events)
            else:           # the plain call, which every processor (a test's recorder too) takes
                self.processor.process(batch)
        except ChannelFullError:
            self.counters.add(names.CHANNEL_WRITE_FAIL)
            raise
        self.counters.add(names.EVENT_ACCEPTED, len(batch))

    def deliver(self, batch: Batch, max_backoff_s: float = BACKOFF_MAX_S, message_events: int = 0) -> bool:
        """Put ``batch``, retrying with backoff (up to ``max_backoff_s`` between attempts) while the channels
        are full or the broker is unreachable.  ``message_events``: see ``ChannelProcessor.process``.

        Returns True once the batch is in every required channel, False if the source was stopped first (the
        batch was then not acknowledged and is not in any channel).
        """
        self.counters.add(names.EVENT_RECEIVED, len(batch))
        self.counters.add(names.APPEND_BATCH_RECEIVED)
        delay = min(BACKOFF_START_S, max_backoff_s)
        full_delay = min(FULL_RETRY_START_S, max_backoff_s)
        while True:
            try:
                self._attempt(batch, message_events)
                self.counters.add(names.APPEND_BATCH_ACCEPTED)
                return True
            except BatchTooLarge:
                raise
            except ChannelFullError as exc:
                log.debug("source %s: %s; retrying in %.3fs", self.name, exc, full_delay)
                wait, full_delay = full_delay, min(full_delay * 2, FULL_RETRY_MAX_S, max_backoff_s)
            except Exception as exc:      # the broker is down or restarting: keep the batch, try again
                names.fail(self.counters, names.GENERIC_PROCESSING_FAIL, log, logging.WARNING,
                                   "source %s: put failed (%s); retrying in %.2fs", self.name, exc, delay)
                wait, delay = delay, min(delay * 2, max_backoff_s)
            if self.stopping.wait(wait):
                return False
