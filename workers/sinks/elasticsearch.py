"""``elasticsearch``: Flume's ElasticSearchSink, rebuilt on the REST ``_bulk`` API of Elasticsearch 7/8 and
OpenSearch (client: ``opensearch-py``, which speaks to both; the ``elasticsearch`` client refuses OpenSearch).

Each event becomes one ``index`` action whose ``_id`` is the event id, so a redelivered batch overwrites its
documents instead of doubling them.  Documents are shaped by Flume's serializers:

* ``ElasticSearchLogStashEventSerializer`` (the default): ``@message`` (the body), ``@timestamp`` (from the
  ``timestamp`` header, ISO 8601 UTC), ``@source``/``@type``/``@source_host``/``@source_path`` from the headers
  ``source``/``type``/``host``/``src_path``, and every header under ``@fields``;
* ``ElasticSearchDynamicSerializer``: ``body`` plus every header as a field of its own.

As in Flume, a body or header value that starts with ``{`` and parses as a JSON object is embedded as an object,
anything else is a string (UTF-8, invalid bytes replaced); an event without a ``timestamp`` (or
``@timestamp``) header gets the time of writing as its ``timestamp``.  The index is Flume's
TimeBasedIndexNameBuilder's ``<indexName>-<date of the event's timestamp>`` (``%{header}`` escapes allowed,
lower-cased because Elasticsearch only takes lower-case names), or ``indexName`` itself with SimpleIndexNameBuilder.

The bulk response is read item by item:

* 2xx: written;
* 429 and 5xx, index blocks, a missing index (auto-creation off) or ingest pipeline (errors the operator can
  fix; see ``RETRYABLE_TYPES``): retried.  The
  write raises, the runner retries the batch with its backoff, and the retry sends **only the events not yet
  confirmed** (:class:`~workers.sinks.store_common.Progress`): the rest of the batch is not written twice;
* any other 4xx (a mapping error, an invalid index name): the store will never take the event; once nothing
  is left to retry, the write raises RejectedEvents and the event goes to the dead-letter channel with the
  store's reason.

Differs from Flume on purpose: events without a ``timestamp`` header are indexed by the time of writing, so one
redelivered across midnight (UTC) lands in the next day's index beside its first copy: put a ``timestamp``
interceptor on the source to make the index of every event fixed.  A ``timestamp`` header that is not epoch
milliseconds is a dead letter (Flume failed the whole batch for ever).
"""
from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import logging
import time
import zoneinfo
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.options import one_of, opt, positive
from workers.sinks.base import Sink
from workers.sinks.store_common import Progress, StoreConnection, escape_headers, mask_uri

try:                                    # optional: pip install 'flumery[elasticsearch]'
    import opensearchpy
except ImportError:
    opensearchpy = None

log = logging.getLogger(__name__)

FLUME_PACKAGE = "org.apache.flume.sink.elasticsearch."
LOGSTASH = "ElasticSearchLogStashEventSerializer"
DYNAMIC = "ElasticSearchDynamicSerializer"
TIME_BASED = "TimeBasedIndexNameBuilder"
SIMPLE = "SimpleIndexNameBuilder"
DEFAULT_PORT = 9200

# SimpleDateFormat letters the index date may use, and their strftime equivalents.
_DATE_LETTERS = {"yyyy": "%Y", "yy": "%y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S",
                 "DDD": "%j", "ww": "%W"}


def _short(name: str) -> str:
    return name.removeprefix(FLUME_PACKAGE)


