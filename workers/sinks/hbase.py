"""``hbase`` (also ``hbase2`` and ``asynchbase``): Flume's HBase sinks, writing through HBase's Thrift gateway
(Thrift1, with happybase) instead of the Java client: the one added property is the gateway's address,
``thriftServer``.  ``zookeeperQuorum``, ``znodeParent`` and the Kerberos properties are accepted and reported
as having no effect.

Serializers, with Flume's properties under ``serializer.*``:

* ``SimpleHbaseEventSerializer`` (and ``SimpleHBase2EventSerializer``, ``SimpleAsyncHbaseEventSerializer``):
  the body into ``<columnFamily>:<payloadColumn>`` of row ``<rowPrefix><suffix>``, and, if ``incrementColumn``
  is set, +1 on ``<incrementRow>`` / ``<columnFamily>:<incrementColumn>`` per event;
* ``RegexHbaseEventSerializer`` (and ``RegexHBase2EventSerializer``): the Java ``regex`` must match the whole
  body (``DOTALL``; ``regexIgnoreCase``); group *i* goes to column ``colNames[i]``, or is the row key if ``i``
  is ``rowKeyIndex`` (whose name must be ``ROW_KEY``); ``depositHeaders`` adds every header as a column.

Row keys come from the event id where Flume's use a random or time-based suffix, so a redelivered event
rewrites the same cells (a new version of each) instead of adding a row:

* Simple, ``suffix`` ``uuid`` (default) or ``random``: ``<rowPrefix><event id>``; ``timestamp`` / ``nano``:
  ``<rowPrefix><time>-<event id>`` with the time (ms / ns) of the event's ``timestamp`` header;
* Regex without ``rowKeyIndex``: ``<timestamp header>-<event id>`` (Flume: ``<now>-<random>-<nonce>``).
* Without a ``timestamp`` header the time part is left out (a time of writing would change on a redelivery).

A batch is sent as one ``mutateRows`` call, then the increments (one ``atomicIncrement`` per event, or per
counter cell with ``coalesceIncrements``).  The write returns once the gateway answered every call.  A retried
batch sends only what the gateway had not confirmed.  Increments are not idempotent: a batch redelivered after
a worker was killed between its write and its acknowledgement counts again (as in Flume).

Differs from Flume on purpose: a body the regex does not match goes to the dead-letter channel with the reason
(Flume dropped it silently), and a regex whose group count differs from ``colNames`` is a configuration error
(Flume dropped every event).
"""
from __future__ import annotations

import codecs
import logging
import socket
from dataclasses import dataclass

from core import java_regex
from core.options import one_of, opt, positive
from workers.sinks.base import Sink
from workers.sinks.store_common import Progress, StoreConnection

try:                                    # optional: pip install 'flumery[hbase]'
    import happybase
    from thriftpy2.transport import TTransportException
except ImportError:
    happybase = None

log = logging.getLogger(__name__)

SIMPLE = ("SimpleHbaseEventSerializer", "SimpleHBase2EventSerializer", "SimpleAsyncHbaseEventSerializer")
REGEX = ("RegexHbaseEventSerializer", "RegexHBase2EventSerializer")
PACKAGES = ("org.apache.flume.sink.hbase.", "org.apache.flume.sink.hbase2.")
SIMPLE_ONLY = {"payloadColumn": "payload_column", "incrementColumn": "increment_column",
               "rowPrefix": "row_prefix", "incrementRow": "increment_row", "suffix": "suffix"}
REGEX_ONLY = {"regex": "regex", "regexIgnoreCase": "regex_ignore_case", "colNames": "col_names",
              "rowKeyIndex": "row_key_index", "depositHeaders": "deposit_headers", "charset": "charset"}
ROW_KEY = "ROW_KEY"


def serializer_kind(name: str) -> str | None:
    """'simple', 'regex', or None for a serializer name (short or Flume class name) Flumery does not have."""
    short = name.strip()
    for package in PACKAGES:
        short = short.removeprefix(package)
    if short.lower() in (s.lower() for s in SIMPLE):
        return "simple"
    if short.lower() in (s.lower() for s in REGEX):
        return "regex"
    return None


def _check_serializer(value: str) -> str | None:
    if serializer_kind(value):
        return None
    return f"must be one of {', '.join(SIMPLE + REGEX)} (short or Flume class names)"


def _check_charset(value: str) -> str | None:
    try:
        codecs.lookup(value)
    except LookupError:
        return "unknown charset"
    return None


def _check_server(value: str) -> str | None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "must be host:port"
    return None


