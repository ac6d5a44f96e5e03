"""The network side shared by the syslog and netcatudp sources: a TCP server for line streams, a UDP reader, the
client headers, and delivery in bounded batches.  The parsing is in :mod:`workers.sources.syslog_parser`.

**TCP** (:class:`StreamSource`): one thread serves every listening port and every connection with non-blocking
sockets (``selectors``).  Each round reads at most one buffer from each ready connection, parses what it can, and
puts the events read in that round (in batches of ``batch_size``).  While the channels are full the put is
retried and *no* socket is read, so the kernel's receive buffers fill and TCP pushes back on every client:
nothing is dropped and memory is bounded by one read buffer and one partial event per connection.  Syslog over
TCP has no acknowledgement, so a client learns nothing else; a put that failed because the agent stopped is
lost with the connection's unsent data, as it would be in Flume.  At most ``max_connections`` connections are
served; more are accepted and closed at once (counted and logged).

**UDP** (:class:`DatagramSource`): datagrams are read while there is room in the channels.  While they are full
the socket is not read: the kernel keeps what fits in the socket's receive buffer (``net.core.rmem_default``,
about 208 KiB here) and drops the rest.  Those drops are read from the kernel (``SO_RXQ_OVFL``: a count carried
by the next datagram received) and added to ``EventReadFail``, with a warning; so are datagrams that cannot be
made into an event at all.  UDP has no acknowledgement and no retransmission: a datagram lost on the network is
lost without a trace.
"""
from __future__ import annotations

import errno
import logging
import selectors
import socket
import ssl
import struct
import threading
from collections import OrderedDict
from typing import Iterable

from core import counters as names
from core.errors import BatchTooLarge
from core.event import Batch
from workers.sources.base import Source

log = logging.getLogger(__name__)

SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)      # Linux; Python does not name it
MAX_DATAGRAM = 65535
MAX_READ = 64 * 1024
POLL_S = 0.2


