"""Two transactions per hop, end to end: real tier-1 and collector agents (each its own process, embedded Redis and
sink worker) joined by avro hops; Flume's own example files; fan-in; a sink group over two collectors, one down."""
from __future__ import annotations

import re

import avro_peer
import pytest
from agents import AgentProcess, port_open, read_lines, wait_until
from conftest import EXAMPLES
from test_agent_flow import post

from app.broker import free_port


def example(name: str, ports: dict[int, int]) -> str:
    """An example file with its ports changed, and nothing else."""
    text = (EXAMPLES / name).read_text()
    for old, new in ports.items():
        text, count = re.subn(rf"(\.port = ){old}\b", rf"\g<1>{new}", text)
        assert count, f"{name} has no port {old}"
    return text


def file_roll_collector(port: int, out, channel: str = "file", serializer: str = "TEXT", name: str = "c") -> str:
    return f"""
{name}.sources = r1
{name}.channels = ch
{name}.sinks = k1
{name}.sources.r1.type = avro
{name}.sources.r1.bind = 127.0.0.1
{name}.sources.r1.port = {port}
{name}.sources.r1.channels = ch
{name}.channels.ch.type = {channel}
{name}.channels.ch.capacity = 100000
{name}.channels.ch.transactionCapacity = 1000
{name}.sinks.k1.type = file_roll
{name}.sinks.k1.sink.directory = {out}
{name}.sinks.k1.sink.serializer = {serializer}
{name}.sinks.k1.sink.batchSize = 1000
{name}.sinks.k1.channel = ch
"""


def seq_tier1(tag: str, events: int, sinks: str) -> str:
    return f"""
t.sources = r1
t.channels = c1
t.sources.r1.type = seq
t.sources.r1.totalEvents = {events}
t.sources.r1.batchSize = 100
t.sources.r1.channels = c1
t.sources.r1.interceptors = i1
t.sources.r1.interceptors.i1.type = static
t.sources.r1.interceptors.i1.key = tier1
t.sources.r1.interceptors.i1.value = {tag}
t.channels.c1.type = file
t.channels.c1.transactionCapacity = 1000
""" + sinks


def avro_sink(name: str, port: int, extra: str = "") -> str:
    return f"""
t.sinks.{name}.type = avro
t.sinks.{name}.hostname = 127.0.0.1
t.sinks.{name}.port = {port}
t.sinks.{name}.batch-size = 500
t.sinks.{name}.connect-timeout = 2000
t.sinks.{name}.request-timeout = 10000
t.sinks.{name}.channel = c1
{extra}"""


def test_flume_examples_tier1_to_collector(tmp_path):
    """h-avro-tier1.conf unchanged but for its ports; h-avro-collector.conf's avro source and memory channel
    unchanged but for the port, its hdfs sink replaced by file_roll (Flumery has no hdfs sink on this branch).  The
    Java peer client sends into tier 1: Java -> avro -> Flumery -> avro -> Flumery -> file."""
    tier1_port, collector_port, out = free_port(), free_port(), tmp_path / "out"
    tier1 = example("h-avro-tier1.conf", {41020: tier1_port, 10000: collector_port})
    collector = example("h-avro-collector.conf", {10000: collector_port})
    collector = "\n".join(line for line in collector.splitlines() if ".hdfs-sink." not in line)
    collector += f"""
agent_foo.sinks.hdfs-sink.type = file_roll
agent_foo.sinks.hdfs-sink.sink.directory = {out}
agent_foo.sinks.hdfs-sink.channel = mem-channel
"""
    (tmp_path / "t1").mkdir()
    (tmp_path / "col").mkdir()
    agents = [AgentProcess(tmp_path / "col", collector, name="agent_foo").start(),
              AgentProcess(tmp_path / "t1", tier1, name="agent_foo").start()]
    try:
        wait_until(lambda: port_open(tier1_port) and port_open(collector_port), 60, what="both avro sources")
        result = avro_peer.run_client("127.0.0.1", tier1_port, 2000, 100)
        assert result.returncode == 0, result.stdout + result.stderr
        wait_until(lambda: len(read_lines(out)) >= 2000, 120, what="2000 events at the collector")
    finally:
        codes = [agent.stop() for agent in agents]
    assert codes == [0, 0]
    assert sorted(read_lines(out)) == sorted(f"java-{n}".encode() for n in range(2000))


