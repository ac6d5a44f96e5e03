"""The HTTP/1.1 server under the ``http`` source: llhttp parses (:mod:`.http_parser`), asyncio moves bytes, a
bounded pool does the work.

Why not :mod:`http.server`: its request handling is hand-written (lenient ``int()`` Content-Length parsing, no
chunked bodies, the body left unread on an early error so that it is parsed as the next request, one thread per
connection, no timeouts).  :mod:`.http_parser` is strict (Content-Length digits only, duplicates refused, chunked
bodies, head size limit) and sans-IO; the I/O around it is this module, small enough to read.

The application (the source) gives two callables:

* ``refuse(head) -> Reply | None`` runs on the event loop as soon as a request's head has arrived, before any of
  its body is read: a Reply answers the request at once (and the connection is closed, unless the body was
  already complete in the buffer), None admits it.  It must not block.
* ``respond(requests) -> replies`` runs in a worker thread with requests whose bodies are complete, a list of
  (head, :class:`Body`), and returns one Reply each, in order (this is where the puts happen).  The requests whose
  bodies were completed in one turn of the event loop are handed over together, in one call: one thread hand-off
  (and, for the source, one group of puts) for all of them, instead of one each.  A body larger than
  ``GROUP_BODY_BYTES`` is handed over alone, so that parsing it does not hold up the small ones.

Limits (:class:`Limits`):

* at most ``max_connections`` connections are open; further clients wait in the listen backlog;
* the bodies being read or answered total at most ``max_threads`` x ``max_request_bytes`` bytes (:class:`ByteBudget`:
  a request reserves its Content-Length, or ``max_request_bytes`` if chunked, before its body is read); they are
  read on the event loop, so an idle or half-sent connection holds no thread, and ``max_threads`` worker threads
  parse and put the complete ones;
* a connection that sends nothing for ``idle_timeout_s`` (before a request, or between keep-alive requests) is
  closed; a request whose head has not arrived ``request_timeout_s`` after its first byte, or whose body has not
  arrived ``request_timeout_s`` after the server started reading it, is answered 408 and its connection closed;
  a TLS handshake or an answer the client does not read within ``request_timeout_s`` ends the connection;
* a head over 16 KiB is 431 (see :mod:`.http_parser` for what else the parser refuses); a body over
  ``max_request_bytes`` is 413, before reading it when Content-Length says so, as soon as the limit is passed for
  a chunked body.

Any answer given before the body was completely read closes the connection (``Connection: close``), so a body
can never be taken for the next request.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable, NamedTuple

from workers.sources import http_parser
from workers.sources.http_parser import CLOSED, END, NEED_DATA, ParseError, RequestParser

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024          # the kernel caps it at net.core.somaxconn; Python's default (128) is too small
READ_CHUNK = 64 * 1024            # also the stream buffer: a connection holds at most about twice this unread
SHUTDOWN_GRACE_S = 5.0         # requests already running get this long to answer when the source stops
LINGER_S = 2.0                 # reading and dropping the rest of a refused request before closing
ACCEPT_RETRY_S = 0.1           # after accept() failed (no file descriptor left): try again this much later
GROUP_BODY_BYTES = 64 * 1024   # larger bodies are handed to ``respond`` alone


class Head(NamedTuple):
    """A request's head: method, target (path and query), headers with lower-case names."""

    method: str
    target: str
    headers: dict[str, str]


class Reply(NamedTuple):
    """An answer: status, a one-line reason (the plain-text body), and any extra response headers."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


class Body:
    """A request body handed to ``respond``: :meth:`take` gives it once and keeps no reference, so the bytes can
    be freed as soon as the application has parsed them, before it puts the events."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes):
        self._data = data

    def take(self) -> bytes:
        data, self._data = self._data, b""
        return data


@dataclass(frozen=True)
class Limits:
    """The server's bounds; see the module docstring."""

    max_connections: int
    max_threads: int
    max_request_bytes: int
    idle_timeout_s: float
    request_timeout_s: float


