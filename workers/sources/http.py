"""``http``: Flume's HTTPSource with its JSONHandler (and BLOBHandler).

A request is one put transaction.  Answers, as in Flume: 200 when every event is in every required channel;
400 for a body the handler cannot read (``EventReadFail``); 503 when a channel is full or the broker is
unreachable (``ChannelWriteFail``), with nothing of the request put, so the client can simply retry; 500 for a
charset other than UTF-8/16/32 or any other failure; 403 for TRACE and OPTIONS.  GET is handled like POST.
Flumery adds 413 for a request larger than ``maxRequestBytes`` or than a channel's capacity, 411 when a POST has
neither Content-Length nor a chunked body, 401 without the credentials that ``authToken`` or ``authUser`` ask for,
408 for a request that does not arrive in time, and 503 when the broker refuses the put for lack of memory.
Bad input (invalid JSON, lone surrogates, a number past Python's digit limit, nesting too deep) is a 400 with the
reason, logged at debug level only.  Connections, threads, timeouts, chunked bodies and the answers to malformed
HTTP are the server's (:mod:`workers.sources.http_server`); TLS material is read by :mod:`workers.sources.keystore`.

JSONHandler body: ``[{"headers": {"k": "v"}, "body": "text"}, ...]``.  The body text is encoded back into the
request's charset (``application/json; charset=UTF-16``), as Flume does; a missing body is an empty body.  A
``flumery.id`` header becomes the event's id (so a client that retries a request can keep its events' ids);
events without one get a fresh id.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import redis

from core import counters as names
from core.errors import BatchTooLarge, ChannelFullError, KeystoreError, NotReplicated
from core.event import ID_HEADER, Batch, Event
from core.options import one_of, opt, port_number, positive
from core.registry import Registry, did_you_mean
from workers.sources.base import Source
from workers.sources.http_server import Body, Head, HttpServer, Limits, Reply
from workers.sources.keystore import KEYSTORE_TYPES, PROTOCOLS, keystore_context, pem_context

log = logging.getLogger(__name__)


# Broker trouble is Flume's ChannelException (HTTP 503, retry later); anything else is a 500.
BROKER_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                 redis.exceptions.BusyLoadingError, OSError)
_DIGITS = re.compile(r"[0-9]{1,18}")


OK = Reply(200, "OK")


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
    if not text or text.isspace():
        return []
    try:
        doc = json.loads(text)
        del text                         # memory: the decoded copy goes before the events are built
    except RecursionError:
        raise BadRequest("invalid JSON: nested too deeply") from None
    except ValueError as exc:            # JSONDecodeError, or an integer past Python's digit limit
        reason = exc if isinstance(exc, json.JSONDecodeError) else "a number has too many digits"
        raise BadRequest(f"invalid JSON: {reason}") from None
    if not isinstance(doc, list):
        raise BadRequest("expected a JSON array of {\"headers\": {...}, \"body\": \"...\"} objects")
    encode = _ENCODERS[charset]
    events = []
    for i in range(len(doc)):
        item, doc[i] = doc[i], None      # memory: each parsed object goes as soon as it is an event
        events.append(_json_event(item, i, encode))
    return events


def _json_event(item, i: int, encode) -> Event:
    """Event ``i`` of a JSONHandler request; raises BadRequest naming it."""
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
        clean[_text(key, i)] = _text(value, i) if isinstance(value, str) else json.dumps(value)
    try:
        encoded = encode(body or "")
    except UnicodeEncodeError:
        raise BadRequest(f"event {i}: the body is not valid Unicode (a lone surrogate)") from None
    # An id given by the sender (another Flumery agent, or a client that retries) is the event's id.
    return Event(encoded, clean, clean.pop(ID_HEADER, ""))


def _text(value: str, i: int) -> str:
    """A header key or value that can be stored (UTF-8): JSON's "\\ud800" escapes make lone surrogates."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"event {i}: header {value[:40]!r} is not valid Unicode (a lone surrogate)") from None
    return value


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


def _protocols_check(names: list[str]) -> str | None:
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        return f"unknown protocol '{unknown[0]}' (known: {', '.join(PROTOCOLS)})" + did_you_mean(unknown[0], PROTOCOLS)
    return None


