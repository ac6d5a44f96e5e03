#!/usr/bin/env python3
"""Benchmark: the access log through TAILDIR -> file channel -> hdfs on a local real HDFS, beside file_roll.

    python bench/hdfs.py [--lines 1000000] [--default-rolling-lines 1000] [--work DIR]

Starts a Hadoop 2.7.3 NameNode + DataNode (tests/hadoop.py: the jars of the pyspark 2.4.8 sdist, Java 17,
Debian's Jersey 1; one DataNode, replication 1), writes the 1,000,000-line access log (bench/make_access_log.py),
then runs three agents one after the other, each timed from its start until every byte is in the store:

1. TAILDIR -> file channel -> ``file_roll`` (fsync per batch of 10,000), the local reference;
2. TAILDIR -> file channel -> ``hdfs`` (``hdfs://`` through WebHDFS, DataStream, large rolls: ``rollCount`` 0,
   ``rollSize`` 0, ``rollInterval`` 0, ``batchSize`` 10,000): one WebHDFS append per batch, each confirmed;
3. the same with Flume's default rolling (``rollCount`` 10, ``rollSize`` 1024, ``rollInterval`` 30, ``batchSize``
   100) on the first ``--default-rolling-lines`` lines only (at 10 events a file, 1,000,000 lines are 100,000
   files), to show what Flume's defaults cost.

Every run is checked: the store holds exactly the log's lines, each once.
"""
from __future__ import annotations

import argparse
import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))

import make_access_log  # noqa: E402
from hadoop import HadoopCluster  # noqa: E402
from run import line_digest, report  # noqa: E402
from workdir import work_dir  # noqa: E402

AGENT = """\
b.sources = r1
b.channels = c1
b.sinks = k1
b.sources.r1.channels = c1
b.sources.r1.type = TAILDIR
b.sources.r1.filegroups = f1
b.sources.r1.filegroups.f1 = {log}
b.sources.r1.positionFile = {work}/taildir_position.json
b.sources.r1.batchSize = 10000
b.channels.c1.type = file
b.channels.c1.capacity = 200000
b.channels.c1.transactionCapacity = 10000
b.sinks.k1.channel = c1
{sink}
"""

FILE_ROLL = """\
b.sinks.k1.type = file_roll
b.sinks.k1.sink.directory = {out}
b.sinks.k1.sink.rollInterval = 0
b.sinks.k1.sink.batchSize = 10000
"""

HDFS_LARGE = """\
b.sinks.k1.type = hdfs
b.sinks.k1.hdfs.path = {fs}{root}
b.sinks.k1.hdfs.webHdfsAddress = {http}
b.sinks.k1.hdfs.fileType = DataStream
b.sinks.k1.hdfs.rollCount = 0
b.sinks.k1.hdfs.rollSize = 0
b.sinks.k1.hdfs.rollInterval = 0
b.sinks.k1.hdfs.batchSize = 10000
"""

HDFS_FLUME_DEFAULTS = """\
b.sinks.k1.type = hdfs
b.sinks.k1.hdfs.path = {fs}{root}
b.sinks.k1.hdfs.webHdfsAddress = {http}
b.sinks.k1.hdfs.fileType = DataStream
"""


def run_agent(work: Path, name: str, sink: str, log: Path, done, timeout_s: float = 3600) -> float:
    """Seconds from the agent's start until ``done()``; the agent is stopped (SIGTERM) afterwards."""
    run_dir = work / name
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "bench.conf"
    conf.write_text(AGENT.format(log=log, work=run_dir, sink=sink))
    cmd = [sys.executable, "-m", "app.cli", "agent", "-f", str(conf), "-n", "b", "--data-dir", str(run_dir / "data"),
           "--log-level", "WARNING"]
    started = time.monotonic()
    agent = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(run_dir / "agent.log", "w"))
    try:
        while not done():
            if agent.poll() is not None:
                raise RuntimeError(f"{name}: the agent exited ({agent.returncode}); see {run_dir / 'agent.log'}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"{name}: timed out")
            time.sleep(0.05)
        return time.monotonic() - started
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(120)


def hdfs_bytes(cluster: HadoopCluster, root: str) -> int:
    try:
        listing = cluster.webhdfs("GET", root, "LISTSTATUS")["FileStatuses"]["FileStatus"]
    except OSError:
        return 0
    return sum(entry["length"] for entry in listing)


def hdfs_digest(cluster: HadoopCluster, root: str, work: Path) -> tuple[int, str, int]:
    """(lines, digest, files) of what the sink wrote under ``root``."""
    files = cluster.list_files(root)
    copy = work / f"read-back{root.replace('/', '-')}"
    with open(copy, "wb") as out:
        for path in files:
            out.write(cluster.read(path))
    lines, digest = line_digest([copy])
    copy.unlink()
    return lines, digest, len(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--default-rolling-lines", type=int, default=1_000)
    parser.add_argument("--work", help="working directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    work = work_dir(args.work, "flumery-bench-hdfs-")
    log = work / "access.log"
    make_access_log.write(log, args.lines)
    size = log.stat().st_size
    expected = line_digest([log])
    small_log = work / "access-small.log"
    with open(log, "rb") as source, open(small_log, "wb") as small:
        small.writelines(itertools.islice(source, args.default_rolling_lines))
    small_size = small_log.stat().st_size
    print(f"workload: {args.lines:,} lines, {size / 2**20:.1f} MiB; Flume-default rolling on the first "
          f"{args.default_rolling_lines:,} lines ({small_size / 2**20:.2f} MiB)")
    cluster = HadoopCluster(work / "hadoop").start()
    results = []
    try:
        out = work / "file_roll-out"
        seconds = run_agent(work, "file_roll", FILE_ROLL.format(out=out), log,
                            lambda: sum(p.stat().st_size for p in out.glob("*")) >= size)
        if line_digest(sorted(out.glob("*"))) != expected:
            print("FAIL: file_roll output differs from the log", file=sys.stderr)
            return 1
        results.append(report("file_roll (large rolls)", seconds, args.lines, size))

        fs = dict(fs=cluster.fs_uri, http=cluster.http_address)
        seconds = run_agent(work, "hdfs", HDFS_LARGE.format(root="/bench/large", **fs), log,
                            lambda: hdfs_bytes(cluster, "/bench/large") >= size)
        lines, digest, files = hdfs_digest(cluster, "/bench/large", work)
        if (lines, digest) != expected:
            print(f"FAIL: HDFS holds {lines:,} lines, not exactly the log's", file=sys.stderr)
            return 1
        results.append(report(f"hdfs DataStream, large rolls ({files} file)", seconds, args.lines, size))

        small_expected = line_digest([small_log])
        seconds = run_agent(work, "hdfs-defaults", HDFS_FLUME_DEFAULTS.format(root="/bench/defaults", **fs),
                            small_log, lambda: hdfs_bytes(cluster, "/bench/defaults") >= small_size)
        lines, digest, files = hdfs_digest(cluster, "/bench/defaults", work)
        if (lines, digest) != small_expected:
            print(f"FAIL: HDFS holds {lines:,} lines, not exactly the small log's", file=sys.stderr)
            return 1
        results.append(report(f"hdfs, Flume's default rolling ({files} files)", seconds,
                              args.default_rolling_lines, small_size))
    finally:
        cluster.stop()
    print("every run: all lines arrived exactly once")
    print("\n".join(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
