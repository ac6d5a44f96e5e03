#!/usr/bin/env python3
"""Benchmark: Redis memory per event of a backlog replicated into several channels.

    python bench/memory_replicated.py [--events 200000] [--copies 3] [--batch 1000]

Starts its own redis-server, then puts ``--events`` access-log lines (made by ``bench/make_access_log.py``'s
generator) in batches of ``--batch`` into ``--copies`` ``file`` channels through one ``ChannelWriter``, the way a
replicating selector hands every channel the same batch; no sink runs, so every event stays held in every channel.
Prints Redis ``INFO memory`` ``used_memory`` after minus before, per event (keys, lists, hashes and allocator
overhead included), and the mean body length.  Runs on commits before replicated batches were stored once too
(each channel then holds its own copy of the data).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

import make_access_log  # noqa: E402
from conftest import RedisServer  # noqa: E402
from workdir import work_dir  # noqa: E402

from app.celery_app import create_app  # noqa: E402
from core.config import parse_agent  # noqa: E402
from core.event import Batch  # noqa: E402
from core.settings import Settings  # noqa: E402
from routing.processor import ChannelWriter  # noqa: E402


def conf(copies: int, batch: int) -> str:
    names = [f"c{n}" for n in range(1, copies + 1)]
    return (f"m.sources = r1\nm.channels = {' '.join(names)}\nm.sinks = k1\nm.sources.r1.type = seq\n"
            f"m.sources.r1.channels = {' '.join(names)}\nm.sinks.k1.type = null\nm.sinks.k1.channel = c1\n"
            + "".join(f"m.channels.{n}.type = file\nm.channels.{n}.capacity = 100000000\n"
                      f"m.channels.{n}.transactionCapacity = {batch}\n" for n in names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    lines = [line.rstrip("\n").encode() for line in make_access_log.lines(0, args.events)]
    server = RedisServer(work_dir(None, "flumery-memrep-bench-")).start()
    writer = ChannelWriter(create_app(Settings(broker_url=server.url)), parse_agent(conf(args.copies, args.batch), "m"),
                           server.url, {})
    try:
        client = server.client()
        before = client.info("memory")["used_memory"]
        for start in range(0, len(lines), args.batch):
            batch = Batch(lines[start:start + args.batch])
            writer.put({f"c{n}": batch for n in range(1, args.copies + 1)})
        used = client.info("memory")["used_memory"] - before
        held = {k: int(v) for k, v in client.hgetall("flumery.m:sizes").items()}
        if sorted(held.values()) != [args.events] * args.copies:
            raise SystemExit(f"the channels hold {held}, not {args.events} events each")
    finally:
        writer.close()
        server.stop()
    body = sum(map(len, lines)) / len(lines)
    print(f"{args.events:,} events in batches of {args.batch:,}, held in {args.copies} channel(s): "
          f"{used / args.events:,.0f} bytes per event (mean body {body:.0f} bytes; "
          f"{used / args.events / args.copies:,.0f} per event per channel)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
