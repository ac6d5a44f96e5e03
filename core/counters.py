"""Flume's counter names, and the counters of each component, shared through Redis.

An agent's components run in several processes (sources in ``flumery agent``, sinks in any number of Celery
workers), so each process adds its counts to one Redis hash per component (``flumery.<agent>:metrics:SINK.k1``)
about once a second (:class:`MetricsStore`); any process can then read the whole agent (``app.metrics``).

Counter names are the constants below, Flume's own (SourceCounter, ChannelCounter, SinkCounter).  A failure is
counted and logged together with :func:`fail`, so that neither happens without the other.
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import defaultdict

from core.keys import metrics_prefix, prefixed

log = logging.getLogger(__name__)

# SourceCounter
EVENT_RECEIVED = "EventReceivedCount"
EVENT_ACCEPTED = "EventAcceptedCount"
APPEND_RECEIVED = "AppendReceivedCount"
APPEND_ACCEPTED = "AppendAcceptedCount"
APPEND_BATCH_RECEIVED = "AppendBatchReceivedCount"
APPEND_BATCH_ACCEPTED = "AppendBatchAcceptedCount"
OPEN_CONNECTION = "OpenConnectionCount"
EVENT_READ_FAIL = "EventReadFail"
CHANNEL_WRITE_FAIL = "ChannelWriteFail"
GENERIC_PROCESSING_FAIL = "GenericProcessingFail"
# ChannelCounter
EVENT_PUT_ATTEMPT = "EventPutAttemptCount"
EVENT_PUT_SUCCESS = "EventPutSuccessCount"
EVENT_TAKE_ATTEMPT = "EventTakeAttemptCount"
EVENT_TAKE_SUCCESS = "EventTakeSuccessCount"
REPLICA_WAIT_FAIL = "ReplicaWaitFailCount"      # Flumery's: events put but not confirmed by enough replicas
# SinkCounter
CONNECTION_CREATED = "ConnectionCreatedCount"
CONNECTION_CLOSED = "ConnectionClosedCount"
CONNECTION_FAILED = "ConnectionFailedCount"
BATCH_EMPTY = "BatchEmptyCount"
BATCH_UNDERFLOW = "BatchUnderflowCount"
BATCH_COMPLETE = "BatchCompleteCount"
EVENT_DRAIN_ATTEMPT = "EventDrainAttemptCount"
EVENT_DRAIN_SUCCESS = "EventDrainSuccessCount"
EVENT_WRITE_FAIL = "EventWriteFail"
CHANNEL_READ_FAIL = "ChannelReadFail"
EVENT_DEAD_LETTER = "EventDeadLetterCount"      # Flumery's

COUNTERS = {
    "SOURCE": (EVENT_RECEIVED, EVENT_ACCEPTED, APPEND_RECEIVED, APPEND_ACCEPTED, APPEND_BATCH_RECEIVED,
               APPEND_BATCH_ACCEPTED, OPEN_CONNECTION, EVENT_READ_FAIL, CHANNEL_WRITE_FAIL, GENERIC_PROCESSING_FAIL),
    "CHANNEL": (EVENT_PUT_ATTEMPT, EVENT_PUT_SUCCESS, EVENT_TAKE_ATTEMPT, EVENT_TAKE_SUCCESS, REPLICA_WAIT_FAIL),
    "SINK": (CONNECTION_CREATED, CONNECTION_CLOSED, CONNECTION_FAILED, BATCH_EMPTY, BATCH_UNDERFLOW,
             BATCH_COMPLETE, EVENT_DRAIN_ATTEMPT, EVENT_DRAIN_SUCCESS, EVENT_WRITE_FAIL, CHANNEL_READ_FAIL,
             EVENT_DEAD_LETTER),
}


# Flumery's sink batch latency histogram, kept in the sink's hash beside Flume's counters (which Flume's JSON
# leaves out): one field per bucket ("SinkBatchSeconds.le.0.25": observations in (0.1, 0.25], not cumulative, so
# each observation adds to one field; their total is the count) and the sum in microseconds (an integer, so
# HINCRBY adds it like every other counter).  A fixed set of fields per sink: memory stays bounded however long it runs.
BATCH_SECONDS = "SinkBatchSeconds"
BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BUCKET_FIELDS = tuple(f"{BATCH_SECONDS}.le.{le}" for le in BATCH_SECONDS_BUCKETS) + (f"{BATCH_SECONDS}.le.+Inf",)
_SUM_FIELD = f"{BATCH_SECONDS}.sum_us"


def histogram(values: dict[str, str]) -> tuple[list[tuple[str, float]], float] | None:
    """The batch latency histogram in a component's stored ``values`` (field -> number, as strings), in the shape
    Prometheus wants: cumulative ``(le, count)`` pairs ending with ``+Inf`` (which equals the count), and the sum
    in seconds.  None if the component never observed a batch."""
    cumulative, running = [], 0
    for field in _BUCKET_FIELDS:
        running += int(values.get(field, 0))
        cumulative.append((field.rpartition(".le.")[2], float(running)))
    if running == 0:
        return None
    return cumulative, int(values.get(_SUM_FIELD, 0)) / 1e6


def fail(counters, counter: str, logger: logging.Logger, level: int, message: str, *args,
         exc_info: bool = False) -> None:
    """Count a failure on ``counters`` (anything with ``add``) and log it, together: a failure is never
    counted without a log line, or logged without being counted."""
    counters.add(counter)
    logger.log(level, message, *args, exc_info=exc_info)


def now_ms() -> int:
    return int(time.time() * 1000)


class Counters:
    """The counters of one component in this process; cheap to bump from any thread."""

    def __init__(self, store: "MetricsStore", kind: str, name: str):
        self.store, self.kind, self.name = store, kind, name

    def add(self, counter: str, n: int = 1) -> None:
        if n:
            self.store._add(f"{self.kind}.{self.name}", counter, n)

    def observe_batch(self, seconds: float) -> None:
        """Add one batch's latency to the component's histogram (see ``BATCH_SECONDS``)."""
        bucket = _BUCKET_FIELDS[bisect.bisect_left(BATCH_SECONDS_BUCKETS, seconds)]
        self.store._add_all(f"{self.kind}.{self.name}", {bucket: 1, _SUM_FIELD: round(seconds * 1e6)})

    def started(self) -> None:
        self.store.set(f"{self.kind}.{self.name}", {"StartTime": now_ms(), "StopTime": 0, "Type": self.kind})

    def stopped(self) -> None:
        self.store.set(f"{self.kind}.{self.name}", {"StopTime": now_ms()})


class MetricsStore:
    """Accumulates counts in memory and adds them to Redis every ``flush_interval_s`` (and on :meth:`flush`)."""

    def __init__(self, redis_client, agent: str, flush_interval_s: float = 1.0, key_prefix: str = ""):
        self.redis = redis_client
        self.prefix = prefixed(key_prefix, metrics_prefix(agent))     # key_prefix: kombu's global_keyprefix
        self.flush_interval_s = flush_interval_s
        self._pending: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def group(self, kind: str, name: str) -> Counters:
        return Counters(self, kind, name)

    def _add(self, component: str, counter: str, n: int) -> None:
        with self._lock:
            self._pending[component][counter] += n

    def _add_all(self, component: str, counts: dict[str, int]) -> None:
        """Add several counts of one component at once: one flush carries all of them or none."""
        with self._lock:
            pending = self._pending[component]
            for counter, n in counts.items():
                pending[counter] += n

    def reset(self, components: list[str]) -> None:
        """Start ``components`` (``"SOURCE.r1"``...) from zero, as Flume's counters start with their component:
        the process that starts them calls this first.  Raises if the broker cannot be reached (the process is
        starting and needs the broker anyway)."""
        with self._lock:
            for component in components:
                self._pending.pop(component, None)
        if components:
            self.redis.delete(*(self.prefix + component for component in components))

    def set(self, component: str, values: dict) -> None:
        try:
            self.redis.hset(self.prefix + component, mapping={k: str(v) for k, v in values.items()})
        except Exception as exc:     # metrics must never break the data path
            log.warning("could not record metrics for %s: %s", component, exc)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(lambda: defaultdict(int))
        if not pending:
            return
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for component, counts in pending.items():
                    for counter, n in counts.items():
                        pipe.hincrby(self.prefix + component, counter, n)
                pipe.execute()
        except Exception as exc:
            log.warning("could not flush metrics (will retry): %s", exc)
            with self._lock:
                for component, counts in pending.items():
                    for counter, n in counts.items():
                        self._pending[component][counter] += n

    def start(self) -> "MetricsStore":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="flumery-metrics", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        self.flush()