@dataclass(frozen=True)
class HttpConfig:
    port: int = opt("port", check=port_number, doc="TCP port (0 picks a free one)")
    bind: str = opt("bind", "0.0.0.0", doc="address to listen on")
    handler: str = opt("handler", "org.apache.flume.source.http.JSONHandler", check=_handler_check,
                       doc="JSONHandler or BLOBHandler")
    max_request_bytes: int = opt("maxRequestBytes", 64 * 1024 * 1024, check=positive,
                                 doc="larger requests (by Content-Length, or as a chunked body arrives) are refused "
                                     "with 413 and the connection is closed (Flumery)")
    max_connections: int = opt("maxConnections", 512, check=positive,
                               doc="open connections at most; further clients wait in the listen backlog (Flumery)")
    max_threads: int = opt("maxThreads", 16, check=positive,
                           doc="worker threads that parse and put requests; bodies are read without a thread, and "
                               "those held in memory total at most maxThreads x maxRequestBytes (a request waits "
                               "its turn beyond that) (Flumery)")
    idle_timeout_s: float = opt("idleTimeoutSeconds", 60.0, check=positive,
                                doc="a connection that sends nothing for this long, before or between requests, "
                                    "is closed (Flumery)")
    request_timeout_s: float = opt("requestTimeoutSeconds", 30.0, check=positive,
                                   doc="a request's head must arrive within this long of its first byte, and its "
                                       "body within this long of being read for, else 408 and the connection is "
                                       "closed; also bounds the TLS handshake and the time a client takes to read "
                                       "the answer (Flumery)")
    ssl: bool = opt("ssl", False, doc="serve HTTPS, with the key and certificate of keystore (or sslCertFile)")
    keystore: str = opt("keystore", "", doc="keystore file holding the server's private key and certificate chain")
    keystore_password: str = opt("keystorePassword", "",
                                 doc="password of the keystore and of its key (or of an encrypted sslKeyFile)")
    keystore_type: str = opt("keystoreType", "JKS", check=one_of(*KEYSTORE_TYPES), doc="JKS or PKCS12")
    exclude_protocols: list[str] = opt("excludeProtocols", ["SSLv3"], check=_protocols_check,
                                       doc="TLS protocols not to offer (Java's names, space-separated); only "
                                           "TLSv1.2 and TLSv1.3 are ever offered")
    ssl_cert_file: str = opt("sslCertFile", "", doc="PEM certificate chain, instead of a keystore (Flumery)")
    ssl_key_file: str = opt("sslKeyFile", "", doc="PEM private key for sslCertFile (default: in sslCertFile) "
                                                  "(Flumery)")
    auth_token: str = opt("authToken", "", doc="if set, requests need 'Authorization: Bearer <token>', else "
                                               "401 (Flumery; use ${env:VAR})")
    auth_user: str = opt("authUser", "", doc="if set, requests need HTTP Basic authentication with authUser and "
                                             "authPassword, else 401 (Flumery)")
    auth_password: str = opt("authPassword", "", doc="password for authUser (Flumery; use ${env:VAR})")


def tls_context(config: HttpConfig) -> ssl.SSLContext | None:
    """The source's TLS context, or None without ``ssl``; raises KeystoreError."""
    if not config.ssl:
        return None
    if config.keystore:
        return keystore_context(config.keystore, config.keystore_password, config.keystore_type,
                                config.exclude_protocols)
    return pem_context(config.ssl_cert_file, config.ssl_key_file, config.keystore_password,
                       config.exclude_protocols)


