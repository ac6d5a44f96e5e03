"""Compact channel messages against a real redis-server: what one message stores, that a consumer gets the very
Celery message a publisher would have sent, and that messages stored whole by earlier versions stay readable."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from agents import REPO
from helpers import msgpack_columns
from kombu import Connection
from kombu.serialization import dumps as serialize
from legacy_messages import put_whole

from app.celery_app import create_app
from core.config import load_agent
from core.event import Batch, Event
from core.keys import exchange_name
from core.settings import Settings
from routing import codec, deadletter, scripts
from routing.processor import ChannelWriter
from routing.transport import Transport, read_bytes, read_sizes

CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.channels.c1.type = file
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
"""


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "a1.conf"
    path.write_text(CONF)
    return path


@pytest.fixture
def writer(redis_server, conf):
    settings = Settings(conf_file=str(conf), agent="a1", broker_url=redis_server.url)
    w = ChannelWriter(create_app(settings), load_agent(conf, "a1"), redis_server.url, settings.transport_options())
    yield w
    w.close()


@pytest.fixture
def consumer(redis_server):
    conn = Connection(redis_server.url, transport=Transport)
    yield conn.default_channel
    conn.release()


def test_a_message_stores_its_tag_events_bytes_and_data_and_the_channel_its_template_once(writer, redis_server,
                                                                                          consumer):
    client = redis_server.client()
    for n in range(3):
        writer.put({"c1": Batch([f"event {n}".encode()], [{"host": "web1"}])})
    writer.put({"c1": Batch([b"x" * (scripts.INLINE_MAX_BYTES + 1)])})
    items = client.lrange("flumery.a1.c1", 0, -1)[::-1]              # oldest first
    assert len(items) == 4
    # A small message is queued whole, in its list item, with no key of its own ...
    small = [item.split(b"\0", 5) for item in items[:3]]
    assert [(s[0], len(s[1]), s[3], s[4]) for s in small] == [(b"", 16, b"1", b"7")] * 3
    assert [codec.decode_args(*msgpack_columns(s[5])).bodies for s in small] == [[b"event 0"], [b"event 1"],
                                                                               [b"event 2"]]
    # ... a large one by its tag, its data in its hash.
    large = items[3].decode()
    assert len(large) == 16 and sorted(client.hgetall(f"flumery.msg:{large}")) == [b"a", b"n", b"t", b"z"]
    assert client.keys("flumery.msg:*") == [f"flumery.msg:{large}".encode()]
    [template] = client.keys("flumery.tpl:*")
    assert template == b"flumery.tpl:" + small[0][2] and small[0][2] == small[1][2] == small[2][2]
    assert {k: v for k, v in client.hgetall(template).items() if k in (b"q", b"s", b"y", b"f")} == {
        b"q": b"flumery.a1.c1", b"s": b"flumery.a1:sizes", b"y": b"flumery.a1:bytes", b"f": b"c1"}
    # Taking a small message gives it a hash, like every message in flight.
    [taken] = consumer.fetch("flumery.a1.c1")
    tag = taken["properties"]["delivery_tag"]
    assert tag == small[0][1].decode() and codec.decode_stored(taken)[1].bodies == [b"event 0"]
    stored = client.hgetall(f"flumery.msg:{tag}")
    assert stored[b"n"] == b"1" and stored[b"z"] == b"7" and stored[b"t"] == small[0][2]
    assert stored[b"o"] == consumer.owner.encode() and client.zscore("flumery.inflight", tag) is not None


def test_small_and_large_messages_are_taken_in_order_given_back_and_purged(writer, consumer, redis_server):
    client = redis_server.client()
    sizes = [10, scripts.INLINE_MAX_BYTES + 5, 20, 30]
    for n, size in enumerate(sizes):
        writer.put({"c1": Batch([bytes([65 + n]) * size])})
    taken = consumer.fetch("flumery.a1.c1", max_events=3)
    assert [codec.decode_stored(m)[1].bodies[0][:1] for m in taken] == [b"A", b"B", b"C"]
    assert consumer.give_back(taken[2]["properties"]["delivery_tag"])      # C goes back, now by its tag
    assert consumer.ack_tag(*(m["properties"]["delivery_tag"] for m in taken[:2])) == 2
    assert [codec.decode_stored(m)[1].bodies[0][:1] for m in consumer.peek("flumery.a1.c1", 10)] == [b"C", b"D"]
    assert read_sizes(client, "flumery.a1") == {"c1": 2} and read_bytes(client, "flumery.a1") == {"c1": 50}
    assert consumer.queue_purge("flumery.a1.c1") == 2
    assert read_sizes(client, "flumery.a1") == {"c1": 0} and read_bytes(client, "flumery.a1") == {"c1": 0}
    assert client.keys("flumery.msg:*") == [] and client.llen("flumery.a1.c1") == 0


