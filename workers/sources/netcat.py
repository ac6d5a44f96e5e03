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
        pending = b""
        skipping = False                  # inside an over-long line, until its newline
        limit = self.config.max_line_length
        try:
            while not self.stopping.is_set():
                try:
                    data = sock.recv(READ_SIZE)
                except socket.timeout:
                    continue
                if not data:
                    return
                pending += data
                lines = pending.split(b"\n")
                pending = lines.pop()
                bodies, replies = [], []
                for line in lines:
                    if skipping or len(line) + 1 > limit:
                        if not skipping:
                            self.counters.add(names.EVENT_READ_FAIL)
                        skipping = False
                        replies.append(self._too_long())
                        continue
                    bodies.append(line)
                    replies.append(b"OK\n")
                if len(pending) + 1 > limit and not skipping:
                    skipping, pending = True, b""
                    self.counters.add(names.EVENT_READ_FAIL)
                elif skipping:
                    pending = b""
                for start in range(0, len(bodies), MAX_BATCH):
                    if not self.deliver(Batch(bodies[start:start + MAX_BATCH])):
                        return            # stopping: the unacknowledged lines are not in any channel
                if self.config.ack_every_event:
                    sock.sendall(b"".join(replies))
                elif any(r != b"OK\n" for r in replies):
                    sock.sendall(b"".join(r for r in replies if r != b"OK\n"))
        except OSError as exc:
            log.info("netcat source %s: connection ended: %s", self.name, exc)
        finally:
            self.counters.add(names.OPEN_CONNECTION, -1)
            sock.close()

    def _too_long(self) -> bytes:
        return (f"FAILED: Event exceeds the maximum length ({self.config.max_line_length} chars, "
                f"including newline)\n").encode()
