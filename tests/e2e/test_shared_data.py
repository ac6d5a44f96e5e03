"""A batch replicated into several channels is stored once, against a real redis-server: the messages (one per
channel) refer to one shared data key, each channel takes, gives back, peeks and purges its own message, and the
data goes with the last message that refers to it (routing.scripts, routing.transport); a process that drains
several of the channels receives the data once (routing.shared_data)."""
from __future__ import annotations

import os

import pytest
from helpers import msgpack_columns
from kombu import Connection

from app.celery_app import create_app
from core.config import parse_agent
from core.errors import ChannelFullError
from core.event import Batch
from core.settings import Settings
from routing import codec, scripts, shared_data
from routing.processor import ChannelProcessor, ChannelWriter
from routing.transport import Transport, read_bytes, read_sizes

CONF = """
a1.sources = r1
a1.channels = c1 c2 c3
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1 c2 c3
a1.channels.c1.type = file
a1.channels.c1.transactionCapacity = 2
a1.channels.c2.type = file
a1.channels.c2.transactionCapacity = 2
a1.channels.c3.type = file
a1.channels.c3.capacity = 4
a1.channels.c3.transactionCapacity = 2
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
a1.sinks.k1.batchSize = 2
"""
CHANNELS = ("c1", "c2", "c3")
LARGE = scripts.INLINE_MAX_BYTES + 100       # one event this large makes a message too large to queue inline


@pytest.fixture
def writer(redis_server):
    w = ChannelWriter(create_app(Settings(broker_url=redis_server.url)), parse_agent(CONF, "a1"), redis_server.url,
                      {})
    yield w
    w.close()


@pytest.fixture
def consumers(redis_server):
    """One consumer per channel, as each channel's sink worker is."""
    connections = [Connection(redis_server.url, transport=Transport) for _ in CHANNELS]
    yield dict(zip(CHANNELS, (c.default_channel for c in connections)))
    for c in connections:
        c.release()


def large_batch(n: int, mark: bytes) -> Batch:
    return Batch([mark + bytes([48 + i]) * LARGE for i in range(n)], None, [f"id-{i}" for i in range(n)])


def message_keys(client) -> list[bytes]:
    return sorted(k for k in client.keys("flumery.msg:*") if not k.endswith(b".d"))


def shared_keys(client) -> list[bytes]:
    return sorted(client.keys("flumery.msg:*.d"))


def bodies(message) -> list[bytes]:
    return codec.decode_stored(message)[1].bodies


def test_a_replicated_batch_is_stored_once_and_deleted_with_the_last_message_that_refers_to_it(
        writer, consumers, redis_server):
    client = redis_server.client()
    batch = large_batch(2, b"r")
    writer.put({name: batch for name in CHANNELS})                 # the replicating selector's one batch object
    [shared] = shared_keys(client)
    data = client.hget(shared, "a")
    assert client.hget(shared, "r") == b"3" and codec.decode_args(*msgpack_columns(data)).bodies == batch.bodies
    # Each channel queues a message of its own (its own tag), which refers to the data instead of holding it.
    assert len(message_keys(client)) == 3
    for key in message_keys(client):
        assert sorted(client.hgetall(key)) == [b"d", b"n", b"t", b"z"] and client.hget(key, "d") == shared
    assert sum(client.memory_usage(k) for k in message_keys(client)) < len(data)
    assert read_bytes(client, "flumery.a1") == {name: 2 * (LARGE + 1) for name in CHANNELS}
    taken = {name: consumers[name].fetch(f"flumery.a1.{name}") for name in CHANNELS}
    assert all(bodies(messages[0]) == batch.bodies for messages in taken.values())
    for name, left in (("c2", b"2"), ("c1", b"1")):
        assert consumers[name].ack_tag(taken[name][0]["properties"]["delivery_tag"]) == 1
        assert client.hget(shared, "r") == left               # the others still need the data
    # A message given back and taken again still finds its data.
    assert consumers["c3"].give_back(taken["c3"][0]["properties"]["delivery_tag"])
    [again] = consumers["c3"].fetch("flumery.a1.c3")
    assert bodies(again) == batch.bodies
    assert consumers["c3"].ack_tag(again["properties"]["delivery_tag"]) == 1
    assert client.keys("flumery.msg:*") == []
    assert read_sizes(client, "flumery.a1") == dict.fromkeys(CHANNELS, 0)
    assert read_bytes(client, "flumery.a1") == dict.fromkeys(CHANNELS, 0)