def test_a_taken_message_is_the_celery_message_a_publisher_would_have_sent(writer, consumer):
    batch = Batch([b"\x00binary\xff", b"two"], [{"k": "v"}, {}], ["id-1", "id-2"])
    writer.put({"c1": batch})
    [taken] = consumer.fetch("flumery.a1.c1")
    tag = taken["properties"]["delivery_tag"]
    task = writer.app.amqp.as_task_v2(tag, codec.TASK_NAME, args=("c1", *batch.to_wire()),
                                      argsrepr="('c1', <2 events>)", kwargsrepr="{}", origin="flumery.a1@here")
    _, _, body = serialize(task.body, serializer="msgpack")
    published = writer.channel.make_message({**task.headers, codec.EVENTS_HEADER: 2}, task.properties,
                                            writer.exchange, "c1", tag)
    assert taken["body"] == body
    assert {**taken["headers"], "origin": None} == {**published["headers"], "origin": None}
    assert taken["headers"]["origin"].startswith("flumery.a1@")
    assert taken["headers"]["id"] == taken["headers"]["root_id"] == tag
    assert taken["properties"] == published["properties"]
    assert {k: v for k, v in taken.items() if k not in ("headers", "properties", "body")} == {
        k: v for k, v in published.items() if k not in ("headers", "properties", "body")}
    channel, got = codec.decode_stored(taken)
    assert channel == "c1" and list(got) == list(batch)


def test_writers_of_different_processes_share_the_channel_template(writer, redis_server, conf):
    other = ChannelWriter(writer.app, load_agent(conf, "a1"), redis_server.url, {})
    try:
        assert other.template("c1") == writer.template("c1")
    finally:
        other.close()


def test_messages_stored_whole_by_an_earlier_version_are_taken_peeked_and_acknowledged(writer, consumer,
                                                                                       redis_server):
    client = redis_server.client()
    old = put_whole(client, writer, "c1", ("c1", [b"old"], None, ["o-1"]), 1, 3)
    writer.put({"c1": Batch([b"new"])})
    peeked = consumer.peek("flumery.a1.c1", 10)
    assert [codec.decode_stored(m)[1].bodies for m in peeked] == [[b"old"], [b"new"]]
    taken = consumer.fetch("flumery.a1.c1", max_events=10)
    assert [m["properties"]["delivery_tag"] for m in taken][0] == old
    assert [codec.decode_stored(m)[1].bodies for m in taken] == [[b"old"], [b"new"]]
    assert consumer.give_back(old)
    [again] = consumer.fetch("flumery.a1.c1")
    assert codec.decode_stored(again)[1].bodies == [b"old"]
    assert consumer.ack_tag(old, taken[1]["properties"]["delivery_tag"]) == 2
    assert read_sizes(client, "flumery.a1") == {"c1": 0} and read_bytes(client, "flumery.a1") == {"c1": 0}
    assert client.keys("flumery.msg:*") == []


def test_flumery_dlq_lists_dead_letters_of_both_layouts(writer, redis_server, conf):
    dead = deadletter.mark([Event(b"compact", id="id-new")], ["malformed"], "k1", "c1", 1)
    writer.put({deadletter.DEAD_CHANNEL: dead})
    earlier = deadletter.mark([Event(b"whole", id="id-old")], ["malformed"], "k1", "c1", 1)
    put_whole(redis_server.client(), writer, deadletter.DEAD_CHANNEL, (deadletter.DEAD_CHANNEL, *earlier.to_wire()),
              1, 5)
    listed = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "list", "--json", "-f", str(conf), "-n", "a1",
                             "--broker-url", redis_server.url], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["body"] for line in listed.stdout.splitlines()] == ["compact", "whole"]
    assert read_sizes(redis_server.client(), exchange_name("a1")) == {deadletter.DEAD_CHANNEL: 2}
