"""Flume's SinkRunner: write one batch through a sink group, with retries, backoff and dead letters.

Contract of :meth:`SinkRunner.write`: it returns once every event of the batch was either written and confirmed
by a sink, or put into the agent's dead-letter channel; it raises :class:`Requeue` if the worker is asked to stop
first (the caller then gives the batch back to its channel, unacknowledged).

* A failing write is retried with exponential backoff (0.2 s, 0.4 s, ... up to ``FLUMERY_SINK_RETRY_MAX_S``).
* Events a sink rejects as malformed (:class:`~routing.deadletter.RejectedEvents`) go to the dead-letter channel
  at once; the rest of the batch counts as written.
* With ``maxAttempts`` = N (a Flumery property of every sink; 0, the default, retries for ever), a batch that
  failed N times is split in halves, each retried on its own, down to single events; an event that still fails N
  times goes to the dead-letter channel with the last error.  So one poison event never blocks the events
  behind it.  Note that a store outage outlasting those attempts dead-letters events too: they can be replayed
  (``flumery dlq replay``).
"""
from __future__ import annotations

import logging
import time

from core import counters as names
from core.errors import RejectedEvents, Requeue
from core.event import Batch

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.1



class SinkRunner:
    """One sink group (or lone sink) draining one channel."""

    def __init__(self, unit: str, processor, channel: str, metrics, dead_letter, max_attempts: int = 0):
        self.unit = unit
        self.processor = processor
        self.channel = channel
        self.metrics = metrics
        self.dead_letter = dead_letter      # callable(events, reasons, attempts)
        self.max_attempts = max_attempts
        self.started_sinks: set = set()

    @property
    def batch_size(self) -> int:
        return self.processor.batch_size

    def start(self) -> None:
        """Start every sink not started yet, each on its own: one sink that cannot start must not keep the
        others of its group (its failover backup, say) from working.  Its writes then fail until it starts."""
        for sink in self.processor.sinks:
            if sink in self.started_sinks:
                continue
            try:
                sink.start()
            except Exception as exc:
                log.warning("sink %s could not start (will try again): %s", sink.name, exc)
                continue
            self.started_sinks.add(sink)
            self.metrics.group("SINK", sink.name).started()

    def stop(self) -> None:
        for sink in list(self.started_sinks):
            try:
                sink.stop()
            finally:
                self.started_sinks.discard(sink)
                self.metrics.group("SINK", sink.name).stopped()

    def write(self, batch: Batch, should_stop, retry_max_s: float):
        """Write ``batch`` (see the module's contract).  Returns the sink that wrote it (for a batch written in
        parts, the one that wrote the last part), or None if every event went to the dead-letter channel."""
        attempt = 0
        while True:
            try:
                self.start()
                sink = self.processor.write(batch)
            except RejectedEvents as rejected:
                return self._reject(batch, rejected, attempt + 1)
            except Exception as exc:
                attempt += 1
                self._count_all(names.EVENT_WRITE_FAIL)
                if self.max_attempts and attempt >= self.max_attempts:
                    return self._give_up(batch, exc, attempt, should_stop, retry_max_s)
                delay = min(retry_max_s, FIRST_DELAY_S * 2 ** attempt)
                log.warning("sink %s: write of %d events failed (attempt %d): %s; retrying in %.1fs",
                            self.unit, len(batch), attempt, exc, delay)
                if _sleep_unless(should_stop, delay):
                    raise Requeue(f"stopping while sink {self.unit} is failing") from exc
                continue
            self._count_written(sink, len(batch))
            return sink

    def _give_up(self, batch: Batch, exc: Exception, attempt: int, should_stop, retry_max_s: float):
        if len(batch) > 1:
            half = len(batch) // 2
            log.warning("sink %s: %d events failed %d times (%s); writing them in halves to isolate the events "
                        "that fail", self.unit, len(batch), attempt, exc)
            first = self.write(batch[:half], should_stop, retry_max_s)
            return self.write(batch[half:], should_stop, retry_max_s) or first
        reason = f"{type(exc).__name__}: {exc}"
        log.error("sink %s: event %s failed %d times and goes to the dead-letter channel: %s",
                  self.unit, next(iter(batch)).id, attempt, reason)
        self.dead_letter(list(batch), [reason], attempt)
        self._count_all(names.EVENT_DEAD_LETTER)
        return None

    def _reject(self, batch: Batch, rejected: RejectedEvents, attempts: int):
        events = list(batch)
        dead = sorted(i for i in rejected.reasons if 0 <= i < len(events))
        log.error("sink %s: the store rejected %d of %d events; they go to the dead-letter channel (%s)",
                  self.unit, len(dead), len(events), rejected)
        self.dead_letter([events[i] for i in dead], [rejected.reasons[i] for i in dead], attempts)
        sink = self.processor.sinks[0] if len(self.processor.sinks) == 1 else None
        if sink is None:
            return None
        self._count_written(sink, len(events) - len(dead))
        self.metrics.group("SINK", sink.name).add(names.EVENT_DEAD_LETTER, len(dead))
        return sink if len(dead) < len(events) else None

    def _count_written(self, sink, n: int) -> None:
        counters = self.metrics.group("SINK", sink.name)
        counters.add(names.EVENT_DRAIN_ATTEMPT, n)
        counters.add(names.EVENT_DRAIN_SUCCESS, n)
        counters.add(names.BATCH_COMPLETE if n >= sink.batch_size else names.BATCH_UNDERFLOW)

    def _count_all(self, counter: str) -> None:
        for sink in self.processor.sinks:
            self.metrics.group("SINK", sink.name).add(counter)


def _sleep_unless(should_stop, delay_s: float) -> bool:
    """Sleep ``delay_s`` in short steps; True as soon as ``should_stop()`` is."""
    end = time.monotonic() + delay_s
    while time.monotonic() < end:
        if should_stop():
            return True
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))
    return should_stop()
