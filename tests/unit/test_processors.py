"""Sink processors ``failover`` and ``load_balance``: Flume's vectors, backoff rules, configuration, end to end.

How Flume's test scenarios (``vectors.json``, groups ``FailoverSinkProcessor`` and ``LoadBalancingSinkProcessor``)
are replayed here, and why that is faithful:

* Flume's mock sinks take **one event per** ``process()`` call from a shared channel.  Here every ``process()`` is a
  ``processor.write(batch)`` of a one-event batch taken from a list standing for the channel, so per-sink event
  counts are the counts of Flume's tests.  Every processor is built through the real configuration path
  (``core.config.parse_agent`` of an agent file holding the case's sink group), with fake sinks of the same names.
* A mock sink "fails" by raising (Flume: ``EventDeliveryException``) without taking an event; ``FakeSink`` raises
  without writing.  The failover test's ``ConsumeXSink(n)`` is a ``FakeSink(remaining=n)``: it writes ``n``
  events, then raises.
* Flume's sinks answer ``BACKOFF`` only when the channel is **empty** (nothing taken), and that is not a failure.
  Flumery never calls a sink with an empty batch, so "``process()`` until BACKOFF" is "write until the channel
  list is empty": the final, empty call of Flume's loop writes nothing and changes no count.  No vector has a sink
  answering BACKOFF while events are waiting, so no sink here needs to "succeed without delivering"; the
  processors have no BACKOFF notion at all (a write succeeds or raises), which is what real sinks do.
* ``testFailover`` runs Flume's SinkRunner thread, which keeps calling ``process()`` on the empty channel between
  the puts (``ConsumeXSink`` answers READY then), and those idle calls are when Flume retries the penalised sinks.
  Flumery retries them at the start of the next ``write()`` instead.  The written counts do not depend on it: s2
  recovers with the first event of the third put instead of during the 5 s sleep.
* ``Thread.sleep(n)`` is ``clock.advance(n)`` on an injected clock; no test sleeps.  The ``random`` selector gets
  a seeded ``random.Random``.
* ``testCustomSelector``'s ``FixedOrderSelector`` (a Java test class) is :class:`FixedOrderSelector` below, named
  in the configuration as ``test_processors:FixedOrderSelector``; like Flume's, it insists on getting its
  ``selector.setme`` property.
* The "rules" entries of each group are checked against the processors' constants.

Then: unit tests of penalties and restore times with an injected clock, configuration validation through
``parse_agent``, and an end-to-end test with a real agent, real Redis and real Celery worker.
"""
from __future__ import annotations

import json
import random
import re

import pytest
from conftest import EXAMPLES, VECTORS

from core.config import load_agent, parse_agent
from core.errors import AllSinksFailed, ConfigInvalid, RejectedEvents
from core.event import Batch, Event
from workers.processors import failover as fo
from workers.processors import load_balance as lb
from workers.processors.base import ProcessorContext
from workers.processors.failover import FailoverSinkProcessor
from workers.processors.load_balance import LoadBalancingSinkProcessor, SinkSelector

ALL_VECTORS = json.loads(VECTORS.read_text())


# --- test doubles ------------------------------------------------------------------------------------------------

