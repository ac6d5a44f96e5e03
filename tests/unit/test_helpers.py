"""The tests' own helpers: a helper thread that fails makes its test fail; waits fail with what they waited for;
the agent-file builder writes what Flumery's parser reads back; the fake counters count."""
from __future__ import annotations

import threading

import pytest
from conftest import FakeCounters, flow
from helpers import ReportingThread, ThreadFailed, record_waits, wait_until

from core.config import parse_agent


def test_join_raises_what_the_thread_raised():
    def load():
        raise ValueError("sleep length must be non-negative")

    thread = ReportingThread(load, name="load")
    thread.start()
    with pytest.raises(ThreadFailed, match="helper thread 'load' failed") as info:
        thread.join(10)
    assert isinstance(info.value.__cause__, ValueError)


def test_check_raises_at_once_and_join_passes_for_a_thread_that_ran_through():
    done = []
    thread = ReportingThread(lambda: done.append(1))
    thread.start()
    thread.join(10)
    thread.check()
    assert done == [1]
    broken = ReportingThread(lambda: 1 / 0)
    broken.start()
    wait_until(lambda: not broken.is_alive(), 10, what="the thread to end")
    with pytest.raises(ThreadFailed) as info:
        broken.check()
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_join_fails_for_a_thread_still_running():
    release = threading.Event()
    thread = ReportingThread(release.wait, name="hung")
    thread.start()
    try:
        with pytest.raises(ThreadFailed, match="'hung' still running after 0.1s"):
            thread.join(0.1)
    finally:
        release.set()
    thread.join(10)


def test_a_test_whose_helper_thread_raises_fails(pytester):
    """What issue 9 asked for: a load generator that dies fails its test (it used to pass with no load)."""
    pytester.syspathinsert(str(__import__("helpers").__file__.rsplit("/", 1)[0]))
    pytester.makepyfile(test_inner="""
        from helpers import ReportingThread

        def test_with_a_dying_load():
            def load():
                raise ValueError("sleep length must be non-negative")
            thread = ReportingThread(load, name="load")
            thread.start()
            thread.join(10)

        def test_with_a_load_that_runs_through():
            thread = ReportingThread(lambda: None, name="load")
            thread.start()
            thread.join(10)
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:celery")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ThreadFailed: helper thread 'load' failed: ValueError*"])


def test_wait_until_returns_the_value_or_says_what_it_waited_for():
    values = iter([0, None, "", 7])
    assert wait_until(lambda: next(values), 5, interval_s=0.001) == 7
    with pytest.raises(AssertionError, match="timed out after 0s waiting for the moon"):
        wait_until(lambda: False, 0.05, interval_s=0.01, what="the moon")


def test_flow_writes_an_agent_file_flumery_reads_back(tmp_path):
    text = flow({"type": "seq", "totalEvents": 5}, {"type": "file", "capacity": 100, "transactionCapacity": 10},
                {"type": "file_roll", "sink.directory": tmp_path, "sink.batchSize": 10},
                extra="a1.sources.r1.batchSize = 2")
    config = parse_agent(text, "a1", environ={})
    assert list(config.sources) == ["r1"] and list(config.channels) == ["c1"] and list(config.sinks) == ["k1"]
    assert list(config.sources["r1"].channels) == ["c1"] and config.sinks["k1"].channel == "c1"
    assert config.sources["r1"].config.batch_size == 2
    assert config.channels["c1"].type == "file" and config.channels["c1"].config.capacity == 100
    assert config.sinks["k1"].config.directory == str(tmp_path)
    no_sink = parse_agent(flow({"type": "seq"}), "a1", environ={})
    assert list(no_sink.sinks) == [] and no_sink.channels["c1"].type == "memory"


def test_fake_counters_count_from_threads():
    counters = FakeCounters()
    threads = [ReportingThread(lambda: [counters.add("EventReceivedCount") for _ in range(1000)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    counters.started()
    assert counters.counts["EventReceivedCount"] == 4000 and counters.values["Other"] == 0
    assert counters.start_calls == 1 and counters.stop_calls == 0


def test_record_waits_tells_when_a_thread_sleeps_on_an_event():
    stop = threading.Event()
    waits = record_waits(stop)
    thread = ReportingThread(lambda: stop.wait(30), name="sleeper")
    thread.start()
    wait_until(lambda: waits == [30], 10, what="the thread asleep on the event")
    stop.set()
    thread.join(10)
