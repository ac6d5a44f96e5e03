"""Where a sink worker sits among the agent's processes (app.agent._sink_worker_child): in the agent's session, so
that Linux weighs the agent and its workers as one against the embedded broker (its own session) and against other
services; in a process group of its own, so that a Ctrl-C (SIGINT to the terminal's foreground group) reaches only
the agent, which stops its workers in order; ignoring SIGTTOU, so that writing to a ``tostop`` terminal does not
stop it.  A real agent, its embedded redis-server and its worker."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from agents import AgentProcess, children, read_lines, sink_worker_pid, wait_until


def conf(out: Path) -> str:
    return f"""a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = exec
a1.sources.r1.command = printf 'one\\ntwo\\n'
a1.sources.r1.channels = c1
a1.channels.c1.type = file
a1.sinks.k1.type = file_roll
a1.sinks.k1.channel = c1
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.rollInterval = 0
"""


def ignored_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigIgn line for {pid}")


def redis_pid(agent: AgentProcess) -> int:
    def find():
        for pid in children(agent.process.pid):
            try:
                if b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                pass
        return None
    return wait_until(find, 60, what="the embedded redis-server")


def test_a_sink_worker_is_in_the_agents_session_in_its_own_group_and_ignores_sigttou(tmp_path):
    out = tmp_path / "out"
    # The agent in a session of its own, as a terminal or a service manager starts it.
    with AgentProcess(tmp_path, conf(out), start_new_session=True) as agent:
        worker = sink_worker_pid(agent, b"--hostname\0k1@", "k1's worker")
        broker = redis_pid(agent)
        wait_until(lambda: sorted(read_lines(out)) == [b"one", b"two"], 60, what="both lines written")
        assert os.getsid(worker) == os.getsid(agent.process.pid) == agent.process.pid
        assert os.getpgid(worker) == worker != os.getpgid(agent.process.pid)
        assert os.getsid(broker) == broker                     # the broker keeps a session (and autogroup) of its own
        assert ignored_signals(worker) & (1 << (signal.SIGTTOU - 1))
        assert not ignored_signals(agent.process.pid) & (1 << (signal.SIGTTOU - 1))
        # Ctrl-C: SIGINT to the agent's process group (the terminal's foreground group) reaches the agent only; it
        # stops the worker in order, and both exit cleanly.
        os.killpg(agent.process.pid, signal.SIGINT)
        assert agent.process.wait(60) == 0
    assert "agent 'a1' stopping (SIGINT)" in agent.output_tail()