class FakeClock:
    """An injectable clock (seconds) that moves only when told to."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSink:
    """A sink whose writes succeed unless ``fail`` is set, or ``remaining`` (events it may still write; None =
    no limit) is smaller than the batch.  A failed write writes nothing."""

    def __init__(self, name: str, remaining: int | None = None, batch_size: int = 1):
        self.name = name
        self.remaining = remaining
        self.batch_size = batch_size
        self.fail = False
        self.bodies: list[bytes] = []
        self.calls = 0

    @property
    def written(self) -> int:
        return len(self.bodies)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def write(self, batch) -> None:
        self.calls += 1
        if self.fail:
            raise OSError(f"{self.name} is down")
        if self.remaining is not None:
            if self.remaining < len(batch):
                raise OSError(f"{self.name} can't consume more")
            self.remaining -= len(batch)
        self.bodies.extend(batch.bodies)


class FixedOrderSelector(SinkSelector):
    """Flume's test FixedOrderSelector: always the group's own order; needs the property ``setme``."""

    def __init__(self, sinks, properties, **kwargs):
        super().__init__(sinks, properties, **kwargs)
        if properties.get("setme") is None:
            raise ValueError("config key setme not specified")

    def order(self) -> list:
        return list(self.sinks)


def one(body) -> Batch:
    return Batch.from_events([Event(str(body).encode())])


# --- building processors through the configuration ---------------------------------------------------------------

def agent_text(group_props: dict[str, str], group: str = "g1") -> str:
    """An agent file around one sink group: ``group_props`` are relative to ``a1.sinkgroups.<group>.``."""
    sinks = group_props["sinks"].split()
    lines = ["a1.sources = r1", "a1.channels = c1", f"a1.sinks = {' '.join(sinks)}", "a1.sources.r1.type = seq",
             "a1.sources.r1.channels = c1", "a1.channels.c1.type = memory", f"a1.sinkgroups = {group}"]
    for sink in sinks:
        lines += [f"a1.sinks.{sink}.type = null", f"a1.sinks.{sink}.channel = c1"]
    lines += [f"a1.sinkgroups.{group}.{key} = {value}" for key, value in group_props.items()]
    return "\n".join(lines) + "\n"


def build(group_props: dict[str, str], sinks: list, clock=None, rng=None, group: str = "g1"):
    """The processor of ``group`` as the worker builds it, over ``sinks`` (fakes)."""
    config = parse_agent(agent_text(group_props, group), "a1")
    spec = config.sinkgroups[group]
    kwargs = {"clock": clock or FakeClock()}
    if spec.processor.cls is LoadBalancingSinkProcessor:
        kwargs["rng"] = rng or random.Random(7)
    return spec.processor.cls(group, spec.processor.config, ProcessorContext(sinks), **kwargs)


def errors_of(text: str) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as info:
        parse_agent(text, "a1")
    return {e.key: e.message for e in info.value.errors}


def case_id(case: dict) -> str:
    return case.get("test") or re.sub(r"\W+", "-", case["source"]).strip("-")


def cases(group: str) -> list[dict]:
    return [c for c in ALL_VECTORS[group] if "rules" not in c]


def rules(group: str) -> dict:
    return next(c for c in ALL_VECTORS[group] if "rules" in c)


# --- LoadBalancingSinkProcessor vectors --------------------------------------------------------------------------

def lb_sinks(spec) -> dict[str, FakeSink]:
    if isinstance(spec, str):
        count = int(re.fullmatch(r"(\d+) ok sinks", spec).group(1))
        return {f"s{i}": FakeSink(f"s{i}") for i in range(1, count + 1)}
    sinks = {name: FakeSink(name) for name in spec}
    for name, state in spec.items():
        assert state in ("ok", "fail"), state
        sinks[name].fail = state == "fail"
    return sinks


def lb_group_props(case: dict, sinks: dict) -> dict[str, str]:
    props = {"sinks": " ".join(sinks), "processor.type": "load_balance",
             "processor.backoff": str(case.get("backoff", False)).lower()}
    if "FixedOrderSelector" in case["selector"]:
        props.update({"processor.selector": "test_processors:FixedOrderSelector", "processor.selector.setme": "foo"})
    else:
        props["processor.selector"] = case["selector"]
    return props


def replay(processor, sinks: dict, clock: FakeClock, channel: list, run: str) -> None:
    """Carry out a case's ``run`` text: ``N x process()``, ``sX->fail|ok``, ``sleep Ns``, ``process() raises``
    and ``[process] until BACKOFF`` (= until the channel is empty), separated by ``;``."""
    run = re.sub(r"\s+\([^)]+\)", "", run)              # drop comments such as "(no sleeps; ...)"
    for step in (s.strip() for s in run.split(";")):
        if m := re.fullmatch(r"(\d+) x process\(\)", step):
            for _ in range(int(m.group(1))):
                if channel:
                    processor.write(one(channel.pop(0)))
        elif m := re.fullmatch(r"(s\d+)->(fail|ok)", step):
            sinks[m.group(1)].fail = m.group(2) == "fail"
        elif m := re.fullmatch(r"sleep ([\d.]+)s", step):
            clock.advance(float(m.group(1)))
        elif step == "process() raises":
            with pytest.raises(AllSinksFailed):
                processor.write(one("never written"))
        elif re.fullmatch(r"(process(\(\))? )?until BACKOFF", step):
            while channel:
                processor.write(one(channel.pop(0)))
        else:
            pytest.fail(f"unknown step in a vector's run: {step!r}")


def check_counts(case: dict, sinks: dict) -> None:
    counts = {name: sink.written for name, sink in sinks.items()}
    for names, expected in case.get("expected_counts", {}).items():
        assert sum(counts[n] for n in names.split("+")) == expected, (names, counts)
    if "expected" in case:
        m = re.fullmatch(r"sum (\d+) and not all counts equal", case["expected"])
        assert m, f"unknown expectation {case['expected']!r}"
        assert sum(counts.values()) == int(m.group(1)) and len(set(counts.values())) > 1, counts


def run_lb_case(case: dict, seed: int = 7) -> dict:
    sinks = lb_sinks(case["sinks"])
    clock = FakeClock()
    processor = build(lb_group_props(case, sinks), list(sinks.values()), clock, random.Random(seed))
    channel = list(range(case["events"]))
    replay(processor, sinks, clock, channel, case.get("run", "until BACKOFF"))
    bodies = sorted(int(b) for s in sinks.values() for b in s.bodies)
    assert bodies == list(range(case["events"])), "every event written exactly once"
    return sinks


@pytest.mark.parametrize("case", cases("LoadBalancingSinkProcessor"), ids=case_id)
def test_load_balancing_vector(case):
    sinks = run_lb_case(case)
    check_counts(case, sinks)


@pytest.mark.parametrize("seed", range(5))
def test_random_vectors_hold_for_other_seeds(seed):
    for case in cases("LoadBalancingSinkProcessor"):
        if case["selector"] == "random":
            check_counts(case, run_lb_case(case, seed))


# Scenarios of Flume's TestLoadBalancingSinkProcessor that vectors.json does not carry, in the same notation.
FLUME_LB_EXTRA = [
    {"test": "testRoundRobinOneActiveSink", "selector": "round_robin", "backoff": False, "events": 10,
     "sinks": {"s1": "fail", "s2": "ok", "s3": "fail"}, "expected_counts": {"s1": 0, "s2": 10, "s3": 0}},
    {"test": "testRoundRobinBackoffIncreasingBackoffs", "selector": "round_robin", "backoff": True, "events": 300,
     "sinks": {"s1": "ok", "s2": "fail", "s3": "ok"},
     "run": "3 x process(); sleep 2.1s; 3 x process(); s2->ok; sleep 2.1s; 3 x process(); sleep 2.1s; "
            "until BACKOFF",
     "expected_counts": {"s1": 102, "s2": 97, "s3": 101}},
    {"test": "testRandomBackoff", "selector": "random", "backoff": True, "events": 100,
     "sinks": {"s1": "fail", "s2": "ok", "s3": "fail"},
     "run": "50 x process(); s2->fail; s1->ok; process() raises; sleep 2.1s; until BACKOFF",
     "expected_counts": {"s1": 50, "s2": 50, "s3": 0}},
]


@pytest.mark.parametrize("case", FLUME_LB_EXTRA, ids=case_id)
def test_load_balancing_flume_scenarios_beyond_the_vectors(case):
    check_counts(case, run_lb_case(case))


def test_load_balancing_rules_entry():
    text = json.dumps(rules("LoadBalancingSinkProcessor"))
    assert "min(seqFails+1,16)" in text and lb.MAX_FAILURE_COUNT == 16
    assert "+ 1h" in text and lb.SEQUENTIAL_RANGE_MS == 3600 * 1000
    assert "maxTimeOut default 30000" in text and lb.DEFAULT_MAX_TIMEOUT_MS == 30000
    assert [lb.backoff_ms(k, 30000) for k in range(1, 6)] == [2000, 4000, 8000, 16000, 30000]
    config = parse_agent(agent_text({"sinks": "k1 k2", "processor.type": "load_balance"}), "a1")
    assert config.sinkgroups["g1"].processor.config == lb.LoadBalanceConfig(
        backoff=False, selector="round_robin", max_timeout_ms=30000, selector_properties={})


# --- FailoverSinkProcessor vectors -------------------------------------------------------------------------------

def failover_sinks(spec: dict) -> dict[str, FakeSink]:
    sinks = {}
    for name, text in spec.items():
        m = re.fullmatch(r"(?:consumes )?at most (\d+)(?: events then throws)?", text)
        assert m, text
        sinks[name] = FakeSink(name, remaining=int(m.group(1)))
    return sinks


def act(action: str, sinks: dict, clock: FakeClock) -> None:
    action = re.sub(r"\s+\([^)]+\)", "", action)
    for step in (s.strip() for s in action.split(";")):
        if m := re.fullmatch(r"(s\d+)\.setRemaining\((\d+)\)", step):
            sinks[m.group(1)].remaining = int(m.group(2))
        elif m := re.fullmatch(r"sleep ([\d.]+)s", step):
            clock.advance(float(m.group(1)))
        else:
            pytest.fail(f"unknown action step {step!r}")


@pytest.mark.parametrize("case", cases("FailoverSinkProcessor"), ids=case_id)
def test_failover_vector(case):
    config = case["config"]
    if "sinkgroups" in config:                       # keys relative to the agent (the user guide's example)
        (group,) = config["sinkgroups"].split()
        props = {k[len(f"sinkgroups.{group}."):]: v for k, v in config.items() if k.startswith(f"sinkgroups.{group}.")}
    else:                                            # keys relative to the sink group (Flume's unit test)
        group, props = "g1", dict(config)
    names = props["sinks"].split()
    sinks = failover_sinks(case["sinks"]) if "sinks" in case else {n: FakeSink(n) for n in names}
    clock = FakeClock()
    processor = build(props, [sinks[n] for n in names], clock, group=group)
    if "expected" in case:
        assert processor.active.name == case["expected"]["active_sink"]
        assert processor.write(one("x")).name == case["expected"]["active_sink"]
    put = 0
    for step in case.get("steps", []):
        if "action" in step:
            act(step["action"], sinks, clock)
        channel = list(range(put, put + step["put"]))
        put += step["put"]
        while channel:                               # the runner thread drains the channel, one event a call
            processor.write(one(channel.pop(0)))
        clock.advance(0.1)                           # Thread.sleep(100)
        for name, written in step["expected_written"].items():
            assert sinks[name].written == written, (step, {n: s.written for n, s in sinks.items()})
    if put:
        assert sorted(int(b) for s in sinks.values() for b in s.bodies) == list(range(put))


def test_failover_rules_entry():
    text = json.dumps(rules("FailoverSinkProcessor"))
    assert "maxpenalty=30000" in text and fo.DEFAULT_MAX_PENALTY_MS == 30000
    assert "2000 ms first" in text and fo.penalty_ms(1, 30000) == 2000
    assert "All sinks failed to process, nothing left to failover to" in text
    assert [fo.penalty_ms(k, 30000) for k in range(1, 7)] == [2000, 4000, 8000, 16000, 30000, 30000]


# --- failover: penalties, order, recovery ------------------------------------------------------------------------

def failover(sinks: list[FakeSink], clock: FakeClock, **props) -> FailoverSinkProcessor:
    group = {"sinks": " ".join(s.name for s in sinks), "processor.type": "failover"}
    group.update({f"processor.{k.replace('_', '.')}": str(v) for k, v in props.items()})
    return build(group, sinks, clock)


def test_failover_penalty_doubles_up_to_maxpenalty_with_injected_clock():
    clock = FakeClock()
    k1, k2 = FakeSink("k1"), FakeSink("k2")
    processor = failover([k1, k2], clock, priority_k1=10, priority_k2=5)
    k1.fail = True
    assert processor.write(one(0)) is k2                  # k1 fails, k2 takes the same batch in the same write
    waits = []
    for i in range(1, 8):
        (penalised,) = processor.failed
        waits.append(round(penalised.refresh - clock(), 3))
        clock.advance(penalised.refresh - clock())        # exactly at refresh: not retried yet (Flume: refresh < now)
        calls = k1.calls
        assert processor.write(one(i)) is k2 and k1.calls == calls
        clock.advance(0.001)                              # just after: retried with the batch, fails again
        assert processor.write(one(f"r{i}")) is k2 and k1.calls == calls + 1
    assert waits == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert processor.failed[0].failures == 8


def test_failover_maxpenalty_caps_and_zero_retries_every_write():
    clock = FakeClock()
    k1, k2 = FakeSink("k1"), FakeSink("k2")
    processor = failover([k1, k2], clock, priority_k1=2, priority_k2=1, maxpenalty=3000)
    k1.fail = True
    processor.write(one(0))
    for expected in (2.0, 3.0, 3.0):
        assert processor.failed[0].refresh - clock() == pytest.approx(expected)
        clock.advance(expected + 0.001)
        processor.write(one(1))
    zero = failover([FakeSink("a"), FakeSink("b")], clock, maxpenalty=0)
    zero.sinks[0].fail = True
    for i in range(3):
        clock.advance(0.001)
        assert zero.write(one(i)).name == "b"
    assert zero.sinks[0].calls == 3


def test_failover_no_overflow_after_many_failures():
    assert fo.penalty_ms(22, 30000) == 30000            # Flume's int arithmetic goes negative here
    assert fo.penalty_ms(10**6, 30000) == 30000


def test_failed_sink_returns_to_live_pool_and_becomes_active_again():
    clock = FakeClock()
    k1, k2, k3 = FakeSink("k1"), FakeSink("k2"), FakeSink("k3")
    processor = failover([k1, k2, k3], clock, priority_k1=30, priority_k2=20, priority_k3=10)
    k1.fail = k2.fail = True
    assert processor.write(one(0)) is k3                  # both fail over within one write
    assert [f.sink.name for f in processor.failed] == ["k1", "k2"]
    k1.fail = k2.fail = False
    clock.advance(1.0)
    assert processor.write(one(1)) is k3                  # penalties (2 s) not over
    clock.advance(1.5)
    assert processor.write(one(2)) is k1                  # retried first (earliest refresh), writes, is active
    assert processor.active is k1 and [f.sink.name for f in processor.failed] == ["k2"]
    assert processor.write(one(3)) is k2                  # k2's turn to be retried: back in the pool
    assert processor.failed == [] and processor.write(one(4)) is k1
    assert (k1.written, k2.written, k3.written) == (2, 1, 2)


def test_recovered_sinks_rejoin_the_pool_and_the_highest_priority_is_active():
    clock = FakeClock()
    k1, k2 = FakeSink("k1"), FakeSink("k2")
    processor = failover([k1, k2], clock, priority_k1=1, priority_k2=2)
    assert processor.active is k2
    k1.fail = k2.fail = True
    with pytest.raises(AllSinksFailed):
        processor.write(one(0))
    k1.fail = False                                       # the lower priority sink comes back first
    clock.advance(2.5)
    assert processor.write(one(1)) is k1                  # k2 retried first (penalised first): fails again (4 s)
    assert processor.active is k1 and [f.sink.name for f in processor.failed] == ["k2"]
    assert processor.write(one(2)) is k1
    k2.fail = False
    clock.advance(4.5)
    assert processor.write(one(3)) is k2                  # k2 recovers and, being the highest, is active again
    assert processor.active is k2 and processor.live == {1: k1, 2: k2}
    assert processor.write(one(4)) is k2
    assert (k1.written, k2.written) == (2, 2)


def test_consecutive_failure_count_starts_again_after_recovery():
    clock = FakeClock()
    k1, k2 = FakeSink("k1"), FakeSink("k2")
    processor = failover([k1, k2], clock, priority_k1=2, priority_k2=1)
    k1.fail = True
    processor.write(one(0))
    clock.advance(2.1)
    processor.write(one(1))                               # second failure in a row: 4 s
    assert processor.failed[0].refresh - clock() == pytest.approx(4.0)
    k1.fail = False
    clock.advance(4.1)
    assert processor.write(one(2)) is k1
    k1.fail = True
    processor.write(one(3))
    assert processor.failed[0].failures == 1 and processor.failed[0].refresh - clock() == pytest.approx(2.0)


def test_all_failed_raises_and_names_every_error_and_the_next_retry():
    clock = FakeClock()
    k1, k2 = FakeSink("k1"), FakeSink("k2")
    processor = failover([k1, k2], clock)
    k1.fail = k2.fail = True
    with pytest.raises(AllSinksFailed) as info:
        processor.write(one(0))
    message = str(info.value)
    assert "k1: k1 is down" in message and "k2: k2 is down" in message and "next retry: sink k1 in 2.0s" in message
    calls = (k1.calls, k2.calls)
    with pytest.raises(AllSinksFailed):                # nothing live, nothing expired: no sink is called
        processor.write(one(1))
    assert (k1.calls, k2.calls) == calls


def test_unspecified_priorities_follow_the_sinks_list():
    clock = FakeClock()
    a, b, c = FakeSink("a"), FakeSink("b"), FakeSink("c")
    processor = failover([a, b, c], clock)                # -1, -2, -3
    assert processor.live == {-1: a, -2: b, -3: c}
    assert fo.assign_priorities(["a", "b", "c"], {"c": 0}) == ({"a": -1, "b": -2, "c": 0}, [])


def test_rejected_events_do_not_fail_over():
    clock = FakeClock()
    k1, k2 = FakeSink("k1"), FakeSink("k2")
    processor = failover([k1, k2], clock, priority_k1=2, priority_k2=1)

    def partial(batch):
        raise RejectedEvents({0: "mapper_parsing_exception"})
    k1.write = partial
    with pytest.raises(RejectedEvents):
        processor.write(one(0))
    assert k2.calls == 0 and processor.failed == [] and processor.active is k1


def test_rejected_events_from_a_retried_sink_count_as_recovery():
    clock = FakeClock()
    k1, k2 = FakeSink("k1"), FakeSink("k2")
    processor = failover([k1, k2], clock, priority_k1=2, priority_k2=1)
    k1.fail = True
    processor.write(one(0))
    clock.advance(2.1)

    def partial(batch):
        raise RejectedEvents({0: "bad"})
    k1.write = partial
    with pytest.raises(RejectedEvents):
        processor.write(one(1))
    assert processor.failed == [] and processor.active is k1 and k2.calls == 1


# --- load_balance: backoff and order -----------------------------------------------------------------------------

def balancer(sinks, clock, rng=None, **props) -> LoadBalancingSinkProcessor:
    group = {"sinks": " ".join(s.name for s in sinks), "processor.type": "load_balance"}
    group.update({f"processor.{k.replace('_', '.')}": str(v).lower() if isinstance(v, bool) else str(v)
                  for k, v in props.items()})
    return build(group, sinks, clock, rng)


def test_restore_time_doubles_up_to_max_timeout_with_injected_clock():
    clock = FakeClock()
    s1, s2 = FakeSink("s1"), FakeSink("s2")
    processor = balancer([s1, s2], clock, backoff=True)
    s1.fail = True
    waits = []
    for _ in range(7):
        while processor.selector.states["s1"].restore_at >= clock():
            clock.advance(0.5)
        before = s1.calls
        while s1.calls == before:                         # round robin: s1 is tried within two writes
            processor.write(one("x"))
        state = processor.selector.states["s1"]
        waits.append(state.restore_at - clock())
    assert waits == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backed_off_sink_is_left_out_until_strictly_after_restore_time():
    clock = FakeClock()
    s1, s2 = FakeSink("s1"), FakeSink("s2")
    processor = balancer([s1, s2], clock, backoff=True, selector_maxTimeOut=5000)
    s1.fail = True
    assert processor.write(one(0)) is s2
    s1.fail = False
    clock.advance(2.0)                                    # restoreTime == now: still backed off
    assert [processor.write(one(i)) for i in range(3)] == [s2, s2, s2]
    clock.advance(0.001)
    assert {processor.write(one(i)).name for i in range(2)} == {"s1", "s2"}


def test_failure_count_resets_after_last_backoff_plus_one_hour():
    state, clock = lb.BackoffState(), FakeClock()
    state.fail(clock(), 30000)
    assert (state.failures, state.restore_at - clock()) == (1, 2.0)
    clock.advance(2 + 3600 - 0.5)                         # within 2 s + 1 h of the last failure: in a row
    state.fail(clock(), 30000)
    assert (state.failures, state.restore_at - clock()) == (2, 4.0)
    clock.advance(4 + 3600)                               # exactly backoff + 1 h later: a fresh failure (Flume: >)
    state.fail(clock(), 30000)
    assert (state.failures, state.restore_at - clock()) == (1, 2.0)


def test_failure_count_is_capped_at_16():
    state, clock = lb.BackoffState(), FakeClock()
    for _ in range(20):
        state.fail(clock(), 10**9)
        clock.advance(1)
    assert state.failures == 16 and state.restore_at - clock() == pytest.approx(2**16 - 1)


def test_next_failure_count_function():
    assert lb.next_failure_count(0, None, 5.0, 30000) == 1
    assert lb.next_failure_count(3, 0.0, 3600 + 8 - 0.5, 30000) == 4
    assert lb.next_failure_count(3, 0.0, 3600 + 8, 30000) == 1
    assert lb.next_failure_count(16, 0.0, 1.0, 30000) == 16


def test_every_sink_backed_off_raises_without_calling_any():
    clock = FakeClock()
    s1, s2 = FakeSink("s1"), FakeSink("s2")
    processor = balancer([s1, s2], clock, backoff=True)
    s1.fail = s2.fail = True
    with pytest.raises(AllSinksFailed, match="s1: s1 is down; s2: s2 is down"):
        processor.write(one(0))
    with pytest.raises(AllSinksFailed, match="every sink of group g1 is backed off.*restored in 2.0s"):
        processor.write(one(1))
    assert (s1.calls, s2.calls) == (1, 1)


def test_without_backoff_failing_sinks_are_tried_at_every_write():
    clock = FakeClock()
    s1, s2, s3 = FakeSink("s1"), FakeSink("s2"), FakeSink("s3")
    processor = balancer([s1, s2, s3], clock)
    s2.fail = True
    picked = [processor.write(one(i)).name for i in range(6)]
    assert picked == ["s1", "s3", "s3", "s1", "s3", "s3"] and s2.calls == 2


def test_round_robin_start_moves_over_active_sinks_only():
    clock = FakeClock()
    sinks = [FakeSink(f"s{i}") for i in range(1, 5)]
    processor = balancer(sinks, clock, backoff=True)
    orders = []
    for _ in range(3):
        orders.append([s.name for s in processor.selector.order()])
    assert orders == [["s1", "s2", "s3", "s4"], ["s2", "s3", "s4", "s1"], ["s3", "s4", "s1", "s2"]]
    processor.selector.inform_failure(sinks[3])
    assert [s.name for s in processor.selector.order()] == ["s1", "s2", "s3"]     # head 3 >= 3 active: back to 0
    assert [s.name for s in processor.selector.order()] == ["s2", "s3", "s1"]


def test_random_selector_is_seedable_and_covers_every_order():
    sinks = [FakeSink(f"s{i}") for i in range(1, 4)]
    first = balancer(sinks, FakeClock(), random.Random(42), selector="random")
    second = balancer(sinks, FakeClock(), random.Random(42), selector="random")
    orders = [tuple(s.name for s in first.selector.order()) for _ in range(200)]
    assert orders == [tuple(s.name for s in second.selector.order()) for _ in range(200)]
    assert len(set(orders)) == 6


def test_rejected_events_are_not_a_load_balancing_failure():
    clock = FakeClock()
    s1, s2 = FakeSink("s1"), FakeSink("s2")
    processor = balancer([s1, s2], clock, backoff=True)

    def partial(batch):
        raise RejectedEvents({0: "bad"})
    s1.write = partial
    with pytest.raises(RejectedEvents):
        processor.write(one(0))
    assert s2.calls == 0 and processor.selector.states["s1"].failures == 0


def test_custom_selector_gets_its_selector_properties():
    sinks = [FakeSink("s1"), FakeSink("s2")]
    processor = balancer(sinks, FakeClock(), selector="test_processors:FixedOrderSelector", selector_setme="foo",
                         selector_maxTimeOut=1234)
    assert processor.selector.properties == {"setme": "foo", "maxTimeOut": "1234"}
    assert isinstance(processor.selector, FixedOrderSelector)
    with pytest.raises(ValueError, match="setme"):
        balancer(sinks, FakeClock(), selector="test_processors:FixedOrderSelector")


# --- configuration ------------------------------------------------------------------------------------------------

BASE = {"sinks": "k1 k2"}


def group_text(**processor) -> str:
    props = dict(BASE)
    props.update({f"processor.{k.replace('__', '.')}": v for k, v in processor.items()})
    return agent_text(props)


def test_failover_example_file_now_validates():
    config = load_agent(EXAMPLES / "d-failover.conf", "a1", environ={})
    spec = config.sinkgroups["g1"]
    assert spec.sinks == ("k1", "k2") and spec.processor.cls is FailoverSinkProcessor
    assert spec.processor.config.priorities == {"k1": 5, "k2": 10}
    assert spec.processor.config.max_penalty_ms == 10000
    processor = spec.processor.cls("g1", spec.processor.config, ProcessorContext([FakeSink("k1"), FakeSink("k2")]))
    assert processor.active.name == "k2"


def test_flume_class_names_of_processors_are_accepted():
    for fqcn, cls in (("org.apache.flume.sink.FailoverSinkProcessor", FailoverSinkProcessor),
                      ("org.apache.flume.sink.LoadBalancingSinkProcessor", LoadBalancingSinkProcessor)):
        config = parse_agent(group_text(type=fqcn), "a1")
        assert config.sinkgroups["g1"].processor.cls is cls


def test_duplicate_priority_is_an_error_naming_key_and_value():
    errors = errors_of(group_text(type="failover", priority__k1="5", priority__k2="5"))
    message = errors["a1.sinkgroups.g1.processor.priority.k2"]
    assert message.startswith("5 is also the priority of sink 'k1'")
    assert "silently leave one of them out" in message


def test_priority_colliding_with_a_default_priority_is_an_error():
    errors = errors_of(group_text(type="failover", priority__k2="-1"))
    message = errors["a1.sinkgroups.g1.processor.priority.k2"]
    assert "-1 is also the priority that sink 'k1' gets because it has none" in message
    assert len(errors) == 1


def test_priority_for_a_sink_outside_the_group_is_an_error():
    errors = errors_of(group_text(type="failover", priority__k3="1", priority__kk1="2"))
    assert errors["a1.sinkgroups.g1.processor.priority.k3"] == "sink 'k3' is not in this group (sinks: k1 k2)"
    assert "did you mean 'k1'?" in errors["a1.sinkgroups.g1.processor.priority.kk1"]


def test_bad_numbers_are_errors():
    errors = errors_of(group_text(type="failover", priority__k1="high", maxpenalty="-5"))
    assert errors["a1.sinkgroups.g1.processor.maxpenalty"] == "must be 0 or more (got '-5')"
    errors = errors_of(group_text(type="failover", priority__k1="high"))
    assert errors["a1.sinkgroups.g1.processor.priority.k1"] == "expected a whole number (got 'high')"
    errors = errors_of(group_text(type="failover", maxpenalty="10s"))
    assert errors["a1.sinkgroups.g1.processor.maxpenalty"] == "expected a whole number (got '10s')"


def test_misspelt_failover_property_has_did_you_mean():
    errors = errors_of(group_text(type="failover", maxPenalty="1000"))
    assert "did you mean 'maxpenalty'?" in errors["a1.sinkgroups.g1.processor.maxPenalty"]


def test_load_balance_needs_more_than_one_sink():
    errors = errors_of(agent_text({"sinks": "k1", "processor.type": "load_balance"}))
    assert errors["a1.sinkgroups.g1.processor.type"].startswith(
        "the load_balance processor needs more than one sink (the group has 1: k1)")


def test_failover_with_one_sink_is_accepted_as_in_flume():
    config = parse_agent(agent_text({"sinks": "k1", "processor.type": "failover"}), "a1")
    assert config.sinkgroups["g1"].processor.cls is FailoverSinkProcessor


def test_unknown_selector_has_did_you_mean():
    errors = errors_of(group_text(type="load_balance", selector="round_robbin"))
    message = errors["a1.sinkgroups.g1.processor.selector"]
    assert "unknown sink selector type 'round_robbin'; did you mean 'round_robin'?" in message
    assert "(available: random, round_robin)" in message


@pytest.mark.parametrize("name,cls", [
    ("ROUND_ROBIN", lb.RoundRobinSelector), ("Random", lb.RandomSelector),
    ("org.apache.flume.sink.LoadBalancingSinkProcessor$RoundRobinSinkSelector", lb.RoundRobinSelector),
    ("org.apache.flume.sink.LoadBalancingSinkProcessor$RandomOrderSinkSelector", lb.RandomSelector),
])
def test_selector_names_and_flume_class_names(name, cls):
    config = parse_agent(group_text(type="load_balance", selector=name), "a1")
    spec = config.sinkgroups["g1"].processor
    processor = spec.cls("g1", spec.config, ProcessorContext([FakeSink("k1"), FakeSink("k2")]))
    assert type(processor.selector) is cls


def test_selector_properties_of_builtin_selectors():
    errors = errors_of(group_text(type="load_balance", selector__maxTimeout="5000", selector__setme="x"))
    assert "did you mean 'selector.maxTimeOut'?" in errors["a1.sinkgroups.g1.processor.selector.maxTimeout"]
    assert "takes only selector.maxTimeOut" in errors["a1.sinkgroups.g1.processor.selector.setme"]
    errors = errors_of(group_text(type="load_balance", selector__maxTimeOut="0", backoff="yes"))
    assert errors["a1.sinkgroups.g1.processor.selector.maxTimeOut"] == "must be greater than 0 (got '0')"
    assert errors["a1.sinkgroups.g1.processor.backoff"] == "expected true or false (got 'yes')"
    config = parse_agent(group_text(type="load_balance", backoff="TRUE", selector__maxTimeOut="5000"), "a1")
    assert config.sinkgroups["g1"].processor.config.max_timeout_ms == 5000


def test_custom_selector_must_be_a_sink_selector():
    errors = errors_of(group_text(type="load_balance", selector="collections:OrderedDict"))
    assert "is not a sink selector" in errors["a1.sinkgroups.g1.processor.selector"]
    errors = errors_of(group_text(type="load_balance", selector="no_such_module_xyz:Selector"))
    assert "cannot import module 'no_such_module_xyz'" in errors["a1.sinkgroups.g1.processor.selector"]
    errors = errors_of(group_text(type="load_balance", selector="org.example.MySelector"))
    assert "'module:Class'" in errors["a1.sinkgroups.g1.processor.selector"]
