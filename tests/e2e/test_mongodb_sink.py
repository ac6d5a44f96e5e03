"""The ``mongodb`` sink against secantusdb, a stand-in for MongoDB (a MongoDB-wire server on WiredTiger from
PyPI; no real MongoDB can be installed here), over real connections with pymongo.  Each test writes to its own
database on the one session server; failures are injected with the server's ``failCommand`` failpoint."""
from __future__ import annotations

import datetime as dt
import itertools

import pytest
from stores import secantus
from test_elasticsearch_sink import Metrics

from core import counters as names
from core.config import build_config
from core.errors import RejectedEvents
from core.event import Batch
from workers.sinks.base import SinkContext
from workers.sinks.mongodb import MongoSink

STAND_INS = (secantus,)        # session fixtures of tests/stores.py: the stand-in servers

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


def make_sink(tmp_path, server, metrics=None, **props) -> MongoSink:
    properties = {"host": "127.0.0.1", "port": str(server.port), **{k: str(v) for k, v in props.items()}}
    config, errors, _ = build_config(MongoSink, properties, "a1.sinks.k1.", ())
    assert errors == [], errors
    sink = MongoSink("k1", config, SinkContext("a1", tmp_path, metrics))
    sink.start()
    return sink


def stored(server, db: str, collection: str = "events") -> dict:
    client = server.client()
    try:
        return {d["_id"]: d for d in client[db][collection].find()}
    finally:
        client.close()


def fail_next_insert(server, **data) -> None:
    client = server.client()
    try:
        client.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
                              "data": {"failCommands": ["insert"], **data}})
    finally:
        client.close()


def test_each_event_is_a_document_under_its_id_and_a_redelivered_batch_counts_as_written(secantus, tmp_path):
    db = unique("redeliver")
    metrics = Metrics()
    sink = make_sink(tmp_path, secantus, metrics, db=db)
    batch = Batch([b"one", b"two", b"three"], None, ["id-1", "id-2", "id-3"])
    sink.write(batch)
    sink.write(batch)               # duplicate keys (11000) on all three: already written, not an error
    sink.stop()
    assert {i: d["log"] for i, d in stored(secantus, db).items()} == {"id-1": "one", "id-2": "two",
                                                                       "id-3": "three"}
    assert metrics.counts[names.CONNECTION_CREATED] == 1 and metrics.counts[names.CONNECTION_CLOSED] == 1


def test_headers_become_fields_and_timestamp_field_becomes_a_date(secantus, tmp_path):
    db = unique("shape")
    sink = make_sink(tmp_path, secantus, db=db, collection="access", timestampField="time",
                     **{"extraFields.dc": "paris"})
    sink.write(Batch([b"GET /", b"GET /a", b"GET /b"],
                     [{"host": "web1", "timestamp": "1700000000123", "_id": "not the key"},
                      {"time": "2024-01-02 03:04:05 +0100"},
                      {"time": "1700000000000"}], ["a", "b", "c"]))
    sink.stop()
    docs = stored(secantus, db, "access")
    assert docs["a"] == {"_id": "a", "host": "web1", "timestamp": "1700000000123", "dc": "paris", "log": "GET /",
                         "time": dt.datetime(2023, 11, 14, 22, 13, 20, 123000)}
    assert docs["b"]["time"] == dt.datetime(2024, 1, 2, 2, 4, 5), "a header converted from a date pattern"
    assert docs["c"]["time"] == dt.datetime(2023, 11, 14, 22, 13, 20)


def test_json_bodies_and_binary_bodies(secantus, tmp_path):
    db = unique("bodies")
    json_sink = make_sink(tmp_path, secantus, db=db, collection="json", autoWrap="false")
    with pytest.raises(RejectedEvents) as rejected:
        json_sink.write(Batch([b'{"status": 200, "_id": "ignored"}', b"[1, 2]", b"not json"], None,
                              ["j1", "j2", "j3"]))
    json_sink.stop()
    assert sorted(rejected.value.reasons) == [1, 2]
    assert "needs a JSON object body (got a JSON list)" in rejected.value.reasons[1]
    assert stored(secantus, db, "json") == {"j1": {"_id": "j1", "status": 200}}

    binary_sink = make_sink(tmp_path, secantus, db=db, collection="bin", bodyType="binary", wrapField="raw")
    binary_sink.write(Batch([b"\xff\x00raw"], None, ["b1"]))
    binary_sink.stop()
    assert stored(secantus, db, "bin")["b1"]["raw"] == b"\xff\x00raw"

    text_sink = make_sink(tmp_path, secantus, db=db, collection="text")
    with pytest.raises(RejectedEvents) as rejected:
        text_sink.write(Batch([b"ok", b"caf\xe9"], None, ["t1", "t2"]))
    text_sink.stop()
    assert "the body is not UTF-8" in rejected.value.reasons[1] and list(rejected.value.reasons) == [1]
    assert list(stored(secantus, db, "text")) == ["t1"]


def test_dynamic_model_takes_database_and_collection_from_headers(secantus, tmp_path):
    db, other = unique("dynamic"), unique("dynamic-other")
    sink = make_sink(tmp_path, secantus, db=db, model="dynamic")
    sink.write(Batch([b"1", b"2", b"3"], [{"collection": "errors"}, {}, {"db": other, "collection": "x"}],
                     ["d1", "d2", "d3"]))
    sink.stop()
    assert list(stored(secantus, db, "errors")) == ["d1"]
    assert list(stored(secantus, db, "events")) == ["d2"]
    assert list(stored(secantus, other, "x")) == ["d3"]


