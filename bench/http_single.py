#!/usr/bin/env python3
"""Benchmark: the HTTP source's latency and request rate, one event per request.

    python bench/http_single.py [--channel file] [--clients 1,16,64] [--seconds 10] [--latency-requests 2000]
                                [--load python|wrk] [--large-mb 60] [--work DIR]

Starts its own agent (embedded Redis, ``http`` source -> ``file`` (or ``memory``) channel -> ``null`` sink) and
measures:

1. latency at low load: one client, one keep-alive connection, ``--latency-requests`` sequential POSTs of one
   small JSON event; prints p50 / p99 / max in milliseconds;
2. for each count in ``--clients``: that many keep-alive clients (threads, ``http.client``) posting one event per
   request for ``--seconds``; prints requests/s, the latency p50 / p99 of those requests, how many answers
   were not 200, and the CPU time per request of the agent process (all its threads), of the embedded Redis, of
   the sink worker and of the clients; with ``--load wrk`` the clients are wrk's (a C load generator, one thread;
   ``apt-get install wrk``) instead of this process's Python threads, which on a small machine take about half
   as much CPU as the agent, and hold each other up on the GIL;
3. delivery: waits until the sink has drained every event acknowledged (the agent's ``EventDrainSuccessCount``
   equals the requests answered 200) and prints how long that took after the last request;
4. memory (with ``--large-mb N``): the agent process's resident memory before, and its high-water mark after,
   one request of N MB (events of ~1 kB), from ``/proc/<pid>/status``: what one large request costs the agent.

Every request must be answered 200 (the channel is large and drained by the null sink) and every acknowledged
event delivered; the run fails otherwise.  With the ``file`` channel the embedded broker fsyncs every put
(``appendfsync always``) before the answer.
The clients (this process's threads, or wrk) run on the same machine, so on a 2-core machine they compete with
the agent for CPU: compare figures taken on the same machine with the same command, not across machines.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from workdir import work_dir

REPO = Path(__file__).resolve().parent.parent

CONF = """\
b.sources = r1
b.channels = c1
b.sinks = k1
b.sources.r1.type = http
b.sources.r1.bind = 127.0.0.1
b.sources.r1.port = {port}
b.sources.r1.channels = c1
b.channels.c1.type = {channel}
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
        if post(conn) != 200:
            raise SystemExit("warm-up: an answer was not 200")
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        status = post(conn)
        times.append(time.perf_counter() - start)
        if status != 200:
            raise SystemExit(f"latency run: answer {status}")
    conn.close()
    return times


def throughput(port: int, clients: int, seconds: float) -> tuple[int, int, list[float]]:
    """(answered 200, other answers, latency of every request) of ``clients`` keep-alive clients."""
    done = [0] * clients
    bad = [0] * clients
    times: list[list[float]] = [[] for _ in range(clients)]
    failed: list[BaseException] = []
    stop = threading.Event()

    def client(n: int) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while not stop.is_set():
                start = time.perf_counter()
                status = post(conn)
                times[n].append(time.perf_counter() - start)
                if status == 200:
                    done[n] += 1
                else:
                    bad[n] += 1
            conn.close()
        except BaseException as exc:     # a client that died must fail the run, not lower the figure
            failed.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    if failed:
        raise SystemExit(f"a client failed: {failed[0]!r}")
    return sum(done), sum(bad), [t for one in times for t in one]


WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("result %d %d %d %d\\n", summary.requests, e.status,
                         e.connect + e.read + e.write + e.timeout, latency:percentile(50)))
  io.write(string.format("p99 %d\\n", latency:percentile(99)))
end
"""


def throughput_wrk(port: int, clients: int, seconds: float, work: Path) -> tuple[int, int, float, float]:
    """(answered 200, other answers, p50 and p99 latency in seconds) of ``clients`` wrk connections.  Socket
    errors (a connection reset, a timeout) fail the run, as a failed client does."""
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=BODY.decode()))
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{round(seconds)}s", "--timeout", "30s", "-s", str(script),
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith(("result ", "p99 ")))
    requests, not_2xx, socket_errors, p50_us = map(int, fields["result"].split())
    if socket_errors:
        raise SystemExit(f"wrk: {socket_errors} socket errors\n{out}")
    return requests - not_2xx, not_2xx, p50_us / 1e6, int(fields["p99"]) / 1e6


def metrics(metrics_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        return json.load(response)


def accepted_requests(metrics_port: int) -> int:
    """The http source's AppendBatchAcceptedCount: the requests it answered 200."""
    return int(metrics(metrics_port)["SOURCE.r1"]["AppendBatchAcceptedCount"])


