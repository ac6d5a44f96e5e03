"""A blocking Avro RPC client for Flume's protocol (what Flume's NettyAvroRpcClient does), one connection.

:meth:`AvroClient.call` sends one ``append``/``appendBatch`` and returns the server's Status symbol, or raises:
``TimeoutError`` (no answer within ``request_timeout_s``), ``OSError`` (connection refused, reset, TLS failure),
:class:`~workers.rpc.avro_ipc.RemoteError` or :class:`~workers.rpc.avro_ipc.ProtocolError`.  After any exception the
connection's state is unknown (a late answer may still come), so the caller closes it and connects again.
"""
from __future__ import annotations

import socket
import ssl
import time

from workers.rpc.avro_ipc import ClientSession, ProtocolError
from workers.rpc.netty_frames import FrameDecoder, FrameEncoder
from workers.rpc.sockets import open_connection

READ_SIZE = 64 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024          # a Status answer is a few bytes; an error text a few hundred


class AvroClient:
    def __init__(self, host: str, port: int, connect_timeout_s: float, request_timeout_s: float,
                 deflate_level: int | None = None, ssl_context: ssl.SSLContext | None = None):
        self.host, self.port = host, port
        self.connect_timeout_s, self.request_timeout_s = connect_timeout_s, request_timeout_s
        self.deflate_level = deflate_level
        self.ssl_context = ssl_context
        self.sock: socket.socket | None = None
        self.connected_at = 0.0

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self) -> None:
        sock = open_connection(self.host, self.port, self.connect_timeout_s, self.ssl_context)
        self.sock = sock
        self.session = ClientSession()
        self.encoder = FrameEncoder(self.deflate_level)
        self.decoder = FrameDecoder(MAX_RESPONSE_BYTES, deflate=self.deflate_level is not None)
        self.serial = 0
        self.connected_at = time.monotonic()

    def call(self, message: str, records: list[dict]) -> str:
        if self.sock is None:
            self.connect()
        self.serial = (self.serial + 1) & 0x7FFFFFFF
        data = self.encoder.encode(self.serial, self.session.request(message, records))
        deadline = time.monotonic() + self.request_timeout_s
        self._settimeout(deadline)
        self.sock.sendall(data)
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                serial, payload = frame
                if serial != self.serial:
                    raise ProtocolError(f"answer to call {serial} while waiting for call {self.serial}")
                return self.session.response(payload)
            self._settimeout(deadline)
            chunk = self.sock.recv(READ_SIZE)
            if not chunk:
                raise ConnectionResetError(f"{self.host}:{self.port} closed the connection without answering")
            self.decoder.feed(chunk)

    def _settimeout(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no answer from {self.host}:{self.port} within {self.request_timeout_s:.1f}s")
        self.sock.settimeout(remaining)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
