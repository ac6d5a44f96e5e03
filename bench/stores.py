#!/usr/bin/env python3
"""Benchmark: 1,000,000 web-server access-log lines into each keyed store, beside file_roll, in one run.

    python bench/stores.py [--lines 1000000] [--only file_roll elasticsearch mongodb hbase] [--work DIR]

Every run is ``exec`` (``cat LOG``) -> ``file`` channel (embedded Redis, appendfsync always) -> one sink, with the
same batch sizes (source 1000, channel transactionCapacity 10000, sink 10000).  The stores are the stand-ins of
tests/stores.py (osmem-server for Elasticsearch, secantusdb for MongoDB, the tests' Thrift gateway for HBase),
each started fresh on a free port.  The clock starts when the agent command starts (broker and worker start-up
included) and stops when the store holds every line: file_roll's files hold every byte; Elasticsearch and
MongoDB count every document; for HBase, whose gateway cannot count rows cheaply, the sink's
EventDrainSuccessCount reaches the line count (a drain is counted only after the gateway confirmed it).  Each
run then checks that the store holds each line exactly once.

The lines are made by ``bench/make_access_log.py`` (combined log format, ~138 bytes a line, seeded).
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from stores import ElasticsearchProbe, HBaseProbe, MongoProbe  # noqa: E402

from app.broker import free_port  # noqa: E402

PROBES = {"elasticsearch": ElasticsearchProbe, "mongodb": MongoProbe, "hbase": HBaseProbe}

CONF = """\
b.sources = r1
b.channels = c1
b.sinks = k1
b.sources.r1.channels = c1
b.sources.r1.type = exec
b.sources.r1.command = cat {log}
b.sources.r1.batchSize = 1000
b.channels.c1.type = file
b.channels.c1.capacity = 200000
b.channels.c1.transactionCapacity = 10000
{sink}"""

FILE_ROLL = """\
b.sinks.k1.type = file_roll
b.sinks.k1.channel = c1
b.sinks.k1.sink.directory = {out}
b.sinks.k1.sink.rollInterval = 0
b.sinks.k1.sink.batchSize = 10000
"""

def drained(metrics_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as response:
            data = json.load(response)
        return int(data.get("SINK.k1", {}).get("EventDrainSuccessCount", 0))
    except (OSError, ValueError):
        return 0


def run(work: Path, log: Path, sink_conf: str, done, poll_s: float = 0.1, timeout_s: float = 1800) -> float:
    """Seconds from the agent's start until ``done()``, asked every ``poll_s``."""
    shutil.rmtree(work / "data", ignore_errors=True)
    conf = work / "bench.conf"
    conf.write_text(CONF.format(log=log, sink=sink_conf))
    metrics_port = free_port()
    cmd = [sys.executable, "-m", "app.cli", "agent", "-f", str(conf), "-n", "b", "--data-dir", str(work / "data"),
           "--log-level", "WARNING", "--metrics-port", str(metrics_port)]
    started = time.monotonic()
    agent = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(work / "agent.log", "w"))
    try:
        while not done(metrics_port):
            if agent.poll() is not None:
                raise RuntimeError(f"the agent exited with {agent.returncode} (see {work / 'agent.log'})")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError("timed out")
            time.sleep(poll_s)
        return time.monotonic() - started
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(120)


def bench_file_roll(work: Path, log: Path, lines: int) -> float:
    out = work / "file_roll-out"
    shutil.rmtree(out, ignore_errors=True)
    size = log.stat().st_size
    seconds = run(work, log, FILE_ROLL.format(out=out),
                  lambda _: sum(p.stat().st_size for p in out.glob("*")) >= size)
    got = Counter(line for p in out.glob("*") for line in p.read_bytes().splitlines())
    check("file_roll", got, log)
    return seconds


def bench_store(kind: str, work: Path, log: Path, lines: int) -> float:
    probe = PROBES[kind](work / kind).start()
    try:
        # Generous request timeouts: a 10,000-event write may take seconds on a busy 2-core machine.
        overrides = {"elasticsearch": {"requestTimeout": "120000"}, "mongodb": {"timeout": "120000"},
                     "hbase": {"timeout": "120000"}}[kind]
        sink = probe.sink_conf("b", "k1", "c1", batch_size=10000, **overrides)
        if kind == "hbase":
            done = lambda port: drained(port) >= lines                  # noqa: E731
        else:
            done = lambda _: probe.count() >= lines                     # noqa: E731
        # Counting in a store costs it work (a refresh, a count): ask once a second, not ten times.
        seconds = run(work, log, sink, done, poll_s=1.0)
        check(kind, Counter(probe.bodies()), log)
        return seconds
    finally:
        probe.stop()


def check(name: str, got: Counter, log: Path) -> None:
    want = Counter(log.read_bytes().splitlines())
    if got != want:
        missing = sum((want - got).values())
        extra = sum((got - want).values())
        raise SystemExit(f"FAIL: {name} holds {sum(got.values()):,} lines: {missing:,} missing, {extra:,} extra")
    print(f"{name}: all {sum(got.values()):,} lines stored exactly once", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--only", nargs="*", choices=["file_roll", *PROBES], help="runs to do (default: all)")
    parser.add_argument("--work", help="working directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="flumery-bench-stores-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "access.log"
    subprocess.run([sys.executable, str(REPO / "bench" / "make_access_log.py"), str(log), str(args.lines)],
                   check=True)
    size = log.stat().st_size
    print(f"workload: {args.lines:,} lines, {size / 2**20:.1f} MiB", flush=True)
    rows = []
    for name in args.only or ["file_roll", *PROBES]:
        seconds = (bench_file_roll(work, log, args.lines) if name == "file_roll"
                   else bench_store(name, work, log, args.lines))
        rows.append(f"| {name} | {seconds:.1f} | {args.lines / seconds:,.0f} | {size / seconds / 2**20:.1f} |")
        print(rows[-1], flush=True)
    print("\n| sink | seconds | events/s | MiB/s |\n|---|---|---|---|\n" + "\n".join(rows))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
