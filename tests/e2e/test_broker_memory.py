"""A broker out of memory (Redis ``maxmemory`` with ``noeviction``) refuses puts; that is a full channel for the
sources (issue 8, item 8, the broker part): HTTP 503 and retry, never a 500 with a traceback, never a partial put,
and the flow resumes once the sinks have drained."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from agents import AgentProcess, port_open, read_lines, wait_until

from app.broker import free_port
from app.celery_app import create_app
from core.config import parse_agent
from core.errors import BrokerOutOfMemory, ChannelFullError
from core.event import Batch
from core.settings import Settings
from routing import transport
from routing.processor import ChannelWriter
from routing.transport import read_sizes


def post(port: int, events: list[dict]) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps(events).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()

CONF = """
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1 c2
a1.channels.c1.type = memory
a1.channels.c1.capacity = 100000
a1.channels.c1.transactionCapacity = 10
a1.channels.c2.type = memory
a1.channels.c2.capacity = 100000
a1.channels.c2.transactionCapacity = 10
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
a1.sinks.k1.batchSize = 10
"""


@pytest.fixture
def small_broker(redis_server):
    """The test's own Redis, given 6 MB of memory and no eviction (as the embedded broker is configured)."""
    client = redis_server.client()
    client.config_set("maxmemory", 6 * 1024 * 1024)
    client.config_set("maxmemory-policy", "noeviction")
    return redis_server


@pytest.mark.parametrize("limit", ["headroom", "maxmemory"])
def test_a_put_refused_for_memory_is_a_full_channel_and_writes_nothing(limit, small_broker, monkeypatch):
    """Puts stop short of maxmemory (``headroom``); a burst past that is refused by Redis itself (``maxmemory``,
    here forced by not looking at the broker's memory): both are a full channel, and neither writes a part."""
    if limit == "maxmemory":
        monkeypatch.setattr(transport.MemoryGauge, "check", lambda gauge, client, nbytes: None)
    config = parse_agent(CONF, "a1")
    writer = ChannelWriter(create_app(Settings(broker_url=small_broker.url)), config, small_broker.url, {})
    client = small_broker.client()
    body = b"x" * 50_000
    try:
        with pytest.raises(BrokerOutOfMemory) as refused:
            for i in range(200):  # noqa: B007 (i counts the accepted puts, read below)  200 x 2 x 10 x 50 kB > 6 MB
                writer.put({"c1": Batch([body] * 10), "c2": Batch([body] * 10)})
        sizes = read_sizes(client, "flumery.a1")
        lengths = client.llen("flumery.a1.c1"), client.llen("flumery.a1.c2")
    finally:
        writer.close()
    assert isinstance(refused.value, ChannelFullError)       # what every source already treats as "push back"
    assert "out of memory" in str(refused.value)
    assert ("short of maxmemory" in str(refused.value)) == (limit == "headroom")
    assert 0 < i < 200
    assert sizes == {"c1": 10 * i, "c2": 10 * i}             # every accepted put complete, the refused one absent
    assert lengths == (i, i)


HTTP_CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.channels.c1.capacity = 1000000
a1.channels.c1.transactionCapacity = 100
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.batchSize = 100
a1.sinks.k1.channel = c1
"""


def test_http_source_answers_503_when_the_embedded_broker_is_full_and_recovers(tmp_path):
    """The store is down, so events pile up in the embedded broker until near its maxmemory (8 MB here): then requests
    are answered 503, not 500, and nothing acknowledged is lost.  The store comes back, the sink drains, and
    requests are accepted again."""
    port, out = free_port(), tmp_path / "out"
    out.write_text("the store is down: a file where the sink's directory should be\n")
    with AgentProcess(tmp_path, HTTP_CONF.format(port=port, out=out),
                      env={"FLUMERY_BROKER_MAXMEMORY": "8mb"}) as agent:
        accepted: list[int] = []
        answers: list[tuple[int, str]] = []
        wait_until(lambda: port_open(port), 60, what="the http source")
        for i in range(800):                          # 800 x 20 kB = 16 MB: twice the broker's memory
            answers.append(post(port, [{"body": f"{i}:" + "y" * 20_000}]))
            if answers[-1][0] == 200:
                accepted.append(i)
            else:
                break
        out.unlink()                                  # the store is back
        wait_until(lambda: len(read_lines(out)) >= len(accepted), 120, what="the accepted events")
        after = wait_until(lambda: post(port, [{"body": "after"}])[0] == 200, 60, what="a request accepted again")
    status, reason = answers[-1]
    assert status == 503 and "out of memory" in reason, answers[-1]
    assert 20 < len(accepted) < 800
    assert after
    delivered = {line.split(b":")[0] for line in read_lines(out)}
    assert {str(i).encode() for i in accepted} <= delivered
    assert "Traceback" not in agent.output(), agent.output()[-3000:]
