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
from routing import codec
from routing.transport import connect

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


def test_concurrent_requests_into_a_channel_that_fills_are_each_put_whole_or_refused(tmp_path, redis_server):
    """32 clients at once (requests that arrive together are joined into one channel message, and retried one by
    one when the joined put does not fit) into a channel of 100 events with no sink: every request answered 200
    is in the channel whole and once, nothing of a request answered 503 is."""
    port = free_port()
    conf = CONF.format(port=port).replace("capacity = 1000000", "capacity = 100").replace(
        "transactionCapacity = 1000", "transactionCapacity = 100")
    with AgentProcess(tmp_path, conf, broker_url=redis_server.url, role="sources"):
        wait_until(lambda: port_open(port), 30, what="the http source")
        answers: dict[int, list[int]] = {}
        start = threading.Barrier(32)

        def client(n: int) -> None:
            start.wait()
            answers[n] = [post(port, [{"body": f"{n}-{i}-{j}"} for j in range(3)])[0] for i in range(4)]

        threads = [ReportingThread(client, name=f"client-{n}", args=(n,)) for n in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    accepted = {(n, i) for n, statuses in answers.items() for i, status in enumerate(statuses) if status == 200}
    statuses = [status for codes in answers.values() for status in codes]
    assert len(statuses) == 128 and set(statuses) == {200, 503}, "the channel should have filled midway"
    connection = connect(redis_server.url, {})
    try:
        held = [body for message in connection.default_channel.peek("flumery.a1.c1", 1000)
                for body in codec.decode_stored(message)[1].bodies]
    finally:
        connection.release()
    expected = sorted(f"{n}-{i}-{j}".encode() for n, i in accepted for j in range(3))
    assert sorted(held) == expected and len(held) == 3 * len(accepted) <= 100
    assert redis_server.client().hget("flumery.a1:sizes", "c1") == str(len(held)).encode()
