"""Flume's Avro RPC (``AvroSourceProtocol``) as Avro's Java IPC speaks it, without any I/O.

The protocol (Flume's ``flume-ng-sdk/src/main/avro/flume.avdl``)::

    enum Status { OK, FAILED, UNKNOWN }
    record AvroFlumeEvent { map<string> headers; bytes body; }
    Status append(AvroFlumeEvent event);
    Status appendBatch(array<AvroFlumeEvent> events);

A call's payload (the concatenated buffers of one Netty frame, :mod:`workers.rpc.netty_frames`) is, as Avro's
``Requestor``/``Responder`` write it:

* request: ``HandshakeRequest`` (first call of a connection only), call metadata ``map<bytes>``, the message name
  (``string``), the parameters;
* response: ``HandshakeResponse`` (first call only), metadata ``map<bytes>``, an ``error`` boolean, then the
  ``Status`` enum, or the error as the union ``["string"]``.

Handshake: the client sends the MD5 of its protocol text (``clientHash``), its guess of the server's
(``serverHash``) and, when it has learnt that the server does not know its hash, its protocol text. The server
answers ``BOTH`` (it knows the client's protocol and the client guessed its hash), ``CLIENT`` (it knows the client's
protocol; here is its own), or ``NONE`` (send your protocol text): then the rest of the request is ignored and the
client sends the call again with the text.  Flumery's client sends its text on the first call of every
connection, so it never needs a second round trip; Flumery's server knows Flume's protocol by the MD5 Java
computes for it (:data:`PROTOCOL_MD5`, checked against Avro 1.8.2 by the tests), and accepts another client
protocol text if its types and messages are Flume's (docs and Java-only properties aside).

Datum encoding is fastavro's (schemaless reader and writer).
"""
from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict
from dataclasses import dataclass

import fastavro

NAMESPACE = "org.apache.flume.source.avro"
# Exactly the text Avro's Java Protocol.toString() gives for flume.avdl: its MD5 is the protocol's hash.
PROTOCOL_JSON = (
    '{"protocol":"AvroSourceProtocol","namespace":"org.apache.flume.source.avro","types":[{"type":"enum",'
    '"name":"Status","symbols":["OK","FAILED","UNKNOWN"]},{"type":"record","name":"AvroFlumeEvent","fields":'
    '[{"name":"headers","type":{"type":"map","values":"string"}},{"name":"body","type":"bytes"}]}],"messages":'
    '{"append":{"request":[{"name":"event","type":"AvroFlumeEvent"}],"response":"Status"},"appendBatch":'
    '{"request":[{"name":"events","type":{"type":"array","items":"AvroFlumeEvent"}}],"response":"Status"}}}')
PROTOCOL_MD5 = hashlib.md5(PROTOCOL_JSON.encode()).digest()
STATUSES = ("OK", "FAILED", "UNKNOWN")
MESSAGES = ("append", "appendBatch")

_MD5 = {"type": "fixed", "name": "MD5", "namespace": "org.apache.avro.ipc", "size": 16}
_META = ["null", {"type": "map", "values": "bytes"}]
HANDSHAKE_REQUEST = fastavro.parse_schema({
    "type": "record", "name": "HandshakeRequest", "namespace": "org.apache.avro.ipc", "fields": [
        {"name": "clientHash", "type": _MD5},
        {"name": "clientProtocol", "type": ["null", "string"]},
        {"name": "serverHash", "type": "org.apache.avro.ipc.MD5"},
        {"name": "meta", "type": _META}]})
HANDSHAKE_RESPONSE = fastavro.parse_schema({
    "type": "record", "name": "HandshakeResponse", "namespace": "org.apache.avro.ipc", "fields": [
        {"name": "match", "type": {"type": "enum", "name": "HandshakeMatch", "symbols": ["BOTH", "CLIENT", "NONE"]}},
        {"name": "serverProtocol", "type": ["null", "string"]},
        {"name": "serverHash", "type": ["null", _MD5]},
        {"name": "meta", "type": _META}]})
CALL_META = fastavro.parse_schema({"type": "map", "values": "bytes"})
STRING = fastavro.parse_schema("string")
BOOLEAN = fastavro.parse_schema("boolean")
SYSTEM_ERROR = fastavro.parse_schema(["string"])
_EVENT = {"type": "record", "name": "AvroFlumeEvent", "namespace": NAMESPACE, "fields": [
    {"name": "headers", "type": {"type": "map", "values": "string"}}, {"name": "body", "type": "bytes"}]}
EVENT = fastavro.parse_schema(_EVENT)
EVENTS = fastavro.parse_schema({"type": "array", "items": _EVENT})
STATUS = fastavro.parse_schema({"type": "enum", "name": "Status", "namespace": NAMESPACE, "symbols": list(STATUSES)})

MAX_KNOWN_PROTOCOLS = 64
# Schema attributes that matter for the binary encoding; everything else (doc, Java-only properties such as
# avro.java.string) is left out when a client's protocol text is compared with Flume's.
_ENCODING_KEYS = {"protocol", "namespace", "types", "messages", "request", "response", "errors", "one-way", "type",
                  "name", "fields", "items", "values", "symbols", "size"}


class ProtocolError(Exception):
    """The peer broke Avro IPC or Flume's protocol: the connection cannot go on."""


class RemoteError(Exception):
    """The server answered a call with an error (its text is the message)."""


def _write(schema, datum) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, datum)
    return out.getvalue()


def _read(stream: io.BytesIO, schema):
    try:
        return fastavro.schemaless_reader(stream, schema, None)
    except (EOFError, ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError, StopIteration) as exc:
        raise ProtocolError(f"undecodable Avro datum: {type(exc).__name__}: {exc}") from None


