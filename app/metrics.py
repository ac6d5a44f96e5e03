"""Flume's counters (SourceCounter, ChannelCounter, SinkCounter), shared through Redis, served as Flume's JSON.

An agent's components run in several processes (sources in ``flumery agent``, sinks in any number of Celery
workers), so each process adds its counts to one Redis hash per component (``flumery.<agent>:metrics:SINK.k1``)
about once a second, and any process can answer ``GET /metrics`` for the whole agent:

    {"SOURCE.r1": {"EventReceivedCount": "42", ...}, "CHANNEL.c1": {"ChannelSize": "0", ...}, ...}

All values are strings, as in Flume.  ``/metrics/prometheus`` serves the same numbers as Prometheus text.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from core.keys import metrics_prefix, prefixed
from routing.deadletter import DEAD_CAPACITY, DEAD_CHANNEL

log = logging.getLogger(__name__)

COUNTERS = {
    "SOURCE": ("EventReceivedCount", "EventAcceptedCount", "AppendReceivedCount", "AppendAcceptedCount",
               "AppendBatchReceivedCount", "AppendBatchAcceptedCount", "OpenConnectionCount",
               "EventReadFail", "ChannelWriteFail", "GenericProcessingFail"),
    "CHANNEL": ("EventPutAttemptCount", "EventPutSuccessCount", "EventTakeAttemptCount",
                "EventTakeSuccessCount"),
    "SINK": ("ConnectionCreatedCount", "ConnectionClosedCount", "ConnectionFailedCount", "BatchEmptyCount",
             "BatchUnderflowCount", "BatchCompleteCount", "EventDrainAttemptCount", "EventDrainSuccessCount",
             "EventWriteFail", "ChannelReadFail", "EventDeadLetterCount"),
}


def now_ms() -> int:
    return int(time.time() * 1000)


class Counters:
    """The counters of one component in this process; cheap to bump from any thread."""

    def __init__(self, store: "MetricsStore", kind: str, name: str):
        self.store, self.kind, self.name = store, kind, name

    def add(self, counter: str, n: int = 1) -> None:
        if n:
            self.store._add(f"{self.kind}.{self.name}", counter, n)

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

    # -- reading ---------------------------------------------------------------------------------------------
    def snapshot(self, agent_config, sizes: dict[str, int]) -> dict[str, dict[str, str]]:
        """Flume's JSON document for ``agent_config``: every component, every counter, values as strings."""
        self.flush()
        channels = [*agent_config.channels, DEAD_CHANNEL]
        components = ([("SOURCE", n) for n in agent_config.sources] + [("CHANNEL", n) for n in channels]
                      + [("SINK", n) for n in agent_config.sinks])
        with self.redis.pipeline(transaction=False) as pipe:
            for kind, name in components:
                pipe.hgetall(f"{self.prefix}{kind}.{name}")
            stored = pipe.execute()
        out = {}
        for (kind, name), raw in zip(components, stored):
            values = {_s(k): _s(v) for k, v in raw.items()}
            doc = {counter: values.get(counter, "0") for counter in COUNTERS[kind]}
            doc.update(StartTime=values.get("StartTime", "0"), StopTime=values.get("StopTime", "0"), Type=kind)
            if kind == "CHANNEL":
                capacity = DEAD_CAPACITY if name == DEAD_CHANNEL else agent_config.channels[name].config.capacity
                size = sizes.get(name, 0)
                doc.update(ChannelSize=str(size), ChannelCapacity=str(capacity),
                           ChannelFillPercentage=repr(size * 100.0 / capacity))
            out[f"{kind}.{name}"] = doc
        return out


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def prometheus_text(snapshot: dict[str, dict[str, str]], agent: str) -> str:
    lines = []
    for component, values in sorted(snapshot.items()):
        kind, _, name = component.partition(".")
        for counter, value in sorted(values.items()):
            if counter == "Type":
                continue
            metric = "flumery_" + re.sub(r"(?<!^)(?=[A-Z])", "_", counter).lower()
            lines.append(f'{metric}{{agent="{agent}",type="{kind}",component="{name}"}} {value}')
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Flume's HTTP monitoring endpoint (``-Dflume.monitoring.type=http``) on ``port``."""

    def __init__(self, port: int, snapshot_fn, agent: str, bind: str = "0.0.0.0"):
        self.snapshot_fn, self.agent = snapshot_fn, agent
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path in ("/metrics", "/metrics/"):
                    body = json.dumps(server.snapshot_fn()).encode()
                    self._send(200, "application/json;charset=utf-8", body)
                elif self.path == "/metrics/prometheus":
                    body = prometheus_text(server.snapshot_fn(), server.agent).encode()
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8", body)
                elif self.path == "/":
                    body = b'For Flume metrics please click <a href = "./metrics"> here</a>.'
                    self._send(200, "text/html;charset=utf-8", body)
                else:
                    self._send(404, "text/plain;charset=utf-8", b"not found\n")

            def do_TRACE(self):
                self._send(403, "text/plain;charset=utf-8", b"forbidden\n")

            do_OPTIONS = do_TRACE

            def _send(self, status, content_type, body):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                log.debug("metrics http: " + fmt, *args)

        self.httpd = ThreadingHTTPServer((bind, port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="flumery-metrics-http", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
