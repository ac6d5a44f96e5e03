"""Group commit against a real redis-server: several callers' puts in one PUT script call, each put whole or not
at all on its own, each caller answered with its own outcome (routing.groupcommit, routing.transport)."""
from __future__ import annotations

import threading

import pytest
from helpers import ReportingThread, wait_until

from app.celery_app import create_app
from core.config import parse_agent
from core.errors import BatchTooLarge, ChannelFullError, NotReplicated
from core.event import Batch
from core.settings import Settings
from routing import codec
from routing.processor import ChannelWriter
from routing.transport import Transaction, read_sizes

CONF = """
a1.sources = r1
a1.channels = c1 c2 m1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1 c2 m1
a1.channels.c1.type = file
a1.channels.c1.capacity = 10
a1.channels.c1.transactionCapacity = 4
a1.channels.c2.type = file
a1.channels.c2.capacity = 1000
a1.channels.c2.transactionCapacity = 100
a1.channels.m1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
a1.sinks.k1.batchSize = 4
"""


@pytest.fixture
def writer(redis_server):
    settings = Settings(broker_url=redis_server.url)
    w = ChannelWriter(create_app(settings), parse_agent(CONF, "a1"), redis_server.url, {})
    yield w
    w.close()


def batch(n: int, tag: str) -> Batch:
    return Batch([f"{tag}{i}".encode() for i in range(n)])


def bodies_in(redis_server, writer, channel: str) -> list[bytes]:
    out = []
    for message in writer.channel.peek(f"flumery.a1.{channel}", 1000):
        out += codec.decode_stored(message)[1].bodies
    return out


def test_transactions_of_one_call_succeed_or_fail_each_on_their_own(writer, redis_server):
    """Three callers' puts in one script call; the second does not fit in c1 and is refused whole (nothing of it
    in c2 either), the first and third are put."""
    first = writer.targets({"c1": batch(4, "a"), "c2": batch(1, "a")})
    second = writer.targets({"c2": batch(2, "b"), "c1": batch(7, "b")})
    third = writer.targets({"c1": batch(6, "c")})
    results = writer.channel.put_transactions(writer.exchange, [Transaction(first), Transaction(second),
                                                                Transaction(third)])
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ChannelFullError) and results[1].channel == "c1"
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 10, "c2": 1}
    assert bodies_in(redis_server, writer, "c1") == [b"a0", b"a1", b"a2", b"a3", *(f"c{i}".encode() for i in range(6))]
    assert bodies_in(redis_server, writer, "c2") == [b"a0"]


def test_not_replicated_reaches_only_the_puts_that_asked_for_replicas(writer, redis_server):
    """A master without replicas: WAIT confirms 0.  The durable put gets NotReplicated (it is on the master, but must
    not be acknowledged); the memory-channel put of the same call, which asks for none, succeeds; a put refused
    for room reports that, not the replication."""
    durable = writer.targets({"c2": batch(1, "d")})
    memory = writer.targets({"m1": batch(1, "m")})
    too_big = writer.targets({"c1": batch(4, "x"), "c2": batch(1, "x")})
    writer.channel.put_transaction(writer.exchange, writer.targets({"c1": batch(8, "f")}))
    results = writer.channel.put_transactions(writer.exchange, [Transaction(durable, replicas=1),
                                                                Transaction(memory), Transaction(too_big, 1)],
                                              replica_timeout_ms=50)
    assert isinstance(results[0], NotReplicated) and "0 of the 1 replica(s)" in str(results[0])
    assert results[1] is None
    assert isinstance(results[2], ChannelFullError)
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 8, "c2": 1, "m1": 1}


def test_concurrent_writers_are_committed_together_and_answered_each_with_their_own_outcome(writer, redis_server):
    """The first put is held inside its commit; the puts arriving meanwhile go together in the next call, in
    arrival order: one of them does not fit (7 events where 2 are left after the ones before it) and only its
    caller gets ChannelFullError."""
    calls: list[int] = []
    release = threading.Event()
    commit = writer.channel.put_transactions

    def held_commit(exchange, transactions, **kwargs):
        calls.append(len(transactions))
        if len(calls) == 1:
            assert release.wait(30), "the test never released the first commit"
        return commit(exchange, transactions, **kwargs)

    writer.channel.put_transactions = held_commit
    outcomes: dict[str, object] = {}

    def put(name: str, n: int) -> None:
        try:
            writer.put({"c1": batch(n, name), "c2": batch(1, name)})
            outcomes[name] = "put"
        except ChannelFullError as exc:
            outcomes[name] = exc

    threads = [ReportingThread(target=put, args=("first", 4), name="first")]
    threads[0].start()
    wait_until(lambda: calls, 10, what="the first commit")
    for queued, (name, n) in enumerate((("x", 4), ("y", 4), ("z", 2)), start=1):
        threads.append(ReportingThread(target=put, args=(name, n), name=name))
        threads[-1].start()
        wait_until(lambda q=queued: writer._group.waiting == q, 10, what=f"{name} queued")
    release.set()
    for t in threads:
        t.join(30)
    assert calls == [1, 3]
    assert outcomes["first"] == outcomes["x"] == outcomes["z"] == "put"
    assert isinstance(outcomes["y"], ChannelFullError) and outcomes["y"].channel == "c1"
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 10, "c2": 3}
    assert sorted(bodies_in(redis_server, writer, "c2")) == [b"first0", b"x0", b"z0"]