def drained(metrics_port: int) -> int:
    """The null sink's EventDrainSuccessCount, from the agent's monitoring JSON."""
    return int(metrics(metrics_port)["SINK.k1"]["EventDrainSuccessCount"])


def wait_delivered(metrics_port: int, expected: int, timeout_s: float = 120) -> float:
    """Seconds until the sink has drained ``expected`` events; exits if it does not."""
    start = time.monotonic()
    while (count := drained(metrics_port)) < expected:
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"only {count} of {expected} acknowledged events delivered after {timeout_s:.0f} s")
        time.sleep(0.2)
    if count > expected:
        print(f"note: {count - expected} events delivered twice (at-least-once)")
    return time.monotonic() - start


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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clients_cpu_seconds() -> float:
    """CPU time of the clients: this process's (its client threads; the rest of it idles meanwhile) and that of
    its ended children (wrk)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def processes(agent: int) -> dict[str, int]:
    """The agent and its children (the embedded redis-server, the sink worker) by role: name -> pid."""
    with open(f"/proc/{agent}/task/{agent}/children") as children:
        pids = [int(p) for p in children.read().split()]
    found = {"agent": agent}
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            found["Redis" if b"redis-server" in cmdline.read() else "sink worker"] = pid
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-requests", type=int, default=2000)
    parser.add_argument("--channel", choices=("file", "memory"), default="file")
    parser.add_argument("--clients", default="1,16,64", help="comma-separated client counts, one run each")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--load", choices=("python", "wrk"), default="python",
                        help="the clients: this process's threads (http.client), or wrk (a C load generator)")
    parser.add_argument("--large-mb", type=int, default=0, help="also measure one request of this many MB")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    if args.load == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("--load wrk: wrk is not installed (apt-get install wrk)")
    work = work_dir(args.work, "flumery-http-bench-")
    port, metrics_port = free_port(), free_port()
    conf = work / "bench.conf"
    conf.write_text(CONF.format(port=port, channel=args.channel))
    log = open(work / "agent.log", "wb")
    agent = subprocess.Popen([sys.executable, "-m", "app.cli", "agent", "-f", str(conf), "-n", "b",
                              "--data-dir", str(work / "data"),
                              "--metrics-port", str(metrics_port), "--metrics-bind", "127.0.0.1"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        wait_for_port(port, agent)
        times = latency(port, args.latency_requests)
        print(f"latency, 1 client, {len(times)} one-event POSTs on one keep-alive connection: "
              f"p50 {1000 * statistics.median(times):.2f} ms, p99 {1000 * percentile(times, 0.99):.2f} ms, "
              f"max {1000 * max(times):.2f} ms")
        acked, bad = 50 + len(times), 0
        pids = processes(agent.pid)
        for clients in (int(c) for c in args.clients.split(",")):
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            cpu["load generator"] = load_generator_cpu = clients_cpu_seconds()
            if args.load == "wrk":
                ok, other, p50, p99 = throughput_wrk(port, clients, args.seconds, work)
            else:
                ok, other, took = throughput(port, clients, args.seconds)
                p50, p99 = statistics.median(took), percentile(took, 0.99)
            used = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
            used["load generator"] = clients_cpu_seconds() - load_generator_cpu
            per_request = ", ".join(f"{name} {1000 * seconds / max(1, ok + other):.3f}" for name, seconds in used.items())
            acked, bad = acked + ok, bad + other
            print(f"{args.channel} channel, {clients} keep-alive {args.load} clients, {args.seconds:.0f} s: "
                  f"{ok / args.seconds:.0f} requests/s, p50 {1000 * p50:.2f} ms, p99 {1000 * p99:.2f} ms "
                  f"({ok} answered 200, {other} other); CPU ms per request: {per_request}")
        if args.load == "wrk":
            # wrk drops the requests in flight when its time is up: the agent may have put (and answered) up to
            # one per connection more than wrk counted.  The agent's own count of accepted requests is checked,
            # once those requests are done (the count unchanged for half a second).
            accepted, last = accepted_requests(metrics_port), -1
            while accepted != last:
                time.sleep(0.5)
                accepted, last = accepted_requests(metrics_port), accepted
            if not acked <= accepted <= acked + sum(int(c) for c in args.clients.split(",")):
                raise SystemExit(f"the agent accepted {accepted} requests, wrk counted {acked} answered 200")
            acked = accepted
        waited = wait_delivered(metrics_port, acked)
        print(f"delivered: all {acked} acknowledged events drained by the sink ({waited:.1f} s after the last)")
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
