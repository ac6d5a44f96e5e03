#!/usr/bin/env python3
"""Benchmark: a web-server access log through a Flumery agent into files, beside syslog-ng on the same file.

    python bench/run.py [--lines 1000000] [--source exec|taildir] [--work DIR] [--no-syslog-ng]

Flumery: ``exec`` (``cat LOG``) -> ``file`` channel (embedded Redis, appendfsync always) -> ``file_roll``
(fsync per batch).  The clock starts when the agent command starts (broker and worker start-up included) and
stops when every byte of the log is in the output files; the run then checks that every line arrived exactly
once.  syslog-ng (Debian ``syslog-ng-core``) reads the same file with a ``file()`` source and writes it with a
``file()`` destination, timed the same way.  Both are printed as events/s and MiB/s.
"""
from __future__ import annotations

import argparse
import hashlib
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

FLUMERY_CONF = """\
b.sources = r1
b.channels = c1
b.sinks = k1
b.sources.r1.channels = c1
{source}
b.channels.c1.type = file
b.channels.c1.capacity = 200000
b.channels.c1.transactionCapacity = 10000
b.sinks.k1.type = file_roll
b.sinks.k1.channel = c1
b.sinks.k1.sink.directory = {out}
b.sinks.k1.sink.rollInterval = 0
b.sinks.k1.sink.batchSize = 10000
"""

EXEC_SOURCE = """\
b.sources.r1.type = exec
b.sources.r1.command = cat {log}
b.sources.r1.batchSize = 1000
"""

TAILDIR_SOURCE = """\
# TAILDIR puts up to the channel's transactionCapacity per batch: one put, one fsync per 10000 lines.
b.sources.r1.type = TAILDIR
b.sources.r1.filegroups = f1
b.sources.r1.filegroups.f1 = {log}
b.sources.r1.positionFile = {work}/taildir_position.json
b.sources.r1.batchSize = 10000
"""

# syslog-ng tuned for throughput (large fetch and window sizes, writes flushed every 1000 lines)...
SYSLOG_NG_CONF = """\
@version: 3.38
options {{ keep-hostname(yes); create-dirs(yes); flush-lines(1000); log-fifo-size(100000); }};
source s_log {{ file("{log}" flags(no-parse) follow-freq(1) log-fetch-limit(1000) log-iw-size(100000)); }};
destination d_out {{ file("{out}" template("${{MSG}}\\n")); }};
log {{ source(s_log); destination(d_out); }};
"""

# ... and with its default options, as a package installs it.
SYSLOG_NG_DEFAULT_CONF = """\
@version: 3.38
source s_log {{ file("{log}" flags(no-parse)); }};
destination d_out {{ file("{out}" template("${{MSG}}\\n")); }};
log {{ source(s_log); destination(d_out); }};
"""


def wait_for_bytes(paths_fn, total: int, timeout_s: float, process: subprocess.Popen) -> float:
    """Seconds until the files given by ``paths_fn()`` hold ``total`` bytes."""
    start = time.monotonic()
    while True:
        size = sum(p.stat().st_size for p in paths_fn() if p.exists())
        if size >= total:
            return time.monotonic() - start
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} after {size} of {total} bytes")
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"timed out with {size} of {total} bytes")
        time.sleep(0.02)


def line_digest(paths) -> tuple[int, str]:
    """(line count, order-independent digest) of the lines in ``paths``: equal iff the same multiset."""
    lines = []
    for path in paths:
        with open(path, "rb") as f:
            lines.extend(f.read().splitlines())
    lines.sort()
    h = hashlib.sha256()
    for line in lines:
        h.update(line + b"\n")
    return len(lines), h.hexdigest()


def run_flumery(log: Path, work: Path, source: str, total: int) -> float:
    out = work / "flumery-out"
    for stale in (out, work / "data"):
        shutil.rmtree(stale, ignore_errors=True)
    (work / "taildir_position.json").unlink(missing_ok=True)
    source_conf = (EXEC_SOURCE if source == "exec" else TAILDIR_SOURCE).format(log=log, work=work)
    conf = work / "bench.conf"
    conf.write_text(FLUMERY_CONF.format(source=source_conf, out=out))
    cmd = [sys.executable, "-m", "app.cli", "agent", "-f", str(conf), "-n", "b", "--data-dir", str(work / "data"),
           "--log-level", "WARNING"]
    started = time.monotonic()
    agent = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(work / "agent.log", "w"))
    try:
        wait_for_bytes(lambda: list(out.glob("*")), total, 600, agent)
        elapsed = time.monotonic() - started
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    return elapsed


def run_syslog_ng(log: Path, work: Path, total: int, template: str = SYSLOG_NG_CONF) -> float | None:
    binary = shutil.which("syslog-ng") or "/usr/sbin/syslog-ng"
    if not os.path.exists(binary):
        print("syslog-ng not found (apt-get install syslog-ng-core); skipping it", file=sys.stderr)
        return None
    out = work / "syslog-ng-out.log"
    for stale in (out, work / "syslog-ng.persist"):
        stale.unlink(missing_ok=True)
    conf = work / "syslog-ng.conf"
    conf.write_text(template.format(log=log, out=out))
    cmd = [binary, "-F", "--no-caps", "-f", str(conf), "-R", str(work / "syslog-ng.persist"),
           "-p", str(work / "syslog-ng.pid"), "-c", str(work / "syslog-ng.ctl")]
    started = time.monotonic()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(work / "syslog-ng.log", "w"))
    try:
        elapsed = wait_for_bytes(lambda: [out], total, 600, process)
        elapsed = time.monotonic() - started
    finally:
        process.terminate()
        process.wait(30)
    return elapsed


def report(name: str, seconds: float, lines: int, size: int) -> str:
    return (f"{name:<28} {seconds:7.2f} s  {lines / seconds:10,.0f} events/s  "
            f"{size / seconds / 2**20:7.1f} MiB/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--source", choices=("exec", "taildir"), default="exec")
    parser.add_argument("--work", help="working directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--no-syslog-ng", action="store_true")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="flumery-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "access.log"
    make_access_log.write(log, args.lines)
    size = log.stat().st_size
    expected = line_digest([log])
    print(f"workload: {args.lines:,} lines, {size / 2**20:.1f} MiB ({log})")

    results = []
    seconds = run_flumery(log, work, args.source, size)
    got = line_digest(sorted((work / "flumery-out").glob("*")))
    if got != expected:
        print(f"FAIL: Flumery output has {got[0]:,} lines, not the {expected[0]:,} of the log "
              "(or different lines)", file=sys.stderr)
        return 1
    print(f"flumery: all {got[0]:,} lines arrived exactly once")
    results.append(report(f"flumery ({args.source} -> file -> file_roll)", seconds, args.lines, size))

    sng = None if args.no_syslog_ng else run_syslog_ng(log, work, size)
    if sng is not None:
        results.append(report("syslog-ng tuned (file -> file)", sng, args.lines, size))
        default = run_syslog_ng(log, work, size, SYSLOG_NG_DEFAULT_CONF)
        results.append(report("syslog-ng defaults (file -> file)", default, args.lines, size))
    print("\n".join(results))
    if sng is not None:
        print(f"flumery throughput / syslog-ng tuned: {sng / seconds:.2f}; / syslog-ng defaults: "
              f"{default / seconds:.2f}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