def test_many_threads_putting_at_once_lose_nothing_and_duplicate_nothing(writer, redis_server):
    def put(n: int) -> None:
        for k in range(25):
            writer.put({"c2": Batch([f"{n}-{k}".encode()])})

    threads = [ReportingThread(target=put, args=(n,), name=f"writer-{n}") for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    expected = sorted(f"{n}-{k}".encode() for n in range(16) for k in range(25))
    assert sorted(bodies_in(redis_server, writer, "c2")) == expected[:1000]
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c2": 400}


def test_put_many_commits_one_callers_puts_in_one_call_each_with_its_own_outcome(writer, redis_server):
    """HTTP requests that arrived together: one script call for all, and each put's own outcome: one does not fit
    (ChannelFullError), one exceeds the channel's capacity (BatchTooLarge, never sent), the others are put."""
    calls = counted(writer)
    outcomes = writer.put_many([{"c1": batch(2, "a")}, {"c1": batch(9, "b"), "c2": batch(1, "b")},
                                {"c1": batch(11, "c")}, {"c2": batch(3, "d")}, {}, {"c1": batch(8, "e")}])
    assert calls == [4]                                   # the too large one and the empty one are not sent
    assert outcomes[0] is None and outcomes[3] is None and outcomes[4] is None and outcomes[5] is None
    assert isinstance(outcomes[1], ChannelFullError) and isinstance(outcomes[2], BatchTooLarge)
    assert bodies_in(redis_server, writer, "c1") == [b"a0", b"a1", *(f"e{i}".encode() for i in range(8))]
    assert bodies_in(redis_server, writer, "c2") == [b"d0", b"d1", b"d2"]


def with_ids(n: int, tag: str) -> Batch:
    return batch(n, tag).with_fresh_ids()


def counted(writer) -> list[int]:
    """The transactions of each PUT script call the writer makes from now on."""
    calls: list[int] = []
    commit = writer.channel.put_transactions

    def counting(exchange, transactions, **kwargs):
        calls.append(len(transactions))
        return commit(exchange, transactions, **kwargs)

    writer.channel.put_transactions = counting
    return calls


def test_put_many_joins_the_puts_bound_for_the_same_channels_into_one_message(writer, redis_server):
    """Four one-event puts into c1 and two into c2, interleaved: one script call, one message per channel, the
    events in the order of the puts, every put answered None, every event keeping its own id."""
    calls = counted(writer)
    puts = [{"c1": with_ids(1, "a")}, {"c2": with_ids(1, "x")}, {"c1": with_ids(1, "b")}, {"c1": with_ids(1, "c")},
            {"c2": with_ids(1, "y")}, {"c1": with_ids(1, "d")}]
    ids = [next(iter(p.values())).ids[0] for p in puts]
    assert writer.put_many(puts) == [None] * 6
    assert calls == [2]                                          # one call, one transaction per channel
    client = redis_server.client()
    assert client.llen("flumery.a1.c1") == 1 and client.llen("flumery.a1.c2") == 1
    [c1] = [codec.decode_stored(m)[1] for m in writer.channel.peek("flumery.a1.c1", 10)]
    [c2] = [codec.decode_stored(m)[1] for m in writer.channel.peek("flumery.a1.c2", 10)]
    assert c1.bodies == [b"a0", b"b0", b"c0", b"d0"] and c2.bodies == [b"x0", b"y0"]
    assert list(c1.ids) == [ids[0], ids[2], ids[3], ids[5]] and list(c2.ids) == [ids[1], ids[4]]
    assert read_sizes(client, "flumery.a1") == {"c1": 4, "c2": 2}


def test_joined_puts_refused_for_room_are_tried_one_by_one(writer, redis_server):
    """c1 (capacity 10) holds 7: three puts of 2 do not fit together (6), so each is tried alone: the first fits,
    the other two are refused (ChannelFullError each), as if they had come one by one."""
    assert writer.put_many([{"c1": with_ids(4, "f")}, {"c1": with_ids(3, "g")}]) == [None, None]
    calls = counted(writer)
    outcomes = writer.put_many([{"c1": with_ids(2, "a")}, {"c1": with_ids(2, "b")}, {"c1": with_ids(2, "c")}])
    assert calls == [1, 3]                                       # joined and refused; then one by one
    assert outcomes[0] is None and all(isinstance(o, ChannelFullError) for o in outcomes[1:])
    assert bodies_in(redis_server, writer, "c1")[-2:] == [b"a0", b"a1"]
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 9}


def test_puts_too_large_together_go_alone_and_a_put_without_ids_is_never_joined(writer, redis_server):
    """Together 12 events exceed c1's capacity (10): no joined transaction is tried (each alone, one call); a put
    whose batch has no ids is put on its own (a joined batch would carry no ids)."""
    calls = counted(writer)
    outcomes = writer.put_many([{"c1": with_ids(6, "a")}, {"c1": with_ids(6, "b")}, {"c2": batch(1, "n")},
                                {"c2": with_ids(1, "w")}])
    assert calls == [4]
    assert outcomes[0] is None and isinstance(outcomes[1], ChannelFullError) and outcomes[2:] == [None, None]
    assert redis_server.client().llen("flumery.a1.c2") == 2
