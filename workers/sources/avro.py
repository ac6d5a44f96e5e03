"""``avro``: Flume's AvroSource, the receiving end of an avro hop (Avro IPC over Netty framing, Flume's
``AvroSourceProtocol``), wire-compatible with Flume's avro sink and RPC client.

Contract: every ``append`` / ``appendBatch`` call is answered ``OK`` only after its events are in every required
channel (one put transaction), and ``FAILED`` when the put was refused (a channel full, a batch over a channel's
capacity) or the broker failed: nothing of that call is then in any required channel, and the sender retries
it.  A client's ``flumery.id`` header (set by Flumery's avro sink) becomes the event's id, so ids survive the hop.

Connections are served by one asyncio loop; decoding and the put of each call run in a pool of ``threads``
threads, so at most that many puts are in flight.  Calls on one connection are answered in order.

Bounded memory: a connection holds at most one frame (``maxFrameBytes``, counting its headers, checked before
the bytes are read; a deflate stream is inflated only as far as the frame being read needs), and at most
``maxConnections`` connections are served at once (further ones are closed at once), so the source's buffers
never exceed maxConnections x maxFrameBytes.  A frame over the limit, or bytes that are not Avro IPC, close the
connection (counted as EventReadFail).

Differences from Flume, on purpose: ``threads`` bounds the puts in flight (Flume: the Netty worker threads,
unbounded by default); ``maxFrameBytes`` and ``maxConnections`` are Flumery's (Flume has no bound).  TLS keystores
may be JKS or PEM (see :mod:`workers.rpc.tls`).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from core import counters as names
from core.errors import PutRefused
from core.event import ID_HEADER, Batch, IdRange
from core.options import one_of, opt, port_number, positive
from workers.rpc import tls
from workers.rpc.avro_ipc import Call, KnownProtocols, ProtocolError, ServerSession
from workers.rpc.ip_filter import allowed, check_rules, parse_rules
from workers.rpc.netty_frames import FrameDecoder, FrameEncoder, FrameError
from workers.sources.base import Source

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
STOP_TIMEOUT_S = 10.0
DEFLATE_LEVEL = 6              # Flume's AvroSource compresses its answers at level 6


def _protocols(value: list[str]) -> str | None:
    unknown = [p for p in value if p not in tls.KNOWN_PROTOCOLS]
    return f"unknown protocol {', '.join(unknown)} (known: {', '.join(tls.KNOWN_PROTOCOLS)})" if unknown else None


@dataclass(frozen=True)
class AvroSourceConfig:
    bind: str = opt("bind", doc="address to listen on")
    port: int = opt("port", check=port_number, doc="TCP port (0 picks a free one)")
    threads: int = opt("threads", 16, check=positive,
                       doc="calls decoded and put at once (Flume: Netty worker threads, unbounded)")
    compression_type: str = opt("compression-type", "none", check=one_of("none", "deflate"),
                                doc="none or deflate (a zlib stream, as netty 3's ZlibEncoder); must match the sender")
    ssl: bool = opt("ssl", False, doc="serve TLS")
    keystore: str = opt("keystore", "", doc="the server key and certificate chain: a JKS or PEM file")
    keystore_password: str = opt("keystore-password", "", doc="password of the keystore (and of its key)")
    keystore_type: str = opt("keystore-type", "JKS", check=one_of(*tls.STORE_TYPES), doc="JKS or PEM")
    exclude_protocols: list[str] = opt("exclude-protocols", ["SSLv3"], check=_protocols,
                                       doc="TLS versions not to accept (Java names, space-separated)")
    include_protocols: list[str] = opt("include-protocols", [], check=_protocols,
                                       doc="TLS versions to accept (Java names; empty = all but the excluded)")
    ip_filter: bool = opt("ipFilter", False, doc="accept or refuse clients by ipFilterRules")
    ip_filter_rules: str = opt("ipFilterRules", "", check=lambda v: check_rules(v) if v else None,
                               doc="allow|deny:ip|name:pattern, comma-separated; the first match wins")
    max_frame_bytes: int = opt("maxFrameBytes", 16 * 1024 * 1024, check=positive,
                               doc="Flumery: largest call accepted, in bytes (larger ones close the connection)")
    max_connections: int = opt("maxConnections", 128, check=positive,
                               doc="Flumery: connections served at once (further ones are closed)")


def to_batch(records: list[dict]) -> Batch:
    """AvroFlumeEvent records -> a Batch; a ``flumery.id`` header becomes the event's id."""
    bodies, headers, ids = [], [], []
    for record in records:
        fields = record["headers"]
        ids.append(fields.pop(ID_HEADER, ""))       # fastavro made the dict: ours to change
        headers.append(fields)
        bodies.append(record["body"])
    if not all(ids):
        fresh = IdRange.fresh(len(ids))
        ids = [i or fresh[n] for n, i in enumerate(ids)] if any(ids) else fresh
    return Batch(bodies, headers if any(headers) else None, ids)


