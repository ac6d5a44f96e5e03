"""The draining sink task (workers/runtime.py ``WorkerRuntime._drain``) against a stand-in channel: the order of
writes, acknowledgements and give-backs, which the real-Redis tests (tests/e2e/test_worker_inprocess.py) cannot
observe.  The stand-in keeps a list of messages of 10 events and records every call."""
from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import Requeue
from core.event import Batch
from workers import runtime
from workers.runtime import WorkerRuntime


class StandInChannel:
    def __init__(self, messages: int, per_take: int = 0):
        self.queue = [f"m{i}" for i in range(messages)]
        self.per_take = per_take        # > 0: at most this many messages are there at each take (a slow source)
        self.log: list[tuple] = []
        self.lock = threading.Lock()

    def _take(self, size: int) -> list[dict]:
        taken = []
        while self.queue and (len(taken) + 1) * 10 <= size and len(taken) < (self.per_take or len(self.queue)):
            taken.append({"properties": {"delivery_tag": self.queue.pop(0)}})
        return taken

    def ack_and_fetch(self, queue, tags, size):
        with self.lock:
            self.log.append(("ack", tuple(tags)))
            return len(tags), self._take(size)

    def ack_tag(self, *tags):
        if tags:                        # as the real channel: no tags, no call
            with self.lock:
                self.log.append(("ack", tags))

    def give_back(self, tag, front=True):
        with self.lock:
            self.log.append(("give back", tag))


class StandInRunner:
    batch_size = 20
    name = "k1"             # it stands in for the sink that wrote the batch, too

    def __init__(self, channel: StandInChannel, fail_at: int = 0):
        self.channel, self.fail_at, self.writes = channel, fail_at, 0

    def write(self, batch, should_stop, retry_max_s):
        self.writes += 1
        if self.writes == self.fail_at:
            raise Requeue("stopping while the store fails")
        with self.channel.lock:
            self.channel.log.append(("write", tuple(batch.bodies)))
        return self


class Held:
    def __init__(self):
        self.tags: set[str] = set()

    def hold(self, tags):
        self.tags.update(tags)

    def release(self, tags):
        self.tags.difference_update(tags)


class Counters:
    def __init__(self):
        self.batches: list[float] = []          # seconds from take to acknowledgement, one per batch

    def group(self, *_):
        return self

    def add(self, *_):
        pass

    def observe_batch(self, seconds: float) -> None:
        self.batches.append(seconds)


@pytest.fixture
def drain(monkeypatch):
    monkeypatch.setattr(runtime.codec, "decode_stored",
                        lambda payload: ("c1", Batch([payload["properties"]["delivery_tag"].encode()] * 10)))
    monkeypatch.setattr(runtime, "queue_name", lambda agent, channel: f"flumery.{agent}.{channel}")

    def make(messages: int, fail_at: int = 0, per_take: int = 0):
        rt = object.__new__(WorkerRuntime)
        rt.channel, rt.housekeeper, rt.metrics = StandInChannel(messages, per_take), Held(), Counters()
        rt.config = type("Config", (), {"name": "a1"})()
        rt.settings = type("Settings", (), {"sink_retry_max_s": 1.0})()
        rt.should_stop = lambda: False
        rt._ahead = ThreadPoolExecutor(max_workers=1)
        rt.housekeeper.hold(["task", "first"])       # the task's own message, the batch written with it
        return rt, StandInRunner(rt.channel, fail_at)
    return make


def written(log) -> list[str]:
    return [bodies[0].decode() for kind, bodies in log if kind == "write"]


def test_every_batch_is_acknowledged_once_and_only_after_its_write(drain):
    rt, runner = drain(9)                    # m0..m8: batches of two messages, the last one of one
    events, messages = rt._drain(runner, "c1", ["first"], (runner, 0.0))
    log = rt.channel.log
    assert (events, messages) == (90, 9)
    assert written(log) == ["m0", "m2", "m4", "m6", "m8"]
    acked = [tag for kind, tags in log if kind == "ack" for tag in tags]
    assert sorted(acked) == sorted(["first", *(f"m{i}" for i in range(9))])     # each once
    for i in range(9):
        batch_start = f"m{i - i % 2}"
        write_at = next(n for n, (kind, b) in enumerate(log) if kind == "write" and b[0].decode() == batch_start)
        ack_at = next(n for n, (kind, tags) in enumerate(log) if kind == "ack" and f"m{i}" in tags)
        assert write_at < ack_at
    assert len(rt.metrics.batches) == 6              # the first batch and the five drained, each once
    assert rt.housekeeper.tags == {"task"}           # the task releases its own message; nothing else is held


