"""The http source in a real ``flumery agent`` against a real Redis: 503 means a full channel or a broker that is
down or out of memory, never a busy connection pool (issue 8)."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

from agents import AgentProcess, port_open, wait_until
from helpers import ReportingThread

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
a1.channels.c1.capacity = 1000000
a1.channels.c1.transactionCapacity = 1000
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
"""


def post(port: int, events: list[dict], timeout_s: float = 30) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps(events).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_200_concurrent_clients_are_all_answered_200(tmp_path, redis_server):
    # The old source shared kombu's pool of 10 Redis connections between a thread per request: 13 of 2,000
    # requests got 503 "Too many connections".
    port = free_port()
    with AgentProcess(tmp_path, CONF.format(port=port), broker_url=redis_server.url, role="sources") as agent:
        answers: list[tuple[int, str]] = []
        lock = threading.Lock()
        start = threading.Barrier(200)

        def client(n: int) -> None:
            start.wait()
            for i in range(10):
                answer = post(port, [{"headers": {"client": str(n)}, "body": f"{n}-{i}"}])
                with lock:
                    answers.append(answer)
        wait_until(lambda: port_open(port), 30, what="the http source")
        threads = [ReportingThread(client, name=f"client-{n}", args=(n,)) for n in range(200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    refused = [a for a in answers if a[0] != 200]
    assert refused == [] and len(answers) == 2000
    assert redis_server.client().hget("flumery.a1:sizes", "c1") == b"2000"
    assert "Too many connections" not in agent.output()


def test_broker_out_of_memory_is_503_and_loses_nothing(tmp_path, redis_server):
    # Redis refuses writes past its maxmemory ('noeviction'): the old source answered 500 with a traceback.
    port = free_port()
    with AgentProcess(tmp_path, CONF.format(port=port), broker_url=redis_server.url, role="sources") as agent:
        broker = redis_server.client()
        wait_until(lambda: port_open(port), 30, what="the http source")
        assert post(port, [{"body": "before"}])[0] == 200
        broker.config_set("maxmemory-policy", "noeviction")
        broker.config_set("maxmemory", broker.info("memory")["used_memory"] + 1_000_000)
        batch = [{"body": "x" * 1000}] * 100
        answers = [post(port, batch) for _ in range(20)]          # 2 MB of events for 1 MB of room
        broker.config_set("maxmemory", 0)
        after = post(port, [{"body": "after"}])
    statuses = [status for status, _ in answers]
    assert 503 in statuses and set(statuses) <= {200, 503}
    assert all("out of memory" in reason for status, reason in answers if status == 503)
    assert after[0] == 200
    held = int(broker.hget("flumery.a1:sizes", "c1"))
    assert held == 1 + 100 * statuses.count(200) + 1               # every 200 is there, nothing of a 503
    assert "Traceback" not in agent.output()