class ByteBudget:
    """The bytes of request bodies the server holds at once.  A request reserves its whole size before its body
    is read, and waits (first come, first served) until it fits: so many large requests cannot each hold part of
    the budget and wait forever for the rest, and small ones are not held up by slow large ones beyond their
    turn.  Event-loop only."""

    def __init__(self, total: int):
        self.free = total
        self.waiters: deque[tuple[int, asyncio.Future]] = deque()

    async def acquire(self, size: int) -> None:
        if not self.waiters and size <= self.free:
            self.free -= size
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append((size, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(size)                    # granted just as it was cancelled: give it back
            else:
                self.waiters.remove((size, waiter))
                self.release(0)                       # those behind it may fit now
            raise

    def release(self, size: int) -> None:
        self.free += size
        while self.waiters and self.waiters[0][0] <= self.free:
            size, waiter = self.waiters.popleft()
            self.free -= size
            waiter.set_result(None)


class HttpServer:
    """Serves one listening socket: :meth:`open`, then :meth:`serve` in a thread until :meth:`close`."""

    def __init__(self, name: str, limits: Limits, refuse: Callable[[Head], Reply | None],
                 respond: Callable[[list[tuple[Head, Body]]], list[Reply]],
                 ssl_context: ssl.SSLContext | None = None):
        self.name = name
        self.limits = limits
        self.refuse = refuse
        self.respond = respond
        self.ssl_context = ssl_context
        self.sock: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool: WorkerThreads | None = None
        self.closing = False
        self._stopped: asyncio.Event | None = None
        self._connections: set[Connection] = set()
        self._gathered: list[tuple[Head, Body, asyncio.Future]] = []   # requests to hand over at the next turn

    # -- lifecycle -------------------------------------------------------------------------------------------
    def open(self, host: str, port: int) -> int:
        """Bind and listen (raises OSError, e.g. when the port is in use); returns the port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        self.sock.setblocking(False)
        self.loop = asyncio.new_event_loop()
        self.pool = WorkerThreads(f"source-{self.name}-http", self.limits.max_threads, self.respond, self.loop)
        return self.sock.getsockname()[1]

    def serve(self) -> None:
        """Accept and answer until :meth:`close`; then let running requests answer (up to a grace period)."""
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.sock.close()
            self.pool.shutdown()      # before the loop closes: a group still running answers on it
            self.loop.close()

    def close(self) -> None:
        """Stop accepting, close idle connections, and make :meth:`serve` return.  Callable from any thread."""
        self.closing = True
        loop = self.loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._wake_stop)
        except RuntimeError:          # serve() already ended and closed the loop
            pass

    def _wake_stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        if self.closing:
            self._stopped.set()
        slots = asyncio.Semaphore(self.limits.max_connections)
        self.budget = ByteBudget(self.limits.max_threads * self.limits.max_request_bytes)
        accept = asyncio.create_task(self._accept(slots))
        await self._stopped.wait()
        accept.cancel()
        await asyncio.gather(accept, return_exceptions=True)
        for connection in list(self._connections):
            connection.stop_if_idle()
        tasks = [c.task for c in self._connections]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _accept(self, slots: asyncio.Semaphore) -> None:
        failing = False               # log a run of failed accepts once, not ten times a second
        while True:
            await slots.acquire()
            try:
                sock, _ = await self.loop.sock_accept(self.sock)
            except OSError as exc:    # EMFILE and the like: the backlog holds the client until we can
                slots.release()
                if not failing:
                    log.warning("http source %s: cannot accept connections: %s", self.name, exc)
                failing = True
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            except BaseException:
                slots.release()
                raise
            if failing:
                log.warning("http source %s: accepting connections again", self.name)
                failing = False
            connection = Connection(self, sock)
            self._connections.add(connection)
            connection.task = asyncio.create_task(connection.run())
            connection.task.add_done_callback(lambda _, c=connection: self._ended(c, slots))

    # -- handing requests to the worker threads --------------------------------------------------------------
    def respond_later(self, head: Head, body: Body, size: int) -> asyncio.Future:
        """The future Reply to a request whose body is complete: gathered with those completed in the same turn
        of the event loop, all handed to ``respond`` in one worker thread at the next turn."""
        future = self.loop.create_future()
        if size > GROUP_BODY_BYTES:
            self._hand_over([(head, body, future)])
            return future
        if not self._gathered:
            self.loop.call_soon(self._hand_over_gathered)
        self._gathered.append((head, body, future))
        return future

    def _hand_over_gathered(self) -> None:
        group, self._gathered = self._gathered, []
        self._hand_over(group)

    def _hand_over(self, group: list[tuple[Head, Body, asyncio.Future]]) -> None:
        self.pool.submit([(head, body) for head, body, _ in group], [f for _, _, f in group])

    def _ended(self, connection: "Connection", slots: asyncio.Semaphore) -> None:
        self._connections.discard(connection)
        slots.release()


class WorkerThreads:
    """Up to ``count`` threads that run ``respond`` on the groups of requests handed over, and settle each
    request's future on the event loop.  Threads start as needed and stay until :meth:`shutdown`.

    Not ThreadPoolExecutor with run_in_executor: that chains a concurrent Future to an asyncio one on every
    hand-over, and at ~5,000 one-event requests a second the hand-over took a fifth of the event loop's time."""

    def __init__(self, name: str, count: int, respond: Callable[[list[tuple[Head, Body]]], list[Reply]],
                 loop: asyncio.AbstractEventLoop):
        self.name = name
        self.count = count
        self.respond = respond
        self.loop = loop
        self.work: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.idle = 0                 # threads waiting for work (read without a lock: at worst one too many starts)
        self.lock = threading.Lock()

    def submit(self, requests: list[tuple[Head, Body]], futures: list[asyncio.Future]) -> None:
        self.work.put((requests, futures))
        if self.idle == 0 and len(self.threads) < self.count:
            thread = threading.Thread(target=self._run, name=f"{self.name}_{len(self.threads)}", daemon=True)
            self.threads.append(thread)
            thread.start()

    def shutdown(self) -> None:
        """Let the groups handed over finish, then end the threads."""
        for _ in self.threads:
            self.work.put(None)
        for thread in self.threads:
            thread.join()
        self.threads.clear()

    def _run(self) -> None:
        _no_wakeup_preemption()
        while True:
            with self.lock:
                self.idle += 1
            item = self.work.get()
            with self.lock:
                self.idle -= 1
            if item is None:
                return
            requests, futures = item
            replies, error = None, None
            try:
                replies = self.respond(requests)
            except BaseException as exc:          # a bug in respond(): each request is answered 500
                error = exc
            del requests, item                    # memory: the bodies are not held while waiting for work
            self.loop.call_soon_threadsafe(_settle, futures, replies, error)


def _no_wakeup_preemption() -> None:
    """Make the calling thread SCHED_BATCH (Linux; same priority, no privilege needed): a thread woken for a
    hand-over then no longer preempts the event loop's thread on its core, only to wait there for the GIL that
    thread holds.  With 16 clients, the wake-up in ``submit`` went from 22 % to 4 % of the event loop's samples
    (py-spy --gil), and 16 clients' requests/s from 4,224-7,010 to 5,289-7,251 in eight interleaved runs."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):           # not Linux, or a sandbox that forbids it: only slower
        pass


class Connection:
    """One client connection: requests one after the other (keep-alive), each read, answered, then the next."""

    def __init__(self, server: HttpServer, sock: socket.socket):
        self.server = server
        self.sock = sock
        self.loop = server.loop
        self.limits = server.limits
        self.parser = RequestParser()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task | None = None
        self.busy = False             # a request is being read or answered: finish it before stopping
        self.method = ""              # of the request being answered ("HEAD" answers carry no body)
        self.ended = False            # the request being answered has been read to its end
        self.deadline = 0.0           # when the current request must have fully arrived

    def stop_if_idle(self) -> None:
        if not self.busy and self.task is not None:
            self.task.cancel()

    async def run(self) -> None:
        try:
            await self._open_streams()
            while not self.server.closing and await self._one_request():
                pass
        except (OSError, TimeoutError) as exc:   # ssl.SSLError is an OSError
            log.debug("http source %s: connection ended: %r", self.server.name, exc)
            if self.writer is not None:
                self.writer.transport.abort()
        finally:
            if self.writer is not None:
                self.writer.close()           # flushes what is left of the answer first
            else:
                self.sock.close()

    async def _open_streams(self) -> None:
        self.reader = asyncio.StreamReader(limit=READ_CHUNK, loop=self.loop)
        protocol = asyncio.StreamReaderProtocol(self.reader, loop=self.loop)
        tls = self.server.ssl_context
        extra = {"ssl_handshake_timeout": self.limits.request_timeout_s} if tls else {}
        transport, _ = await self.loop.connect_accepted_socket(lambda: protocol, self.sock, ssl=tls, **extra)
        self.writer = asyncio.StreamWriter(transport, protocol, self.reader, self.loop)

    # -- one request -----------------------------------------------------------------------------------------
    async def _one_request(self) -> bool:
        """Read, answer; True if the connection may carry another request."""
        self.method, self.ended = "", False
        must_close: Reply | None = None
        keep_alive = False
        try:
            request = await self._read_head()
            if request is None:
                return False
            self.busy = True
            head = Head(request.method, request.target, request.headers)
            self.method, keep_alive = head.method, request.keep_alive
            reply = self.server.refuse(head)
            if reply is None:
                reply = await self._admitted(head)
        except ParseError as exc:                    # malformed, too large or too slow: never read on after it
            reply = must_close = Reply(exc.status, exc.reason)
            log.debug("http source %s: bad request: %s", self.server.name, exc.reason)
        except (OSError, asyncio.CancelledError):
            raise
        except Exception:                            # a bug in refuse() or respond(): answer, do not hang up
            log.exception("http source %s: request failed", self.server.name)
            reply = must_close = Reply(500, "internal error")
        complete = not must_close and self._body_complete()
        await self._send(reply, keep=complete and keep_alive)
        if not complete:
            await self._linger()
        self.busy = False
        return complete and keep_alive

    async def _read_head(self) -> http_parser.Request | None:
        """The next request's head; None when the client closed or stayed idle too long."""
        self.deadline = self.loop.time() + self.limits.idle_timeout_s
        started = self.parser.started
        if started:
            self.deadline = self.loop.time() + self.limits.request_timeout_s
        while True:
            event = self.parser.next_event()
            if event is CLOSED:
                return None
            if event is not NEED_DATA:
                return event                         # a head: nothing else comes before one
            try:
                data = await self._read()
            except TimeoutError:
                if not started:
                    return None
                raise ParseError(408, "request not received in time") from None
            if data and not started:
                started = True
                self.deadline = self.loop.time() + self.limits.request_timeout_s
            self.parser.receive_data(data)

    async def _admitted(self, head: Head) -> Reply:
        """Read the body once its size fits in the byte budget, then run ``respond`` in a worker thread."""
        size = self._reservation(head)
        await self.server.budget.acquire(size)
        try:
            # The body is owed within request_timeout_s of being read for, not of the head's first byte.
            self.deadline = self.loop.time() + self.limits.request_timeout_s
            body = await self._read_body()
            if isinstance(body, Reply):
                return body
            handed, size_read = Body(body), len(body)
            del body                  # memory: the worker takes the only reference, and drops it once parsed
            return await self.server.respond_later(head, handed, size_read)
        finally:
            self.server.budget.release(size)

    def _reservation(self, head: Head) -> int:
        """Bytes to reserve for the body: its Content-Length (the parser checked it is digits), else (chunked)
        the most it may be."""
        limit = self.limits.max_request_bytes
        if "transfer-encoding" in head.headers:
            return limit
        return min(int(head.headers.get("content-length", "0")), limit)

    async def _read_body(self) -> bytes | Reply:
        if self.parser.expects_continue:
            self.writer.write(_CONTINUE)
        limit = self.limits.max_request_bytes
        chunks, size = [], 0
        while True:
            event = self.parser.next_event()
            if event is END:
                self.ended = True
                return b"".join(chunks)
            if event is NEED_DATA:
                try:
                    self.parser.receive_data(await self._read())
                except TimeoutError:
                    return Reply(408, "request body not received in time")
                continue
            size += len(event.data)
            if size > limit:
                return Reply(413, f"request body exceeds maxRequestBytes ({limit})")
            chunks.append(event.data)

    async def _read(self) -> bytes:
        async with asyncio.timeout_at(self.deadline):
            return await self.reader.read(READ_CHUNK)

    def _body_complete(self) -> bool:
        """True if the request's body has been read, or is wholly in the buffer (then it is skipped)."""
        while not self.ended:
            try:
                event = self.parser.next_event()
            except ParseError:
                return False
            if event is NEED_DATA or event is CLOSED:
                return False
            self.ended = event is END
        return True

    async def _send(self, reply: Reply, keep: bool) -> None:
        self.writer.write(_answer(reply, keep, self.method == "HEAD"))
        if self.writer.transport.get_write_buffer_size():   # most answers are sent at once: no timer to set
            async with asyncio.timeout(self.limits.request_timeout_s):
                await self.writer.drain()

    async def _linger(self) -> None:
        """Before closing a connection whose request was not read to its end: stop sending, and read and drop
        what the client is still sending for a moment, so that closing with unread data (a TCP reset) does not
        destroy the answer before the client has read it."""
        if self.writer.can_write_eof():
            self.writer.write_eof()
        try:
            async with asyncio.timeout(LINGER_S):
                while await self.reader.read(READ_CHUNK):
                    pass
        except (TimeoutError, OSError):
            pass


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@functools.lru_cache(maxsize=64)
def _answer(reply: Reply, keep: bool, head_only: bool) -> bytes:
    """The bytes of an answer, built once per distinct reply (most are the same "200 OK").  A HEAD answer has
    the headers of the answer it stands for and no body (RFC 9110 9.3.2)."""
    body = (reply.reason + "\n").encode("utf-8", "replace")
    headers = (("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *reply.headers,
               *((("Connection", "close"),) if not keep else ()))
    for name, value in headers:               # the application's headers: a line break would split the answer
        if any(c in f"{name}{value}" for c in "\r\n\0") or not name or ":" in name:
            raise ValueError(f"invalid response header {name!r}: {value!r}")
    phrase = HTTPStatus(reply.status).phrase if reply.status in _KNOWN_STATUS else ""
    lines = [f"HTTP/1.1 {reply.status} {phrase}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


def _settle(futures: list[asyncio.Future], replies: list[Reply] | None, error: BaseException | None) -> None:
    """Give each request of a group handed over its Reply (or the exception ``respond`` raised: a bug, answered
    500); a request whose connection was cancelled meanwhile is skipped."""
    for i, future in enumerate(futures):
        if future.done():
            continue
        if error is None:
            future.set_result(replies[i])
        else:
            future.set_exception(error)


_KNOWN_STATUS = frozenset(s.value for s in HTTPStatus)