def test_fan_in_three_tier1_agents_into_one_collector(tmp_path):
    """Three tier-1 agents (headers from a static interceptor) into one collector: every event once, with its
    headers; the ids travel as flumery.id and are taken back out by the collector."""
    port, out = free_port(), tmp_path / "out"
    (tmp_path / "col").mkdir()
    agents = [AgentProcess(tmp_path / "col", file_roll_collector(port, out, serializer="header_and_text"),
                           name="c").start()]
    try:
        wait_until(lambda: port_open(port), 60, what="the collector's avro source")
        for tag in ("web1", "web2", "web3"):
            (tmp_path / tag).mkdir()
            agents.append(AgentProcess(tmp_path / tag, seq_tier1(tag, 3000, "t.sinks = k1\n" + avro_sink("k1", port)),
                                       name="t").start())
        wait_until(lambda: len(read_lines(out)) >= 9000, 180, what="9000 events at the collector")
    finally:
        codes = [agent.stop() for agent in agents]
    assert codes == [0, 0, 0, 0]
    lines = read_lines(out)
    expected = {f"{{tier1={tag}}} {n}".encode() for tag in ("web1", "web2", "web3") for n in range(3000)}
    assert set(lines) == expected
    assert len(lines) == 9000                  # no collector worker was killed: nothing twice


def http_tier1(port: int, sinks: str) -> str:
    return f"""
t.sources = r1
t.channels = c1
t.sources.r1.type = http
t.sources.r1.bind = 127.0.0.1
t.sources.r1.port = {port}
t.sources.r1.channels = c1
t.channels.c1.type = file
t.channels.c1.transactionCapacity = 1000
""" + sinks


def post_events(port: int, first: int, count: int) -> None:
    assert post(port, [{"body": str(n)} for n in range(first, first + count)]) == 200


@pytest.mark.parametrize("processor", ["load_balance", "failover"])
def test_sink_group_over_two_collectors_with_one_down(processor, tmp_path):
    """A load_balance (backoff) or failover group of two avro sinks.  The collector of k2 is down (nothing listens
    on its port; for failover k2 has the higher priority): every event goes to the collector of k1.  Then the
    second collector starts, and once k2's backoff (2 s at most here) ends it takes its share (load_balance) or
    all the traffic back (failover).  Every acknowledged event arrives exactly once."""
    http, up_port, down_port = free_port(), free_port(), free_port()
    out_up, out_down = tmp_path / "up", tmp_path / "down"
    group = f"""
t.sinks = k1 k2
t.sinkgroups = g1
t.sinkgroups.g1.sinks = k1 k2
t.sinkgroups.g1.processor.type = {processor}
""" + ("""t.sinkgroups.g1.processor.backoff = true
t.sinkgroups.g1.processor.selector = round_robin
t.sinkgroups.g1.processor.selector.maxTimeOut = 2000
""" if processor == "load_balance" else """t.sinkgroups.g1.processor.priority.k1 = 5
t.sinkgroups.g1.processor.priority.k2 = 10
t.sinkgroups.g1.processor.maxpenalty = 2000
""")
    for d in ("up", "down", "t"):
        (tmp_path / f"{d}-agent").mkdir()
    agents = [AgentProcess(tmp_path / "up-agent", file_roll_collector(up_port, out_up), name="c").start()]
    sent = 0
    try:
        wait_until(lambda: port_open(up_port), 60, what="the collector that is up")
        tier1 = http_tier1(http, group + avro_sink("k1", up_port) + avro_sink("k2", down_port))
        agents.append(AgentProcess(tmp_path / "t-agent", tier1, name="t").start())
        wait_until(lambda: port_open(http), 60, what="the tier-1 http source")
        for _ in range(50):
            post_events(http, sent, 20)
            sent += 20
        wait_until(lambda: len(read_lines(out_up)) >= sent, 120, what="the first events at the collector that is up")
        assert read_lines(out_down) == []
        agents.append(AgentProcess(tmp_path / "down-agent", file_roll_collector(down_port, out_down),
                                   name="c").start())
        wait_until(lambda: port_open(down_port), 60, what="the second collector")

        def second_gets_some():
            nonlocal sent
            post_events(http, sent, 20)
            sent += 20
            return read_lines(out_down)
        wait_until(second_gets_some, 60, interval_s=0.1, what="events at the second collector")
        wait_until(lambda: len(read_lines(out_up)) + len(read_lines(out_down)) >= sent, 120, what="every event")
    finally:
        codes = [agent.stop() for agent in agents]
    assert codes == [0, 0, 0]
    up, down = read_lines(out_up), read_lines(out_down)
    assert sorted(up + down, key=int) == [str(n).encode() for n in range(sent)]
    assert "k2" in agents[1].output() and "failed" in agents[1].output()
