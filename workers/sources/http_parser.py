"""Strict HTTP/1.1 request parsing for the ``http`` source: llhttp (Node.js's parser, in C, via httptools) behind a
small pull interface.

Why llhttp and not h11: h11 (pure Python) took about 65 us of the agent's single event-loop thread per one-event
request, a third of that thread's time; llhttp takes about 2 us.  llhttp is strict by default (this module never
turns on its "lenient" flags): Content-Length digits only, a duplicate Content-Length refused (RFC 9112 6.3
allows that; h11 merged identical ones), Transfer-Encoding with Content-Length refused, bare LF, obsolete line
folding, spaces before a colon and control characters in headers refused.

The contract (what :class:`RequestParser` adds to llhttp):

* :meth:`RequestParser.receive_data` takes the bytes read (``b""`` at end of input);
  :meth:`RequestParser.next_event` gives, in order, a :class:`Request` (the head), any number of :class:`Data`,
  one :data:`END` per request, :data:`NEED_DATA` when it needs more bytes, :data:`CLOSED` when the client closed
  between requests.  Pipelined requests come one after the other; nothing after an error is ever given.
* A malformed request raises :class:`ParseError` (an HTTP status and a one-line reason) from ``next_event`` at
  the place it occurs, after the events of the requests before it.  The connection must then be closed.
* Bounds: a complete head (target and headers) over ``MAX_HEAD_BYTES`` is 431; a head still incomplete after
  ``MAX_HEAD_BYTES + FEED_SLICE`` bytes is 431 (llhttp buffers a header until its end, so this bounds memory);
  after the head, the bytes that are not body (chunk framing, trailers) may not exceed the body itself plus
  ``MAX_HEAD_BYTES`` (400): a body of one-byte chunks or an endless trailer cannot grow without limit.
* HTTP/1.1 requests must have a Host header (RFC 9112 3.2), versions other than 1.0 and 1.1 are 505, CONNECT is
  501 and any other protocol upgrade (``Connection: upgrade``) is 400: this server speaks HTTP/1.x only.
"""
from __future__ import annotations

from collections import deque
from typing import NamedTuple

import httptools

MAX_HEAD_BYTES = 16 * 1024
FEED_SLICE = 4 * 1024      # input is parsed in slices this large: a head's size is known to within one slice


class Request(NamedTuple):
    """A request's head.  ``headers`` has lower-case names; repeated ones are joined with ", " (RFC 9110 5.3)."""

    method: str
    target: str
    headers: dict[str, str]
    keep_alive: bool           # the client lets the connection carry another request after this one


class Data(NamedTuple):
    data: bytes


