"""``mongodb``: events into MongoDB collections, with the property names of the widely used third-party Flume
sink (``org.riderzen.flume.sink.MongoSink``: ``host``, ``port``, ``username``, ``password``, ``model``, ``db``,
``collection``, ``batch``, ``autoWrap``, ``wrapField``, ``timestampField``, ``extraFields.*``), plus a connection
string (``uri``) and a write concern.  Client: pymongo 4.

Each event is one document: ``_id`` = the event id, every header a field, the ``extraFields.*`` values, and the
body under ``wrapField`` (a string, or binary with ``bodyType = binary``); with ``autoWrap = false`` the body
must be a JSON object, whose fields become the document's (the third-party sink's behaviour).  With
``model = dynamic`` the headers ``db`` and ``collection`` choose where an event goes (else ``db`` and
``collection``).  ``timestampField`` names a field to store as a date: an existing field (from a header or the
JSON body) is converted (epoch milliseconds, or the third-party sink's patterns ``yyyy-MM-dd[ HH:mm:ss[.SSS]][
Z]``, ``yyyy-MM-dd'T'HH:mm:ss[.SSS](Z|z)``, local time when no zone is given); a missing one is set from the
``timestamp`` header, else to the time of writing.

A batch is written with one unordered ``insert_many`` per collection at the configured write concern (default
``majority``): the write returns only once the server acknowledged it at that level.  Per-document results:

* written, or refused with a duplicate key (code 11000): the event is already there (a redelivered batch), and
  counts as written;
* refused as malformed (too large, failing validation, a bad field name: ``PERMANENT_CODES``): the event goes to
  the dead-letter channel with the server's message;
* any other error, a write-concern error, or a connection failure: the write raises and the runner retries;
  the retry sends only the events not yet confirmed.

Differs from the third-party sink on purpose: ``autoWrap`` defaults to true (web logs are text, not JSON), and
the body's field is ``wrapField`` (default ``log``, as there); a body that is not UTF-8 (``bodyType = string``)
or not a JSON object (``autoWrap = false``) is a dead letter, not an error that stops the sink.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from core.joda import JodaError, JodaPattern
from core.options import non_negative, one_of, opt, port_number, positive
from workers.sinks.base import Sink
from workers.sinks.store_common import Progress, StoreConnection, mask_uri

try:                                    # optional: pip install 'flumery[mongodb]'
    import bson
    import pymongo
    from pymongo import errors as mongo_errors
except ImportError:
    pymongo = None

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
# Server error codes that mean "this document will never be accepted": BadValue, TypeMismatch,
# DollarPrefixedFieldName, DottedFieldName... , DocumentValidationFailure, BSONObjectTooLarge, KeyTooLong.
PERMANENT_CODES = frozenset({2, 14, 52, 56, 57, 121, 10334, 17280})
# The third-party sink's date patterns for timestampField, tried in order (Joda syntax).
DATE_PATTERNS = ("yyyy-MM-dd", "yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd HH:mm:ss.SSS", "yyyy-MM-dd HH:mm:ss Z",
                 "yyyy-MM-dd HH:mm:ss.SSS Z", "yyyy-MM-dd'T'HH:mm:ssZ", "yyyy-MM-dd'T'HH:mm:ss.SSSZ",
                 "yyyy-MM-dd'T'HH:mm:ssz", "yyyy-MM-dd'T'HH:mm:ss.SSSz")


def _check_write_concern(value: str) -> str | None:
    if value.strip() in ("0", ""):
        return "must acknowledge writes: majority, a number of members from 1, or a tag set name"
    if value.lstrip("-").isdigit() and int(value) < 1:
        return "must be majority, a number of members from 1, or a tag set name"
    return None


@dataclass(frozen=True)
class MongoConfig:
    uri: str = opt("uri", "", doc="MongoDB connection string; replaces host, port, username and password "
                   "(Flumery)")
    host: str = opt("host", "localhost", doc="server host")
    port: int = opt("port", 27017, check=port_number, doc="server port")
    username: str = opt("username", "", doc="user to authenticate as")
    password: str = opt("password", "", doc="password; never logged")
    authentication_enabled: bool = opt("authenticationEnabled", False,
                                       doc="authenticate with username and password (given a username, "
                                       "Flumery authenticates anyway)")
    db: str = opt("db", "events", doc="database")
    collection: str = opt("collection", "events", doc="collection")
    model: str = opt("model", "single", check=one_of("single", "dynamic"),
                     doc="single: every event in db.collection; dynamic: the headers db and collection choose")
    batch_size: int = opt("batch", 100, check=positive, doc="events per write")
    auto_wrap: bool = opt("autoWrap", True, doc="store the body under wrapField; false: the body is a JSON "
                          "object whose fields become the document's")
    wrap_field: str = opt("wrapField", "log", doc="the body's field")
    body_type: str = opt("bodyType", "string", check=one_of("string", "binary"),
                         doc="the body as a UTF-8 string or as binary (Flumery)")
    timestamp_field: str = opt("timestampField", "", doc="field stored as a date (converted, or set from the "
                               "timestamp header or the time of writing)")
    extra_fields: dict[str, str] = opt("extraFields.*", doc="fields added to every document")
    write_concern: str = opt("writeConcern", "majority", check=_check_write_concern,
                             doc="w: majority, a number of members, or a tag set name (Flumery)")
    journal: bool = opt("writeConcern.journal", False, doc="wait for the journal too (j) (Flumery)")
    write_timeout_ms: int = opt("writeConcern.timeout", 30000, check=non_negative,
                                doc="ms to wait for the write concern; 0 = no limit (Flumery)")
    timeout_ms: int = opt("timeout", 10000, check=positive,
                          doc="ms to wait for a server before a write fails and is retried (Flumery)")


class MongoSink(Sink):
    """Events as MongoDB documents, ``_id`` = event id, at a write concern (default majority)."""

    Config = MongoConfig
    store_kind = "mongodb"

    @classmethod
    def check(cls, config: MongoConfig, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        problems = []
        if pymongo is None:
            problems.append(("type", "the mongodb sink needs pymongo: pip install 'flumery[mongodb]'"))
        elif config.uri:
            try:
                pymongo.uri_parser.parse_uri(config.uri)
            except Exception as exc:
                problems.append(("uri", f"{exc} (got '{mask_uri(config.uri)}')"))
        if config.authentication_enabled and not (config.username or config.uri):
            problems.append(("username", "authenticationEnabled = true needs a username and password"))
        if not config.wrap_field and config.auto_wrap:
            problems.append(("wrapField", "must not be empty when autoWrap is true"))
        return problems

    def start(self) -> None:
        self.progress = Progress()
        where = mask_uri(self.config.uri) if self.config.uri else f"{self.config.host}:{self.config.port}"
        self.connection = StoreConnection(self, log, where, self._open, lambda client: client.close())
        self.write_concern = pymongo.WriteConcern(w=_w(self.config.write_concern), j=self.config.journal or None,
                                                  wtimeout=self.config.write_timeout_ms or None)

    def _open(self):
        options = {"serverSelectionTimeoutMS": self.config.timeout_ms, "connectTimeoutMS": self.config.timeout_ms,
                   "appname": f"flumery-{self.context.agent}-{self.name}"}
        if self.config.uri:
            client = pymongo.MongoClient(self.config.uri, **options)
        else:
            if self.config.username:
                options.update(username=self.config.username, password=self.config.password)
            client = pymongo.MongoClient(self.config.host, self.config.port, **options)
        try:
            client.admin.command("ping")
        except Exception:
            client.close()
            raise
        return client

    # --- writing --------------------------------------------------------------------------------------------

    def write(self, batch) -> None:
        ids = batch.with_fresh_ids().ids
        pending = self.progress.pending(ids)
        if pending:
            self._insert(batch, ids, pending)
        self.progress.finish(ids)

    def _insert(self, batch, ids, pending: list[int]) -> None:
        groups = self._documents(batch, ids, pending)
        if not groups:
            return
        client = self.connection.get()
        retry: list[str] = []
        for (db, collection), (positions, documents) in groups.items():
            target = client.get_database(db, write_concern=self.write_concern).get_collection(collection)
            try:
                target.insert_many(documents, ordered=False)
            except mongo_errors.BulkWriteError as exc:
                retry += self._read_errors(exc.details, positions, ids, f"{db}.{collection}")
                continue
            except (mongo_errors.ConnectionFailure, mongo_errors.ServerSelectionTimeoutError) as exc:
                self.connection.failed(exc)
                raise
            for n in positions:
                self.progress.written(ids[n])
        if retry:
            raise MongoWriteIncomplete(retry)

    def _read_errors(self, details: dict, positions: list[int], ids, where: str) -> list[str]:
        """Record the outcome of each document of one insert_many; return the reasons to retry."""
        failed = {}
        for error in details.get("writeErrors", []):
            failed[error["index"]] = error
        retry = []
        concern_errors = details.get("writeConcernErrors") or []
        for k, n in enumerate(positions):
            error = failed.get(k)
            if error is None or error.get("code") == DUPLICATE_KEY:
                if concern_errors:       # inserted, but not acknowledged at the level asked for
                    continue
                self.progress.written(ids[n])
            elif error.get("code") in PERMANENT_CODES:
                self.progress.refuse(ids[n], f"{where}: code {error.get('code')}: {error.get('errmsg', '')}")
            else:
                retry.append(f"{where}: code {error.get('code')}: {error.get('errmsg', '')}")
        for error in concern_errors:
            retry.append(f"{where}: write concern {self.config.write_concern!r} not satisfied: "
                         f"code {error.get('code')}: {error.get('errmsg', '')}")
        return retry

    # --- documents ------------------------------------------------------------------------------------------

    def _documents(self, batch, ids, pending: list[int]) -> dict:
        """``{(db, collection): (batch positions, documents)}`` of the pending events; events that cannot be
        documents are refused here."""
        groups: dict = defaultdict(lambda: ([], []))
        bodies, headers = batch.bodies, batch.headers
        now_ms = int(time.time() * 1000)
        for n in pending:
            event_headers = headers[n] if headers is not None else {}
            try:
                document = self._document(ids[n], bodies[n], event_headers, now_ms)
            except ValueError as exc:
                self.progress.refuse(ids[n], str(exc))
                continue
            positions, documents = groups[self._target(event_headers)]
            positions.append(n)
            documents.append(document)
        return groups

    def _target(self, headers) -> tuple[str, str]:
        if self.config.model.lower() == "dynamic":
            return headers.get("db") or self.config.db, headers.get("collection") or self.config.collection
        return self.config.db, self.config.collection

    def _document(self, event_id: str, body: bytes, headers, now_ms: int) -> dict:
        document = {"_id": event_id, **headers, **self.config.extra_fields}
        if self.config.auto_wrap:
            document[self.config.wrap_field] = self._body(body)
        else:
            document.update(_json_object(body))
        document["_id"] = event_id            # whatever a header or the body says: redeliveries must collide
        if self.config.timestamp_field:
            field = self.config.timestamp_field
            document[field] = _as_date(document.get(field), headers, now_ms)
        return document

    def _body(self, body: bytes):
        if self.config.body_type.lower() == "binary":
            return bson.Binary(body)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"the body is not UTF-8 ({exc.reason} at byte {exc.start}); set bodyType = binary "
                             "to store such bodies") from None

    def stop(self) -> None:
        connection = getattr(self, "connection", None)
        if connection is not None:
            connection.close()


class MongoWriteIncomplete(Exception):
    """Some documents of a batch were not confirmed; the others are recorded as written."""

    def __init__(self, reasons: list[str]):
        self.reasons = reasons
        super().__init__(f"{len(reasons)} documents or write concerns to retry: " + "; ".join(reasons[:3]))


def _w(value: str):
    return int(value) if value.strip().isdigit() else value.strip()


def _json_object(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"autoWrap = false needs a JSON object body: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"autoWrap = false needs a JSON object body (got a JSON {type(value).__name__})")
    return value


def _as_date(value, headers, now_ms: int):
    """A date for timestampField: the field's own value converted, else the timestamp header, else now.  A
    value that is no date in any known form stays as it is (logged)."""
    if value is None or value == "":
        raw = headers.get("timestamp", "")
        return _from_ms(int(raw) if raw.strip().isdigit() else now_ms)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _from_ms(int(value))
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.isdigit():
        return _from_ms(int(text))
    for pattern in _patterns():
        try:
            return _from_ms(pattern.parse_millis(text))
        except JodaError:
            continue
    log.warning("mongodb sink: timestampField value %r is not a date in a known form; stored as it is",
                text[:60])
    return value


def _patterns() -> list[JodaPattern]:
    if not _PATTERNS:
        _PATTERNS.extend(JodaPattern(p) for p in DATE_PATTERNS)
    return _PATTERNS


_PATTERNS: list[JodaPattern] = []


def _from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
