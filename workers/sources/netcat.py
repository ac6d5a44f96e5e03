"""``netcat``: Flume's NetcatSource, a line-per-event TCP listener.

Each line (up to ``max-line-length`` bytes including the newline; the ``\\n`` is not part of the body) is one
event.  The lines a client has sent so far are put as one batch, and each gets its ``OK`` reply only after the
batch is in every required channel.  While the channels are full the connection is simply not read, so TCP
pushes back on the client; nothing is dropped.  A line that is too long is answered
``FAILED: Event exceeds the maximum length (N chars, including newline)`` and skipped, as in Flume.
"""
from __future__ import annotations

import logging
import socket
import socketserver
from dataclasses import dataclass

from core import counters as names
from core.event import Batch
from core.options import opt, port_number, positive
from workers.sources.base import Source

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
MAX_BATCH = 1000


@dataclass(frozen=True)
class NetcatConfig:
    bind: str = opt("bind", doc="address to listen on")
    port: int = opt("port", check=port_number, doc="TCP port (0 picks a free one)")
    max_line_length: int = opt("max-line-length", 512, check=positive, doc="longest line in bytes, with newline")
    ack_every_event: bool = opt("ack-every-event", True, doc="answer OK for every event")


class NetcatSource(Source):
    Config = NetcatConfig

    def open(self) -> None:
        source = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                source.handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server((self.config.bind, self.config.port), Handler)
        self.port = self.server.server_address[1]
        log.info("netcat source %s listening on %s:%d", self.name, self.config.bind, self.port)

    def serve(self) -> None:
        self.server.serve_forever()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, sock: socket.socket) -> None:
        """One client connection: lines in, ``OK`` (or ``FAILED: ...``) out after the put."""
        self.counters.add(names.OPEN_CONNECTION)
        sock.settimeout(0.5)
        lines = LineSplitter(self.config.max_line_length)
        try:
            while not self.stopping.is_set():
                try:
                    data = sock.recv(READ_SIZE)
                except socket.timeout:
                    continue
                if not data:
                    return
                bodies, replies, too_long = lines.feed(data, self._too_long())
                self.counters.add(names.EVENT_READ_FAIL, too_long)
                if not self._deliver_all(bodies):
                    return                # stopping: the unacknowledged lines are not in any channel
                self._answer(sock, replies)
        except OSError as exc:
            log.info("netcat source %s: connection ended: %s", self.name, exc)
        finally:
            self.counters.add(names.OPEN_CONNECTION, -1)
            sock.close()

    def _deliver_all(self, bodies: list[bytes]) -> bool:
        for start in range(0, len(bodies), MAX_BATCH):
            if not self.deliver(Batch(bodies[start:start + MAX_BATCH])):
                return False
        return True

    def _answer(self, sock: socket.socket, replies: list[bytes]) -> None:
        """Flume answers every line (``ack-every-event``), or only the failed ones."""
        if not self.config.ack_every_event:
            replies = [r for r in replies if r != OK]
        if replies:
            sock.sendall(b"".join(replies))

    def _too_long(self) -> bytes:
        return (f"FAILED: Event exceeds the maximum length ({self.config.max_line_length} chars, "
                f"including newline)\n").encode()


OK = b"OK\n"


class LineSplitter:
    """Splits a connection's bytes into lines of at most ``limit`` bytes (newline included), holding at most one
    partial line; an over-long line is skipped up to its newline and answered with the failure reply."""

    def __init__(self, limit: int):
        self.limit = limit
        self.pending = b""
        self.skipping = False             # inside an over-long line, until its newline

    def feed(self, data: bytes, failure: bytes) -> tuple[list[bytes], list[bytes], int]:
        """(complete lines, one reply per line, how many lines were too long) for ``data``."""
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        bodies, replies, too_long = [], [], 0
        for line in lines:
            if self.skipping or len(line) + 1 > self.limit:
                too_long += not self.skipping     # the over-long line was counted when it began
                self.skipping = False
                replies.append(failure)
                continue
            bodies.append(line)
            replies.append(OK)
        if len(self.pending) + 1 > self.limit and not self.skipping:
            self.skipping, self.pending = True, b""
            too_long += 1
        elif self.skipping:
            self.pending = b""
        return bodies, replies, too_long
