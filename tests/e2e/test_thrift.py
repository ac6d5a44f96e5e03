"""The thrift hop over real sockets: Flumery's thrift source and sink against Apache Thrift's own Python library
with code generated from Flume's flume.thrift by Apache Thrift's compiler (tests/thrift_peer.py), in the compact and
binary protocols, against each other, with TLS, and end to end between real agents."""
from __future__ import annotations

import socket
import struct

import pytest
import thrift_peer
from agents import AgentProcess, port_open, read_lines, wait_until
from test_avro import Refusing, closed_by_peer, keystores, received  # noqa: F401 (keystores: a fixture)
from test_compliance import Recorder

from app.broker import free_port
from core.config import build_config
from core.errors import ChannelFullError
from core.event import Batch
from workers.sinks.base import SinkContext
from workers.sinks.rpc import DeliveryFailed
from workers.sinks.thrift import ThriftSink
from workers.sources.base import SourceContext
from workers.sources.thrift import ThriftSource

PROTOCOLS = ["compact", "binary"]


@pytest.fixture
def source_factory():
    started = []

    def factory(props=None, recorder=None):
        recorder = recorder or Recorder()
        config, errors, _ = build_config(ThriftSource, {"bind": "127.0.0.1", "port": "0", **(props or {})},
                                         "a1.sources.r1.", ("c1",))
        assert errors == []
        source = ThriftSource("r1", config, SourceContext("a1", recorder, recorder, None))
        source.start()
        started.append(source)
        return source, recorder
    yield factory
    for source in started:
        source.stop()


def make_sink(port: int, props: dict | None = None, tmp=None) -> ThriftSink:
    config, errors, _ = build_config(ThriftSink, {"hostname": "127.0.0.1", "port": str(port), **(props or {})},
                                     "a1.sinks.k1.", ("c1",))
    assert errors == []
    sink = ThriftSink("k1", config, SinkContext("a1", tmp))
    sink.start()
    return sink


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_apache_thrift_client_to_flumery_source(protocol, source_factory):
    source, recorder = source_factory({"protocol": protocol})
    events = [(b"\x00\xff event %d" % n, {"seq": str(n), "host": "web1"}) for n in range(501)]
    statuses = thrift_peer.send("127.0.0.1", source.port, events, 100, protocol)
    assert statuses == ["OK"] * 6
    got = received(recorder)
    assert [(body, headers) for body, headers, _ in got] == events
    assert all(event_id for _, _, event_id in got)
    assert recorder.counts["AppendAcceptedCount"] == 1 and recorder.counts["AppendBatchAcceptedCount"] == 5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_flumery_sink_to_apache_thrift_server(protocol, tmp_path):
    server = thrift_peer.ApacheServer(tmp_path / "apache.out", protocol).start()
    try:
        sink = make_sink(server.port, {"protocol": protocol, "batch-size": "7"})
        bodies = [b"\x00\xff binary %d" % n for n in range(30)]
        sink.write(Batch(bodies, [{"n": str(n)} for n in range(30)], [f"id-{n}" for n in range(30)]))
        sink.stop()
    finally:
        server.stop()
    events = server.events()
    assert [body for body, _ in events] == bodies
    assert events[4][1] == {"n": "4", "flumery.id": "id-4"}


def test_sink_raises_on_failed_and_the_retry_delivers(tmp_path):
    server = thrift_peer.ApacheServer(tmp_path / "apache.out", fail_first=1).start()
    try:
        sink = make_sink(server.port)
        batch = Batch([b"a", b"b"], None, ["id-a", "id-b"])
        with pytest.raises(DeliveryFailed, match="answered FAILED"):
            sink.write(batch)
        sink.write(batch)
        sink.stop()
    finally:
        server.stop()
    assert [body for body, _ in server.events()] == [b"a", b"b"]


def test_source_answers_failed_when_the_channel_is_full(source_factory):
    source, recorder = source_factory(recorder=Refusing(ChannelFullError("c1", 10, 10, 2)))
    assert thrift_peer.send("127.0.0.1", source.port, [(b"x", {}), (b"y", {})], 10) == ["FAILED", "FAILED"]
    assert recorder.counts["ChannelWriteFail"] == 2


