"""Flume's counters live and die with their component: they start at 0 when the agent starts (not where a
previous run left them in Redis), a sink's StartTime is its start (not its first event), the dead-letter channel
has a StartTime and no made-up capacity, and the HTTP source counts one append batch per request."""
from __future__ import annotations

import json
import time
import urllib.request

from agents import AgentProcess, port_open, wait_until
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
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
"""
NOT_COUNTS = ("StartTime", "StopTime", "Type", "ChannelCapacity", "ChannelFillPercentage", "ChannelSize")


def metrics(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return json.load(response)
    except OSError:
        return None


def counts(doc: dict) -> dict[str, str]:
    return {f"{component}.{name}": value for component, values in doc.items() for name, value in values.items()
            if name not in NOT_COUNTS}


def test_counters_start_at_zero_when_the_agent_starts_again(tmp_path, redis_server):
    http, web = free_port(), free_port()
    first = AgentProcess(tmp_path, CONF.format(port=http), broker_url=redis_server.url,
                         extra=["--metrics-port", str(web)]).start()
    try:
        wait_until(lambda: port_open(http), 30, what="the http source")
        assert post(http, [{"body": "a"}, {"body": "b"}, {"body": "c"}]) == 200
        assert post(http, [{"body": "d"}, {"body": "e"}, {"body": "f"}]) == 200
        doc = wait_until(lambda: (lambda d: d if d and d["SINK.k1"]["EventDrainSuccessCount"] == "6" else None)(
            metrics(web)), 30, what="the 6 events drained")
    finally:
        first_stopped = first.stop()
    assert first_stopped == 0
    source = doc["SOURCE.r1"]
    assert (source["EventReceivedCount"], source["EventAcceptedCount"]) == ("6", "6")
    assert (source["AppendBatchReceivedCount"], source["AppendBatchAcceptedCount"]) == ("2", "2")   # per request
    first_start = int(source["StartTime"])

    second = AgentProcess(tmp_path, CONF.format(port=http), broker_url=redis_server.url,
                          extra=["--metrics-port", str(web)]).start()
    try:
        again = wait_until(lambda: metrics(web), 30, what="the metrics of the restarted agent")
    finally:
        second_stopped = second.stop()
    assert second_stopped == 0
    assert set(counts(again).values()) == {"0"}, {k: v for k, v in counts(again).items() if v != "0"}
    assert int(again["SOURCE.r1"]["StartTime"]) > first_start


def test_sinks_and_the_dead_letter_channel_start_with_the_agent(tmp_path, redis_server):
    http, web = free_port(), free_port()
    started = time.time() * 1000
    agent = AgentProcess(tmp_path, CONF.format(port=http), broker_url=redis_server.url,
                         extra=["--metrics-port", str(web)]).start()
    try:
        doc = wait_until(lambda: (lambda d: d if d and d["SINK.k1"]["StartTime"] != "0" else None)(metrics(web)),
                         30, what="the sink's StartTime, with no event sent")
    finally:
        stopped = agent.stop()
    assert stopped == 0
    assert started <= int(doc["SINK.k1"]["StartTime"]) <= time.time() * 1000
    dead = doc["CHANNEL.__dead__"]
    assert started <= int(dead["StartTime"]) <= time.time() * 1000
    assert dead["ChannelSize"] == "0" and "ChannelCapacity" not in dead and "ChannelFillPercentage" not in dead
    assert doc["CHANNEL.c1"]["ChannelCapacity"] == "100"