class ClientNames:
    """Reverse lookups of client addresses (``clientHostnameHeader``), at most ``size`` remembered.  A lookup
    blocks the reading thread, as Java's ``InetSocketAddress.getHostName`` does in Flume."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, ip: str) -> str:
        with self._lock:
            if ip in self._cache:
                self._cache.move_to_end(ip)
                return self._cache[ip]
        try:
            name = socket.gethostbyaddr(ip)[0]
        except OSError:
            name = ip                 # Java falls back to the address's text
        with self._lock:
            self._cache[ip] = name
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return name


def client_headers(ip_header: str | None, host_header: str | None, ip: str, names_of: ClientNames) -> dict:
    """The ``clientIPHeader``/``clientHostnameHeader`` headers of a client."""
    headers = {}
    if ip_header:
        headers[ip_header] = ip
    if host_header:
        headers[host_header] = names_of(ip)
    return headers


class NetSource(Source):
    """Delivery shared by the network sources: ``batch_size`` events per put, a batch too large for a channel
    split until it fits."""

    batch_size = 100

    def put_events(self, events: list[tuple[dict, bytes]]) -> bool:
        """Put every event, in order; False if the source stopped first (the rest are not put)."""
        for start in range(0, len(events), self.batch_size):
            if not self._put(events[start:start + self.batch_size]):
                return False
        return True

    def _put(self, events: list[tuple[dict, bytes]]) -> bool:
        try:
            return self.deliver(Batch([b for _, b in events], [h for h, _ in events]))
        except BatchTooLarge:
            if len(events) == 1:
                raise
            half = len(events) // 2             # a channel smaller than our batch: put it in halves
            return self._put(events[:half]) and self._put(events[half:])


class Connection:
    """One TCP client: its socket, its reader (what turns bytes into events) and the headers of its events."""

    __slots__ = ("sock", "reader", "headers", "read_size", "handshaken", "port", "more")

    def __init__(self, sock, reader, headers: dict, read_size: int, port: int, handshaken: bool):
        self.sock, self.reader, self.headers = sock, reader, headers
        self.read_size, self.port, self.handshaken = read_size, port, handshaken
        self.more = False


class StreamSource(NetSource):
    """A TCP source of newline-delimited messages on one or more ports (see the module docstring).

    Subclasses give ``host``, ``ports()``, ``read_size``, ``max_connections``, ``tls`` (an ``ssl.SSLContext`` or
    None), and ``reader(port)``: an object with ``feed(bytes) -> [(headers, body)]`` and ``finish() ->
    [(headers, body)]`` (at the end of the connection), and ``connection_headers(ip, port) -> dict``.
    """

    host = "0.0.0.0"
    read_size = 1024
    max_connections = 1000
    tls: ssl.SSLContext | None = None

    def ports(self) -> list[int]:
        raise NotImplementedError

    def reader(self, port: int):
        raise NotImplementedError

    def connection_headers(self, ip: str, port: int) -> dict:
        return {}

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def open(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.listeners: list[socket.socket] = []
        self.connections: dict[socket.socket, Connection] = {}
        try:
            for port in self.ports():
                self.listeners.append(self._listen(port))
        except OSError:
            self._close_all()
            raise
        self.bound_ports = [s.getsockname()[1] for s in self.listeners]
        log.info("%s source %s listening on %s port(s) %s%s", self.kind, self.name, self.host,
                 " ".join(map(str, self.bound_ports)), " (TLS)" if self.tls else "")

    def _listen(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {self.host}:{port}: {exc.strerror}") from None
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, None)
        return sock

    def serve(self) -> None:
        try:
            while not self.stopping.is_set():
                events: list[tuple[dict, bytes]] = []
                ready = []
                for key, _mask in self.selector.select(POLL_S):
                    if key.data is None:
                        self._accept(key.fileobj)
                    else:
                        ready.append(key.data)
                # Read the ready connections in turns until a batch is full or they have nothing more: fewer,
                # larger puts (each put is a broker transaction, fsynced for a file channel).
                while ready and len(events) < self.batch_size:
                    ready = [conn for conn in ready if self._read_into(conn, events)]
                if events and not self.put_events(events):
                    return
        finally:
            self._close_all()

    def _close_all(self) -> None:
        for conn in list(self.connections.values()):
            self._drop(conn)
        for sock in self.listeners:
            sock.close()
        self.selector.close()

    # -- connections --------------------------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:            # out of file descriptors, ...: keep serving the others
                names.fail(self.counters, names.GENERIC_PROCESSING_FAIL, log, logging.WARNING,
                           "%s source %s: accept failed: %s", self.kind, self.name, exc)
                return
            if len(self.connections) >= self.max_connections:
                names.fail(self.counters, names.GENERIC_PROCESSING_FAIL, log, logging.WARNING,
                           "%s source %s: %d connections already open; closing the one from %s",
                           self.kind, self.name, len(self.connections), address[0])
                sock.close()
                continue
            self._add(sock, address, listener.getsockname()[1])

    def _add(self, sock: socket.socket, address, port: int) -> None:
        sock.setblocking(False)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        conn = Connection(sock, self.reader(port), self.connection_headers(address[0], port), self.read_size,
                          port, handshaken=self.tls is None)
        self.connections[sock] = conn
        self.selector.register(sock, selectors.EVENT_READ, conn)
        self.counters.add(names.OPEN_CONNECTION)
        log.debug("%s source %s: connection from %s:%s", self.kind, self.name, address[0], address[1])

    def _drop(self, conn: Connection) -> None:
        if self.connections.pop(conn.sock, None) is None:
            return
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        self.counters.add(names.OPEN_CONNECTION, -1)

    def _read_into(self, conn: Connection, events: list) -> bool:
        """One read from a connection into ``events``; True if it may have more to read now."""
        size = len(events)
        events += self._read(conn)
        return conn.sock in self.connections and conn.handshaken and (len(events) > size or conn.more)

    def _read(self, conn: Connection) -> list[tuple[dict, bytes]]:
        """One read from a ready connection: the events it completed (all of them at its end)."""
        conn.more = False
        try:
            if not conn.handshaken:
                conn.sock.do_handshake()
                conn.handshaken = True
            data = conn.sock.recv(conn.read_size)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return []
        except (OSError, ssl.SSLError) as exc:
            log.info("%s source %s: connection ended: %s", self.kind, self.name, exc)
            self._drop(conn)
            return []
        if not data:                              # the client closed: what it sent without a newline is an event
            events = self._with_headers(conn, conn.reader.finish())
            self._drop(conn)
            return events
        if len(data) == conn.read_size:
            conn.more = True                      # a full read: there may be more waiting
            if conn.read_size < MAX_READ:
                conn.read_size *= 2               # Mina grows its read buffer the same way
        if isinstance(conn.sock, ssl.SSLSocket):
            data += self._drain_tls(conn)
        return self._with_headers(conn, conn.reader.feed(data))

    def _drain_tls(self, conn: Connection) -> bytes:
        """Decrypted bytes TLS already holds (select() does not see them), up to one more read buffer."""
        extra = b""
        while conn.sock.pending() and len(extra) < conn.read_size:
            try:
                extra += conn.sock.recv(conn.read_size)
            except (ssl.SSLWantReadError, BlockingIOError):
                break
        return extra

    @staticmethod
    def _with_headers(conn: Connection, events: Iterable[tuple[dict, bytes]]) -> list[tuple[dict, bytes]]:
        if not conn.headers:
            return list(events)
        return [({**headers, **conn.headers}, body) for headers, body in events]

    @property
    def kind(self) -> str:
        return type(self).__name__


class DatagramSource(NetSource):
    """A UDP source (see the module docstring).  Subclasses give ``host``, ``port`` and ``events(data, address)
    -> ([(headers, body)], failed)``."""

    host = "0.0.0.0"
    port = 0

    def events(self, data: bytes, address) -> tuple[list[tuple[dict, bytes]], int]:
        raise NotImplementedError

    def open(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)     # no SO_REUSEADDR: a port in use must fail
        try:
            self.sock.bind((self.host, self.port))
        except OSError as exc:
            self.sock.close()
            raise OSError(exc.errno, f"cannot bind UDP {self.host}:{self.port}: {exc.strerror}") from None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            self.counts_drops = True
        except OSError:                       # not Linux: kernel drops cannot be counted
            self.counts_drops = False
        self.sock.settimeout(POLL_S)
        self.bound_port = self.sock.getsockname()[1]
        self.kernel_drops = 0
        log.info("%s source %s listening on UDP %s:%d", type(self).__name__, self.name, self.host, self.bound_port)

    def close(self) -> None:
        pass                                  # serve() closes the socket when it sees stopping

    def serve(self) -> None:
        try:
            while not self.stopping.is_set():
                events = self._read_some()
                if events and not self.put_events(events):
                    return
        finally:
            self.sock.close()

    def _read_some(self) -> list[tuple[dict, bytes]]:
        """Wait up to POLL_S for a datagram, then take those already queued, up to one batch."""
        events: list[tuple[dict, bytes]] = []
        self.sock.settimeout(POLL_S)
        while len(events) < self.batch_size:
            try:
                data, ancillary, _flags, address = self.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(4))
            except (socket.timeout, BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            self._count_kernel_drops(ancillary)
            found, failed = self.events(data, address)
            if failed:
                names.fail(self.counters, names.EVENT_READ_FAIL, log, logging.WARNING,
                           "%s source %s: a datagram of %d bytes from %s made no event",
                           type(self).__name__, self.name, len(data), address[0])
            events += found
            self.sock.settimeout(0)           # then only what is already there
        return events

    def _count_kernel_drops(self, ancillary) -> None:
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                total = struct.unpack("=I", value[:4])[0]
                dropped = (total - self.kernel_drops) % (1 << 32)
                if dropped:
                    self.kernel_drops = total
                    self.counters.add(names.EVENT_READ_FAIL, dropped - 1)     # fail() below counts the last one
                    names.fail(self.counters, names.EVENT_READ_FAIL, log, logging.WARNING,
                               "%s source %s: the kernel dropped %d datagrams (socket receive buffer full; "
                               "%d since start)", type(self).__name__, self.name, dropped, total)