# --- the client (Flume's NettyAvroRpcClient, Avro's Requestor) --------------------------------------------------

class ClientSession:
    """One connection's client state: the handshake goes with the first call, until the server accepted it."""

    def __init__(self):
        self.established = False

    def request(self, message: str, records: list[dict]) -> bytes:
        """The payload of an ``append`` (one record) or ``appendBatch`` call."""
        parts = []
        if not self.established:
            parts.append(_write(HANDSHAKE_REQUEST, {"clientHash": PROTOCOL_MD5, "clientProtocol": PROTOCOL_JSON,
                                                    "serverHash": PROTOCOL_MD5, "meta": None}))
        parts += [_write(CALL_META, {}), _write(STRING, message)]
        if message == "append":
            parts.append(_write(EVENT, records[0]))
        else:
            parts.append(_write(EVENTS, records))
        return b"".join(parts)

    def response(self, payload: bytes) -> str:
        """The Status symbol of a call's response; raises RemoteError or ProtocolError."""
        stream = io.BytesIO(payload)
        if not self.established:
            handshake = _read(stream, HANDSHAKE_RESPONSE)
            if handshake["match"] == "NONE":
                raise ProtocolError("the server refused the handshake (it does not accept Flume's AvroSourceProtocol)")
            self.established = True
        _read(stream, CALL_META)
        if _read(stream, BOOLEAN):
            raise RemoteError(str(_read(stream, SYSTEM_ERROR)))
        return _read(stream, STATUS)


# --- the server (Flume's AvroSource, Avro's Responder) ----------------------------------------------------------

def _normalized(node, names: bool = False):
    """``node`` without the attributes that do not change the encoding (``names``: a dict keyed by message names)."""
    if isinstance(node, dict):
        if names:
            return {k: _normalized(v) for k, v in node.items()}
        return {k: _normalized(v, names=k == "messages") for k, v in node.items() if k in _ENCODING_KEYS}
    if isinstance(node, list):
        return [_normalized(v) for v in node]
    return node


_FLUME = _normalized(json.loads(PROTOCOL_JSON))


def speaks_flume(protocol_text: str) -> bool:
    """Whether a client's protocol text encodes like Flume's (names, types and messages; docs aside)."""
    try:
        theirs = _normalized(json.loads(protocol_text))
    except (ValueError, RecursionError):
        return False
    theirs.setdefault("namespace", NAMESPACE)
    return {k: theirs.get(k) for k in ("protocol", "namespace", "types")} == \
        {k: _FLUME.get(k) for k in ("protocol", "namespace", "types")} and \
        all(theirs.get("messages", {}).get(m) == _FLUME["messages"][m] for m in MESSAGES)


class KnownProtocols:
    """Client protocol hashes a server accepts: Flume's, and those whose text it checked (bounded)."""

    def __init__(self):
        self.hashes: OrderedDict[bytes, bool] = OrderedDict({PROTOCOL_MD5: True})

    def knows(self, client_hash: bytes, client_protocol: str | None) -> bool:
        if client_hash in self.hashes:
            return self.hashes[client_hash]
        if client_protocol is None:
            return False
        ok = hashlib.md5(client_protocol.encode()).digest() == client_hash and speaks_flume(client_protocol)
        self.hashes[client_hash] = ok
        while len(self.hashes) > MAX_KNOWN_PROTOCOLS:
            self.hashes.popitem(last=False)
        return ok


@dataclass
class Call:
    """A decoded request: ``message`` is ``append`` or ``appendBatch``; ``records`` its events."""

    prefix: bytes          # the handshake response, on a connection's first call; b"" after
    message: str
    records: list


class ServerSession:
    """One connection's server state."""

    def __init__(self, known: KnownProtocols):
        self.known = known
        self.established = False

    def parse(self, payload: bytes) -> Call | bytes:
        """A :class:`Call` to answer with :meth:`reply`, or bytes to send back as they are (a refused handshake,
        or a handshake "ping" without a message).  Raises ProtocolError."""
        stream = io.BytesIO(payload)
        prefix = b""
        if not self.established:
            handshake = _read(stream, HANDSHAKE_REQUEST)
            known = self.known.knows(handshake["clientHash"], handshake["clientProtocol"])
            if not known and handshake["clientProtocol"] is not None:
                raise ProtocolError("the client's protocol is not Flume's AvroSourceProtocol")
            match = "NONE" if not known else "BOTH" if handshake["serverHash"] == PROTOCOL_MD5 else "CLIENT"
            prefix = _write(HANDSHAKE_RESPONSE, {
                "match": match, "serverProtocol": None if match == "BOTH" else PROTOCOL_JSON,
                "serverHash": None if match == "BOTH" else PROTOCOL_MD5, "meta": None})
            if match == "NONE":
                return prefix          # the client sends the call again with its protocol text
            self.established = True
        _read(stream, CALL_META)
        message = _read(stream, STRING)
        if message == "":
            return prefix
        if message == "append":
            return Call(prefix, message, [_read(stream, EVENT)])
        if message == "appendBatch":
            return Call(prefix, message, _read(stream, EVENTS))
        return prefix + error_payload(f"org.apache.avro.AvroRuntimeException: No such remote message: {message}")

    @staticmethod
    def reply(call: Call, status: str) -> bytes:
        return b"".join((call.prefix, _write(CALL_META, {}), _write(BOOLEAN, False), _write(STATUS, status)))

    @staticmethod
    def error(call: Call, text: str) -> bytes:
        return call.prefix + error_payload(text)


def error_payload(text: str) -> bytes:
    return b"".join((_write(CALL_META, {}), _write(BOOLEAN, True), _write(SYSTEM_ERROR, text)))
