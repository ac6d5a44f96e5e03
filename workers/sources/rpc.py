"""What the RPC sources (``avro``, ``thrift``) share: the server's lifecycle (:mod:`workers.rpc.server`), TLS from
a keystore or PEM files (checked and built as for the syslog sources), Flume's IP filter, and the put of one
call's events, answered OK only once they are in every required channel."""
from __future__ import annotations

import logging

from core import counters as names
from core.errors import PutRefused
from core.event import ID_HEADER, Batch, IdRange
from workers.rpc.ip_filter import parse_rules
from workers.rpc.server import RpcServer
from workers.sources.base import Source
from workers.sources.syslogtcp import check_tls, tls_context

log = logging.getLogger(__name__)


def to_batch(records: list[dict]) -> Batch:
    """Event records (``{"headers": dict, "body": bytes}``) -> a Batch; a ``flumery.id`` header becomes the
    event's id (the header maps are the decoder's, ours to change)."""
    bodies, headers, ids = [], [], []
    for record in records:
        fields = record["headers"]
        ids.append(fields.pop(ID_HEADER, ""))
        headers.append(fields)
        bodies.append(record["body"])
    if not all(ids):
        fresh = IdRange.fresh(len(ids))
        ids = [i or fresh[n] for n, i in enumerate(ids)] if any(ids) else fresh
    return Batch(bodies, headers if any(headers) else None, ids)


class RpcSource(Source):
    """What the avro and thrift sources share: the server's lifecycle, TLS, the IP filter and the put of a call."""

    label = "rpc source"

    @classmethod
    def check(cls, config, refs=()):
        problems = check_tls(config)
        if getattr(config, "ip_filter", False) and not config.ip_filter_rules:
            problems.append(("ipFilterRules", "required when ipFilter = true"))
        return problems

    def new_connection(self):
        raise NotImplementedError

    def open(self) -> None:
        config = self.config
        rules = parse_rules(config.ip_filter_rules) if getattr(config, "ip_filter", False) else None
        context = tls_context(config)         # KeystoreError is an OSError: the agent reports it
        self.server = RpcServer(f"{self.label} {self.name}", config.bind, config.port, self.new_connection,
                                self.counters, config.threads, config.max_connections, context, rules)
        self.port = self.server.port
        log.info("%s %s listening on %s:%d%s", self.label, self.name, config.bind, self.port,
                 " (TLS)" if config.ssl else "")

    def serve(self) -> None:
        self.server.run()

    def close(self) -> None:
        self.server.stop()

    def put_call(self, single: bool, records: list[dict]) -> bool:
        """Put a call's events; True once they are in every required channel, False if the put failed (nothing
        of them is then in any required channel).  An ``append`` counts as Flume's Append*, an ``appendBatch``
        as AppendBatch* (by ``Source.put``)."""
        try:
            if single:
                self._put_single(to_batch(records))
            elif records:
                self.put(to_batch(records))
            else:
                self.counters.add(names.APPEND_BATCH_RECEIVED)
                self.counters.add(names.APPEND_BATCH_ACCEPTED)
        except PutRefused as exc:
            log.info("%s %s: answering FAILED to %d events: %s", self.label, self.name, len(records), exc)
            return False
        except Exception as exc:          # the broker is down or restarting: the sender retries
            names.fail(self.counters, names.GENERIC_PROCESSING_FAIL, log, logging.WARNING,
                       "%s %s: put of %d events failed (%s); answering FAILED", self.label, self.name,
                       len(records), exc)
            return False
        return True

    def _put_single(self, batch: Batch) -> None:
        self.counters.add(names.EVENT_RECEIVED, len(batch))
        self.counters.add(names.APPEND_RECEIVED)
        self._attempt(batch)
        self.counters.add(names.APPEND_ACCEPTED)