@dataclass(frozen=True)
class HBaseConfig:
    table: str = opt("table", doc="the table")
    column_family: str = opt("columnFamily", doc="the column family the serializer writes to")
    batch_size: int = opt("batchSize", 100, check=positive, doc="events per mutateRows call")
    coalesce_increments: bool = opt("coalesceIncrements", False, doc="one increment per counter cell and batch")
    thrift_server: str = opt("thriftServer", "localhost:9090", check=_check_server,
                             doc="host:port of the HBase Thrift (Thrift1) gateway (Flumery)")
    timeout_ms: int = opt("timeout", 60000, check=positive, doc="ms before a gateway call fails and is retried")
    zookeeper_quorum: str = opt("zookeeperQuorum", "", inert="Flumery writes through the Thrift gateway "
                                "(thriftServer)")
    znode_parent: str = opt("znodeParent", "/hbase", inert="Flumery writes through the Thrift gateway "
                            "(thriftServer)")
    kerberos_principal: str = opt("kerberosPrincipal", "", inert="the Thrift gateway authenticates to HBase")
    kerberos_keytab: str = opt("kerberosKeytab", "", inert="the Thrift gateway authenticates to HBase")
    serializer: str = opt("serializer", "org.apache.flume.sink.hbase.SimpleHbaseEventSerializer",
                          check=_check_serializer, doc="SimpleHbaseEventSerializer or RegexHbaseEventSerializer "
                          "(or their HBase2/Async names)")
    payload_column: str = opt("serializer.payloadColumn", "pCol",
                              doc="Simple: the body's column (none: no puts; Flume's empty value)")
    increment_column: str = opt("serializer.incrementColumn", "iCol",
                                doc="Simple: counter column, +1 per event (none: no counter; Flume's empty value)")
    row_prefix: str = opt("serializer.rowPrefix", "default", doc="Simple: row key prefix")
    increment_row: str = opt("serializer.incrementRow", "incRow", doc="Simple: row of the counter")
    suffix: str = opt("serializer.suffix", "uuid", check=one_of("uuid", "random", "timestamp", "nano"),
                      doc="Simple: row key suffix; uuid and random are the event id here")
    regex: str = opt("serializer.regex", "(.*)", check=java_regex.check, doc="Regex: Java regex for the body")
    regex_ignore_case: bool = opt("serializer.regexIgnoreCase", False, doc="Regex: match case-insensitively")
    col_names: str = opt("serializer.colNames", "payload", doc="Regex: comma-separated column per group")
    row_key_index: int = opt("serializer.rowKeyIndex", -1, doc="Regex: the group that is the row key (-1: none)")
    deposit_headers: bool = opt("serializer.depositHeaders", False, doc="Regex: every header as a column too")
    charset: str = opt("serializer.charset", "UTF-8", check=_check_charset,
                       doc="Regex: charset of the body, column names and headers")