class AvroSource(Source):
    Config = AvroSourceConfig

    @classmethod
    def check(cls, config, refs=()):
        problems = []
        if config.ssl and not config.keystore:
            problems.append(("keystore", "required when ssl = true"))
        if config.ip_filter and not config.ip_filter_rules:
            problems.append(("ipFilterRules", "required when ipFilter = true"))
        return problems

    # -- lifecycle -------------------------------------------------------------------------------------------
    def open(self) -> None:
        config = self.config
        self.rules = parse_rules(config.ip_filter_rules) if config.ip_filter else None
        self.ssl_context = None
        if config.ssl:
            self.ssl_context = tls.server_context(config.keystore, config.keystore_password, config.keystore_type,
                                                  config.exclude_protocols, config.include_protocols)
        self.deflate = config.compression_type.lower() == "deflate"
        self.known = KnownProtocols()
        self.sock = socket.create_server((config.bind, config.port), backlog=128)
        self.port = self.sock.getsockname()[1]
        self.pool = ThreadPoolExecutor(config.threads, thread_name_prefix=f"source-{self.name}-put")
        self.connections: set[asyncio.StreamWriter] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        log.info("avro source %s listening on %s:%d%s%s", self.name, config.bind, self.port,
                 " (deflate)" if self.deflate else "", " (TLS)" if config.ssl else "")

    def serve(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop))
        finally:
            self.pool.shutdown(wait=True)          # puts in flight finish; their answers are not sent
            loop.close()

    async def _serve(self, loop) -> None:
        self.loop, self.stopped = loop, asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self.sock, ssl=self.ssl_context,
                                            limit=READ_SIZE)
        self.ready.set()
        if not self.stopping.is_set():
            await self.stopped.wait()
        server.close()
        for writer in list(self.connections):
            writer.close()            # a connection waiting for its next call ends; one in a put finishes it
        tasks = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def close(self) -> None:
        if self.ready.wait(5) and self.loop is not None:
            self.loop.call_soon_threadsafe(self.stopped.set)
        else:
            self.sock.close()

    # -- connections -----------------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = (writer.get_extra_info("peername") or ("?",))[0]
        if not await self._admit(address, writer):
            writer.close()
            return
        self.connections.add(writer)
        self.counters.add(names.OPEN_CONNECTION)
        try:
            await self._serve_connection(reader, writer)
        except asyncio.CancelledError:
            pass                          # the source is stopping
        except (FrameError, ProtocolError) as exc:
            names.fail(self.counters, names.EVENT_READ_FAIL, log, logging.WARNING,
                       "avro source %s: closing the connection from %s: %s", self.name, address, exc)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.info("avro source %s: connection from %s ended: %s", self.name, address, exc)
        except Exception:
            names.fail(self.counters, names.GENERIC_PROCESSING_FAIL, log, logging.ERROR,
                       "avro source %s: closing the connection from %s after an unexpected error", self.name,
                       address, exc_info=True)
        finally:
            self.connections.discard(writer)
            self.counters.add(names.OPEN_CONNECTION, -1)
            writer.close()

    async def _admit(self, address: str, writer) -> bool:
        if len(self.connections) >= self.config.max_connections:
            log.warning("avro source %s: refusing a connection from %s: %d connections open (maxConnections)",
                        self.name, address, len(self.connections))
            return False
        if self.rules is not None and not await self.loop.run_in_executor(self.pool, allowed, self.rules, address):
            log.warning("avro source %s: connection from %s denied by ipFilterRules", self.name, address)
            return False
        return True

    async def _serve_connection(self, reader, writer) -> None:
        decoder = FrameDecoder(self.config.max_frame_bytes, deflate=self.deflate)
        encoder = FrameEncoder(DEFLATE_LEVEL if self.deflate else None)
        session = ServerSession(self.known)
        while True:
            frame = decoder.next_frame()
            if frame is None:
                data = await reader.read(READ_SIZE)
                if not data:
                    return
                decoder.feed(data)
                continue
            serial, payload = frame
            answer = await self.loop.run_in_executor(self.pool, self._answer, session, payload)
            writer.write(encoder.encode(serial, answer))
            await writer.drain()

    # -- calls (in the pool's threads) -----------------------------------------------------------------------
    def _answer(self, session: ServerSession, payload: bytes) -> bytes:
        parsed = session.parse(payload)
        if isinstance(parsed, bytes):
            return parsed
        return session.reply(parsed, self._put(parsed))

    def _put(self, call: Call) -> str:
        single = call.message == "append"
        self.counters.add(names.APPEND_RECEIVED if single else names.APPEND_BATCH_RECEIVED)
        if not call.records:
            return "OK"
        try:
            self.put(to_batch(call.records))
        except PutRefused as exc:
            log.info("avro source %s: answering FAILED to %d events: %s", self.name, len(call.records), exc)
            return "FAILED"
        except Exception as exc:          # the broker is down or restarting: the sender retries
            names.fail(self.counters, names.GENERIC_PROCESSING_FAIL, log, logging.WARNING,
                       "avro source %s: put of %d events failed (%s); answering FAILED", self.name,
                       len(call.records), exc)
            return "FAILED"
        self.counters.add(names.APPEND_ACCEPTED if single else names.APPEND_BATCH_ACCEPTED)
        return "OK"
