"""The channel transactions (routing.scripts via routing.transport) against a real redis-server."""
from __future__ import annotations

import os

import pytest
from agents import wait_until
from kombu import Connection

from app.celery_app import create_app
from core.config import parse_agent
from core.errors import BatchTooLarge, ChannelFullError
from core.event import Batch
from core.settings import Settings
from routing import codec
from routing.processor import ChannelProcessor, ChannelWriter
from routing.transport import Transport, owner_prefix, read_bytes, read_sizes

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


def test_batches_put_together_stay_messages_of_their_own_size(writer, consumer, redis_server):
    processor = ChannelProcessor(writer.agent.sources["r1"], writer, [])
    events, nbytes = processor.put_limits()
    assert events == 4 and nbytes == writer.limits("c1")[2]          # c1's transactionCapacity is the smaller
    processor.process(batch(9), message_events=3)                      # three source batches in one put
    assert [len(bodies([m])) for m in consumer.peek("flumery.a1.c2", 10)] == [3, 3, 3]
    assert [len(bodies([m])) for m in consumer.peek("flumery.a1.c1", 10)] == [3, 3, 3]
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 9, "c2": 9}


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


class LeaseClock:
    """The clock the transport stamps leases with (``routing.transport.time``), moved by the test: a lease expires
    without the test sleeping through the visibility timeout."""

    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lease_clock(monkeypatch):
    clock = LeaseClock()
    monkeypatch.setattr("routing.transport.time", clock)
    return clock


def test_expired_lease_is_reclaimed_and_late_ack_is_refused(writer, consumer, redis_server, lease_clock):
    writer.put({"c1": batch(4)})
    [message] = consumer.fetch("flumery.a1.c1")
    tag = message["properties"]["delivery_tag"]
    rescuer = Connection(redis_server.url, transport=Transport,
                         transport_options={"visibility_timeout": 1.0}).default_channel
    lease_clock.now += 0.9
    assert rescuer.reclaim() == 0                                     # the lease (1 s) still runs
    lease_clock.now += 0.3
    assert rescuer.reclaim() == 1
    [again] = rescuer.fetch("flumery.a1.c1")
    assert again["properties"]["delivery_tag"] == tag
    assert consumer.ack_tag(tag) == 0                                 # the first taker lost it
    assert rescuer.ack_tag(tag) == 1
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 0}


def test_touch_keeps_a_slow_holder_s_lease(writer, consumer, lease_clock):
    writer.put({"c1": batch(4)})
    [message] = consumer.fetch("flumery.a1.c1")
    tag = message["properties"]["delivery_tag"]
    for _ in range(3):                                                # 1.5 s held: past the 1 s lease
        lease_clock.now += 0.5
        assert consumer.touch([tag]) == 1
    assert consumer.reclaim() == 0
    assert consumer.ack_tag(tag) == 1


def test_fetch_takes_whole_messages_up_to_the_event_budget(writer, consumer):
    writer.put({"c1": batch(10)})                                     # messages of 4, 4, 2
    taken = consumer.fetch("flumery.a1.c1", max_events=6)
    assert len(taken) == 1                                            # 4 + 4 would exceed 6
    taken = consumer.fetch("flumery.a1.c1", max_events=6)
    assert [len(bodies([m])) for m in taken] == [4, 2]


def test_ack_and_fetch_commits_what_the_caller_holds_then_takes_the_next_batch(writer, consumer, redis_server):
    writer.put({"c1": batch(10)})                                     # messages of 4, 4, 2
    first = consumer.fetch("flumery.a1.c1", max_events=4)
    tags = [m["properties"]["delivery_tag"] for m in first]
    other = Connection(redis_server.url, transport=Transport).default_channel
    acked, taken = other.ack_and_fetch("flumery.a1.c1", tags, 4)     # not the holder: nothing acknowledged
    assert acked == 0 and bodies(taken) == [b"e4", b"e5", b"e6", b"e7"]
    acked, taken = consumer.ack_and_fetch("flumery.a1.c1", tags, 100)
    assert acked == 1 and bodies(taken) == [b"e8", b"e9"]
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 6}   # the two messages still held
    acked, taken = consumer.ack_and_fetch("flumery.a1.c1", [m["properties"]["delivery_tag"] for m in taken], 4)
    assert (acked, taken) == (1, [])                                   # the channel is empty now
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 4}
    assert other.reclaim() == 0 and redis_server.client().zcard("flumery.inflight") == 1


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


