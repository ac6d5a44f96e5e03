#!/usr/bin/env python3
"""Benchmark: the channel put path alone, without HTTP: concurrent one-event puts through one ChannelWriter.

    python bench/put_path.py [--threads 16] [--seconds 5] [--appendfsync always]

Starts its own redis-server (``appendfsync always``, as a ``file`` channel on the embedded broker), then
``--threads`` threads each put one-event batches (``ChannelWriter.put``, as an HTTP source's worker threads do)
for ``--seconds``; prints puts per second, the number of PUT script calls and their mean duration, and so the mean
number of puts committed per call (group commit), and Redis's own time per script call (``INFO commandstats``).  Runs on commits before group commit too (then one call per put).
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import RedisServer  # noqa: E402
from workdir import work_dir  # noqa: E402

from app.celery_app import create_app  # noqa: E402
from core.config import parse_agent  # noqa: E402
from core.event import Batch  # noqa: E402
from core.settings import Settings  # noqa: E402
from routing.processor import ChannelWriter  # noqa: E402

CONF = """\
p.sources = r1
p.channels = c1
p.sinks = k1
p.sources.r1.type = seq
p.sources.r1.channels = c1
p.channels.c1.type = file
p.channels.c1.capacity = 100000000
p.sinks.k1.type = null
p.sinks.k1.channel = c1
"""


def count_calls(channel, calls: list) -> None:
    """Record (puts in the call, seconds) of every PUT script call the channel makes."""
    grouped = hasattr(channel, "put_transactions")
    name = "put_transactions" if grouped else "put_transaction"
    original = getattr(channel, name)

    def timed(exchange, items, **kwargs):
        start = time.perf_counter()
        try:
            return original(exchange, items, **kwargs)
        finally:
            calls.append((len(items) if grouped else 1, time.perf_counter() - start))

    setattr(channel, name, timed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    args = parser.parse_args()
    server = RedisServer(work_dir(None, "flumery-put-bench-"), appendfsync=args.appendfsync).start()
    writer = ChannelWriter(create_app(Settings(broker_url=server.url)), parse_agent(CONF, "p"), server.url, {})
    try:
        writer.put({"c1": Batch([b"warm-up"])})
        calls: list = []
        count_calls(writer.channel, calls)
        stop, done, failed = threading.Event(), [0] * args.threads, []

        def put(n: int) -> None:
            try:
                while not stop.is_set():
                    writer.put({"c1": Batch([b"GET /index.html 200 1043"], [{"host": "web1"}])})
                    done[n] += 1
            except Exception as exc:          # a thread that died must fail the run
                failed.append(exc)

        threads = [threading.Thread(target=put, args=(n,)) for n in range(args.threads)]
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        if failed:
            raise SystemExit(f"a putting thread failed: {failed[0]!r}")
        puts = sum(done)
        held = int(server.client().hget("flumery.p:sizes", "c1"))
        if held != puts + 1:
            raise SystemExit(f"the channel holds {held} events, {puts + 1} were put")
        evalsha = server.client().info("commandstats").get("cmdstat_evalsha", {})
        print(f"{args.threads} threads, appendfsync {args.appendfsync}: {puts / args.seconds:.0f} one-event puts/s; "
              f"{len(calls)} PUT calls of {1000 * sum(d for _, d in calls) / len(calls):.2f} ms on average, "
              f"{sum(n for n, _ in calls) / len(calls):.1f} puts per call; Redis INFO commandstats: EVALSHA "
              f"{evalsha.get('usec_per_call', 0):.0f} us per call inside Redis (fsync apart)")
        return 0
    finally:
        writer.close()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