def test_a_batch_that_came_short_is_acknowledged_with_the_next_take_in_one_call(drain):
    rt, runner = drain(4, per_take=1)        # a slow source: one message (10 events) there at each take, of 20
    events, messages = rt._drain(runner, "c1", ["first"], (runner, 0.0))
    log = [(kind, args[0].decode() if kind == "write" else args) for kind, args in rt.channel.log]
    assert (events, messages) == (40, 4)
    # after each write, one call acknowledges that batch and takes the next; the drain ends on an empty take
    assert log == [("ack", ("first",)), ("write", "m0"), ("ack", ("m0",)), ("write", "m1"), ("ack", ("m1",)),
                   ("write", "m2"), ("ack", ("m2",)), ("write", "m3"), ("ack", ("m3",))]
    assert len(rt.metrics.batches) == 5
    assert rt.housekeeper.tags == {"task"}


def test_a_drain_that_must_stop_writes_the_batch_in_hand_and_acknowledges_it(drain):
    rt, runner = drain(6, per_take=1)
    rt.should_stop = lambda: True
    events, messages = rt._drain(runner, "c1", ["first"], (runner, 0.0))
    log = [(kind, args[0].decode() if kind == "write" else args) for kind, args in rt.channel.log]
    assert (events, messages) == (10, 1)
    assert log == [("ack", ("first",)), ("write", "m0"), ("ack", ("m0",))]
    assert rt.channel.queue == ["m1", "m2", "m3", "m4", "m5"] and rt.housekeeper.tags == {"task"}


def test_a_batch_that_cannot_be_written_goes_back_with_the_one_taken_ahead(drain):
    rt, runner = drain(10, fail_at=2)        # the second batch (m2, m3) fails while m4, m5 were taken ahead
    events, messages = rt._drain(runner, "c1", ["first"], (runner, 0.0))
    log = rt.channel.log
    assert (events, messages) == (20, 2) and written(log) == ["m0"]
    given_back = sorted(tag for kind, tag in log if kind == "give back")
    assert given_back == ["m2", "m3", "m4", "m5"]
    acked = sorted(tag for kind, tags in log if kind == "ack" for tag in tags)
    assert acked == ["first", "m0", "m1"]
    assert len(rt.metrics.batches) == 2              # the first batch and m0's: a batch not written has none
    assert rt.channel.queue == [f"m{i}" for i in range(6, 10)]
    assert rt.housekeeper.tags == {"task"}


def claiming_runtime(units_by_channel: dict[str, list[str]]) -> WorkerRuntime:
    """A runtime with only what :meth:`WorkerRuntime._claim` reads: runners by channel and their claims."""
    rt = object.__new__(WorkerRuntime)
    rt.by_channel = {c: [type("Runner", (), {"unit": u})() for u in units] for c, units in units_by_channel.items()}
    rt.runners = {c: itertools.cycle(rs) for c, rs in rt.by_channel.items()}
    rt.claims = {r.unit: threading.Lock() for rs in rt.by_channel.values() for r in rs}
    return rt


def test_a_busy_sink_is_not_claimed_twice_and_its_task_goes_back_after_the_wait(monkeypatch):
    """Under Celery's threads pool two tasks of one channel can run at once: the second waits for the sink the
    first holds, for CLAIM_WAIT_S at most, then gives its message back (Requeue) instead of holding a thread."""
    monkeypatch.setattr(runtime, "CLAIM_WAIT_S", 0.3)
    rt = claiming_runtime({"c1": ["k1"], "c2": ["k2"]})
    first = rt._claim("c1")
    assert rt._claim("c2").unit == "k2"                  # another channel's sink: claimed at once
    started = time.monotonic()
    with pytest.raises(runtime.SinkBusy, match="every sink of channel 'c1' is busy"):
        rt._claim("c1")
    assert time.monotonic() - started >= 0.3
    threading.Timer(0.1, rt.claims[first.unit].release).start()
    assert rt._claim("c1") is first                      # released within the wait: the waiting task gets it


def test_sinks_sharing_a_channel_are_claimed_one_each(monkeypatch):
    monkeypatch.setattr(runtime, "CLAIM_WAIT_S", 0.1)
    rt = claiming_runtime({"c1": ["k1", "k2"]})
    assert {rt._claim("c1").unit, rt._claim("c1").unit} == {"k1", "k2"}
    with pytest.raises(Requeue):
        rt._claim("c1")
    with pytest.raises(Requeue, match="serves no sink of channel 'c9'"):
        rt._claim("c9")
