#!/usr/bin/env python3
"""Benchmark: events/s of one agent on a single Redis vs on Redis Sentinel, i.e. what the replicated put
(Redis ``WAIT``) costs.

    python bench/sentinel_wait.py [--repeats 3] [--seconds 10] [--clients 4] [--batch 100] [--replicas 2]
                             [--appendfsync everysec] [--modes single sentinel:0 sentinel:1] [--work DIR]

Starts everything itself on free ports: a redis-server for ``single``, and a Sentinel deployment (a master,
``--replicas`` replicas, three sentinels: ``tests/sentinel.py``, the one the tests use) for ``sentinel:N``, where
N is ``FLUMERY_MIN_REPLICAS``: 0 = replicated asynchronously, no ``WAIT``; 1 = every put into the ``file`` channel
waits until one replica holds it (the default under Sentinel).  Every server runs with ``appendonly yes`` and the
same ``--appendfsync``.  For each mode and repeat (the modes interleaved, so that the machine's load drifts over
all of them alike) one agent runs ``http`` source -> ``file`` channel -> ``null`` sink; ``--clients`` threads of
this process POST batches of ``--batch`` small events on keep-alive connections for ``--seconds``, and the rate is
the events answered 200, counted by the clients' own clock.  After each run the bench waits until the sink
drained every acknowledged event (its ``EventDrainSuccessCount``) and fails if one is missing.

Prints one line per run, then a Markdown table: per mode the median and the range of the repeats, and the ratio
to ``single``.  The clients share the machine's cores with the agent and the Redis processes (2 cores here), so
compare modes within one run, not across machines.
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from agents import AgentProcess, port_open, wait_until  # noqa: E402
from conftest import RedisServer  # noqa: E402
from sentinel import SentinelDeployment  # noqa: E402

from app.broker import free_port  # noqa: E402

CONF = """
b.sources = r1
b.channels = c1
b.sinks = k1
b.sources.r1.type = http
b.sources.r1.bind = 127.0.0.1
b.sources.r1.port = {port}
b.sources.r1.channels = c1
b.channels.c1.type = file
b.channels.c1.capacity = 100000000
b.channels.c1.transactionCapacity = 100000
b.sinks.k1.type = null
b.sinks.k1.batchSize = 1000
b.sinks.k1.channel = c1
"""


def client(port: int, body: bytes, batch: int, until: float, counts: list, errors: list) -> None:
    """POST ``body`` (``batch`` events) until ``until``; appends the events answered 200 and the other answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    accepted = refused = 0
    try:
        while time.monotonic() < until:
            connection.request("POST", "/", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                accepted += batch
            else:
                refused += 1
    except Exception as exc:                      # the run fails: a client that died measured nothing
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
        counts.append((accepted, refused))


def drained(metrics_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        return int(json.load(response)["SINK.k1"]["EventDrainSuccessCount"])


def one_run(work: Path, broker_url: str, min_replicas: int, args) -> tuple[float, int]:
    """events/s accepted by one agent on ``broker_url``, and the requests not answered 200."""
    port, metrics_port = free_port(), free_port()
    agent = AgentProcess(work, CONF.format(port=port), name="b", broker_url=broker_url,
                         extra=["--metrics-port", str(metrics_port), "--metrics-bind", "127.0.0.1"],
                         env={"FLUMERY_MIN_REPLICAS": str(min_replicas)})
    body = json.dumps([{"headers": {"host": "web1"}, "body": f"GET /index.html 200 {i}"}
                       for i in range(args.batch)]).encode()
    with agent:
        wait_until(lambda: port_open(port) or agent.process.poll() is not None, 60, what="the http source")
        assert agent.process.poll() is None, agent.output_tail()
        counts: list = []
        errors: list = []
        client(port, body, args.batch, time.monotonic() + 1.0, [], errors)              # warm-up, not counted
        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(port, body, args.batch, started + args.seconds, counts,
                                                         errors)) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(args.seconds + 60)
        elapsed = time.monotonic() - started
        if errors or len(counts) != args.clients:
            raise SystemExit(f"a client failed: {errors or 'it never finished'}")
        accepted = sum(a for a, _ in counts)
        refused = sum(r for _, r in counts)
        # Nothing acknowledged may be missing (the warm-up's events were acknowledged too).
        wait_until(lambda: drained(metrics_port) >= accepted, 120, what=f"the sink to drain {accepted} events")
    return accepted / elapsed, refused


def deployment(mode: str, work: Path, args):
    """(broker URL, FLUMERY_MIN_REPLICAS, stop) for ``single`` or ``sentinel:N``."""
    if mode == "single":
        server = RedisServer(work / "redis", args.appendfsync).start(timeout_s=30)
        return server.url, 0, server.stop
    kind, _, replicas = mode.partition(":")
    if kind != "sentinel" or not replicas.isdigit():
        raise SystemExit(f"--modes: unknown mode {mode!r} (single, sentinel:N)")
    sentinel = SentinelDeployment(work / "sentinel", replicas=args.replicas, appendfsync=args.appendfsync).start()
    return sentinel.url(), int(replicas), sentinel.stop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="events per POST (one put transaction)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas in the Sentinel deployment")
    parser.add_argument("--appendfsync", default="everysec", choices=("always", "everysec", "no"))
    parser.add_argument("--modes", nargs="+", default=["single", "sentinel:0", "sentinel:1"])
    parser.add_argument("--work", type=Path, help="directory for the servers' and agents' files (default: temp)")
    args = parser.parse_args()
    results: dict[str, list[float]] = {mode: [] for mode in args.modes}
    refused: dict[str, int] = dict.fromkeys(args.modes, 0)
    with tempfile.TemporaryDirectory(prefix="flumery-bench-sentinel-", dir=args.work) as tmp:
        for repeat in range(args.repeats):
            for mode in args.modes:
                work = Path(tmp) / f"{mode.replace(':', '-')}-{repeat}"
                work.mkdir(parents=True)
                url, min_replicas, stop = deployment(mode, work, args)
                try:
                    rate, not_ok = one_run(work, url, min_replicas, args)
                finally:
                    stop()
                results[mode].append(rate)
                refused[mode] += not_ok
                print(f"run {repeat + 1}/{args.repeats} {mode}: {rate:,.0f} events/s, {not_ok} requests not 200",
                      flush=True)
    base = statistics.median(results["single"]) if "single" in results else None
    print(f"\n{args.clients} clients x {args.batch} event(s) per POST, {args.seconds:g} s per run, "
          f"{args.repeats} repeats, appendfsync {args.appendfsync}, {args.replicas} replicas under Sentinel\n")
    print("| Redis | FLUMERY_MIN_REPLICAS | events/s (median) | range | vs single | requests not 200 |")
    print("|---|---|---|---|---|---|")
    for mode, rates in results.items():
        median = statistics.median(rates)
        ratio = f"{median / base:.2f}" if base else "-"
        label, wait = ("single", "0") if mode == "single" else ("Sentinel", mode.partition(":")[2])
        print(f"| {label} | {wait} | {median:,.0f} | {min(rates):,.0f}–{max(rates):,.0f} | {ratio} | "
              f"{refused[mode]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
