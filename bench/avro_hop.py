#!/usr/bin/env python3
"""Benchmark: events/s over one avro hop, Flumery beside Avro's own Java IPC on the same machine.

    python bench/avro_hop.py [--events 200000] [--batches 100 1000] [--work DIR]

* **Flumery**: a tier-1 agent (``seq`` source -> ``file`` channel -> ``avro`` sink, ``batch-size`` = the batch)
  sends to a collector agent (``avro`` source -> ``memory`` channel -> ``null`` sink).  The tier-1 channel is
  filled first (``--role sources``), then its sink worker starts (``--role sinks``); the rate is measured at the
  collector's null sink (its EventDrainSuccessCount, read from the collector's ``/metrics`` every 0.1 s; counters
  reach it about once a second, so the clock runs from the first to the last change seen).  Each event crosses
  two put transactions (tier-1 channel take + collector channel put, both in Redis) and the wire.
* **Java peer** (the wire's ceiling here): ``AvroPeer client`` (NettyTransceiver + GenericRequestor, appendBatch
  of the same batch size, synchronous, one connection) to ``AvroPeer server`` (NettyServer + GenericResponder
  that only counts): the client's own clock.

Bodies are short in both (seq numbers; ``java-<n>``).  Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import avro_peer  # noqa: E402
from agents import AgentProcess, port_open, wait_until  # noqa: E402

from app.broker import free_port  # noqa: E402

COLLECTOR = """
c.sources = r1
c.channels = ch
c.sinks = k1
c.sources.r1.type = avro
c.sources.r1.bind = 127.0.0.1
c.sources.r1.port = {port}
c.sources.r1.channels = ch
c.channels.ch.type = memory
c.channels.ch.capacity = 100000
c.channels.ch.transactionCapacity = 1000
c.sinks.k1.type = null
c.sinks.k1.batchSize = {batch}
c.sinks.k1.channel = ch
"""

TIER1 = """
t.sources = r1
t.channels = c1
t.sinks = k1
t.sources.r1.type = seq
t.sources.r1.totalEvents = {events}
t.sources.r1.batchSize = {batch}
t.sources.r1.channels = c1
t.channels.c1.type = file
t.channels.c1.capacity = {events}
t.channels.c1.transactionCapacity = 1000
t.sinks.k1.type = avro
t.sinks.k1.hostname = 127.0.0.1
t.sinks.k1.port = {port}
t.sinks.k1.batch-size = {batch}
t.sinks.k1.channel = c1
"""


def metric(port: int, component: str, name: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return int(json.load(response).get(component, {}).get(name, "0"))


def flumery_hop(work: Path, events: int, batch: int) -> float:
    port, metrics = free_port(), free_port()
    for d in ("collector", "tier1"):
        (work / d).mkdir(parents=True)
    collector = AgentProcess(work / "collector", COLLECTOR.format(port=port, batch=batch), name="c",
                             extra=["--metrics-port", str(metrics), "--log-level", "WARNING"]).start()
    tier1_conf = TIER1.format(events=events, batch=batch, port=port)
    sources = AgentProcess(work / "tier1", tier1_conf, name="t", role="sources").start()
    sinks = None
    try:
        wait_until(lambda: port_open(port) and port_open(metrics), 60, what="the collector")
        broker = sources.broker_url()
        wait_until(lambda: _channel_full(broker, events), 300, 0.2,
                   what="the tier-1 channel filled")
        sinks = AgentProcess(work / "tier1", tier1_conf, name="t", role="sinks", broker_url=broker,
                             extra=["--log-level", "WARNING"])
        sinks.start()
        first = last = None
        seen = 0
        deadline = time.monotonic() + 600
        while seen < events and time.monotonic() < deadline:
            count = metric(metrics, "SINK.k1", "EventDrainSuccessCount")
            now = time.monotonic()
            if count != seen:
                if first is None:
                    first = (now, count)
                last, seen = (now, count), count
            time.sleep(0.1)
        if seen < events or first is None or last[0] == first[0]:
            raise RuntimeError(f"the collector drained {seen} of {events} events")
        return (last[1] - first[1]) / (last[0] - first[0])
    finally:
        if sinks:
            sinks.stop()
        sources.stop()
        collector.stop()


def _channel_full(broker_url: str, events: int) -> bool:
    import redis
    size = redis.Redis.from_url(broker_url).hget("flumery.t:sizes", "c1")
    return size is not None and int(size) >= events


def java_hop(events: int, batch: int) -> float:
    server = avro_peer.JavaServer(None).start()
    try:
        result = avro_peer.run_client("127.0.0.1", server.port, events, batch)
    finally:
        server.stop()
    if result.returncode != 0 or not result.stdout.startswith("SENT "):
        raise RuntimeError(f"the Java peer client failed: {result.stdout} {result.stderr[-500:]}")
    _, sent, seconds = result.stdout.split()
    return int(sent) / float(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batches", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    rows = []
    for batch in args.batches:
        with tempfile.TemporaryDirectory(prefix="flumery-bench-avro-", dir=args.work) as tmp:
            flumery = flumery_hop(Path(tmp), args.events, batch)
        java = java_hop(args.events, batch)
        rows.append(f"| {batch} | {args.events:,} | {flumery:,.0f} | {java:,.0f} |")
        print(rows[-1], flush=True)
    print("\n| batch | events | Flumery tier-1 -> collector -> null (events/s) "
          "| Java peer client -> server (events/s) |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
