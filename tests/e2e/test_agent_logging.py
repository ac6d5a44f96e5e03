"""What ``flumery agent`` logs at INFO: its start, its stop (on Ctrl-C too), errors, a periodic throughput line,
and a logger sink's events; not a Celery banner per worker nor two lines per task."""
from __future__ import annotations

import re
import signal

from agents import AgentProcess, wait_until

from app.throughput import summary

CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.totalEvents = 5
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
"""


def test_the_default_log_says_what_matters_once(tmp_path, redis_server):
    agent = AgentProcess(tmp_path, CONF, broker_url=redis_server.url, extra=["--stats-interval", "1"]).start()
    try:
        wait_until(lambda: agent.output().count("Event: ") >= 5, 60, what="the 5 events in the logger sink")
        wait_until(lambda: "sources r1 +" in agent.output() and "sinks k1 +" in agent.output(), 30,
                   what="throughput lines with the source's and the sink's events")
    finally:
        code = agent.stop(signal.SIGINT)                    # Ctrl-C
    output = agent.output()
    assert code == 0, output
    assert output.count("Event: ") == 5
    assert "received" not in output and "succeeded in" not in output, output
    assert "-------------- " not in output and "[tasks]" not in output, output     # no Celery banner
    assert "agent 'a1' started (pid " in output
    assert "agent 'a1' stopping (SIGINT)" in output
    assert output.rstrip().splitlines()[-1].endswith("agent 'a1' stopped")
    throughput = [line for line in output.splitlines() if "app.throughput" in line]
    assert all(" INFO app.throughput: last 1 s: " in line for line in throughput), throughput
    assert sum(int(n) for n in re_numbers("sources r1 \\+(\\d+)", throughput)) == 5
    assert sum(int(n) for n in re_numbers("sinks k1 \\+(\\d+)", throughput)) == 5


def re_numbers(pattern: str, lines: list[str]) -> list[str]:
    return [m for line in lines for m in re.findall(pattern, line)]


def snapshot(accepted: int, drained: int, size: int, dead: int = 0) -> dict:
    return {"SOURCE.r1": {"EventAcceptedCount": str(accepted)}, "SINK.k1": {"EventDrainSuccessCount": str(drained)},
            "CHANNEL.c1": {"ChannelSize": str(size)}, "CHANNEL.__dead__": {"ChannelSize": str(dead)}}


def test_the_throughput_line_gives_what_moved_per_component():
    assert summary(snapshot(100, 80, 20), snapshot(1300, 1260, 40), 60.0) == \
        "last 60 s: sources r1 +1200 (20/s); sinks k1 +1180 (19.7/s); channels c1 40 held"


def test_an_idle_interval_logs_nothing_and_dead_letters_show():
    assert summary(snapshot(5, 5, 0), snapshot(5, 5, 0), 60.0) is None
    assert summary(snapshot(5, 5, 0), snapshot(5, 5, 0, dead=2), 60.0) == \
        "last 60 s: sources idle; sinks idle; channels empty; dead letters 2 (+2)"
