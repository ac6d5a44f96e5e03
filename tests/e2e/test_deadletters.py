"""Dead letters: events a store can never write go to the dead-letter channel and never block the others."""
from __future__ import annotations

import json
import subprocess
import sys

from agents import REPO, AgentProcess, port_open, read_lines, wait_until
from test_agent_flow import post

from app.broker import free_port

CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.channels.c1.capacity = 10000
a1.sinks.k1.type = tests.fault_sinks:{sink}
a1.sinks.k1.directory = {out}
a1.sinks.k1.channel = c1
{extra}
"""


def dlq(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", "dlq", *args, "-f", str(agent.conf), "-n", "a1",
                           "--data-dir", str(agent.data_dir)], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=agent.env)


def test_rejected_events_are_dead_lettered_and_the_rest_flows(tmp_path, redis_server):
    port, out = free_port(), tmp_path / "out"
    with AgentProcess(tmp_path, CONF.format(port=port, out=out, sink="RejectingSink", extra=""),
                      broker_url=redis_server.url) as agent:
        wait_until(lambda: port_open(port), 30, what="the http source")
        bodies = [f"ok-{i}" for i in range(10)]
        bodies[3], bodies[7] = "POISON-3", "POISON-7"
        assert post(port, [{"headers": {"n": str(i)}, "body": b} for i, b in enumerate(bodies)]) == 200
        assert post(port, [{"body": "after"}]) == 200
        wait_until(lambda: len(read_lines(out)) >= 9, 30, what="the 9 good events")
        listed = dlq(agent, "list", "--json", "--broker-url", redis_server.url)
        assert listed.returncode == 0, listed.stderr
        entries = [json.loads(line) for line in listed.stdout.splitlines()]
        assert sorted(e["body"] for e in entries) == ["POISON-3", "POISON-7"]
        assert all(e["sink"] == "k1" and e["channel"] == "c1" and "malformed" in e["reason"] and e["id"]
                   for e in entries)
    assert sorted(read_lines(out)) == sorted([b.encode() for b in bodies if "POISON" not in b] + [b"after"])


def test_max_attempts_isolates_the_failing_event_and_replay_brings_it_back(tmp_path, redis_server):
    port, out = free_port(), tmp_path / "out"
    out.mkdir()
    (out / "broken").write_text("")
    conf = CONF.format(port=port, out=out, sink="FailingSink", extra="a1.sinks.k1.maxAttempts = 2")
    with AgentProcess(tmp_path, conf, broker_url=redis_server.url) as agent:
        wait_until(lambda: port_open(port), 30, what="the http source")
        bodies = [f"ok-{i}" for i in range(8)]
        bodies[5] = "POISON-5"
        assert post(port, [{"body": b} for b in bodies]) == 200
        wait_until(lambda: len(read_lines(out)) >= 7, 60, what="the 7 writable events")
        listed = dlq(agent, "list", "--json", "--broker-url", redis_server.url)
        assert [json.loads(line)["body"] for line in listed.stdout.splitlines()] == ["POISON-5"]
        assert "store refuses this batch" in json.loads(listed.stdout.splitlines()[0])["reason"]
        (out / "broken").unlink()                             # the store is fixed
        replayed = dlq(agent, "replay", "--broker-url", redis_server.url)
        assert replayed.returncode == 0 and "replayed 1 event\n" == replayed.stdout, replayed.stderr
        wait_until(lambda: len(read_lines(out)) >= 8, 30, what="the replayed event")
        assert dlq(agent, "list", "--json", "--broker-url", redis_server.url).stdout == ""
    assert sorted(read_lines(out)) == sorted(b.encode() for b in bodies)


def test_purge_needs_yes(tmp_path, redis_server):
    agent = AgentProcess(tmp_path, CONF.format(port=free_port(), out=tmp_path / "o", sink="RejectingSink",
                                               extra=""))
    refused = dlq(agent, "purge", "--broker-url", redis_server.url)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = dlq(agent, "purge", "--yes", "--broker-url", redis_server.url)
    assert done.returncode == 0 and "purged 0" in done.stdout