def date_pattern_to_strftime(pattern: str) -> str:
    """Translate a SimpleDateFormat pattern (the letters of ``_DATE_LETTERS``, ``'quoted'`` text and other
    characters) into a strftime format; raise ValueError naming the first letter run it cannot translate."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "'":
            end = pattern.find("'", i + 1)
            if end < 0:
                raise ValueError("unterminated quote")
            out.append(pattern[i + 1:end].replace("%", "%%") or "'")
            i = end + 1
            continue
        if ch.isalpha():
            run = ch
            while i + len(run) < len(pattern) and pattern[i + len(run)] == ch:
                run += ch
            if run not in _DATE_LETTERS:
                raise ValueError(f"'{run}' is not supported (use {', '.join(_DATE_LETTERS)})")
            out.append(_DATE_LETTERS[run])
            i += len(run)
            continue
        out.append("%%" if ch == "%" else ch)
        i += 1
    return "".join(out)


def _check_date_format(value: str) -> str | None:
    try:
        date_pattern_to_strftime(value)
    except ValueError as exc:
        return str(exc)
    return None


def _check_zone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "unknown time zone"
    return None


def parse_hosts(host_names: str, ssl: bool) -> list[str]:
    """Flume's comma-separated ``hostNames`` as URLs: ``host``, ``host:port`` (port 9200 by default, https when
    ``ssl``) or full ``http(s)://host:port`` URLs; raise ValueError for an entry that is neither."""
    hosts = []
    for entry in (h.strip() for h in host_names.split(",")):
        if not entry:
            continue
        url = entry if "://" in entry else f"{'https' if ssl else 'http'}://{entry}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'{mask_uri(entry)}' is not host[:port] or an http(s) URL")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"'{mask_uri(entry)}' has an invalid port") from None
        auth = f"{parts.username}:{parts.password}@" if parts.username else ""
        hosts.append(f"{parts.scheme}://{auth}{parts.hostname}:{port}{parts.path.rstrip('/')}")
    if not hosts:
        raise ValueError(f"no host given (got '{host_names}')")
    return hosts


@dataclass(frozen=True)
class ElasticsearchConfig:
    host_names: str = opt("hostNames", doc="comma-separated host[:port] (port 9200) or http(s)://host:port URLs")
    index_name: str = opt("indexName", "flume", doc="index name, or its prefix with the time-based builder; "
                          "%{header} escapes allowed; lower-cased")
    index_type: str = opt("indexType", "logs", inert="mapping types were removed in Elasticsearch 7 and "
                          "OpenSearch 2")
    cluster_name: str = opt("clusterName", "elasticsearch", inert="the REST API needs no cluster name")
    client: str = opt("client", "transport", inert="Flumery always uses the REST _bulk API")
    ttl: str = opt("ttl", "", inert="Elasticsearch 5 removed _ttl: expire old indices with ILM or ISM")
    batch_size: int = opt("batchSize", 100, check=positive, doc="events per _bulk request")
    serializer: str = opt("serializer", FLUME_PACKAGE + LOGSTASH,
                          check=lambda v: one_of(LOGSTASH, DYNAMIC)(_short(v)),
                          doc=f"{LOGSTASH} or {DYNAMIC} (short or Flume class names)")
    index_name_builder: str = opt("indexNameBuilder", FLUME_PACKAGE + TIME_BASED,
                                  check=lambda v: one_of(TIME_BASED, SIMPLE)(_short(v)),
                                  doc=f"{TIME_BASED} (<indexName>-<date>) or {SIMPLE} (indexName as is)")
    date_format: str = opt("indexNameBuilder.dateFormat", "yyyy-MM-dd", check=_check_date_format,
                           doc="date part of time-based index names (SimpleDateFormat letters y M d H m s D w)")
    time_zone: str = opt("indexNameBuilder.timeZone", "Etc/UTC", check=_check_zone,
                         doc="time zone of the index date")
    ssl: bool = opt("ssl", False, doc="use https for hostNames given without a scheme (Flumery)")
    verify_certs: bool = opt("ssl.verifyCertificates", True, doc="check the server's certificate (Flumery)")
    ca_certs: str = opt("ssl.caCertificates", "", doc="file of CA certificates to trust (PEM) (Flumery)")
    username: str = opt("username", "", doc="basic authentication user (Flumery)")
    password: str = opt("password", "", doc="basic authentication password; never logged (Flumery)")
    api_key: str = opt("apiKey", "", doc="API key, 'id:key' or its base64 form; never logged (Flumery)")
    pipeline: str = opt("pipeline", "", doc="ingest pipeline every document goes through (Flumery)")
    id_field: str = opt("idField", "", doc="document field that also holds the event id (Flumery; the _id "
                        "is always the event id)")
    request_timeout_ms: int = opt("requestTimeout", 30000, check=positive,
                                  doc="ms before a _bulk request is abandoned and retried (Flumery)")