def test_peek_and_purge_each_channel_on_its_own(writer, consumers, redis_server):
    client = redis_server.client()
    batch = large_batch(4, b"p")                    # two messages per channel (transactionCapacity 2)
    writer.put({name: batch for name in CHANNELS})
    assert len(shared_keys(client)) == 2 and len(message_keys(client)) == 6
    assert [bodies(m) for m in consumers["c2"].peek("flumery.a1.c2", 10)] == [batch.bodies[:2], batch.bodies[2:]]
    assert consumers["c1"].queue_purge("flumery.a1.c1") == 2
    assert [client.hget(k, "r") for k in shared_keys(client)] == [b"2", b"2"]
    assert [bodies(m) for m in consumers["c3"].peek("flumery.a1.c3", 10)] == [batch.bodies[:2], batch.bodies[2:]]
    taken = consumers["c2"].fetch("flumery.a1.c2", max_events=4)
    assert [bodies(m) for m in taken] == [batch.bodies[:2], batch.bodies[2:]]
    assert consumers["c3"].queue_purge("flumery.a1.c3") == 2
    assert consumers["c2"].ack_tag(*(m["properties"]["delivery_tag"] for m in taken)) == 2
    assert client.keys("flumery.msg:*") == []
    assert read_sizes(client, "flumery.a1") == dict.fromkeys(CHANNELS, 0)


def test_a_transaction_refused_for_room_stores_no_shared_data(writer, redis_server):
    client = redis_server.client()
    writer.put({"c3": large_batch(3, b"f")})                  # c3 holds 3 of its 4
    with pytest.raises(ChannelFullError):
        writer.put({name: large_batch(2, b"x") for name in CHANNELS})   # any batch: refused before writing
    batch = large_batch(2, b"y")
    with pytest.raises(ChannelFullError):
        writer.put({name: batch for name in CHANNELS})
    assert shared_keys(client) == [] and len(message_keys(client)) == 2    # c3's own two messages only
    assert read_sizes(client, "flumery.a1") == {"c3": 3}


def test_puts_committed_together_share_only_their_own_data(writer, consumers, redis_server):
    """Two callers' replicated puts in one script call, the first refused for room: the second's messages refer
    to the second's data, stored once, and nothing of the first is left."""
    client = redis_server.client()
    writer.put({"c3": large_batch(3, b"f")})
    first, second = large_batch(2, b"a"), large_batch(1, b"b")
    outcomes = writer.put_many([{name: first for name in CHANNELS}, {name: second for name in CHANNELS}])
    assert isinstance(outcomes[0], ChannelFullError) and outcomes[1] is None
    [shared] = shared_keys(client)
    assert client.hget(shared, "r") == b"3"
    for name in ("c1", "c2"):
        assert [bodies(m) for m in consumers[name].peek(f"flumery.a1.{name}", 10)] == [second.bodies]


def test_a_small_replicated_batch_is_queued_whole_in_each_channel(writer, consumers, redis_server):
    client = redis_server.client()
    batch = Batch([b"small"], None, ["id-0"])
    writer.put({name: batch for name in CHANNELS})
    assert client.keys("flumery.msg:*") == []
    assert all(bodies(consumers[n].fetch(f"flumery.a1.{n}")[0]) == [b"small"] for n in CHANNELS)


def test_the_replicating_selector_hands_the_writer_one_batch_stored_once(writer, redis_server):
    agent = parse_agent(CONF, "a1")
    processor = ChannelProcessor(agent.sources["r1"], writer, [])
    processor.process(large_batch(2, b"s"))
    client = redis_server.client()
    assert len(shared_keys(client)) == 1 and len(message_keys(client)) == 3


# -- a process draining several channels receives a replicated batch's data once (routing.shared_data) ------------
@pytest.fixture
def process_copy(monkeypatch):
    """A fresh copy of shared data for this process (the module's one is the whole test session's)."""
    copy = shared_data.SharedData()
    monkeypatch.setattr(shared_data, "PROCESS", copy)
    return copy


def net_output_bytes(client) -> int:
    return client.info("stats")["total_net_output_bytes"]


def put_and_take_each(writer, consumers, client, shares: bool) -> tuple[int, int, dict[str, list]]:
    """Put a 100 KB batch into the three channels, then take it from each (every take decodes to the batch), with
    or without the share token: (the bytes of its data, the bytes Redis sent for the takes, the messages taken per
    channel)."""
    batch = Batch([b"w" * 50_000, b"v" * 50_000], None, ["id-0", "id-1"])
    writer.put({name: batch for name in CHANNELS})
    before = net_output_bytes(client)
    for consumer in consumers.values():
        consumer.shares_data = shares
    taken = {name: consumers[name].ack_and_fetch(f"flumery.a1.{name}", [], 2)[1] for name in CHANNELS}
    assert all([bodies(m) for m in messages] == [batch.bodies] for messages in taken.values())
    return len(codec.encode_data(batch)), net_output_bytes(client) - before, taken


