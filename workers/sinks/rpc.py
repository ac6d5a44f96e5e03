"""What the RPC sinks (``avro``, ``thrift``) share: sending a batch as calls of ``batch-size`` events over one
client connection, returning only when every call was answered OK.

The client (``self.client``, made by the subclass's ``start``) has ``call(message, records) -> status``,
``connected``, ``connected_at``, ``close()``, ``host`` and ``port``; a record is ``{"headers": ..., "body": ...}``.
After any failure the connection is closed (its state is unknown: an answer may still come) and the next call
connects again; the connection is also replaced after ``reset_connection_interval_s`` seconds when set.
"""
from __future__ import annotations

import logging
import time

from core.event import ID_HEADER
from workers.sinks.base import Sink

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """The next hop answered something other than OK: the batch is not there, and must be sent again."""


class RpcSink(Sink):
    label = "rpc sink"

    def start(self) -> None:
        self.client = self.make_client()
        # Ids of events the next hop confirmed during a write that then failed (at most one write's worth).
        self.confirmed: set[str] = set()

    def make_client(self):
        raise NotImplementedError

    def write(self, batch) -> None:
        """Send ``batch`` in calls of ``batch-size`` events.  When a call fails after earlier calls of the same
        write were answered OK, the write raises and the runner sends the batch again: the events already
        confirmed are left out of that retry (by id), so a batch larger than ``batch-size`` is not sent twice
        because its last call failed."""
        if not len(batch):
            return
        headers = batch.headers if batch.headers is not None else [{}] * len(batch)
        ids = batch.ids if batch.ids is not None else [""] * len(batch)
        pending = [(body, {**h, ID_HEADER: i} if i else h, i)
                   for body, h, i in zip(batch.bodies, headers, ids, strict=True) if not (i and i in self.confirmed)]
        size = self.config.batch_size
        for start in range(0, len(pending), size):
            chunk = pending[start:start + size]
            self._call([{"headers": c[1], "body": c[0]} for c in chunk])
            self.confirmed.update(c[2] for c in chunk if c[2])
        self.confirmed.clear()          # the whole batch is confirmed: its messages are acknowledged next

    def _call(self, records: list[dict]) -> None:
        client = self.client
        interval = self.config.reset_connection_interval_s
        if client.connected and interval and time.monotonic() - client.connected_at >= interval:
            log.info("%s %s: replacing the connection to %s:%d (connection reset interval)", self.label, self.name,
                     client.host, client.port)
            client.close()
        try:
            status = client.call("appendBatch", records)
        except BaseException:
            client.close()           # its state is unknown: an answer may still be on its way
            raise
        if status != "OK":
            client.close()
            raise DeliveryFailed(f"{self.label} {self.name}: {client.host}:{client.port} answered {status} to "
                                 f"{len(records)} events")

    def stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