class ParseError(Exception):
    """A request that must be refused and its connection closed: ``status`` and a one-line ``reason``."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Marker("NEED_DATA")
END = _Marker("END")
CLOSED = _Marker("CLOSED")


class RequestParser:
    """One connection's requests; see the module docstring for the contract."""

    def __init__(self):
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque = deque()
        self._failed = False          # an error is queued: nothing after it is parsed or given
        self._closed = False          # end of input seen
        self._open = False            # a request has begun and is not complete
        self._head_done = False       # ... and its head is complete
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._head_bytes = 0          # of the current request: its head so far (to within a slice)
        self._after_head = 0          # bytes received after its head (to within a slice), and of them,
        self._body_bytes = 0          # body bytes
        self._expects_continue = False
        self._stop: ParseError | None = None    # raised from a callback: why parsing stopped

    # -- the interface ---------------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self._failed or self._closed:
            return
        if not data:
            self._closed = True
            if self._open:
                self._fail(ParseError(400, "connection closed in the middle of a request"))
            else:
                self._events.append(CLOSED)
            return
        view = memoryview(data)
        for start in range(0, len(view), FEED_SLICE):
            self._feed(view[start:start + FEED_SLICE])
            if self._failed:
                return

    def next_event(self):
        if self._events:
            event = self._events.popleft()
            if isinstance(event, ParseError):
                raise event
            return event
        return CLOSED if self._closed else NEED_DATA

    @property
    def started(self) -> bool:
        """Bytes of a request not yet given out have arrived (the client is sending one)."""
        return bool(self._events) or self._open

    @property
    def expects_continue(self) -> bool:
        """The request being read asked for "100 Continue" and none of its body has arrived yet."""
        return self._expects_continue

    # -- feeding llhttp ----------------------------------------------------------------------------------------
    def _feed(self, piece: memoryview) -> None:
        in_head, in_body = self._open and not self._head_done, self._head_done
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserCallbackError as exc:
            self._fail(self._stop or ParseError(400, f"malformed request: {exc}"))
            return
        except httptools.HttpParserInvalidMethodError:
            self._fail(ParseError(400, "malformed request: not an HTTP request line"))
            return
        except httptools.HttpParserError as exc:
            self._fail(ParseError(400, _reason(str(exc))))
            return
        except httptools.HttpParserUpgrade:      # not an HttpParserError; upgrades are refused at their head
            self._fail(ParseError(400, "protocol upgrade is not supported"))
            return
        # A request that began inside this piece is charged the whole piece (at most FEED_SLICE too much).
        if self._open and not self._head_done:
            self._head_bytes += len(piece)
            if self._head_bytes > MAX_HEAD_BYTES + FEED_SLICE:
                self._fail(ParseError(431, f"request head larger than {MAX_HEAD_BYTES // 1024} KiB"))
        elif self._open and (in_body or in_head):
            self._after_head += len(piece)
            if self._after_head - self._body_bytes > self._body_bytes + MAX_HEAD_BYTES + FEED_SLICE:
                self._fail(ParseError(400, "chunk framing or trailers larger than the body"))

    def _fail(self, error: ParseError) -> None:
        self._failed = True
        self._open = self._expects_continue = False
        self._events.append(error)

    # -- llhttp's callbacks (an exception raised here stops parsing; feed_data then raises) -------------------
    def on_message_begin(self) -> None:
        self._open, self._head_done = True, False
        self._url, self._headers = [], {}
        self._head_bytes = self._after_head = self._body_bytes = 0

    def on_url(self, piece: bytes) -> None:
        self._url.append(piece)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:           # a trailer of a chunked body: not used, only bounded
            return
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._head_done = True
        target = b"".join(self._url).decode("latin-1")
        head_size = len(target) + sum(len(k) + len(v) + 4 for k, v in self._headers.items())
        self._stop = _refused_head(self._parser, self._headers, head_size)
        if self._stop is not None:
            raise self._stop
        method = self._parser.get_method().decode("ascii")
        self._expects_continue = (self._parser.get_http_version() == "1.1"
                                  and self._headers.get("expect", "").lower() == "100-continue")
        # HTTP/1.0 keep-alive (an answer naming it) is not offered: as with h11 before, a 1.0 request is the last.
        keep_alive = self._parser.should_keep_alive() and self._parser.get_http_version() == "1.1"
        self._events.append(Request(method, target, self._headers, keep_alive))

    def on_body(self, data: bytes) -> None:
        self._expects_continue = False
        self._body_bytes += len(data)
        self._events.append(Data(data))

    def on_message_complete(self) -> None:
        self._open = self._head_done = self._expects_continue = False
        self._events.append(END)


def _refused_head(parser: httptools.HttpRequestParser, headers: dict[str, str], size: int) -> ParseError | None:
    version = parser.get_http_version()
    if size > MAX_HEAD_BYTES:
        return ParseError(431, f"request head larger than {MAX_HEAD_BYTES // 1024} KiB")
    if version not in ("1.0", "1.1"):
        return ParseError(505, f"HTTP/{version} is not supported")
    if version == "1.1" and "host" not in headers:
        return ParseError(400, "Host header missing")
    if parser.get_method() == b"CONNECT":
        return ParseError(501, "method CONNECT is not supported")
    if parser.should_upgrade():
        return ParseError(400, "protocol upgrade is not supported: send the request without Connection: upgrade")
    return None


def _reason(message: str) -> str:
    """llhttp's message, named for the client; a body framed two ways (request smuggling) said plainly."""
    if "Transfer-Encoding" in message and "Content-Length" in message:
        return "both Transfer-Encoding and Content-Length given"
    return f"malformed request: {message}"
