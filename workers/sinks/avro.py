"""``avro``: Flume's AvroSink, the sending end of an avro hop (Avro IPC over Netty framing, Flume's
``AvroSourceProtocol``), wire-compatible with Flume's avro source.

Contract (two transactions per hop): ``write(batch)`` sends the batch as ``appendBatch`` calls of at most
``batch-size`` events and returns only after the next agent answered ``OK`` to every one of them, i.e. after the
events are in every required channel there.  ``FAILED``, an error answer, a timeout (``connect-timeout``,
``request-timeout``) or a broken connection raise: the channel messages stay unacknowledged and the runner writes
the batch again later (so the next hop may receive a batch twice: at least once, as in Flume).  After a failure
the connection is closed and the next write connects again; with ``reset-connection-interval`` the connection is
also replaced every that many seconds (for load balancers, as in Flume).

Every event is sent with its id as the ``flumery.id`` header, which a Flumery avro source turns back into the id
(a Flume agent keeps it as an ordinary header).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from core.event import ID_HEADER
from core.options import non_negative, one_of, opt, port_number, positive
from workers.rpc import tls
from workers.rpc.avro_client import AvroClient
from workers.rpc.avro_ipc import event_records
from workers.sinks.base import Sink

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """The next hop answered something other than OK: the batch is not there, and must be sent again."""


def _level(value: int) -> str | None:
    return None if 1 <= value <= 9 else "must be 1 to 9"


def _protocols(value: list[str]) -> str | None:
    unknown = [p for p in value if p not in tls.KNOWN_PROTOCOLS]
    return f"unknown protocol {', '.join(unknown)} (known: {', '.join(tls.KNOWN_PROTOCOLS)})" if unknown else None


@dataclass(frozen=True)
class AvroSinkConfig:
    hostname: str = opt("hostname", doc="host of the next hop's avro source")
    port: int = opt("port", check=port_number, doc="its port")
    batch_size: int = opt("batch-size", 100, check=positive, doc="events per appendBatch call")
    connect_timeout_ms: int = opt("connect-timeout", 20000, check=positive, doc="ms to connect (and TLS handshake)")
    request_timeout_ms: int = opt("request-timeout", 20000, check=positive, doc="ms to wait for an answer")
    reset_connection_interval_s: int = opt("reset-connection-interval", 0, check=non_negative,
                                           doc="seconds after which the connection is replaced (0 = never)")
    compression_type: str = opt("compression-type", "none", check=one_of("none", "deflate"),
                                doc="none or deflate; must match the source")
    compression_level: int = opt("compression-level", 6, check=_level, doc="deflate level, 1 to 9")
    ssl: bool = opt("ssl", False, doc="connect with TLS")
    trust_all_certs: bool = opt("trust-all-certs", False, doc="do not check the server's certificate")
    truststore: str = opt("truststore", "", doc="CA certificates: a JKS or PEM file (default: the system's)")
    truststore_password: str = opt("truststore-password", "", doc="password of a JKS truststore")
    truststore_type: str = opt("truststore-type", "JKS", check=one_of(*tls.STORE_TYPES), doc="JKS or PEM")
    exclude_protocols: list[str] = opt("exclude-protocols", ["SSLv3"], check=_protocols,
                                       doc="TLS versions not to use (Java names, space-separated)")
    include_protocols: list[str] = opt("include-protocols", [], check=_protocols,
                                       doc="TLS versions to use (Java names; empty = all but the excluded)")
    max_io_workers: int = opt("maxIoWorkers", 0, inert="a sink worker holds one blocking connection")


class AvroSink(Sink):
    Config = AvroSinkConfig

    def start(self) -> None:
        config = self.config
        context = None
        if config.ssl:
            context = tls.client_context(config.truststore, config.truststore_password, config.truststore_type,
                                         config.trust_all_certs, config.exclude_protocols, config.include_protocols)
        level = config.compression_level if config.compression_type.lower() == "deflate" else None
        self.client = AvroClient(config.hostname, config.port, config.connect_timeout_ms / 1000,
                                 config.request_timeout_ms / 1000, level, context)
        # Ids of events the next hop confirmed during a write that then failed (at most one write's worth).
        self.confirmed: set[str] = set()

    def write(self, batch) -> None:
        """Send ``batch`` in calls of ``batch-size`` events.  When a call fails after earlier calls of the same
        write were answered OK, the write raises and the runner sends the batch again: the events already
        confirmed are left out of that retry (by id), so a batch larger than ``batch-size`` is not sent twice
        because its last call failed."""
        if not len(batch):
            return
        headers = batch.headers if batch.headers is not None else [{}] * len(batch)
        ids = batch.ids if batch.ids is not None else [""] * len(batch)
        pending = [(body, {**h, ID_HEADER: i} if i else h, i) for body, h, i in zip(batch.bodies, headers, ids)
                   if not (i and i in self.confirmed)]
        size = self.config.batch_size
        for start in range(0, len(pending), size):
            chunk = pending[start:start + size]
            self._call(event_records([c[0] for c in chunk], [c[1] for c in chunk]))
            self.confirmed.update(c[2] for c in chunk if c[2])
        self.confirmed.clear()          # the whole batch is confirmed: its messages are acknowledged next

    def _call(self, records: list[dict]) -> None:
        client = self.client
        interval = self.config.reset_connection_interval_s
        if client.connected and interval and time.monotonic() - client.connected_at >= interval:
            log.info("avro sink %s: replacing the connection to %s:%d (reset-connection-interval)", self.name,
                     client.host, client.port)
            client.close()
        try:
            status = client.call("appendBatch", records)
        except BaseException:
            client.close()           # its state is unknown: an answer may still be on its way
            raise
        if status != "OK":
            client.close()
            raise DeliveryFailed(f"avro sink {self.name}: {client.host}:{client.port} answered {status} to "
                                 f"{len(records)} events")

    def stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
