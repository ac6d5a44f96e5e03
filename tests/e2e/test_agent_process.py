"""``with AgentProcess(...)``: the exit code is checked after a block that ran through, never instead of the
block's own failure; an agent that does not stop is killed and fails its test.  (Stand-in processes here: what
is tested is the helper, not the agent.)"""
from __future__ import annotations

import sys

import pytest
from agents import AgentProcess
from helpers import wait_until

IGNORES_SIGTERM = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('ready', flush=True); time.sleep(120)")


def stand_in(tmp_path, code: str) -> AgentProcess:
    agent = AgentProcess(tmp_path, "# not read\n")
    agent.args = [sys.executable, "-c", code]
    return agent


def test_a_block_that_ran_through_checks_the_exit_code(tmp_path):
    with pytest.raises(AssertionError, match="agent a1 exited with 3, not 0"):
        with stand_in(tmp_path, "import sys; print('bye'); sys.exit(3)") as agent:
            agent.process.wait(30)
    with stand_in(tmp_path, "pass") as agent:
        agent.process.wait(30)
    assert agent.process.returncode == 0


def test_a_failing_block_keeps_its_own_failure_and_the_agent_is_stopped(tmp_path):
    with pytest.raises(ValueError, match="the block's own failure"):
        with stand_in(tmp_path, "import time; time.sleep(120)") as agent:
            raise ValueError("the block's own failure")
    assert agent.process.poll() is not None


def test_an_agent_that_does_not_stop_is_killed_and_fails_the_test(tmp_path):
    agent = stand_in(tmp_path, IGNORES_SIGTERM).start()
    wait_until(lambda: "ready" in agent.output(), 30, what="the stand-in to ignore SIGTERM")
    with pytest.raises(AssertionError, match="did not stop within 1s"):
        agent.stop(timeout_s=1)
    assert agent.process.poll() is not None
