#!/usr/bin/env python3
"""Benchmark: Redis memory per event held in a channel when a source puts one event per request.

    python bench/memory_per_event.py [--events 20000] [--clients 8] [--channel file] [--work DIR]

Starts its own agent with ``--role sources`` (embedded Redis, ``http`` source -> channel; no sink runs, so every
event stays in the channel), posts ``--events`` requests of one small JSON event each (the body of every event is
the same ``BODY`` bytes), and prints:

* Redis ``INFO memory`` ``used_memory`` after minus before, divided by the number of events: what one held event
  costs, keys, lists, hash and allocator overhead included; and the same less the event body's bytes;
* how many channel messages hold them (requests of concurrent clients that the source hands over together are
  joined into one message; with ``--clients 1`` every message holds one event: the most memory per event),
  ``MEMORY USAGE`` of the channel's queue list per message, how many message keys (``flumery.msg:<tag>``) there
  are and, if any, the ``MEMORY USAGE`` of one (since small messages are queued whole in the list there are
  none; versions before that kept every message in a key of its own).

Every request must be answered 200 and the channel must hold exactly ``--events`` events; the run fails otherwise.
Runs against any version of Flumery that has the ``http`` source and ``--role``: check out an older commit and run
the same command to compare.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_single import free_port, wait_for_port  # noqa: E402  (bench/ is not a package)
from workdir import work_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

CONF = """\
m.sources = r1
m.channels = c1
m.sinks = k1
m.sources.r1.type = http
m.sources.r1.bind = 127.0.0.1
m.sources.r1.port = {port}
m.sources.r1.channels = c1
m.channels.c1.type = {channel}
m.channels.c1.capacity = 100000000
m.channels.c1.transactionCapacity = 1000
m.sinks.k1.type = null
m.sinks.k1.channel = c1
"""

BODY = "GET /index.html HTTP/1.1 200 1043"
REQUEST = json.dumps([{"headers": {"host": "web1"}, "body": BODY}]).encode()


def post_all(port: int, total: int, clients: int) -> None:
    """``total`` one-event POSTs from ``clients`` keep-alive connections; exits on any answer but 200."""
    failed: list[str] = []

    def client(count: int) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for _ in range(count):
                conn.request("POST", "/", body=REQUEST, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    failed.append(f"answer {response.status}")
                    return
            conn.close()
        except Exception as exc:        # a client that died must fail the run
            failed.append(repr(exc))

    shares = [total // clients + (1 if n < total % clients else 0) for n in range(clients)]
    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise SystemExit(f"a client failed: {failed[0]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--channel", choices=("file", "memory"), default="file")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    work = work_dir(args.work, "flumery-memory-bench-")
    port = free_port()
    conf = work / "bench.conf"
    conf.write_text(CONF.format(port=port, channel=args.channel))
    log = open(work / "agent.log", "wb")
    agent = subprocess.Popen([sys.executable, "-m", "app.cli", "agent", "-f", str(conf), "-n", "m", "--role",
                              "sources", "--data-dir", str(work / "data")], cwd=REPO, stdout=log,
                             stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        wait_for_port(port, agent)
        client = redis.Redis.from_url((work / "data" / "broker.url").read_text().strip())
        post_all(port, 100, 1)                    # warm-up: the channel's first message, scripts loaded
        time.sleep(0.5)
        before = client.info("memory")["used_memory"]
        warm_messages = client.llen("flumery.m.c1")
        post_all(port, args.events, args.clients)
        time.sleep(0.5)
        after = client.info("memory")["used_memory"]
        held = int(client.hget("flumery.m:sizes", "c1") or 0)
        if held != args.events + 100:
            raise SystemExit(f"the channel holds {held} events, expected {args.events + 100}")
        messages = client.llen("flumery.m.c1")
        listed = client.memory_usage("flumery.m.c1", samples=0) / messages
        keys = sum(1 for _ in client.scan_iter("flumery.msg:*", count=1000))
        tag = client.lindex("flumery.m.c1", 0)
        one = client.memory_usage(b"flumery.msg:" + tag) if keys else None
        per_event = (after - before) / args.events
        print(f"{args.events} one-event requests ({len(BODY)}-byte body) from {args.clients} clients in "
              f"{messages - warm_messages:,} messages of a {args.channel} channel: used_memory "
              f"+{(after - before) / 2 ** 20:.1f} MiB, {per_event:.0f} bytes per event "
              f"({per_event - len(BODY):.0f} beyond the body); the queue's list: {listed:.0f} bytes per message; "
              f"message keys: {keys}" + (f", MEMORY USAGE of one: {one} bytes" if one else ""))
        return 0
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
