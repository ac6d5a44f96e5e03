#!/usr/bin/env python3
"""Benchmark: the HTTP source's latency and request rate, one event per request.

    python bench/http_single.py [--latency-requests 2000] [--clients 16] [--seconds 10] [--large-mb 60]
                                [--work DIR]

Starts its own agent (embedded Redis, ``http`` source -> ``memory`` channel -> ``null`` sink) and measures:

1. latency at low load: one client, one keep-alive connection, ``--latency-requests`` sequential POSTs of one
   small JSON event; prints p50 / p99 / max in milliseconds;
2. throughput: ``--clients`` keep-alive clients (threads, ``http.client``) posting one event per request for
   ``--seconds``; prints requests/s and how many answers were not 200;
3. memory (with ``--large-mb N``): the agent process's resident memory before, and its high-water mark after,
   one request of N MB (events of ~1 kB), from ``/proc/<pid>/status``: what one large request costs the agent.

Every request must be answered 200 (the channel is large and drained by the null sink); the run fails otherwise.
The clients run in this process, so on a 2-core machine they compete with the agent for CPU: compare figures
taken on the same machine with the same command, not across machines.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CONF = """\
b.sources = r1
b.channels = c1
b.sinks = k1
b.sources.r1.type = http
b.sources.r1.bind = 127.0.0.1
b.sources.r1.port = {port}
b.sources.r1.channels = c1
b.channels.c1.type = memory
b.channels.c1.capacity = 10000000
b.channels.c1.transactionCapacity = 100000
b.sinks.k1.type = null
b.sinks.k1.channel = c1
b.sinks.k1.batchSize = 1000
"""

BODY = json.dumps([{"headers": {"host": "web1"}, "body": "GET /index.html 200 1043"}]).encode()
HEADERS = {"Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the agent exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the agent's http source did not open its port")


def post(conn: http.client.HTTPConnection) -> int:
    conn.request("POST", "/", body=BODY, headers=HEADERS)
    response = conn.getresponse()
    response.read()
    return response.status


def latency(port: int, requests: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(50):                                  # warm-up: connections, scripts loaded
        post(conn)
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        status = post(conn)
        times.append(time.perf_counter() - start)
        if status != 200:
            raise SystemExit(f"latency run: answer {status}")
    conn.close()
    return times


def throughput(port: int, clients: int, seconds: float) -> tuple[int, int]:
    done = [0] * clients
    bad = [0] * clients
    stop = threading.Event()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            if post(conn) == 200:
                done[n] += 1
            else:
                bad[n] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(done), sum(bad)


def large_request(port: int, megabytes: int) -> tuple[int, int]:
    """(status, body bytes) of one POST of ``megabytes`` MB of ~1 kB events."""
    count = megabytes * 2**20 // 1000
    body = json.dumps([{"body": "x" * 985}] * count).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/", body=body, headers=HEADERS)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, len(body)


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--large-mb", type=int, default=0, help="also measure one request of this many MB")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="flumery-http-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = work / "bench.conf"
    conf.write_text(CONF.format(port=port))
    log = open(work / "agent.log", "wb")
    agent = subprocess.Popen([sys.executable, "-m", "app.cli", "agent", "-f", str(conf), "-n", "b",
                              "--data-dir", str(work / "data")], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        wait_for_port(port, agent)
        times = latency(port, args.latency_requests)
        print(f"latency, 1 client, {len(times)} one-event POSTs on one keep-alive connection: "
              f"p50 {1000 * statistics.median(times):.2f} ms, p99 {1000 * percentile(times, 0.99):.2f} ms, "
              f"max {1000 * max(times):.2f} ms")
        ok, bad = throughput(port, args.clients, args.seconds)
        print(f"throughput, {args.clients} keep-alive clients, {args.seconds:.0f} s: "
              f"{ok / args.seconds:.0f} requests/s ({ok} answered 200, {bad} other)")
        if args.large_mb:
            before = memory_kb(agent.pid)
            status, size = large_request(port, args.large_mb)
            after = memory_kb(agent.pid)
            grew = after["VmHWM"] - before["VmRSS"]
            print(f"one request of {size / 2**20:.0f} MiB: answer {status}; agent resident {before['VmRSS'] // 1024} "
                  f"MiB before, high-water mark {after['VmHWM'] // 1024} MiB after (+{grew // 1024} MiB, "
                  f"{grew * 1024 / size:.1f}x the request)")
            bad += status != 200
        return 1 if bad else 0
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(60)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
