"""Group commit (routing.groupcommit) with a commit function of the test's own: which requests go together, and
that each caller gets its own result or error, and only its own."""
from __future__ import annotations

import threading

import pytest
from helpers import ReportingThread, wait_until

from routing.groupcommit import GroupCommit


class Gate:
    """A commit function that records each call's items and holds the first call until released, so that the
    test can queue requests behind it; item ``("fail", x)`` results in an error for that item alone."""

    def __init__(self, raise_on: str | None = None):
        self.calls: list[list] = []
        self.release = threading.Event()
        self.raise_on = raise_on

    def __call__(self, items: list) -> list:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            assert self.release.wait(30), "the test never released the first commit"
        if self.raise_on in items:
            raise ConnectionError("broker unreachable")
        return [ValueError(f"no room for {x[1]}") if isinstance(x, tuple) else f"put {x}" for x in items]


def start_callers(group: GroupCommit, items: list) -> tuple[list[ReportingThread], dict]:
    results: dict = {}

    def call(item):
        try:
            results[item] = group.submit(item)
        except Exception as exc:          # the caller's own outcome, checked by the test
            results[item] = exc

    threads = [ReportingThread(target=call, args=(item,), name=f"caller-{item}") for item in items]
    for t in threads:
        t.start()
    return threads, results


def queue_behind_first(gate: Gate, group: GroupCommit, first, rest: list) -> tuple[list, dict]:
    """``first`` commits alone and is held; ``rest`` queue behind it; then the gate opens."""
    threads, results = start_callers(group, [first])
    wait_until(lambda: gate.calls, 10, what="the first commit")
    more, more_results = start_callers(group, rest)
    wait_until(lambda: group.waiting == len(rest), 10, what=f"{len(rest)} requests queued")
    gate.release.set()
    for t in threads + more:
        t.join(30)
    return gate.calls, {**results, **more_results}


def test_puts_arriving_during_a_commit_go_together_in_the_next_one():
    gate = Gate()
    calls, results = queue_behind_first(gate, GroupCommit(gate), 0, list(range(1, 11)))
    assert calls[0] == [0]
    assert sorted(calls[1]) == list(range(1, 11)) and len(calls) == 2
    assert results == {i: f"put {i}" for i in range(11)}


def test_one_callers_error_reaches_that_caller_alone():
    gate = Gate()
    calls, results = queue_behind_first(gate, GroupCommit(gate), 0, [1, ("fail", 2), 3])
    assert len(calls[1]) == 3
    assert results[1] == "put 1" and results[3] == "put 3"
    assert isinstance(results[("fail", 2)], ValueError) and str(results[("fail", 2)]) == "no room for 2"


def test_an_error_of_the_call_itself_reaches_every_caller_of_that_group_and_no_other():
    gate = Gate(raise_on=2)
    group = GroupCommit(gate)
    calls, results = queue_behind_first(gate, group, 0, [1, 2, 3])
    assert results[0] == "put 0"                                   # committed in the first call, before
    assert all(isinstance(results[i], ConnectionError) for i in (1, 2, 3))
    assert group.submit(4) == "put 4"                               # and the group goes on


def test_a_group_is_bounded_in_requests_and_in_weight():
    gate = Gate()
    calls, _ = queue_behind_first(gate, GroupCommit(gate, max_items=4), 0, list(range(1, 11)))
    assert [len(c) for c in calls] == [1, 4, 4, 2]
    gate = Gate()
    group = GroupCommit(gate, max_weight=100)
    threads, _ = start_callers(group, ["first"])
    wait_until(lambda: gate.calls, 10, what="the first commit")
    heavy = []
    for name, weight in (("a", 60), ("b", 60), ("c", 30), ("d", 500)):
        t = ReportingThread(target=group.submit, args=(name, weight))
        t.start()
        heavy.append(t)
        queued = len(heavy)
        wait_until(lambda q=queued: group.waiting == q, 10, what="the request queued")
    gate.release.set()
    for t in threads + heavy:
        t.join(30)
    assert gate.calls[1:] == [["a"], ["b", "c"], ["d"]]      # a request heavier than the bound still goes, alone


@pytest.mark.parametrize("callers", [1, 16])
def test_every_caller_is_answered_under_concurrency(callers):
    committed: list = []
    lock = threading.Lock()

    def commit(items):
        with lock:
            committed.extend(items)
        return [f"ok {i}" for i in items]

    group = GroupCommit(commit)
    results: dict = {}

    def caller(n):
        for k in range(200):
            results[(n, k)] = group.submit((n, k))

    threads = [ReportingThread(target=caller, args=(n,)) for n in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(committed) == sorted(results) and len(committed) == 200 * callers
    assert all(results[key] == f"ok {key}" for key in results)


def test_submit_many_commits_one_callers_requests_together_each_with_its_own_outcome():
    gate = Gate()
    gate.release.set()
    group = GroupCommit(gate)
    outcomes = group.submit_many([(1, 0), (("fail", 2), 0), (3, 0)])
    assert gate.calls == [[1, ("fail", 2), 3]]                      # one call for the three
    assert outcomes[0] == "put 1" and outcomes[2] == "put 3"
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "no room for 2"
    assert group.submit_many([]) == [] and len(gate.calls) == 1


def test_submit_many_beyond_a_group_takes_several_calls_and_queues_behind_other_callers():
    """Queued behind another caller's commit, 10 requests of one caller with groups of 4: three more calls, in
    order, every request answered; and a caller arriving after them is committed after them."""
    gate = Gate()
    group = GroupCommit(gate, max_items=4)
    first, _ = start_callers(group, [0])
    wait_until(lambda: gate.calls, 10, what="the first commit")
    outcomes: list = []
    many = ReportingThread(target=lambda: outcomes.extend(group.submit_many([(i, 0) for i in range(1, 11)])))
    many.start()
    wait_until(lambda: group.waiting == 10, 10, what="ten requests queued")
    last, last_results = start_callers(group, [11])
    wait_until(lambda: group.waiting == 11, 10, what="the last caller queued")
    gate.release.set()
    for t in first + [many] + last:
        t.join(30)
    assert gate.calls == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]
    assert outcomes == [f"put {i}" for i in range(1, 11)] and last_results == {11: "put 11"}
