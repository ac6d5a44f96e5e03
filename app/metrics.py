"""Flume's monitoring JSON for a whole agent, read from the counters every process keeps in Redis
(:mod:`core.counters`), and the HTTP endpoint that serves it:

    {"SOURCE.r1": {"EventReceivedCount": "42", ...}, "CHANNEL.c1": {"ChannelSize": "0", ...}, ...}

All values are strings, as in Flume.  ``/prometheus`` (and ``/metrics/prometheus``) serves the same numbers in
Prometheus's text format through the ``prometheus_client`` library: Flume's counters as counters
(``flumery_event_drain_success_total{agent,type,component}``), channel fill and start/stop times as gauges, each
sink's batch latency as a histogram (``flumery_sink_batch_seconds{agent,component}``, see :func:`sink_latency`), and
what the agent itself knows (sink worker restarts).
Counters start at 0 with their component (the agent resets those it runs when it starts, see
:meth:`core.counters.MetricsStore.reset`).  ``CHANNEL.__dead__``, the agent's dead-letter channel, is unbounded:
it has no ``ChannelCapacity`` nor ``ChannelFillPercentage``.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from core.counters import COUNTERS, MetricsStore, histogram
from routing.deadletter import DEAD_CHANNEL

log = logging.getLogger(__name__)

def snapshot(store: MetricsStore, agent_config, sizes: dict[str, int]) -> dict[str, dict[str, str]]:
    """Flume's JSON document for ``agent_config``: every component, every counter, values as strings."""
    store.flush()
    channels = [*agent_config.channels, DEAD_CHANNEL]
    components = ([("SOURCE", n) for n in agent_config.sources] + [("CHANNEL", n) for n in channels]
                  + [("SINK", n) for n in agent_config.sinks])
    with store.redis.pipeline(transaction=False) as pipe:
        for kind, name in components:
            pipe.hgetall(f"{store.prefix}{kind}.{name}")
        stored = pipe.execute()
    out = {}
    for (kind, name), raw in zip(components, stored):
        values = {_s(k): _s(v) for k, v in raw.items()}
        doc = {counter: values.get(counter, "0") for counter in COUNTERS[kind]}
        doc.update(StartTime=values.get("StartTime", "0"), StopTime=values.get("StopTime", "0"), Type=kind)
        if kind == "CHANNEL":
            size = sizes.get(name, 0)
            doc.update(ChannelSize=str(size))
            if name != DEAD_CHANNEL:          # the dead-letter channel is unbounded: no capacity to report
                capacity = agent_config.channels[name].config.capacity
                doc.update(ChannelCapacity=str(capacity), ChannelFillPercentage=repr(size * 100.0 / capacity))
        out[f"{kind}.{name}"] = doc
    return out


def sink_latency(store: MetricsStore, agent_config) -> HistogramMetricFamily:
    """``flumery_sink_batch_seconds{agent,component}``: per sink, the seconds from the moment a sink worker
    starts a batch's take transaction (its task begins) until the batch's channel messages are acknowledged:
    gathering, every write attempt and retry backoff, and the acknowledgement.  One observation per batch a sink
    wrote (for a sink group, under the sink that wrote it); a batch that went wholly to the dead-letter channel is
    not observed.  Sinks that never wrote a batch are left out."""
    family = HistogramMetricFamily("flumery_sink_batch_seconds", "seconds from a sink batch's take to its "
                                   "acknowledgement", labels=["agent", "component"])
    store.flush()
    names = list(agent_config.sinks)
    with store.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(f"{store.prefix}SINK.{name}")
        stored = pipe.execute()
    for name, raw in zip(names, stored):
        observed = histogram({_s(k): _s(v) for k, v in raw.items()})
        if observed is not None:
            buckets, total = observed
            family.add_metric([agent_config.name, name], buckets, total)
    return family


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


GAUGES = {
    "ChannelSize": ("flumery_channel_size", "events held in the channel (queued and taken, not yet committed)"),
    "ChannelCapacity": ("flumery_channel_capacity", "most events the channel holds"),
    "ChannelFillPercentage": ("flumery_channel_fill_percentage", "ChannelSize as a percentage of ChannelCapacity"),
    "StartTime": ("flumery_start_time_ms", "when the component started, epoch milliseconds (0: never)"),
    "StopTime": ("flumery_stop_time_ms", "when the component stopped, epoch milliseconds (0: running)"),
}
LABELS = ["agent", "type", "component"]


def _metric_name(counter: str) -> str:
    """``EventDrainSuccessCount`` -> ``flumery_event_drain_success`` (the library adds ``_total``)."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", counter).lower()
    return "flumery_" + snake.removesuffix("_count")


class SnapshotCollector:
    """A prometheus_client collector over the agent's snapshot (what ``/metrics`` serves as JSON), plus the
    agent's own figures from ``extra_fn`` (a callable returning metric families)."""

    def __init__(self, snapshot_fn, agent: str, extra_fn=None):
        self.snapshot_fn, self.agent, self.extra_fn = snapshot_fn, agent, extra_fn

    def collect(self):
        families: dict[str, object] = {}
        for component, values in sorted(self.snapshot_fn().items()):
            kind, _, name = component.partition(".")
            for key, value in values.items():
                if key == "Type":
                    continue
                family = families.get(key)
                if family is None:
                    family = families[key] = self._family(key)
                family.add_metric([self.agent, kind, name], float(value))
        yield from families.values()
        if self.extra_fn is not None:
            yield from self.extra_fn()

    @staticmethod
    def _family(key: str):
        if key in GAUGES:
            name, doc = GAUGES[key]
            return GaugeMetricFamily(name, doc, labels=LABELS)
        return CounterMetricFamily(_metric_name(key), f"Flume's {key}", labels=LABELS)


def prometheus_text(snapshot_fn, agent: str, extra_fn=None) -> bytes:
    """The Prometheus exposition of an agent's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot_fn, agent, extra_fn))
    return generate_latest(registry)


class MetricsServer:
    """Flume's HTTP monitoring endpoint (``-Dflume.monitoring.type=http``) on ``port``."""

    def __init__(self, port: int, snapshot_fn, agent: str, bind: str = "0.0.0.0", extra_fn=None):
        self.snapshot_fn, self.agent, self.extra_fn = snapshot_fn, agent, extra_fn
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path in ("/metrics", "/metrics/"):
                    body = json.dumps(server.snapshot_fn()).encode()
                    self._send(200, "application/json;charset=utf-8", body)
                elif self.path in ("/prometheus", "/metrics/prometheus"):
                    body = prometheus_text(server.snapshot_fn, server.agent, server.extra_fn)
                    self._send(200, CONTENT_TYPE_LATEST, body)
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