class ElasticsearchSink(Sink):
    """Flume's ElasticSearchSink on the REST ``_bulk`` API: ``_id`` = event id, per-item outcomes."""

    Config = ElasticsearchConfig

    @classmethod
    def check(cls, config: ElasticsearchConfig, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        problems = []
        if opensearchpy is None:
            problems.append(("type", "the elasticsearch sink needs opensearch-py: pip install 'flumery[elasticsearch]'"))
        try:
            parse_hosts(config.host_names, config.ssl)
        except ValueError as exc:
            problems.append(("hostNames", str(exc)))      # names the bad entry, password masked
        if config.password and not config.username:
            problems.append(("password", "a password needs a username"))
        if config.api_key and config.username:
            problems.append(("apiKey", "give either an API key or a username and password, not both"))
        return problems

    def start(self) -> None:
        self.hosts = parse_hosts(self.config.host_names, self.config.ssl)
        self.logstash = _short(self.config.serializer).lower() == LOGSTASH.lower()
        self.time_based = _short(self.config.index_name_builder).lower() == TIME_BASED.lower()
        self.date_format = date_pattern_to_strftime(self.config.date_format)
        self.zone = zoneinfo.ZoneInfo(self.config.time_zone)
        self.progress = Progress()
        where = ", ".join(mask_uri(h) for h in self.hosts)
        self.connection = StoreConnection(self, log, where, self._open, lambda client: client.close())

    # --- connection -----------------------------------------------------------------------------------------

    def _open(self):
        options = {"hosts": self.hosts, "timeout": self.config.request_timeout_ms / 1000,
                   "max_retries": len(self.hosts) - 1, "retry_on_timeout": False,
                   "verify_certs": self.config.verify_certs, "ssl_show_warn": False}
        if self.config.ca_certs:
            options["ca_certs"] = self.config.ca_certs
        if self.config.username:
            options["http_auth"] = (self.config.username, self.config.password)
        if self.config.api_key:
            options["headers"] = {"Authorization": f"ApiKey {_api_key(self.config.api_key)}"}
        client = opensearchpy.OpenSearch(**options)
        try:
            client.info()
        except Exception:
            client.close()
            raise
        return client

    # --- writing --------------------------------------------------------------------------------------------

    def write(self, batch) -> None:
        ids = batch.with_fresh_ids().ids
        pending = self.progress.pending(ids)
        if pending:
            self._bulk(batch, ids, pending)
        self.progress.finish(ids)

    def _bulk(self, batch, ids, pending: list[int]) -> None:
        """Send the pending events in one _bulk request and record each outcome; raise if some must be
        retried (or the request failed as a whole)."""
        lines, sent = self._actions(batch, ids, pending)
        if not sent:
            return
        client = self.connection.get()
        try:
            response = client.bulk(body=b"".join(lines))
        except opensearchpy.exceptions.ConnectionError as exc:     # includes timeouts: the connection is in doubt
            self.connection.failed(exc)
            raise
        retry = self._read_items(response, sent, ids)
        if retry:
            raise BulkItemsFailed(retry, len(sent))

    def _actions(self, batch, ids, pending: list[int]) -> tuple[list[bytes], list[int]]:
        """NDJSON lines of the pending events, and the batch index of each action in order.  An event that
        cannot become a document at all (a bad ``timestamp`` header) is refused here."""
        lines, sent = [], []
        bodies, headers = batch.bodies, batch.headers
        now_ms = int(time.time() * 1000)
        for n in pending:
            event_headers = headers[n] if headers is not None else {}
            try:
                stamped, timestamp = _timestamped(event_headers, now_ms)
            except ValueError as exc:
                self.progress.refuse(ids[n], str(exc))
                continue
            document = self._document(bodies[n], stamped, timestamp)
            if self.config.id_field:
                document[self.config.id_field] = ids[n]
            action = {"_index": self._index(stamped, timestamp), "_id": ids[n]}
            if self.config.pipeline:
                action["pipeline"] = self.config.pipeline
            lines.append(json.dumps({"index": action}, ensure_ascii=False).encode() + b"\n")
            lines.append(json.dumps(document, ensure_ascii=False).encode() + b"\n")
            sent.append(n)
        return lines, sent

    def _read_items(self, response: dict, sent: list[int], ids) -> dict[str, int]:
        """Record each item's outcome; return ``{reason: count}`` of the items to retry."""
        items = response.get("items") or []
        if len(items) != len(sent):
            raise RuntimeError(f"the _bulk response has {len(items)} items for {len(sent)} actions")
        retry: dict[str, int] = {}
        for n, item in zip(sent, items):
            result = next(iter(item.values()))
            status = result.get("status", 0)
            if 200 <= status < 300:
                self.progress.written(ids[n])
                continue
            reason = _reason(status, result.get("error"))
            if _retryable(status, result.get("error")):
                retry[reason] = retry.get(reason, 0) + 1
            else:
                self.progress.refuse(ids[n], reason)
        return retry

    # --- documents and index names --------------------------------------------------------------------------

    def _document(self, body: bytes, headers: dict, timestamp: int) -> dict:
        if not self.logstash:
            document = {"body": _field_value(body)}
            for key, value in headers.items():
                document[key] = _field_value(value.encode())
            return document
        document = {"@message": _field_value(body)}
        if not headers.get("@timestamp", "").strip():
            document["@timestamp"] = _iso_utc(timestamp)
        for header, field in (("source", "@source"), ("type", "@type"), ("host", "@source_host"),
                              ("src_path", "@source_path")):
            if headers.get(header, "").strip() and not headers.get(field, "").strip():
                document[field] = _field_value(headers[header].encode())
        document["@fields"] = {key: _field_value(value.encode()) for key, value in headers.items()}
        return document

    def _index(self, headers: dict, timestamp: int) -> str:
        prefix = escape_headers(self.config.index_name, headers).lower()
        if not self.time_based:
            return prefix
        return f"{prefix}-{_format_date(timestamp // 1000, self.date_format, self.zone)}"

    def stop(self) -> None:
        connection = getattr(self, "connection", None)
        if connection is not None:
            connection.close()


class BulkItemsFailed(Exception):
    """Some items of a _bulk request failed in a way worth retrying; the others are recorded as written."""

    def __init__(self, reasons: dict[str, int], sent: int):
        self.reasons = reasons
        failed = sum(reasons.values())
        super().__init__(f"{failed} of {sent} documents to retry: "
                         + "; ".join(f"{n} x {r}" for r, n in list(reasons.items())[:3]))


# Item errors that say "not now" rather than "never", whatever their status: an index block (read-only, or
# flood-stage disk), an index that does not exist while auto-creation is off, a full queue, missing shards.
RETRYABLE_TYPES = frozenset({"cluster_block_exception", "index_not_found_exception",
                             "es_rejected_execution_exception", "rejected_execution_exception",
                             "unavailable_shards_exception", "process_cluster_event_timeout_exception"})


def _retryable(status: int, error) -> bool:
    """429 and 5xx, the error types of RETRYABLE_TYPES, and a missing ingest pipeline (the operator can create
    it; dead-lettering every event meanwhile would be worse) are retried; any other item error is final."""
    if status == 429 or status >= 500:
        return True
    if not isinstance(error, dict):
        return False
    reason = str(error.get("reason", ""))
    return error.get("type") in RETRYABLE_TYPES or ("pipeline" in reason and "does not exist" in reason)


def _reason(status: int, error) -> str:
    if not isinstance(error, dict):
        return f"{status} {error}"
    text = f"{status} {error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict):
        text += f" (caused by {cause.get('type', '')}: {cause.get('reason', '')})"
    return text


def _timestamped(headers: dict, now_ms: int) -> tuple[dict, int]:
    """Flume's TimestampedEvent: the ``timestamp`` (else ``@timestamp``) header as epoch ms, or now, which is
    then added as the ``timestamp`` header.  Raise ValueError for a header that is not a number."""
    raw = headers.get("timestamp", "").strip() or headers.get("@timestamp", "").strip()
    if not raw:
        return {**headers, "timestamp": str(now_ms)}, now_ms
    try:
        return headers, int(raw)
    except ValueError:
        raise ValueError(f"the timestamp header '{raw[:40]}' is not epoch milliseconds") from None


def _field_value(data: bytes):
    """Flume's ContentBuilderUtil.appendField: a JSON object if the bytes start (after blanks) with ``{`` and
    parse as one, else the text (UTF-8, invalid bytes replaced)."""
    text = data.decode("utf-8", "replace")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            value, _ = json.JSONDecoder().raw_decode(stripped)
            return value
        except ValueError:
            pass
    return text


def _iso_utc(ms: int) -> str:
    """``2013-01-01T00:00:00.000Z``: how Flume's serializer printed a date."""
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _format_date(seconds: int, strftime: str, zone) -> str:
    return dt.datetime.fromtimestamp(seconds, zone).strftime(strftime)


def _api_key(key: str) -> str:
    """An ``id:key`` pair becomes its base64 form; a key already in that form is used as is."""
    if ":" in key:
        return base64.b64encode(key.encode()).decode()
    return key