# --- kombu's global_keyprefix reaches every key ------------------------------------------------------------------

PREFIX = "tenant1:"


def test_every_key_of_every_transaction_lives_under_global_keyprefix(redis_server):
    settings = Settings(broker_url=redis_server.url, visibility_timeout_s=0.2, key_prefix=PREFIX)
    options = settings.transport_options()
    assert options["global_keyprefix"] == PREFIX
    w = ChannelWriter(create_app(settings), parse_agent(CONF, "a1"), redis_server.url, options)
    conn = Connection(redis_server.url, transport=Transport, transport_options=options)
    consumer = conn.default_channel
    try:
        w.put({"c1": batch(8), "c2": batch(3)})                      # PUT: two messages in c1, one in c2
        [first] = consumer.fetch("flumery.a1.c1")                     # FETCH
        assert consumer.give_back(first["properties"]["delivery_tag"])   # GIVEBACK
        assert [len(bodies([m])) for m in consumer.peek("flumery.a1.c1", 10)] == [4, 4]
        [held] = consumer.fetch("flumery.a1.c1")
        tag = held["properties"]["delivery_tag"]
        assert consumer.touch([tag]) == 1                              # TOUCH
        wait_until(lambda: consumer.reclaim() == 1, 10, what="the lease to expire")   # RECLAIM
        taken = consumer.fetch("flumery.a1.c1", max_events=4)
        acked, more = consumer.ack_and_fetch("flumery.a1.c1", [], 100)  # ACKFETCH
        assert acked == 0 and bodies(taken + more) == [f"e{i}".encode() for i in range(8)]
        assert consumer.ack_tag(*[m["properties"]["delivery_tag"] for m in taken + more]) == 2   # ACK
        assert consumer._purge("flumery.a1.c2") == 1                    # PURGE
        assert consumer.channel_sizes("flumery.a1") == {"c1": 0, "c2": 0}
        assert consumer.channel_bytes("flumery.a1") == {"c1": 0, "c2": 0}
    finally:
        w.close()
        conn.release()
    client = redis_server.client()
    keys = sorted(k.decode() for k in client.scan_iter(count=1000))
    assert keys and all(k.startswith(PREFIX) for k in keys), keys
    assert f"{PREFIX}flumery.a1:sizes" in keys and f"{PREFIX}flumery.a1:bytes" in keys
    assert read_sizes(client, "flumery.a1", PREFIX) == {"c1": 0, "c2": 0}


def test_a_consumer_under_one_prefix_does_not_see_another_prefix_s_channel(writer, redis_server):
    writer.put({"c1": batch(4)})                                      # no prefix
    other = Connection(redis_server.url, transport=Transport,
                       transport_options={"global_keyprefix": PREFIX}).default_channel
    assert other.fetch("flumery.a1.c1") == []
    assert other.channel_sizes("flumery.a1") == {}
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 4}


# --- byte capacity ----------------------------------------------------------------------------------------------

BYTES_CONF = """
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1 c2
a1.channels.c1.type = memory
a1.channels.c1.capacity = 100
a1.channels.c1.byteCapacity = 100
a1.channels.c1.byteCapacityBufferPercentage = 20
a1.channels.c1.transactionCapacity = 2
a1.channels.c2.type = file
a1.channels.c2.byteCapacity = 50
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
a1.sinks.k1.batchSize = 2
"""


@pytest.fixture
def bytes_writer(redis_server):
    settings = Settings(broker_url=redis_server.url, visibility_timeout_s=1.0)
    w = ChannelWriter(create_app(settings), parse_agent(BYTES_CONF, "a1"), redis_server.url,
                      {"visibility_timeout": 1.0})
    yield w
    w.close()


def sized(*lengths: int) -> Batch:
    return Batch([b"x" * n for n in lengths])