def test_a_document_the_server_refuses_is_rejected_with_its_message_and_the_rest_written(secantus, tmp_path):
    db = unique("validated")
    client = secantus.client()
    client[db].create_collection("events", validator={"$jsonSchema": {"required": ["status"]}})
    client.close()
    sink = make_sink(tmp_path, secantus, db=db)
    with pytest.raises(RejectedEvents) as rejected:
        sink.write(Batch([b"a", b"b"], [{"status": "200"}, {}], ["v1", "v2"]))
    sink.stop()
    assert list(rejected.value.reasons) == [1]
    assert f"{db}.events: code 121:" in rejected.value.reasons[1]
    assert list(stored(secantus, db)) == ["v1"]


def test_a_write_concern_error_is_retried_and_the_retry_counts_the_inserted_documents(secantus, tmp_path):
    """The server inserts the documents but reports a write-concern error (failpoint): the write raises; its
    retry sends the documents again, which the server refuses as duplicates: written, once."""
    db = unique("concern")
    sink = make_sink(tmp_path, secantus, db=db)
    fail_next_insert(secantus, writeConcernError={"code": 64, "errmsg": "waiting for replication timed out"})
    batch = Batch([b"a", b"b"], None, ["w1", "w2"])
    with pytest.raises(Exception, match="write concern 'majority' not satisfied: code 64"):
        sink.write(batch)
    sink.write(batch)
    sink.stop()
    assert sorted(stored(secantus, db)) == ["w1", "w2"]


def test_an_unsatisfiable_write_concern_fails_every_write(secantus, tmp_path):
    """secantusdb is a single node: w = 2 can never be met, and the sink says so (majority and 1 work)."""
    sink = make_sink(tmp_path, secantus, db=unique("w2"), writeConcern="2")
    with pytest.raises(Exception, match="write concern '2' not satisfied: code 100"):
        sink.write(Batch([b"a"], None, ["x1"]))
    sink.stop()


def test_a_failed_command_is_retried_alone(secantus, tmp_path):
    db = unique("failed")
    sink = make_sink(tmp_path, secantus, db=db)
    fail_next_insert(secantus, errorCode=112)                 # WriteConflict: nothing written, retry
    with pytest.raises(Exception):
        sink.write(Batch([b"a"], None, ["f1"]))
    sink.write(Batch([b"a"], None, ["f1"]))
    sink.stop()
    assert list(stored(secantus, db)) == ["f1"]


def test_an_unreachable_server_fails_the_write_and_counts_a_failed_connection(tmp_path):
    metrics = Metrics()

    class Closed:
        port = 1
    sink = make_sink(tmp_path, Closed, metrics, timeout=300)
    with pytest.raises(Exception):
        sink.write(Batch([b"x"], None, ["u1"]))
    sink.stop()
    assert metrics.counts[names.CONNECTION_FAILED] == 1 and names.CONNECTION_CREATED not in metrics.counts


def test_credentials_from_a_connection_string_or_properties_authenticate_and_are_never_shown(secantus, tmp_path,
                                                                                           caplog):
    """A user is created on the stand-in (SCRAM-SHA-256): right credentials write, a wrong password fails to
    connect, and no log line shows either password."""
    db = unique("auth")
    client = secantus.client()
    client.admin.command("createUser", f"flume-{db}", pwd="s3cret", roles=["root"])
    client.close()
    uri = f"mongodb://flume-{db}:s3cret@127.0.0.1:{secantus.port}/?directConnection=true&authSource=admin"
    config, errors, _ = build_config(MongoSink, {"uri": uri, "db": db}, "a1.sinks.k1.", ())
    assert errors == []
    metrics = Metrics()
    with caplog.at_level("DEBUG", logger="workers.sinks"):
        sink = MongoSink("k1", config, SinkContext("a1", tmp_path, metrics))
        sink.start()
        sink.write(Batch([b"x"], None, ["c1"]))
        sink.stop()
        wrong = make_sink(tmp_path, secantus, metrics, db=db, username=f"flume-{db}", password="wr0ng")
        with pytest.raises(Exception, match="uthentication failed"):
            wrong.write(Batch([b"y"], None, ["c2"]))
        wrong.stop()
    assert list(stored(secantus, db)) == ["c1"]
    assert metrics.counts[names.CONNECTION_CREATED] == 1 and metrics.counts[names.CONNECTION_FAILED] == 1
    assert f"flume-{db}:***@127.0.0.1" in caplog.text
    assert "s3cret" not in caplog.text and "wr0ng" not in caplog.text


@pytest.mark.parametrize("props,message", [
    ({"writeConcern": "0"}, "a1.sinks.k1.writeConcern: must acknowledge writes"),
    ({"model": "dynamc"}, "did you mean 'dynamic'?"),
    ({"uri": "mongodb://u:pw@"}, "(got 'mongodb://u:***@')"),
    ({"authenticationEnabled": "true"}, "a1.sinks.k1.username: authenticationEnabled = true needs"),
])
def test_bad_values_are_errors_naming_the_full_key(props, message):
    _config, errors, _ = build_config(MongoSink, props, "a1.sinks.k1.", ())
    assert any(message in str(e) for e in errors), [str(e) for e in errors]
    assert all("pw@" not in str(e) for e in errors)