class HBaseSink(Sink):
    """Flume's HBase sinks through the Thrift gateway; row keys from event ids."""

    Config = HBaseConfig
    store_kind = "hbase"

    @classmethod
    def check(cls, config: HBaseConfig, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        problems = []
        if happybase is None:
            problems.append(("type", "the hbase sink needs happybase: pip install 'flumery[hbase]'"))
        kind = serializer_kind(config.serializer)
        defaults = HBaseConfig.__dataclass_fields__
        wrong = REGEX_ONLY if kind == "simple" else SIMPLE_ONLY if kind == "regex" else {}
        for key, field in wrong.items():
            if getattr(config, field) != defaults[field].default:
                problems.append((f"serializer.{key}", f"only read by the {'regex' if kind == 'simple' else 'simple'}"
                                 f" serializer, not {config.serializer}"))
        if kind == "regex":
            problems += _check_regex(config)
        return problems

    def start(self) -> None:
        self.kind = serializer_kind(self.config.serializer)
        self.family = self.config.column_family.encode()
        if self.kind == "regex":
            flags = "(?s)" + ("(?i)" if self.config.regex_ignore_case else "")
            self.pattern = java_regex.compile_java(flags + self.config.regex)
            self.columns = [c.encode(self.config.charset) for c in self.config.col_names.split(",")]
        self.progress = Progress()
        self.put_done: set[str] = set()
        self.incremented: set[str] = set()
        host, _, port = self.config.thrift_server.rpartition(":")
        self.address = (host, int(port))
        self.connection = StoreConnection(self, log, self.config.thrift_server, self._open,
                                          lambda connection: connection.close())

    def _open(self):
        host, port = self.address
        connection = happybase.Connection(host, port, timeout=self.config.timeout_ms, autoconnect=False)
        connection.open()
        try:
            tables = connection.tables()
        except Exception:
            connection.close()
            raise
        if self.config.table.encode() not in tables:
            log.warning("hbase sink %s: table '%s' does not exist on the gateway %s (writes fail until it does)",
                        self.name, self.config.table, self.config.thrift_server)
        return connection

    # --- writing --------------------------------------------------------------------------------------------

    def write(self, batch) -> None:
        ids = batch.with_fresh_ids().ids
        pending = self.progress.pending(ids)
        current = set(ids)
        self.put_done &= current
        self.incremented &= current
        if pending:
            try:
                self._send(batch, ids, pending)
            except (TTransportException, socket.error, EOFError) as exc:
                self.connection.failed(exc)
                raise
        self.put_done.clear()                  # the batch is settled: a later write of it is a redelivery
        self.incremented.clear()
        self.progress.finish(ids)

    def _send(self, batch, ids, pending: list[int]) -> None:
        connection = self.connection.get()
        table = connection.table(self.config.table)
        puts, increments = self._mutations(batch, ids, pending)
        if puts:
            with table.batch() as send:              # one mutateRows call, on leaving the block
                for _, row, cells in puts:
                    send.put(row, cells)
            self.put_done.update(ids[n] for n, _, _ in puts)
        self._increment(table, ids, increments)
        for n in pending:
            if ids[n] not in self.progress.refused:
                self.progress.written(ids[n])

    def _increment(self, table, ids, increments: list[tuple[int, bytes, bytes]]) -> None:
        """``increments``: (batch index, row, column) per event, each +1; coalesced per cell if configured."""
        todo = [(n, row, column) for n, row, column in increments if ids[n] not in self.incremented]
        if self.config.coalesce_increments:
            cells: dict[tuple[bytes, bytes], list[int]] = {}
            for n, row, column in todo:
                cells.setdefault((row, column), []).append(n)
            for (row, column), events in cells.items():
                table.counter_inc(row, column, len(events))
                self.incremented.update(ids[n] for n in events)
            return
        for n, row, column in todo:
            table.counter_inc(row, column, 1)
            self.incremented.add(ids[n])

    def _mutations(self, batch, ids, pending: list[int]):
        """(puts not yet sent as (index, row, {column: value}), increments as (index, row, column))."""
        puts, increments = [], []
        bodies, headers = batch.bodies, batch.headers
        for n in pending:
            event_headers = headers[n] if headers is not None else {}
            if self.kind == "simple":
                put, increment = self._simple(ids[n], bodies[n], event_headers)
            else:
                try:
                    put, increment = self._regex(ids[n], bodies[n], event_headers), None
                except ValueError as exc:
                    self.progress.refuse(ids[n], str(exc))
                    continue
            if put is not None and ids[n] not in self.put_done:
                puts.append((n, *put))
            if increment is not None:
                increments.append((n, *increment))
        return puts, increments

    def _simple(self, event_id: str, body: bytes, headers):
        put = increment = None
        payload, counted = _column(self.config.payload_column), _column(self.config.increment_column)
        if payload:
            row = self.config.row_prefix + _time_part(self.config.suffix, headers) + event_id
            put = (row.encode(), {self.family + b":" + payload.encode(): body})
        if counted:
            increment = (self.config.increment_row.encode(), self.family + b":" + counted.encode())
        return put, increment

    def _regex(self, event_id: str, body: bytes, headers):
        charset = self.config.charset
        match = self.pattern.fullmatch(body.decode(charset, "replace"))
        if match is None:
            raise ValueError(f"the body does not match serializer.regex {self.config.regex!r}")
        key_index = self.config.row_key_index
        if key_index >= 0:
            row = match.group(key_index + 1).encode("utf-8")
        else:
            stamp = headers.get("timestamp", "").strip()
            row = (f"{stamp}-{event_id}" if stamp else event_id).encode("utf-8")
        cells = {}
        for i, column in enumerate(self.columns):
            if i != key_index:
                # Flume encodes the groups as UTF-8 whatever the charset
                cells[self.family + b":" + column] = (match.group(i + 1) or "").encode("utf-8")
        if self.config.deposit_headers:
            for key, value in headers.items():
                cells[self.family + b":" + key.encode(charset)] = value.encode(charset)
        return row, cells

    def stop(self) -> None:
        connection = getattr(self, "connection", None)
        if connection is not None:
            connection.close()


def _column(name: str) -> str:
    """A Simple serializer column, '' for none: Flume turned a column off with an empty value, which Flumery's
    configuration refuses, so ``none`` says it here."""
    return "" if name.strip().lower() in ("", "none") else name


def _time_part(suffix: str, headers) -> str:
    """The time part of a Simple row key: from the event's timestamp header (ms), for the time-based
    suffixes only; '' when there is none (a time of writing would change on a redelivery)."""
    if suffix not in ("timestamp", "nano"):
        return ""
    stamp = headers.get("timestamp", "").strip()
    if not stamp.isdigit():
        return ""
    return (stamp if suffix == "timestamp" else str(int(stamp) * 1_000_000)) + "-"


def _check_regex(config: HBaseConfig) -> list[tuple[str, str]]:
    problems = []
    names = config.col_names.split(",")
    if config.row_key_index >= len(names):
        problems.append(("serializer.rowKeyIndex", f"must be less than the number of colNames ({len(names)}) "
                         f"(got '{config.row_key_index}')"))
    elif config.row_key_index >= 0 and names[config.row_key_index].upper() != ROW_KEY:
        problems.append(("serializer.colNames", f"column {config.row_key_index} must be {ROW_KEY} (the row key "
                         f"index) and is '{names[config.row_key_index]}'"))
    if java_regex.check(config.regex) is None:
        groups = java_regex.compile_java(config.regex).groups
        if groups != len(names):
            problems.append(("serializer.regex", f"has {groups} groups for {len(names)} colNames; every event "
                             f"would be refused (got '{config.regex}')"))
    return problems