def test_put_over_the_byte_capacity_is_refused_with_nothing_written(bytes_writer, redis_server):
    client = redis_server.client()
    bytes_writer.put({"c1": sized(30, 30)})                          # 60 of 80 body bytes (100 less 20 %)
    with pytest.raises(ChannelFullError) as info:
        bytes_writer.put({"c2": sized(10), "c1": sized(15, 10)})     # c2 has room, c1 does not: 60 + 25 > 80
    assert (info.value.channel, info.value.unit, info.value.size, info.value.capacity, info.value.needed) == \
        ("c1", "bytes", 60, 80, 25)
    assert "60 of 80 bytes of event bodies held, 25 more offered" in str(info.value)
    assert read_sizes(client, "flumery.a1") == {"c1": 2}
    assert read_bytes(client, "flumery.a1") == {"c1": 60}
    assert client.llen("flumery.a1.c1") == 1 and client.llen("flumery.a1.c2") == 0
    bytes_writer.put({"c1": sized(20)})                               # exactly full is allowed
    assert read_bytes(client, "flumery.a1") == {"c1": 80}


def test_file_channel_byte_capacity_has_no_buffer(bytes_writer, redis_server):
    bytes_writer.put({"c2": sized(50)})
    with pytest.raises(ChannelFullError) as info:
        bytes_writer.put({"c2": sized(1)})
    assert (info.value.channel, info.value.unit, info.value.capacity) == ("c2", "bytes", 50)


def test_taking_and_acking_releases_the_bytes(bytes_writer, consumer, redis_server):
    client = redis_server.client()
    bytes_writer.put({"c1": sized(40, 30, 10)})                      # messages of 70 and 10 bytes
    taken = consumer.fetch("flumery.a1.c1", max_events=100)
    assert read_bytes(client, "flumery.a1") == {"c1": 80}             # taken, not committed: still held
    with pytest.raises(ChannelFullError):
        bytes_writer.put({"c1": sized(1)})
    assert consumer.ack_tag(taken[0]["properties"]["delivery_tag"]) == 1
    assert read_bytes(client, "flumery.a1") == {"c1": 10}
    bytes_writer.put({"c1": sized(70)})                               # room again
    assert consumer.ack_tag(taken[1]["properties"]["delivery_tag"]) == 1
    assert read_bytes(client, "flumery.a1") == {"c1": 70}
    assert consumer._purge("flumery.a1.c1") == 1                       # PURGE releases too
    assert read_bytes(client, "flumery.a1") == {"c1": 0}
    assert read_sizes(client, "flumery.a1") == {"c1": 0}


def test_bodies_larger_than_the_whole_byte_capacity_are_too_large(bytes_writer, redis_server):
    with pytest.raises(BatchTooLarge, match="81 bytes of event bodies for channel 'c1' exceed its byte capacity"):
        bytes_writer.put({"c1": sized(41, 40)})
    assert read_sizes(redis_server.client(), "flumery.a1") == {}


def test_empty_bodies_are_put_taken_and_acknowledged(writer, consumer, redis_server):
    writer.put({"c1": Batch([b"", b""])})
    [message] = consumer.fetch("flumery.a1.c1")
    assert consumer.ack_tag(message["properties"]["delivery_tag"]) == 1
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 0}
    assert read_bytes(redis_server.client(), "flumery.a1") == {"c1": 0}


def test_give_back_held_by_a_dead_process_under_global_keyprefix(redis_server):
    options = {"visibility_timeout": 600, "global_keyprefix": PREFIX}
    settings = Settings(broker_url=redis_server.url, key_prefix=PREFIX)
    w = ChannelWriter(create_app(settings), parse_agent(CONF, "a1"), redis_server.url, options)
    holder = Connection(redis_server.url, transport=Transport, transport_options=options)
    agent = Connection(redis_server.url, transport=Transport, transport_options=options)
    try:
        w.put({"c1": batch(4)})
        [held] = holder.default_channel.fetch("flumery.a1.c1")
        assert agent.default_channel.give_back_held_by(owner_prefix(os.getpid() + 1)) == 0   # another process
        assert agent.default_channel.give_back_held_by(owner_prefix(os.getpid())) == 1
        [again] = agent.default_channel.fetch("flumery.a1.c1")
        assert again["properties"]["delivery_tag"] == held["properties"]["delivery_tag"]
    finally:
        w.close()
        holder.release()
        agent.release()
    assert all(k.startswith(PREFIX.encode()) for k in redis_server.client().scan_iter(count=1000))
