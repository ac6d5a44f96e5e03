"""The chaos harness's own machinery (no agent): a scenario cannot pass on a load generator that died, hung or
stopped short, and the generator survives a clock that moves between two reads (issue 9: it raised
``ValueError: sleep length must be non-negative`` and the scenarios passed with no load)."""
from __future__ import annotations

import chaos
import pytest
from helpers import ThreadFailed


class SteppingClock:
    """Moves ``step`` seconds on every read: what a busy machine does between two reads of the real clock."""

    def __init__(self, step: float):
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def strict_sleep(seconds: float) -> None:
    if seconds < 0:                                   # what time.sleep does
        raise ValueError("sleep length must be non-negative")


class AlwaysAcked(chaos.Load):
    def _post(self, first: int) -> int:
        return 200


def test_the_load_runs_to_the_end_on_a_clock_that_moves_between_reads():
    load = AlwaysAcked(0, total=500, rate=100)
    load.clock = SteppingClock(0.07)                  # never a whole request's interval (0.1 s) per read
    load.sleep = strict_sleep
    load.start().join(30)
    assert load.acked_events() == 500 and load.all_sent() == {f"e{i}".encode() for i in range(500)}


def test_a_load_generator_that_raises_fails_the_scenario():
    class Broken(chaos.Load):
        def _post(self, first: int) -> int:
            raise RuntimeError("the load generator's own bug")

    load = Broken(0, total=100, rate=1000).start()
    with pytest.raises(ThreadFailed) as info:
        load.join(30)
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(ThreadFailed):
        load.wait_for(10, timeout_s=5)                # a fault never waits on a dead load


def test_a_load_that_ended_short_fails_the_scenario():
    load = AlwaysAcked(0, total=100, rate=1000)
    load.stop.set()
    with pytest.raises(AssertionError, match="ended after 0 of 100 events"):
        load.start().join(30)


def test_a_scenario_settles_on_a_finished_load_and_counts_what_arrived(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "part").write_bytes(b"".join(f"e{i}\n".encode() for i in range(30)))
    load = AlwaysAcked(0, total=30, rate=1000).start()
    recovery = chaos.Recovery(out, load)
    result = chaos.Result("harness")
    recovery.fault()
    chaos.settle(result, load, recovery, out, timeout_s=30)
    assert result.unrecovered == 0 and result.notes == []
    counted = chaos.count(result, load, out)
    assert (counted.sent, counted.delivered, counted.lost, counted.duplicated) == (30, 30, 0, 0)
