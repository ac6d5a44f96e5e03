"""``http``: Flume's HTTPSource with its JSONHandler (and BLOBHandler).

A request is one put transaction.  Answers, as in Flume: 200 when every event is in every required channel;
400 for a body the handler cannot read (``EventReadFail``); 503 when a channel is full or the broker is
unreachable (``ChannelWriteFail``), with nothing of the request put, so the client can simply retry; 500 for a
charset other than UTF-8/16/32 or any other failure; 403 for TRACE and OPTIONS.  GET is handled like POST.
Flumery adds 413 for a request larger than ``maxRequestBytes`` or than a channel's capacity, and 411 when there
is no Content-Length.

JSONHandler body: ``[{"headers": {"k": "v"}, "body": "text"}, ...]``.  The body text is encoded back into the
request's charset (``application/json; charset=UTF-16``), as Flume does; a missing body is an empty body.  A
``flumery.id`` header becomes the event's id (so a client that retries a request can keep its events' ids);
events without one get a fresh id.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import redis

from core import counters as names
from core.errors import BatchTooLarge, ChannelFullError
from core.event import ID_HEADER, Batch, Event
from core.options import opt, port_number, positive
from core.registry import Registry
from workers.sources.base import Source

log = logging.getLogger(__name__)


# Broker trouble is Flume's ChannelException (HTTP 503, retry later); anything else is a 500.
BROKER_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                 redis.exceptions.BusyLoadingError, OSError)


class BadRequest(ValueError):
    """The request body cannot be turned into events (HTTP 400)."""


class UnsupportedCharset(Exception):
    """The request's charset is not one the handler accepts (HTTP 500, as Flume)."""


# Java's encoders: "UTF-16" writes a big-endian byte order mark; "UTF-32" writes big-endian without one.
_ENCODERS = {"utf-8": lambda s: s.encode("utf-8"),
             "utf-16": lambda s: b"\xfe\xff" + s.encode("utf-16-be"),
             "utf-32": lambda s: s.encode("utf-32-be")}


def _decode(raw: bytes, charset: str) -> str:
    if charset == "utf-16" and raw[:2] not in (b"\xfe\xff", b"\xff\xfe"):
        return raw.decode("utf-16-be")
    if charset == "utf-32" and raw[:4] not in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
        return raw.decode("utf-32-be")
    return raw.decode(charset)


def request_charset(content_type: str | None) -> str:
    charset = "utf-8"
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset":
            charset = value.strip().strip('"').lower().replace("_", "-")
    if charset not in _ENCODERS:
        raise UnsupportedCharset(f"unsupported charset '{charset}' (UTF-8, UTF-16 and UTF-32 are accepted)")
    return charset


def json_handler(raw: bytes, content_type: str | None, query: str) -> list[Event]:
    """Flume's JSONHandler; raises BadRequest or UnsupportedCharset."""
    charset = request_charset(content_type)
    try:
        text = _decode(raw, charset)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid {charset.upper()}: {exc}") from None
    if not text.strip():
        return []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if not isinstance(doc, list):
        raise BadRequest("expected a JSON array of {\"headers\": {...}, \"body\": \"...\"} objects")
    encode = _ENCODERS[charset]
    events = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise BadRequest(f"event {i}: expected an object, got {type(item).__name__}")
        headers = item.get("headers") or {}
        body = item.get("body")
        if not isinstance(headers, dict):
            raise BadRequest(f"event {i}: 'headers' must be an object")
        if body is not None and not isinstance(body, str):
            raise BadRequest(f"event {i}: 'body' must be a string")
        clean = {}
        for key, value in headers.items():
            if isinstance(value, (dict, list)) or value is None:
                raise BadRequest(f"event {i}: header '{key}' must be a string")
            clean[key] = value if isinstance(value, str) else json.dumps(value)
        # An id given by the sender (another Flumery agent, or a client that retries) is the event's id.
        events.append(Event(encode(body or ""), clean, clean.pop(ID_HEADER, "")))
    return events


def blob_handler(raw: bytes, content_type: str | None, query: str) -> list[Event]:
    """Flume's BLOBHandler: the whole request body is one event; query parameters become headers."""
    return [Event(raw, dict(parse_qsl(query, keep_blank_values=True)))]


HANDLERS = Registry(
    kind="http handler",
    types={"JSONHandler": "workers.sources.http:json_handler",
           "BLOBHandler": "workers.sources.http:blob_handler"},
    flume_classes={"org.apache.flume.source.http.JSONHandler": "JSONHandler",
                   "org.apache.flume.sink.solr.morphline.BlobHandler": "BLOBHandler",
                   "org.apache.flume.source.http.BLOBHandler": "BLOBHandler"},
)


def _handler_check(name: str) -> str | None:
    try:
        HANDLERS.path_for(name)
    except LookupError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class HttpConfig:
    port: int = opt("port", check=port_number, doc="TCP port (0 picks a free one)")
    bind: str = opt("bind", "0.0.0.0", doc="address to listen on")
    handler: str = opt("handler", "org.apache.flume.source.http.JSONHandler", check=_handler_check,
                       doc="JSONHandler or BLOBHandler")
    max_request_bytes: int = opt("maxRequestBytes", 64 * 1024 * 1024, check=positive,
                                 doc="larger requests are refused with 413 (Flumery)")


class HttpSource(Source):
    Config = HttpConfig

    def open(self) -> None:
        self.handle = HANDLERS.resolve(self.config.handler)
        self.server = ThreadingHTTPServer((self.config.bind, self.config.port), self._request_class())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        log.info("http source %s listening on %s:%d", self.name, self.config.bind, self.port)

    def serve(self) -> None:
        self.server.serve_forever()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, method: str, path: str, headers, body_reader) -> tuple[int, str]:
        """Status and reason text for one request; the put happens here."""
        if method in ("TRACE", "OPTIONS"):
            return 403, "forbidden"
        if self.stopping.is_set():
            return 503, "source is stopping"
        length = headers.get("Content-Length")
        if length is None:
            if method == "GET":
                length = "0"
            else:
                return 411, "Content-Length required"
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            return 400, f"bad Content-Length '{length}'"
        if size > self.config.max_request_bytes:
            return 413, f"request of {size} bytes exceeds maxRequestBytes ({self.config.max_request_bytes})"
        raw = body_reader(size)
        try:
            events = self.handle(raw, headers.get("Content-Type"), urlsplit(path).query)
        except BadRequest as exc:
            self.counters.add(names.EVENT_READ_FAIL)
            return 400, str(exc)
        except UnsupportedCharset as exc:
            return 500, str(exc)
        if not events:
            return 200, "OK"
        try:
            self.put(Batch.from_events(events))
        except ChannelFullError as exc:
            return 503, str(exc)
        except BatchTooLarge as exc:
            return 413, str(exc)
        except BROKER_ERRORS as exc:      # the channels are unreachable for now: the client may retry
            self.counters.add(names.CHANNEL_WRITE_FAIL)
            log.warning("http source %s: put failed: %s", self.name, exc)
            return 503, f"channel write failed: {exc}"
        return 200, "OK"

    def _request_class(self):
        source = self

        class Request(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                try:
                    status, reason = source.answer(self.command, self.path, self.headers, self.rfile.read)
                except Exception as exc:
                    log.exception("http source %s: request failed", source.name)
                    status, reason = 500, f"internal error: {exc}"
                body = (reason + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET = do_PUT = do_TRACE = do_OPTIONS = _serve

            def log_message(self, fmt, *args):
                log.debug("http source %s: " + fmt, source.name, *args)

        return Request


