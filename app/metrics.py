"""Flume's monitoring JSON for a whole agent, read from the counters every process keeps in Redis
(:mod:`core.counters`), and the HTTP endpoint that serves it:

    {"SOURCE.r1": {"EventReceivedCount": "42", ...}, "CHANNEL.c1": {"ChannelSize": "0", ...}, ...}

All values are strings, as in Flume.  ``/metrics/prometheus`` serves the same numbers as Prometheus text.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from core.counters import COUNTERS, MetricsStore
from routing.deadletter import DEAD_CAPACITY, DEAD_CHANNEL

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
