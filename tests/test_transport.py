"""The channel transactions (routing.scripts via routing.transport) against a real redis-server."""
from __future__ import annotations

import time

import pytest
from kombu import Connection

from core.errors import BatchTooLarge, ChannelFullError
from app.celery_app import create_app
from core.config import parse_agent
from core.event import Batch
from core.settings import Settings
from routing import codec
from routing.processor import ChannelWriter
from routing.transport import Transport, read_sizes

CONF = """
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1 c2
a1.channels.c1.type = memory
a1.channels.c1.capacity = 10
a1.channels.c1.transactionCapacity = 4
a1.channels.c2.type = memory
a1.channels.c2.capacity = 1000
a1.channels.c2.transactionCapacity = 100
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
a1.sinks.k1.batchSize = 4
"""


@pytest.fixture
def writer(redis_server):
    config = parse_agent(CONF, "a1")
    settings = Settings(broker_url=redis_server.url, visibility_timeout_s=1.0)
    w = ChannelWriter(create_app(settings), config, redis_server.url, {"visibility_timeout": 1.0})
    yield w
    w.close()


@pytest.fixture
def consumer(redis_server):
    conn = Connection(redis_server.url, transport=Transport, transport_options={"visibility_timeout": 1.0})
    yield conn.default_channel
    conn.release()


def batch(n: int, start: int = 0) -> Batch:
    return Batch([f"e{i}".encode() for i in range(start, start + n)])


def bodies(messages) -> list[bytes]:
    out = []
    for m in messages:
        out += codec.decode_stored(m)[1].bodies
    return out


def test_put_splits_at_transaction_capacity_and_counts_events(writer, consumer, redis_server):
    writer.put({"c1": batch(10)})
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 10}
    assert redis_server.client().llen("flumery.a1.c1") == 3          # 4 + 4 + 2 events
    taken = consumer.fetch("flumery.a1.c1", max_events=100)
    assert bodies(taken) == [f"e{i}".encode() for i in range(10)]   # FIFO, all of them, in one take


def test_put_is_all_or_nothing_across_channels(writer, redis_server):
    writer.put({"c1": batch(8), "c2": batch(8)})
    with pytest.raises(ChannelFullError) as info:
        writer.put({"c2": batch(5), "c1": batch(5)})                 # c2 has room, c1 does not
    assert info.value.channel == "c1" and info.value.capacity == 10
    sizes = read_sizes(redis_server.client(), "flumery.a1")
    assert sizes == {"c1": 8, "c2": 8}                                # nothing of the failed put anywhere
    assert redis_server.client().llen("flumery.a1.c2") == 1


def test_batch_larger_than_capacity_is_refused_before_anything_is_written(writer, redis_server):
    with pytest.raises(BatchTooLarge):
        writer.put({"c1": batch(11)})
    assert read_sizes(redis_server.client(), "flumery.a1") == {}


def test_ack_releases_capacity_only_for_the_holder(writer, consumer, redis_server):
    writer.put({"c1": batch(4)})
    [message] = consumer.fetch("flumery.a1.c1")
    tag = message["properties"]["delivery_tag"]
    other = Connection(redis_server.url, transport=Transport).default_channel
    assert other.ack_tag(tag) == 0                                    # not the holder: no effect
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 4}
    assert consumer.ack_tag(tag) == 1
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 0}
    assert consumer.ack_tag(tag) == 0                                 # idempotent
    assert redis_server.client().keys("flumery.msg:*") == []


def test_give_back_returns_the_message_to_the_front(writer, consumer):
    writer.put({"c1": batch(8)})                                      # two messages: e0-e3, e4-e7
    [first] = consumer.fetch("flumery.a1.c1")
    assert consumer.give_back(first["properties"]["delivery_tag"], front=True)
    again = consumer.fetch("flumery.a1.c1")
    assert bodies(again) == [b"e0", b"e1", b"e2", b"e3"]


def test_expired_lease_is_reclaimed_and_late_ack_is_refused(writer, consumer, redis_server):
    writer.put({"c1": batch(4)})
    [message] = consumer.fetch("flumery.a1.c1")
    tag = message["properties"]["delivery_tag"]
    time.sleep(1.2)                                                   # visibility timeout is 1 s
    rescuer = Connection(redis_server.url, transport=Transport,
                         transport_options={"visibility_timeout": 1.0}).default_channel
    assert rescuer.reclaim() == 1
    [again] = rescuer.fetch("flumery.a1.c1")
    assert again["properties"]["delivery_tag"] == tag
    assert consumer.ack_tag(tag) == 0                                 # the first taker lost it
    assert rescuer.ack_tag(tag) == 1
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 0}


def test_touch_keeps_a_slow_holder_s_lease(writer, consumer):
    writer.put({"c1": batch(4)})
    [message] = consumer.fetch("flumery.a1.c1")
    tag = message["properties"]["delivery_tag"]
    for _ in range(3):
        time.sleep(0.5)
        assert consumer.touch([tag]) == 1
    assert consumer.reclaim() == 0
    assert consumer.ack_tag(tag) == 1


def test_fetch_takes_whole_messages_up_to_the_event_budget(writer, consumer):
    writer.put({"c1": batch(10)})                                     # messages of 4, 4, 2
    taken = consumer.fetch("flumery.a1.c1", max_events=6)
    assert len(taken) == 1                                            # 4 + 4 would exceed 6
    taken = consumer.fetch("flumery.a1.c1", max_events=6)
    assert [len(bodies([m])) for m in taken] == [4, 2]


def test_purge_deletes_queued_messages_and_releases_capacity(writer, consumer, redis_server):
    writer.put({"c1": batch(10)})
    assert consumer._purge("flumery.a1.c1") == 3
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 0}
    assert consumer.fetch("flumery.a1.c1") == []


def test_binary_bodies_and_headers_survive_the_channel(writer, consumer):
    from core.event import Event
    events = [Event(bytes(range(256)), {"k": "v\u00e9"}), Event(b"\x00\n\xff", {})]
    writer.put({"c2": Batch.from_events(events)})
    [message] = consumer.fetch("flumery.a1.c2")
    got = codec.decode_stored(message)[1]
    assert list(got) == [Event(bytes(range(256)), {"k": "v\u00e9"}), Event(b"\x00\n\xff", {})]