def test_flumery_to_flumery_keeps_ids(source_factory):
    source, recorder = source_factory({"protocol": "binary"})
    sink = make_sink(source.port, {"protocol": "binary", "batch-size": "2"})
    sink.write(Batch([b"a", b"b", b"c"], [{"k": "v"}, {}, {}], ["id-1", "id-2", "id-3"]))
    sink.stop()
    assert received(recorder) == [(b"a", {"k": "v"}, "id-1"), (b"b", {}, "id-2"), (b"c", {}, "id-3")]


def test_frame_over_the_limit_and_garbage_close_the_connection(source_factory):
    source, recorder = source_factory({"maxFrameBytes": "1024"})
    with socket.create_connection(("127.0.0.1", source.port)) as sock:
        sock.sendall(struct.pack(">i", 2_000_000_000))
        assert closed_by_peer(sock)
    with socket.create_connection(("127.0.0.1", source.port)) as sock:
        sock.sendall(struct.pack(">i", 8) + b"\xff" * 8)
        assert closed_by_peer(sock)
    wait_until(lambda: recorder.counts.get("EventReadFail") == 2, 10, what="two read failures counted")
    assert thrift_peer.send("127.0.0.1", source.port, [(b"ok", {})], 1) == ["OK"]


def test_tls_with_a_jks_keystore_and_a_pem_truststore(keystores, source_factory):  # noqa: F811
    source, recorder = source_factory({"ssl": "true", "keystore": str(keystores / "keystore.jks"),
                                       "keystore-password": "secret1"})
    sink = make_sink(source.port, {"ssl": "true", "truststore": str(keystores / "jks-cert.pem"),
                                   "truststore-type": "PEM"})
    sink.write(Batch([b"secret"], None, ["id-1"]))
    sink.stop()
    assert received(recorder) == [(b"secret", {}, "id-1")]


def test_kerberos_is_refused_with_the_full_key():
    _, errors, notices = build_config(ThriftSource, {"bind": "0.0.0.0", "port": "1", "kerberos": "true",
                                                      "agent-principal": "flume/_HOST@X"}, "a1.sources.r1.", ("c1",))
    assert [str(e) for e in errors] == ["a1.sources.r1.kerberos: Kerberos is not supported (got 'true')"]


def test_thrift_hop_between_agents(tmp_path):
    """seq -> file channel -> thrift sink -> thrift source -> file channel -> file_roll, real agents."""
    port, out = free_port(), tmp_path / "out"
    (tmp_path / "col").mkdir()
    (tmp_path / "t1").mkdir()
    collector = AgentProcess(tmp_path / "col", f"""
c.sources = r1
c.channels = ch
c.sinks = k1
c.sources.r1.type = thrift
c.sources.r1.bind = 127.0.0.1
c.sources.r1.port = {port}
c.sources.r1.channels = ch
c.channels.ch.type = file
c.channels.ch.transactionCapacity = 1000
c.sinks.k1.type = file_roll
c.sinks.k1.sink.directory = {out}
c.sinks.k1.sink.batchSize = 1000
c.sinks.k1.channel = ch
""", name="c").start()
    agents = [collector]
    try:
        wait_until(lambda: port_open(port), 60, what="the thrift source")
        agents.append(AgentProcess(tmp_path / "t1", f"""
t.sources = r1
t.channels = c1
t.sinks = k1
t.sources.r1.type = seq
t.sources.r1.totalEvents = 5000
t.sources.r1.batchSize = 250
t.sources.r1.channels = c1
t.channels.c1.type = file
t.channels.c1.transactionCapacity = 1000
t.sinks.k1.type = org.apache.flume.sink.ThriftSink
t.sinks.k1.hostname = 127.0.0.1
t.sinks.k1.port = {port}
t.sinks.k1.batch-size = 300
t.sinks.k1.channel = c1
""", name="t").start())
        wait_until(lambda: len(read_lines(out)) >= 5000, 120, what="5000 events at the collector")
    finally:
        codes = [agent.stop() for agent in agents]
    assert codes == [0, 0]
    assert sorted(read_lines(out), key=int) == [str(n).encode() for n in range(5000)]
