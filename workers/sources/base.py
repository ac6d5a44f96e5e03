"""Base class of sources.

Contract for every source: it reads events from outside, hands them in batches (:class:`~core.event.Batch`) to
its channel processor (:meth:`Source.deliver`), and acknowledges upstream (HTTP 200, netcat ``OK``, ...) only after ``deliver`` returned
True, i.e. after every required channel holds the batch.  While the channels are full ``deliver`` keeps retrying,
so the source stops reading (back-pressure) instead of buffering or dropping.  ``start`` returns at once;
``stop`` makes the source stop accepting, lets an in-flight put finish or abandon it unacknowledged, and returns
when the source's threads have ended.
"""
from __future__ import annotations

import logging
import threading

from core.errors import BatchTooLarge, ChannelFullError
from core.event import Batch

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.05
BACKOFF_MAX_S = 1.0


class Source:
    Config: type

    def __init__(self, name: str, config, processor, counters):
        self.name = name
        self.config = config
        self.processor = processor
        self.counters = counters
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.counters.started()
        self.spawn(self.run, "main")

    def run(self) -> None:
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
        """One put attempt.  Raises ChannelFullError, BatchTooLarge, or a broker error; in every case nothing
        of the batch is in any required channel."""
        self.counters.add("EventReceivedCount", len(batch))
        self._attempt(batch)

    def _attempt(self, batch: Batch) -> None:
        try:
            self.processor.process(batch)
        except ChannelFullError:
            self.counters.add("ChannelWriteFail")
            raise
        self.counters.add("EventAcceptedCount", len(batch))

    def deliver(self, batch: Batch, max_backoff_s: float = BACKOFF_MAX_S) -> bool:
        """Put ``batch``, retrying with backoff (up to ``max_backoff_s`` between attempts) while the channels
        are full or the broker is unreachable.

        Returns True once the batch is in every required channel, False if the source was stopped first (the
        batch was then not acknowledged and is not in any channel).
        """
        self.counters.add("EventReceivedCount", len(batch))
        self.counters.add("AppendBatchReceivedCount")
        delay = min(BACKOFF_START_S, max_backoff_s)
        while True:
            try:
                self._attempt(batch)
                self.counters.add("AppendBatchAcceptedCount")
                return True
            except BatchTooLarge:
                raise
            except ChannelFullError as exc:
                log.debug("source %s: %s; retrying in %.2fs", self.name, exc, delay)
            except Exception as exc:      # the broker is down or restarting: keep the batch, try again
                self.counters.add("GenericProcessingFail")
                log.warning("source %s: put failed (%s); retrying in %.2fs", self.name, exc, delay)
            if self.stopping.wait(delay):
                return False
            delay = min(delay * 2, max_backoff_s)
