"""The ``elasticsearch`` sink against osmem-server, a stand-in for OpenSearch/Elasticsearch (an in-memory server
of the OpenSearch REST API from PyPI; no real Elasticsearch can be installed here), over real HTTP with
opensearch-py.  Each test uses its own index names on the one session server."""
from __future__ import annotations

import itertools
import threading

import pytest
from stores import osmem

from core import counters as names
from core.config import build_config, parse_agent
from core.errors import RejectedEvents
from core.event import Batch
from workers.sinks.base import SinkContext
from workers.sinks.elasticsearch import ElasticsearchSink, date_pattern_to_strftime

STAND_INS = (osmem,)        # session fixtures of tests/stores.py: the stand-in servers

_names = itertools.count()
DAY_MS = 1_700_000_000_000            # 2023-11-14T22:13:20Z


class Metrics:
    """A metrics store that keeps counts in memory: ``group(kind, name)`` -> counters."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def group(self, kind: str, name: str):
        metrics = self

        class Group:
            def add(self, counter: str, n: int = 1) -> None:
                with metrics.lock:
                    metrics.counts[counter] = metrics.counts.get(counter, 0) + n
        return Group()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


def make_sink(tmp_path, url: str, metrics=None, **props) -> ElasticsearchSink:
    properties = {"hostNames": url, **{k: str(v) for k, v in props.items()}}
    config, errors, _ = build_config(ElasticsearchSink, properties, "a1.sinks.k1.", ())
    assert errors == [], errors
    sink = ElasticsearchSink("k1", config, SinkContext("a1", tmp_path, metrics))
    sink.start()
    return sink


def docs(osmem, index: str) -> dict[str, dict]:
    """Every document of ``index`` (a pattern), by _id, with its _version."""
    client = osmem.client()
    client.indices.refresh(index=index)
    hits = client.search(index=index, body={"query": {"match_all": {}}, "size": 10000, "version": True})
    return {h["_id"]: {**h["_source"], "_version": h["_version"], "_index": h["_index"]}
            for h in hits["hits"]["hits"]}


def test_each_event_is_indexed_under_its_id_and_a_redelivered_batch_overwrites(osmem, tmp_path):
    name = unique("redeliver")
    metrics = Metrics()
    sink = make_sink(tmp_path, osmem.url.removeprefix("http://"), metrics, indexName=name)
    batch = Batch([b"one", b"two", b"three"], [{"timestamp": str(DAY_MS)}] * 3, ["id-1", "id-2", "id-3"])
    sink.write(batch)
    sink.write(batch)                                   # the same batch again, as after a worker crash
    sink.stop()
    stored = docs(osmem, f"{name}-*")
    assert sorted(stored) == ["id-1", "id-2", "id-3"]
    assert {d["_index"] for d in stored.values()} == {f"{name}-2023-11-14"}
    assert [stored[i]["_version"] for i in ("id-1", "id-2", "id-3")] == [2, 2, 2], "a rewrite is an overwrite"
    assert metrics.counts[names.CONNECTION_CREATED] == 1
    assert metrics.counts[names.CONNECTION_CLOSED] == 1
    assert names.CONNECTION_FAILED not in metrics.counts


def test_logstash_documents_are_shaped_as_flumes_serializer_shapes_them(osmem, tmp_path):
    name = unique("logstash")
    sink = make_sink(tmp_path, osmem.url, indexName=name + "-%{vhost}")
    headers = {"timestamp": str(DAY_MS + 123), "host": "web1", "src_path": "/var/log/a.log", "vhost": "WWW",
               "json": '{"k": [1, 2]}'}
    sink.write(Batch([b'{"status": 200, "path": "/"}', b"GET / 200 \xff"], [headers, {"@timestamp": "5"}],
                     ["j", "t"]))
    sink.stop()
    stored = docs(osmem, f"{name}-*")
    j = stored["j"]
    assert j["_index"] == f"{name}-www-2023-11-14", "header escape, lower-cased, dated by the timestamp header"
    assert j["@message"] == {"status": 200, "path": "/"}, "a JSON object body is embedded as an object"
    assert j["@timestamp"] == "2023-11-14T22:13:20.123Z"
    assert j["@source_host"] == "web1" and j["@source_path"] == "/var/log/a.log"
    assert j["@fields"]["vhost"] == "WWW" and j["@fields"]["json"] == {"k": [1, 2]}
    t = stored["t"]
    assert t["@message"] == "GET / 200 \ufffd", "invalid UTF-8 is replaced, as Java's new String does"
    assert "@timestamp" not in t, "an event with its own @timestamp header keeps it under @fields only"
    assert t["_index"] == f"{name}--1970-01-01"


def test_dynamic_serializer_makes_every_header_a_field(osmem, tmp_path):
    name = unique("dynamic")
    sink = make_sink(tmp_path, osmem.url, indexName=name, serializer="ElasticSearchDynamicSerializer",
                     indexNameBuilder="org.apache.flume.sink.elasticsearch.SimpleIndexNameBuilder",
                     idField="event_id")
    sink.write(Batch([b"hello"], [{"status": "404", "timestamp": "1000"}], ["d1"]))
    sink.stop()
    assert docs(osmem, name)["d1"] == {"body": "hello", "status": "404", "timestamp": "1000", "event_id": "d1",
                                       "_version": 1, "_index": name}


def test_a_mapping_error_is_rejected_with_the_stores_reason_and_the_rest_is_written(osmem, tmp_path):
    name = unique("mapping")
    osmem.client().indices.create(index=name, body={"mappings": {"properties": {"status": {"type": "integer"}}}})
    sink = make_sink(tmp_path, osmem.url, indexName=name, serializer="ElasticSearchDynamicSerializer",
                     indexNameBuilder="SimpleIndexNameBuilder")
    batch = Batch([b"a", b"b", b"c"], [{"status": "200"}, {"status": "teapot"}, {"timestamp": "noon"}],
                  ["m1", "m2", "m3"])
    with pytest.raises(RejectedEvents) as rejected:
        sink.write(batch)
    sink.stop()
    assert sorted(rejected.value.reasons) == [1, 2]
    assert "400 mapper_parsing_exception" in rejected.value.reasons[1]
    assert "teapot" in rejected.value.reasons[1]
    assert "timestamp header 'noon'" in rejected.value.reasons[2]
    assert sorted(docs(osmem, name)) == ["m1"]


def test_items_refused_for_now_are_retried_alone_and_the_others_are_not_written_twice(osmem, tmp_path):
    """A flood-stage block answers 429 for the items of one index: the write raises, and its retry sends only
    those items (the others keep _version 1)."""
    name = unique("blocked")
    client = osmem.client()
    client.indices.create(index=f"{name}-full")
    client.indices.put_settings(index=f"{name}-full", body={"index.blocks.read_only_allow_delete": True})
    sink = make_sink(tmp_path, osmem.url, indexName=name + "-%{target}", indexNameBuilder="SimpleIndexNameBuilder")
    batch = Batch([b"1", b"2", b"3", b"4"], [{"target": "ok"}, {"target": "full"}, {"target": "ok"},
                                             {"target": "full"}], ["r1", "r2", "r3", "r4"])
    with pytest.raises(Exception, match="2 of 4 documents to retry: 2 x 429 cluster_block_exception"):
        sink.write(batch)
    with pytest.raises(Exception, match="2 of 2 documents to retry"):
        sink.write(batch)                                # still blocked: only the two are sent again
    client.indices.put_settings(index=f"{name}-full", body={"index.blocks.read_only_allow_delete": None})
    sink.write(batch)
    sink.stop()
    stored = docs(osmem, f"{name}-*")
    assert {i: d["_version"] for i, d in stored.items()} == {"r1": 1, "r2": 1, "r3": 1, "r4": 1}


def test_a_missing_pipeline_is_retried_not_dead_lettered(osmem, tmp_path):
    """osmem has no ingest API, so the pipeline never exists there: the sink sends it with every action and
    keeps the events for a retry (the operator can create the pipeline)."""
    sink = make_sink(tmp_path, osmem.url, indexName=unique("pipeline"), pipeline="geoip")
    with pytest.raises(Exception, match=r"pipeline with id \[geoip\] does not exist"):
        sink.write(Batch([b"x"], None, ["p1"]))
    sink.stop()


def test_an_unreachable_store_fails_the_write_and_counts_a_failed_connection(tmp_path):
    metrics = Metrics()
    sink = make_sink(tmp_path, "127.0.0.1:1", metrics)           # nothing listens on port 1
    with pytest.raises(Exception):
        sink.write(Batch([b"x"], None, ["u1"]))
    sink.stop()
    assert metrics.counts[names.CONNECTION_FAILED] == 1
    assert names.CONNECTION_CREATED not in metrics.counts


def test_a_store_that_stops_answering_fails_the_write_then_the_retry_reconnects(osmem, tmp_path):
    """The server is paused (SIGSTOP) mid-flow: the request times out, the client is dropped and counted as a
    failed connection; after SIGCONT the next write reconnects and overwrites whatever had arrived."""
    name = unique("paused")
    osmem.client().indices.create(index=name)
    metrics = Metrics()
    sink = make_sink(tmp_path, osmem.url, metrics, indexName=name, indexNameBuilder="SimpleIndexNameBuilder",
                     requestTimeout=3000)
    sink.write(Batch([b"before"], None, ["s0"]))
    osmem.pause()
    try:
        with pytest.raises(Exception):
            sink.write(Batch([b"during"], None, ["s1"]))
    finally:
        osmem.resume()
    sink.write(Batch([b"during"], None, ["s1"]))
    sink.stop()
    assert sorted(docs(osmem, name)) == ["s0", "s1"]
    assert metrics.counts[names.CONNECTION_FAILED] == 1
    assert metrics.counts[names.CONNECTION_CREATED] == 2


def test_basic_auth_and_api_keys_are_sent_and_never_logged(osmem, tmp_path, caplog):
    """osmem accepts any credentials; what is checked is that the client sends them and no log line shows them."""
    sink = make_sink(tmp_path, f"http://elastic:s3cret@127.0.0.1:{osmem.port}", indexName=unique("auth"))
    with caplog.at_level("DEBUG"):
        sink.write(Batch([b"x"], None, ["a1"]))
    headers = sink.connection.client.transport.kwargs.get("headers") or {}
    sink.stop()
    assert "s3cret" not in caplog.text and "elastic:***@" in caplog.text
    keyed = make_sink(tmp_path, osmem.url, apiKey="id:key", indexName=unique("apikey"))
    keyed.write(Batch([b"x"], None, ["a2"]))
    assert keyed.connection.client.transport.kwargs["headers"]["Authorization"] == "ApiKey aWQ6a2V5"
    keyed.stop()
    assert headers == {}


def test_flumes_properties_are_accepted_and_the_inert_ones_reported():
    agent = parse_agent("""
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.channels.c1.capacity = 1000
a1.channels.c1.transactionCapacity = 500
a1.sinks.k1.type = org.apache.flume.sink.elasticsearch.ElasticSearchSink
a1.sinks.k1.hostNames = es1:9200,es2
a1.sinks.k1.indexName = foo_index
a1.sinks.k1.indexType = bar_type
a1.sinks.k1.clusterName = foobar_cluster
a1.sinks.k1.batchSize = 500
a1.sinks.k1.ttl = 5d
a1.sinks.k1.serializer = org.apache.flume.sink.elasticsearch.ElasticSearchDynamicSerializer
a1.sinks.k1.channel = c1
""", "a1")
    assert agent.sinks["k1"].cls is ElasticsearchSink
    assert agent.sinks["k1"].config.batch_size == 500
    inert = sorted(n.split(" = ")[0] for n in agent.notices)
    assert inert == ["a1.sinks.k1.clusterName", "a1.sinks.k1.indexType", "a1.sinks.k1.ttl"]


@pytest.mark.parametrize("key,value,message", [
    ("hostNames", "ftp://x", "a1.sinks.k1.hostNames: 'ftp://x' is not host[:port] or an http(s) URL"),
    ("serializer", "Logstash", "a1.sinks.k1.serializer: must be one of"),
    ("indexNameBuilder.dateFormat", "yyyy-MM-dd-EEE", "'EEE' is not supported"),
    ("indexNameBuilder.timeZone", "Mars/Olympus", "unknown time zone (got 'Mars/Olympus')"),
])
def test_bad_values_are_errors_naming_the_full_key(key, value, message):
    props = {"hostNames": "localhost", key: value}
    _config, errors, _ = build_config(ElasticsearchSink, props, "a1.sinks.k1.", ())
    assert any(message in str(e) for e in errors), [str(e) for e in errors]


def test_a_password_in_host_names_is_masked_in_errors():
    _config, errors, _ = build_config(ElasticsearchSink, {"hostNames": "https://u:pw@h:99999"}, "a1.sinks.k1.", ())
    assert [str(e) for e in errors] == ["a1.sinks.k1.hostNames: 'https://u:***@h:99999' has an invalid port"]


def test_index_date_patterns_translate_simple_date_format():
    assert date_pattern_to_strftime("yyyy-MM-dd") == "%Y-%m-%d"
    assert date_pattern_to_strftime("yyyy.MM.dd'T'HH") == "%Y.%m.%dT%H"
    assert date_pattern_to_strftime("'%'yy") == "%%%y"