def authorized(header: str | None, config: HttpConfig) -> bool:
    """Whether an ``Authorization`` header satisfies the source's authToken / authUser (constant-time)."""
    if not config.auth_token and not config.auth_user:
        return True
    scheme, _, credentials = (header or "").strip().partition(" ")
    given = credentials.strip().encode("latin-1", "replace")        # the header's raw bytes
    if config.auth_token and scheme.lower() == "bearer":
        return hmac.compare_digest(given, config.auth_token.encode())
    if config.auth_user and scheme.lower() == "basic":
        try:
            pair = base64.b64decode(given, validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(pair, f"{config.auth_user}:{config.auth_password}".encode())
    return False


def _challenges(config: HttpConfig) -> tuple[tuple[str, str], ...]:
    out = []
    if config.auth_token:
        out.append(("WWW-Authenticate", 'Bearer realm="flumery"'))
    if config.auth_user:
        out.append(("WWW-Authenticate", 'Basic realm="flumery", charset="UTF-8"'))
    return tuple(out)


def content_length(text: str) -> int | None:
    """A Content-Length value: ASCII digits only (no sign, no '_', no spaces inside), else None."""
    text = text.strip()
    return int(text) if _DIGITS.fullmatch(text) else None


class HttpSource(Source):
    """Flume's HTTPSource (JSONHandler, BLOBHandler) on a strict HTTP/1.1 server, with optional TLS and authentication."""

    Config = HttpConfig
    server: HttpServer | None = None

    def open(self) -> None:
        """Load the TLS material and bind the port; raises OSError (a port in use, a bad keystore)."""
        self.handle = HANDLERS.resolve(self.config.handler)
        c = self.config
        limits = Limits(max_connections=c.max_connections, max_threads=c.max_threads,
                        max_request_bytes=c.max_request_bytes, idle_timeout_s=c.idle_timeout_s,
                        request_timeout_s=c.request_timeout_s)
        self.server = HttpServer(self.name, limits, self.refuse, self.respond, tls_context(c))
        self.port = self.server.open(c.bind, c.port)
        log.info("http source %s listening on %s://%s:%d", self.name, "https" if c.ssl else "http", c.bind,
                 self.port)

    def serve(self) -> None:
        self.server.serve()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    @classmethod
    def check(cls, config: HttpConfig, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """Properties that go together; and, with ``ssl``, that the key and certificate load (so that a wrong
        keystorePassword is a configuration error naming the key, never echoing the password)."""
        errors = []
        if config.auth_user and not config.auth_password:
            errors.append(("authPassword", "required when authUser is set"))
        if config.keystore and config.ssl_cert_file:
            errors.append(("sslCertFile", "give either keystore or sslCertFile, not both"))
        if config.ssl and not (config.keystore or config.ssl_cert_file):
            errors.append(("ssl", "true needs keystore (or sslCertFile and sslKeyFile)"))
        elif config.ssl:
            try:
                tls_context(config)
            except KeystoreError as exc:
                errors.append(("keystore" if config.keystore else "sslCertFile", str(exc)))
        return errors

    # -- one request, in two steps: the server calls refuse() on the head, then respond() with the body --------
    def refuse(self, head: Head) -> Reply | None:
        """The answer to a request that is refused on its head alone (its body is then never read), or None."""
        if not authorized(head.headers.get("authorization"), self.config):
            return Reply(401, "authentication required", _challenges(self.config))
        if head.method in ("TRACE", "OPTIONS"):
            return Reply(403, "forbidden")
        if head.method not in ("GET", "POST", "PUT"):
            return Reply(501, f"method {head.method} is not supported")
        if self.stopping.is_set():
            return Reply(503, "source is stopping")
        if "transfer-encoding" in head.headers:
            return None                     # chunked (the server refuses any other coding); limited as it arrives
        length = head.headers.get("content-length")
        if length is None:
            return None if head.method == "GET" else Reply(411, "Content-Length required")
        size = content_length(length)
        if size is None:
            return Reply(400, f"bad Content-Length '{length[:40]}'")
        if size > self.config.max_request_bytes:
            return Reply(413, f"request of {size} bytes exceeds maxRequestBytes ({self.config.max_request_bytes})")
        return None

    def respond(self, requests: list[tuple[Head, Body]]) -> list[Reply]:
        """Turn each body into events and put them, each request its own transaction; the puts of the requests
        handed over together are committed together (one round trip to the broker when they fit in one group)."""
        replies: list[Reply | None] = []
        batches, waiting = [], []
        for head, body in requests:
            events = self._events(head, body)
            if isinstance(events, Reply):
                replies.append(events)
            elif not events:              # nothing to put, yet an append batch to Flume's counters
                self.counters.add(names.APPEND_BATCH_RECEIVED)
                self.counters.add(names.APPEND_BATCH_ACCEPTED)
                replies.append(OK)
            else:
                waiting.append(len(replies))
                replies.append(None)
                batches.append(Batch.from_events(events))
        for i, error in zip(waiting, self.put_many(batches) if batches else ()):
            replies[i] = self._put_reply(error)
        return replies

    def _events(self, head: Head, body: Body) -> list[Event] | Reply:
        """The request's events, or the answer to a body the handler cannot read."""
        try:
            # memory: the request's bytes go (body.take() keeps no reference) before its events are put
            return self.handle(body.take(), head.headers.get("content-type"), urlsplit(head.target).query)
        except BadRequest as exc:         # the client's error: counted, logged at debug level only
            names.fail(self.counters, names.EVENT_READ_FAIL, log, logging.DEBUG, "http source %s: bad request: %s",
                       self.name, exc)
            return Reply(400, str(exc))
        except UnsupportedCharset as exc:
            return Reply(500, str(exc))
        except Exception as exc:          # a handler's bug: Flume answers 500
            log.exception("http source %s: request failed", self.name)
            return Reply(500, f"internal error: {exc}")

    def _put_reply(self, error: Exception | None) -> Reply:
        """The answer to a request whose put ended with ``error`` (None: put)."""
        if error is None:
            return OK
        if isinstance(error, ChannelFullError):   # a channel is full, or the broker out of memory
            return Reply(503, str(error))
        if isinstance(error, BatchTooLarge):
            return Reply(413, str(error))
        if isinstance(error, (*BROKER_ERRORS, NotReplicated)):   # unreachable, or not on a replica yet: retry later
            names.fail(self.counters, names.CHANNEL_WRITE_FAIL, log, logging.WARNING,
                       "http source %s: put failed: %s", self.name, error)
            return Reply(503, f"channel write failed: {error}")
        log.error("http source %s: put failed", self.name, exc_info=error)
        return Reply(500, f"internal error: {error}")

    def answer(self, method: str, path: str, headers, body_reader) -> tuple[int, str]:
        """Status and reason for one whole request, by the same two steps as the server (for callers without a
        socket); ``body_reader(n)`` returns at most ``n`` bytes of the body."""
        head = Head(method, path, {k.lower(): v for k, v in headers.items()})
        reply = self.refuse(head)
        if reply is None:
            length = head.headers.get("content-length")
            limit = self.config.max_request_bytes
            raw = body_reader(content_length(length) if length is not None
                              else 0 if "transfer-encoding" not in head.headers else limit + 1)
            reply = (Reply(413, f"request body exceeds maxRequestBytes ({limit})") if len(raw) > limit
                     else self.respond([(head, Body(raw))])[0])
        return reply.status, reply.reason
