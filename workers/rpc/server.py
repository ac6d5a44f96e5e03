"""The network side of an RPC source (avro, thrift): one asyncio loop accepting and reading connections, a pool
of threads decoding calls and putting them, answers written back in order per connection.

Contract: :class:`RpcServer` is built in a source's ``open`` (it binds there, so a port in use fails the start),
runs in its ``serve`` thread (:meth:`RpcServer.run`) and is stopped by its ``close`` (:meth:`RpcServer.stop`):
the listening socket and every connection close, calls being put finish (their answers are not sent), and
``run`` returns.

Per connection the protocol object made by ``new_connection()`` gets the bytes read (``feed``), hands out the
complete calls (``next_call``: None when more bytes are needed), answers each (``answer``, in a pool thread:
decoding and the put happen there, never on the loop) and encodes the answer (``encode``).  The server reads a
connection only when its protocol has no complete call left, so a connection holds at most one call's bytes
plus one read (the protocol checks the call's size against its limit).

Bounds: ``max_connections`` connections are served at once (further ones are closed at once and logged);
``threads`` calls are decoded and put at once; ``rules`` (Flume's ipFilterRules) admit or refuse clients.
A protocol error (:class:`RpcProtocolError` from the protocol) closes that connection and counts EventReadFail.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol

from core import counters as names
from workers.rpc.ip_filter import Rule, allowed

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
STOP_TIMEOUT_S = 10.0


class RpcProtocolError(Exception):
    """The peer broke the wire protocol (bad frame, frame over the limit, undecodable call): close it."""


class ConnectionProtocol(Protocol):
    def feed(self, data: bytes) -> None: ...
    def next_call(self): ...
    def answer(self, call) -> bytes: ...
    def encode(self, call, answer: bytes) -> bytes: ...


class RpcServer:
    def __init__(self, label: str, bind: str, port: int, new_connection: Callable[[], ConnectionProtocol],
                 counters, threads: int, max_connections: int, ssl_context: ssl.SSLContext | None = None,
                 rules: list[Rule] | None = None):
        self.label = label
        self.new_connection = new_connection
        self.counters = counters
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.rules = rules
        self.sock = socket.create_server((bind, port), backlog=128)
        self.port = self.sock.getsockname()[1]
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix=f"{label}-call")
        self.connections: set[asyncio.StreamWriter] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.stopping = False

    # -- lifecycle -------------------------------------------------------------------------------------------
    def run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop))
        finally:
            self.pool.shutdown(wait=True)          # calls being put finish; their answers are not sent
            loop.close()

    async def _serve(self, loop) -> None:
        self.loop, self.stopped = loop, asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self.sock, ssl=self.ssl_context, limit=READ_SIZE)
        self.ready.set()
        if not self.stopping:
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

    def stop(self) -> None:
        self.stopping = True
        if self.ready.wait(5) and self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self.stopped.set)
            except RuntimeError:
                pass                     # the loop saw ``stopping`` first and has ended already
        else:
            self.sock.close()

    # -- connections -----------------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = (writer.get_extra_info("peername") or ("?",))[0]
        if not await self._admit(address):
            writer.close()
            return
        self.connections.add(writer)
        self.counters.add(names.OPEN_CONNECTION)
        try:
            await self._serve_connection(reader, writer, self.new_connection())
        except asyncio.CancelledError:
            pass                          # the source is stopping
        except RpcProtocolError as exc:
            names.fail(self.counters, names.EVENT_READ_FAIL, log, logging.WARNING,
                       "%s: closing the connection from %s: %s", self.label, address, exc)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.info("%s: connection from %s ended: %s", self.label, address, exc)
        except Exception:
            names.fail(self.counters, names.GENERIC_PROCESSING_FAIL, log, logging.ERROR,
                       "%s: closing the connection from %s after an unexpected error", self.label, address,
                       exc_info=True)
        finally:
            self.connections.discard(writer)
            self.counters.add(names.OPEN_CONNECTION, -1)
            writer.close()

    async def _admit(self, address: str) -> bool:
        if len(self.connections) >= self.max_connections:
            log.warning("%s: refusing a connection from %s: %d connections open (maxConnections)", self.label,
                        address, len(self.connections))
            return False
        if self.rules is not None and not await self.loop.run_in_executor(self.pool, allowed, self.rules, address):
            log.warning("%s: connection from %s denied by ipFilterRules", self.label, address)
            return False
        return True

    async def _serve_connection(self, reader, writer, protocol: ConnectionProtocol) -> None:
        while True:
            call = protocol.next_call()
            if call is None:
                data = await reader.read(READ_SIZE)
                if not data:
                    return
                protocol.feed(data)
                continue
            answer = await self.loop.run_in_executor(self.pool, protocol.answer, call)
            writer.write(protocol.encode(call, answer))
            await writer.drain()
