"""The ``hbase`` sinks against tests/hbase_gateway.py, a stand-in HBase Thrift1 gateway (happybase's own
Hbase.thrift served with thriftpy2, tables in memory; no HBase can be installed here), over real sockets with
happybase.  Each test uses its own table on the one session gateway."""
from __future__ import annotations

import itertools
import time

import pytest
from agents import wait_until
from stores import HBaseGateway, hbase_gateway
from test_elasticsearch_sink import Metrics

from core import counters as names
from core.config import build_config, parse_agent
from core.errors import RejectedEvents
from core.event import Batch
from workers.sinks.base import SinkContext
from workers.sinks.hbase import HBaseSink

STAND_INS = (hbase_gateway,)        # session fixtures of tests/stores.py: the stand-in servers

_names = itertools.count()
ACCESS = rb'(\S+) (\S+) \[([^\]]+)\] "(\S+) (\S+)" (\d{3})'


def next_millisecond() -> None:
    """Wait until the clock is past the current millisecond: the gateway stamps cells in ms, and two writes in
    the same ms are one version (as in HBase), which would hide a rewrite."""
    now = time.time_ns() // 1_000_000
    wait_until(lambda: time.time_ns() // 1_000_000 > now + 1, 5, 0.001, what="the next millisecond")


def new_table(gateway, families=("cf",)) -> str:
    name = f"t{next(_names)}"
    connection = gateway.connection()
    connection.create_table(name, {f: {"max_versions": 5} for f in families})
    connection.close()
    return name


def make_sink(tmp_path, gateway, table: str, metrics=None, **props) -> HBaseSink:
    properties = {"table": table, "columnFamily": "cf", "thriftServer": f"127.0.0.1:{gateway.port}",
                  **{k: str(v) for k, v in props.items()}}
    config, errors, _ = build_config(HBaseSink, properties, "a1.sinks.k1.", ())
    assert errors == [], errors
    sink = HBaseSink("k1", config, SinkContext("a1", tmp_path, metrics))
    sink.start()
    return sink


def rows(gateway, table: str) -> dict:
    connection = gateway.connection()
    try:
        return dict(connection.table(table).scan())
    finally:
        connection.close()


def versions(gateway, table: str, row: bytes, column: bytes) -> int:
    connection = gateway.connection()
    try:
        return len(connection.table(table).cells(row, column, versions=10))
    finally:
        connection.close()


def counter(gateway, table: str, row: bytes, column: bytes) -> int:
    connection = gateway.connection()
    try:
        return connection.table(table).counter_get(row, column)
    finally:
        connection.close()


def test_simple_serializer_rows_are_keyed_by_event_id_and_a_redelivery_rewrites_them(hbase_gateway, tmp_path):
    table = new_table(hbase_gateway)
    metrics = Metrics()
    sink = make_sink(tmp_path, hbase_gateway, table, metrics)
    batch = Batch([b"one", b"two"], None, ["id-1", "id-2"])
    sink.write(batch)
    next_millisecond()
    sink.write(batch)                      # redelivered: the same two rows get a second version
    sink.stop()
    stored = rows(hbase_gateway, table)
    assert stored[b"defaultid-1"] == {b"cf:pCol": b"one"} and stored[b"defaultid-2"] == {b"cf:pCol": b"two"}
    assert len(stored) == 3                 # the two rows and incRow
    assert versions(hbase_gateway, table, b"defaultid-1", b"cf:pCol") == 2
    assert counter(hbase_gateway, table, b"incRow", b"cf:iCol") == 4, "increments are not idempotent (as Flume)"
    assert metrics.counts[names.CONNECTION_CREATED] == 1 and metrics.counts[names.CONNECTION_CLOSED] == 1


def test_simple_serializer_properties_and_time_based_suffixes(hbase_gateway, tmp_path):
    table = new_table(hbase_gateway)
    sink = make_sink(tmp_path, hbase_gateway, table, **{"serializer.rowPrefix": "web-",
                     "serializer.suffix": "timestamp", "serializer.payloadColumn": "line",
                     "serializer.incrementColumn": "none", "coalesceIncrements": "true"})
    sink.write(Batch([b"a", b"b"], [{"timestamp": "1700000000000"}, {}], ["e1", "e2"]))
    sink.stop()
    assert rows(hbase_gateway, table) == {b"web-1700000000000-e1": {b"cf:line": b"a"}, b"web-e2": {b"cf:line": b"b"}}


def test_regex_serializer_splits_the_body_into_columns_and_refuses_what_does_not_match(hbase_gateway, tmp_path):
    table = new_table(hbase_gateway)
    sink = make_sink(tmp_path, hbase_gateway, table, serializer="org.apache.flume.sink.hbase.RegexHbaseEventSerializer",
                     **{"serializer.regex": ACCESS.decode(), "serializer.colNames": "ip,ROW_KEY,time,method,path,status",
                        "serializer.rowKeyIndex": "1", "serializer.depositHeaders": "true"})
    batch = Batch([b'10.0.0.1 req-1 [01/Jan/2024:00:00:00 +0000] "GET /a" 200', b"garbage",
                   b'10.0.0.2 req-2 [01/Jan/2024:00:00:01 +0000] "POST /b" 500'],
                  [{"vhost": "www"}, {}, {}], ["r1", "r2", "r3"])
    with pytest.raises(RejectedEvents) as rejected:
        sink.write(batch)
    sink.stop()
    assert list(rejected.value.reasons) == [1] and "does not match serializer.regex" in rejected.value.reasons[1]
    stored = rows(hbase_gateway, table)
    assert stored == {
        b"req-1": {b"cf:ip": b"10.0.0.1", b"cf:time": b"01/Jan/2024:00:00:00 +0000", b"cf:method": b"GET",
                   b"cf:path": b"/a", b"cf:status": b"200", b"cf:vhost": b"www"},
        b"req-2": {b"cf:ip": b"10.0.0.2", b"cf:time": b"01/Jan/2024:00:00:01 +0000", b"cf:method": b"POST",
                   b"cf:path": b"/b", b"cf:status": b"500"}}


def test_regex_serializer_without_row_key_index_keys_rows_by_timestamp_and_id(hbase_gateway, tmp_path):
    table = new_table(hbase_gateway)
    sink = make_sink(tmp_path, hbase_gateway, table, serializer="RegexHBase2EventSerializer",
                     **{"serializer.regex": "(?:ab)(C+)", "serializer.regexIgnoreCase": "true"})
    sink.write(Batch([b"ABccc", b"abC"], [{"timestamp": "42"}, {}], ["x1", "x2"]))
    sink.stop()
    assert rows(hbase_gateway, table) == {b"42-x1": {b"cf:payload": b"ccc"}, b"x2": {b"cf:payload": b"C"}}


def test_a_failed_increment_is_retried_without_sending_the_puts_again(hbase_gateway, tmp_path):
    """The counter cell holds a value that is not a long: the gateway refuses the increment after the puts were
    written.  The retry (once the cell is fixed) sends only the increments, coalesced into one."""
    table = new_table(hbase_gateway)
    connection = hbase_gateway.connection()
    connection.table(table).put(b"incRow", {b"cf:iCol": b"not a long"})
    sink = make_sink(tmp_path, hbase_gateway, table, coalesceIncrements="true")
    batch = Batch([b"a", b"b", b"c"], None, ["i1", "i2", "i3"])
    with pytest.raises(Exception, match="Field is not a long"):
        sink.write(batch)
    next_millisecond()                     # so that a second put would be a second version
    connection.table(table).delete(b"incRow")
    connection.close()
    sink.write(batch)
    sink.stop()
    assert versions(hbase_gateway, table, b"defaulti1", b"cf:pCol") == 1
    assert counter(hbase_gateway, table, b"incRow", b"cf:iCol") == 3


def test_a_missing_column_family_fails_the_write_for_a_retry(hbase_gateway, tmp_path):
    table = new_table(hbase_gateway, families=("other",))
    sink = make_sink(tmp_path, hbase_gateway, table)
    with pytest.raises(Exception, match="NoSuchColumnFamilyException"):
        sink.write(Batch([b"a"], None, ["f1"]))
    sink.stop()
    assert rows(hbase_gateway, table) == {}


def test_a_gateway_that_stops_and_restarts_is_reconnected_and_keeps_its_rows(tmp_path):
    gateway = HBaseGateway(tmp_path / "gateway").start()
    try:
        table = new_table(gateway)
        metrics = Metrics()
        sink = make_sink(tmp_path, gateway, table, metrics, timeout=2000)
        sink.write(Batch([b"a"], None, ["g1"]))
        gateway.stop()
        with pytest.raises(Exception):
            sink.write(Batch([b"b"], None, ["g2"]))
        gateway.start()
        sink.write(Batch([b"b"], None, ["g2"]))
        sink.stop()
        stored = rows(gateway, table)
    finally:
        gateway.stop()
    assert sorted(stored) == [b"defaultg1", b"defaultg2", b"incRow"]
    assert metrics.counts[names.CONNECTION_FAILED] == 1 and metrics.counts[names.CONNECTION_CREATED] == 2


def test_an_unreachable_gateway_fails_the_write_and_counts_a_failed_connection(tmp_path):
    metrics = Metrics()

    class Closed:
        port = 1
    sink = make_sink(tmp_path, Closed, "t", metrics)
    with pytest.raises(Exception):
        sink.write(Batch([b"x"], None, ["u1"]))
    sink.stop()
    assert metrics.counts[names.CONNECTION_FAILED] == 1


def test_flumes_hbase_sink_files_are_accepted_and_zookeeper_reported():
    agent = parse_agent("""
a1.sources = r1
a1.channels = c1
a1.sinks = k1 k2
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = org.apache.flume.sink.hbase2.HBase2Sink
a1.sinks.k1.table = foo_table
a1.sinks.k1.columnFamily = bar_cf
a1.sinks.k1.zookeeperQuorum = zk1:2181
a1.sinks.k1.serializer = org.apache.flume.sink.hbase2.RegexHBase2EventSerializer
a1.sinks.k1.channel = c1
a1.sinks.k2.type = asynchbase
a1.sinks.k2.table = foo_table
a1.sinks.k2.columnFamily = bar_cf
a1.sinks.k2.serializer = org.apache.flume.sink.hbase.SimpleAsyncHbaseEventSerializer
a1.sinks.k2.channel = c1
""", "a1")
    assert agent.sinks["k1"].cls is HBaseSink and agent.sinks["k2"].cls is HBaseSink
    assert [n.split(" = ")[0] for n in agent.notices] == ["a1.sinks.k1.zookeeperQuorum"]


@pytest.mark.parametrize("props,message", [
    ({"serializer": "RegexHbaseEventSerializer", "serializer.regex": "(a)(b)"},
     "a1.sinks.k1.serializer.regex: has 2 groups for 1 colNames"),
    ({"serializer": "RegexHbaseEventSerializer", "serializer.regex": "(a)(b)", "serializer.colNames": "x,y",
      "serializer.rowKeyIndex": "0"}, "a1.sinks.k1.serializer.colNames: column 0 must be ROW_KEY"),
    ({"serializer.regex": "(a)"}, "a1.sinks.k1.serializer.regex: only read by the regex serializer"),
    ({"serializer": "RegexHbaseEventSerializer", "serializer.rowPrefix": "x"},
     "a1.sinks.k1.serializer.rowPrefix: only read by the simple serializer"),
    ({"serializer": "MyOwnSerializer"}, "a1.sinks.k1.serializer: must be one of"),
    ({"thriftServer": "gateway"}, "a1.sinks.k1.thriftServer: must be host:port (got 'gateway')"),
    ({"serializer.charset": "klingon"}, "a1.sinks.k1.serializer.charset: unknown charset"),
])
def test_bad_values_are_errors_naming_the_full_key(props, message):
    _config, errors, _ = build_config(HBaseSink, {"table": "t", "columnFamily": "cf", **props}, "a1.sinks.k1.", ())
    assert any(message in str(e) for e in errors), [str(e) for e in errors]
