"""Hot reload: a running agent reads its file again every --reload-interval seconds and on SIGHUP, replaces only
the components that changed, and keeps its old flow when the new file is invalid (real agents, real Redis)."""
from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request

from agents import AgentProcess, port_open, read_lines, wait_until

from app.broker import free_port
from app.reload import plan
from core.config import parse_agent

BASE = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1
a1.channels.c1.type = file
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.rollInterval = 0
a1.sinks.k1.channel = c1
"""
TAGGED = BASE + """
a1.sources.r1.interceptors = i1
a1.sources.r1.interceptors.i1.type = static
a1.sources.r1.interceptors.i1.key = release
a1.sources.r1.interceptors.i1.value = two
a1.sinks.k1.sink.serializer = header_and_text
"""


def post(port: int, bodies: list[str]) -> int | None:
    data = json.dumps([{"body": b} for b in bodies]).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", data=data), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def send(port: int, prefix: str, n: int) -> set[str]:
    """Post n events, each request retried until it is acknowledged (a source being replaced refuses)."""
    bodies = [f"{prefix}{i}" for i in range(n)]
    for i in range(0, n, 10):
        wait_until(lambda i=i: post(port, bodies[i:i + 10]) == 200, 30, what=f"{prefix} events to be acknowledged")
    return set(bodies)


# --- the plan: only what changed -------------------------------------------------------------------------------

def test_plan_names_only_the_components_that_changed():
    old = parse_agent(BASE.format(port=1, out="/tmp/x"), "a1")
    assert plan(old, old).empty()
    new = parse_agent(TAGGED.format(port=1, out="/tmp/x"), "a1")
    change = plan(old, new)
    assert change.stop_sources == change.start_sources == ["r1"]
    assert change.stop_units == change.start_units == ["k1"]
    capacity = parse_agent(BASE.format(port=1, out="/tmp/x") + "a1.channels.c1.capacity = 50000\n", "a1")
    assert plan(old, capacity).changed_channels == ["c1"]
    assert plan(old, capacity).stop_sources == [] and plan(old, capacity).stop_units == []   # limits apply at the next put
    grown = parse_agent(BASE.format(port=1, out="/tmp/x").replace("a1.sinks = k1", "a1.sinks = k1 k2")
                        + "a1.sinks.k2.type = null\na1.sinks.k2.channel = c1\n", "a1")
    assert plan(old, grown).start_units == ["k2"] and plan(old, grown).stop_units == []


# --- a running agent -------------------------------------------------------------------------------------------

def test_sighup_applies_a_valid_file_and_an_invalid_one_changes_nothing(tmp_path):
    port, out = free_port(), tmp_path / "out"
    agent = AgentProcess(tmp_path, BASE.format(port=port, out=out), extra=["--reload-interval", "0"]).start()
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        before = send(port, "one-", 100)
        agent.conf.write_text(TAGGED.format(port=port, out=out))
        agent.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded" in agent.output(), 60, what="the reload")
        after = send(port, "two-", 100)
        agent.conf.write_text(TAGGED.format(port=port, out=out).replace("type = static", "type = statik"))
        agent.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "refused" in agent.output(), 60, what="the invalid file to be refused")
        still = send(port, "three-", 100)
        wanted = before | after | still
        wait_until(lambda: len(read_lines(out)) >= 300, 60, what="every event")
    finally:
        code = agent.stop()
    assert code == 0
    lines = [line.decode() for line in read_lines(out)]
    assert len(lines) == 300, "an event was lost or written twice"
    texts = {line.rsplit(" ", 1)[-1] for line in lines}
    assert texts == wanted
    assert all("release=two" in line for line in lines if "two-" in line or "three-" in line)
    assert "a1.sources.r1.interceptors.i1.type: unknown interceptor type 'statik'" in agent.output()
    assert "sources restarted/started: r1" in agent.output() and "sink workers restarted/started: k1" in agent.output()


def test_the_file_is_polled_and_new_components_start(tmp_path):
    port, out, out2 = free_port(), tmp_path / "out", tmp_path / "out2"
    agent = AgentProcess(tmp_path, BASE.format(port=port, out=out), extra=["--reload-interval", "1"]).start()
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        agent.conf.write_text(BASE.format(port=port, out=out).replace("a1.sinks = k1", "a1.sinks = k1 k2")
                              .replace("a1.channels = c1", "a1.channels = c1 c2")
                              .replace("a1.sources.r1.channels = c1", "a1.sources.r1.channels = c1 c2")
                              + f"a1.channels.c2.type = memory\na1.sinks.k2.type = file_roll\n"
                                f"a1.sinks.k2.sink.directory = {out2}\na1.sinks.k2.sink.rollInterval = 0\n"
                                f"a1.sinks.k2.channel = c2\n")
        wait_until(lambda: "reloaded" in agent.output(), 30, what="the polled reload")
        sent = send(port, "e", 50)
        wait_until(lambda: len(read_lines(out2)) >= 50 and len(read_lines(out)) >= 50, 60, what="both channels")
    finally:
        code = agent.stop()
    assert code == 0
    assert {line.decode() for line in read_lines(out2)} == sent == {line.decode() for line in read_lines(out)}