def test_a_process_draining_several_channels_receives_a_replicated_batch_once(
        writer, consumers, redis_server, process_copy):
    client = redis_server.client()
    data_bytes, sent, taken = put_and_take_each(writer, consumers, client, shares=True)
    # The first take got the data, the two others only its key: Redis sent the data once (the INFO replies, the
    # envelopes and the channel template are a few KB).
    assert data_bytes < sent < 2 * data_bytes
    # Kept until the two other takes had it (the data's messages in the three channels are all this process's).
    assert process_copy.loads == 0 and not process_copy._data
    [shared] = shared_keys(client)
    assert client.hget(shared, shared_data.share_token()) == b"1"
    for name in CHANNELS:         # acknowledged as usual: the data goes with the last message
        tag = taken[name][0]["properties"]["delivery_tag"]
        assert consumers[name].ack_and_fetch(f"flumery.a1.{name}", [tag], 2) == (1, [])
    assert client.keys("flumery.msg:*") == []


def test_takes_without_a_share_token_each_receive_the_data(writer, consumers, redis_server, process_copy):
    """Celery's own consumer, `flumery dlq` and a worker draining one channel take without a token."""
    client = redis_server.client()
    data_bytes, sent, _ = put_and_take_each(writer, consumers, client, shares=False)
    assert sent > 3 * data_bytes
    [shared] = shared_keys(client)
    assert sorted(client.hgetall(shared)) == [b"a", b"r"]


def test_another_process_receives_the_data_again(writer, consumers, redis_server, monkeypatch):
    """A worker restarted (a new process: a new token, an empty copy) is sent the data, not only its key."""
    batch = large_batch(2, b"a")
    writer.put({name: batch for name in CHANNELS})
    for n, name in enumerate(CHANNELS):
        monkeypatch.setattr(shared_data, "_token", (os.getpid(), f"w:process-{n}"))
        copy = shared_data.SharedData(wait_s=60)       # a wait for data that is not coming would hang the test
        monkeypatch.setattr(shared_data, "PROCESS", copy)
        consumers[name].shares_data = True
        [message] = consumers[name].fetch(f"flumery.a1.{name}", 2)
        assert bodies(message) == batch.bodies and copy.loads == 0
    [shared] = shared_keys(redis_server.client())
    assert sorted(redis_server.client().hgetall(shared)) == [b"a", b"r", b"w:process-0", b"w:process-1",
                                                             b"w:process-2"]


def test_data_this_process_dropped_is_read_from_redis(writer, consumers, redis_server, monkeypatch):
    copy = shared_data.SharedData(max_bytes=1, wait_s=60)     # keeps only the newest data
    monkeypatch.setattr(shared_data, "PROCESS", copy)
    first, second = large_batch(2, b"1"), large_batch(2, b"2")
    writer.put({name: first for name in CHANNELS})
    writer.put({name: second for name in CHANNELS})
    for consumer in consumers.values():
        consumer.shares_data = True
    assert [bodies(m) for m in consumers["c1"].fetch("flumery.a1.c1", 4)] == [first.bodies, second.bodies]
    # c2's take gets both only as keys; the first batch's data was dropped here, so it is read from Redis.
    assert [bodies(m) for m in consumers["c2"].fetch("flumery.a1.c2", 4)] == [first.bodies, second.bodies]
    assert copy.loads == 1


def test_a_take_whose_shared_data_is_gone_leaves_the_message_out(writer, consumers, redis_server, monkeypatch,
                                                                  caplog):
    copy = shared_data.SharedData(wait_s=0)
    monkeypatch.setattr(shared_data, "PROCESS", copy)
    batch = large_batch(2, b"g")
    writer.put({name: batch for name in CHANNELS})
    client = redis_server.client()
    [shared] = shared_keys(client)
    client.hset(shared, shared_data.share_token(), "1")     # as if this process had taken it before ...
    client.hdel(shared, "a")                                 # ... and the data were gone since
    consumers["c1"].shares_data = True
    assert consumers["c1"].fetch("flumery.a1.c1", 2) == []
    assert copy.loads == 1 and "its shared data is gone" in caplog.text
