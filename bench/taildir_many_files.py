#!/usr/bin/env python3
"""Benchmark: TAILDIR tailing many files of one file group; throughput and the agent's peak memory.

    python bench/taildir_many_files.py [--files 1000] [--lines 1000] [--work DIR]

Writes ``--files`` access-log files of ``--lines`` lines each (the lines of ``bench/make_access_log.py``)
under one directory, runs ``flumery agent`` with TAILDIR (one group, ``.*\\.log``) -> ``file`` channel (embedded
Redis, appendfsync always) -> ``file_roll``, waits until every line is in the output, checks that each arrived
exactly once, and reports lines/s and the peak resident memory (``VmHWM`` of ``/proc/<pid>/status``) and most
open descriptors of the agent process (the one that runs the sources; the sink worker is reported beside it).
The same agent on an empty directory gives the baseline of the process itself.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import make_access_log  # bench/make_access_log.py: the workload (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parent.parent

CONF = """\
b.sources = r1
b.channels = c1
b.sinks = k1
b.sources.r1.type = TAILDIR
b.sources.r1.channels = c1
b.sources.r1.filegroups = f1
b.sources.r1.filegroups.f1 = {logs}/.*\\\\.log
b.sources.r1.positionFile = {work}/taildir_position.json
b.sources.r1.batchSize = 1000
b.channels.c1.type = file
b.channels.c1.capacity = 200000
b.channels.c1.transactionCapacity = 10000
b.sinks.k1.type = file_roll
b.sinks.k1.channel = c1
b.sinks.k1.sink.directory = {out}
b.sinks.k1.sink.rollInterval = 0
b.sinks.k1.sink.batchSize = 10000
"""


def write_files(logs: Path, files: int, lines: int) -> tuple[int, int]:
    """(lines, bytes) written: ``files`` files of ``lines`` access-log lines each (consecutive parts of one log)."""
    logs.mkdir(parents=True)
    size = 0
    for n in range(files):
        data = "".join(make_access_log.lines(n * lines, lines)).encode()
        (logs / f"app-{n:04d}.log").write_bytes(data)
        size += len(data)
    return files * lines, size


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS (KiB) and the open descriptors of ``pid`` (empty if it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def worker_pid(agent_pid: int) -> int | None:
    for child in children(agent_pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"celery" in cmdline:
            return child
    return None


def run_agent(work: Path, logs: Path, total_bytes: int, timeout_s: float = 600) -> dict:
    out = work / "out"
    for stale in (out, work / "data"):
        shutil.rmtree(stale, ignore_errors=True)
    (work / "taildir_position.json").unlink(missing_ok=True)
    conf = work / "many.conf"
    conf.write_text(CONF.format(logs=logs, work=work, out=out))
    cmd = [sys.executable, "-m", "app.cli", "agent", "-f", str(conf), "-n", "b", "--data-dir", str(work / "data"),
           "--log-level", "WARNING"]
    started = time.monotonic()
    agent = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(work / "agent.log", "w"))
    peak_fds = 0
    worker = None
    worker_hwm = 0
    try:
        while True:
            status = proc_status(agent.pid)
            peak_fds = max(peak_fds, status.get("fds", 0))
            worker = worker or worker_pid(agent.pid)
            if worker:
                worker_hwm = max(worker_hwm, proc_status(worker).get("VmHWM", 0))
            size = sum(p.stat().st_size for p in out.glob("*")) if out.exists() else 0
            if size >= total_bytes and (work / "taildir_position.json").exists():   # (the source has started)
                elapsed = time.monotonic() - started
                break
            if agent.poll() is not None:
                raise RuntimeError(f"agent exited with {agent.returncode}; see {work / 'agent.log'}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"timed out with {size} of {total_bytes} bytes")
            time.sleep(0.05)
        time.sleep(0.5)
        final = proc_status(agent.pid)
        peak_fds = max(peak_fds, final.get("fds", 0))
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    return {"seconds": elapsed, "hwm_kib": final.get("VmHWM", 0), "rss_kib": final.get("VmRSS", 0),
            "fds": peak_fds, "worker_hwm_kib": worker_hwm}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=1000, help="lines per file")
    parser.add_argument("--work", help="working directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="flumery-many-"))
    shutil.rmtree(work / "logs", ignore_errors=True)
    shutil.rmtree(work / "empty", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    lines, size = write_files(work / "logs", args.files, args.lines)
    print(f"workload: {args.files:,} files x {args.lines:,} lines = {lines:,} lines, {size / 2**20:.1f} MiB")

    (work / "empty").mkdir()
    base = run_agent(work, work / "empty", 0)
    result = run_agent(work, work / "logs", size)

    got = []
    for path in sorted((work / "out").glob("*")):
        got += path.read_bytes().splitlines()
    expected = []
    for path in sorted((work / "logs").glob("*.log")):
        expected += path.read_bytes().splitlines()
    if len(got) != len(expected) or sorted(got) != sorted(expected):
        print(f"FAIL: output has {len(got):,} lines, expected {len(expected):,} (or different lines)",
              file=sys.stderr)
        return 1
    print(f"flumery: all {lines:,} lines of {args.files:,} files arrived exactly once")
    seconds = result["seconds"]
    print(f"TAILDIR {args.files} files -> file -> file_roll: {seconds:.2f} s, {lines / seconds:,.0f} lines/s, "
          f"{size / seconds / 2**20:.1f} MiB/s (agent start-up included)")
    print(f"agent process (sources): peak RSS (VmHWM) {result['hwm_kib'] / 1024:.1f} MiB, "
          f"idle baseline {base['hwm_kib'] / 1024:.1f} MiB, most open descriptors {result['fds']} "
          f"(baseline {base['fds']})")
    print(f"sink worker process: peak RSS (VmHWM) {result['worker_hwm_kib'] / 1024:.1f} MiB")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
