"""The client side of an RPC hop's connection, shared by the avro and thrift clients."""
from __future__ import annotations

import socket
import ssl


def open_connection(host: str, port: int, timeout_s: float, ssl_context: ssl.SSLContext | None) -> socket.socket:
    """A connected socket to ``host:port`` (TLS when ``ssl_context`` is given), Nagle off: a call is one write
    followed by a wait for its answer.  Raises OSError (or ssl.SSLError) and leaks nothing when it cannot."""
    sock = socket.create_connection((host, port), timeout=timeout_s)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
    return sock
