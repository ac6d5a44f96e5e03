#!/usr/bin/env python3
"""Benchmark: a web-server access log through a Flumery agent into files, beside syslog-ng and rsyslog.

    python bench/run.py [--lines 1000000] [--rounds 1]
                        [--workloads file-1000,file-10000,replicating,replicating-per-sink,replicating-one]
                        [--source exec|taildir] [--work DIR] [--no-peers] [--flumery DIR]

Workloads (each run checks that every line arrived exactly once, in every output):

* ``file-1000`` / ``file-10000``: ``exec`` (``cat LOG``, ``batchSize`` 1000) -> one ``file`` channel (embedded
  Redis, appendfsync always) -> ``file_roll`` (fsync per batch) with sink ``batchSize`` 1000 / 10000;
* ``replicating``: the same source replicated into 3 ``file`` channels, each drained by its own ``file_roll``
  sink (batchSize 10000), timed against ``file-10000`` of the same round; the agent's default sink worker layout
  (``--sink-workers auto``: on a machine with fewer than 4 cores, fewer worker processes than sinks; the run
  prints what it chose);
* ``replicating-per-sink``: the same with ``--sink-workers per-sink`` (a worker process per sink);
* ``replicating-one``: the same with ``--sink-workers one`` (one sink worker process, a thread per sink).

Peers, on the same file in the same round: syslog-ng 3.38 (Debian ``syslog-ng-core``), tuned and with default
options, and rsyslog 8 (Debian ``rsyslog``: ``imfile`` -> ``omfile``, run as a plain process with its own
configuration), tuned.  Neither peer fsyncs.  Rounds run the same programs in the same order, so on a shared
machine each round's ratios compare programs under the same load.

Two figures per run: seconds from the launch of the program (its start-up included) until the last byte is in
its output, and the steady rate: events/s while the output grew from 10 % to 90 % of the log.  ``--flumery DIR``
runs the Flumery code of another checkout (a before/after comparison in the same run).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import make_access_log  # bench/make_access_log.py: the workload (this script's folder is on sys.path)
from workdir import work_dir

REPO = Path(__file__).resolve().parent.parent
# `make bench INSTALL_RSYSLOG=1` unpacks Debian's rsyslog here: its package conflicts with syslog-ng-core's.
RSYSLOG_UNPACKED = REPO / "var" / "peers" / "rsyslog"

FLUMERY_CONF = """\
b.sources = r1
b.channels = {channels}
b.sinks = {sinks}
b.sources.r1.channels = {channels}
{source}
"""

CHANNEL_AND_SINK = """\
b.channels.c{n}.type = file
b.channels.c{n}.capacity = 200000
b.channels.c{n}.transactionCapacity = 10000
b.sinks.k{n}.type = file_roll
b.sinks.k{n}.channel = c{n}
b.sinks.k{n}.sink.directory = {out}
b.sinks.k{n}.sink.rollInterval = 0
b.sinks.k{n}.sink.batchSize = {sink_batch}
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

# rsyslog tuned for throughput: imfile reads the whole file (inotify), the main queue hands the action batches of
# 1024 lines, omfile writes each batch with one write (a 1 MiB buffer, flushed at the end of the batch, as
# syslog-ng flushes every 1000 lines); the line goes out unchanged.
RSYSLOG_CONF = """\
global(workDirectory="{state}" maxMessageSize="64k")
module(load="imfile" mode="inotify")
main_queue(queue.type="FixedArray" queue.size="200000" queue.dequeueBatchSize="1024")
template(name="line" type="string" string="%rawmsg%\\n")
input(type="imfile" file="{log}" tag="bench" freshStartTail="off" maxLinesAtOnce="0" maxSubmitAtOnce="1024")
action(type="omfile" file="{out}" template="line" ioBufferSize="1m" flushOnTXEnd="on")
"""

WORKLOADS = ("file-1000", "file-10000", "replicating", "replicating-per-sink", "replicating-one")
REPLICATING_LAYOUTS = {"replicating": ("default layout", ()),
                       "replicating-per-sink": ("a worker per sink", ("--sink-workers", "per-sink")),
                       "replicating-one": ("1 worker", ("--sink-workers", "one"))}


@dataclass
class Run:
    name: str
    seconds: float          # from launch until the last byte
    steady: float           # events/s while the output grew from 10 % to 90 %


def wait_for_bytes(paths_fn, total: int, timeout_s: float, process: subprocess.Popen, copies: int = 1):
    """(seconds until the files given by ``paths_fn()`` hold ``copies * total`` bytes, seconds of the 10 % to 90 %
    stretch), both from the call."""
    start = time.monotonic()
    marks: dict[float, float] = {}
    while True:
        size = sum(p.stat().st_size for p in paths_fn() if p.exists())
        now = time.monotonic() - start
        for fraction in (0.1, 0.9):
            if fraction not in marks and size >= fraction * copies * total:
                marks[fraction] = now
        if size >= copies * total:
            return now, max(marks[0.9] - marks[0.1], 1e-3)
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} after {size} of {copies * total} bytes")
        if now > timeout_s:
            raise RuntimeError(f"timed out with {size} of {copies * total} bytes")
        time.sleep(0.005)


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


def flumery_conf(log: Path, work: Path, source: str, copies: int, sink_batch: int) -> str:
    source_conf = (EXEC_SOURCE if source == "exec" else TAILDIR_SOURCE).format(log=log, work=work)
    names = range(1, copies + 1)
    return (FLUMERY_CONF.format(channels=" ".join(f"c{n}" for n in names), sinks=" ".join(f"k{n}" for n in names),
                                source=source_conf)
            + "".join(CHANNEL_AND_SINK.format(n=n, out=work / f"flumery-out-{n}", sink_batch=sink_batch)
                      for n in names))


def run_flumery(log: Path, work: Path, source: str, total: int, expected, flumery: Path, copies: int = 1,
                sink_batch: int = 10000, agent_args: tuple[str, ...] = ()) -> tuple[float, float]:
    outs = [work / f"flumery-out-{n}" for n in range(1, copies + 1)]
    for stale in (*outs, work / "data"):
        shutil.rmtree(stale, ignore_errors=True)
    (work / "taildir_position.json").unlink(missing_ok=True)
    conf = work / "bench.conf"
    conf.write_text(flumery_conf(log, work, source, copies, sink_batch))
    cmd = [sys.executable, "-m", "app.cli", "agent", "-f", str(conf), "-n", "b", "--data-dir", str(work / "data"),
           "--log-level", "WARNING", *agent_args]
    env = {**os.environ, "PYTHONPATH": str(flumery)}     # the sink workers import the same checkout
    agent = subprocess.Popen(cmd, cwd=flumery, env=env, stdout=subprocess.DEVNULL,
                             stderr=open(work / "agent.log", "w"))
    try:
        seconds, stretch = wait_for_bytes(lambda: [f for out in outs for f in out.glob("*")], total, 600, agent,
                                          copies)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    for out in outs:
        got = line_digest(sorted(out.glob("*")))
        if got != expected:
            raise RuntimeError(f"Flumery output {out} has {got[0]:,} lines, not the {expected[0]:,} of the log "
                               "(or different lines)")
    return seconds, stretch


def run_peer(cmd: list[str], out: Path, work: Path, name: str, total: int) -> tuple[float, float]:
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "w"))
    try:
        return wait_for_bytes(lambda: [out], total, 120, process)
    finally:
        process.terminate()
        process.wait(30)


def syslog_ng_binary() -> str | None:
    binary = shutil.which("syslog-ng") or "/usr/sbin/syslog-ng"
    return binary if os.path.exists(binary) else None


def run_syslog_ng(log: Path, work: Path, total: int, template: str) -> tuple[float, float]:
    out = work / "syslog-ng-out.log"
    for stale in (out, work / "syslog-ng.persist"):
        stale.unlink(missing_ok=True)
    conf = work / "syslog-ng.conf"
    conf.write_text(template.format(log=log, out=out))
    cmd = [syslog_ng_binary(), "-F", "--no-caps", "-f", str(conf), "-R", str(work / "syslog-ng.persist"),
           "-p", str(work / "syslog-ng.pid"), "-c", str(work / "syslog-ng.ctl")]
    return run_peer(cmd, out, work, "syslog-ng", total)


def rsyslogd() -> tuple[str, str] | None:
    """(rsyslogd binary, its module directory): Debian's package if installed, else the one
    ``make bench INSTALL_RSYSLOG=1`` unpacked."""
    for root in (Path("/"), RSYSLOG_UNPACKED):
        binary, modules = root / "usr/sbin/rsyslogd", root / "usr/lib/x86_64-linux-gnu/rsyslog"
        if binary.exists() and modules.is_dir():
            return str(binary), str(modules)
    return None


def run_rsyslog(log: Path, work: Path, total: int) -> tuple[float, float]:
    out, state = work / "rsyslog-out.log", work / "rsyslog-state"
    out.unlink(missing_ok=True)
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(log=log, out=out, state=state))
    binary, modules = rsyslogd()
    cmd = [binary, "-n", "-f", str(conf), "-i", str(work / "rsyslog.pid"), "-M", modules]
    return run_peer(cmd, out, work, "rsyslog", total)


def one_round(args, log: Path, work: Path, size: int, expected, peers: dict) -> list[Run]:
    runs = []

    def record(name: str, run) -> None:
        # What the runs before wrote may still be on its way to the disk: let it land first, so that no program
        # pays for the writeback of another's output (Flumery fsyncs, and would wait for it).
        os.sync()
        seconds, stretch = run()
        runs.append(Run(name, seconds, 0.8 * args.lines / stretch))
        print(f"  {name:<42} {seconds:6.2f} s from launch   steady {runs[-1].steady:10,.0f} events/s", flush=True)

    for checkout in args.flumery:
        flumery = Path(checkout).resolve()
        label = "" if len(args.flumery) == 1 else f"[{checkout}] "
        for workload in args.workloads:
            if workload in REPLICATING_LAYOUTS:
                layout, agent_args = REPLICATING_LAYOUTS[workload]
                record(f"flumery {label}replicating x3 (10000, {layout})",
                       partial(run_flumery, log, work, args.source, size, expected, flumery, copies=3,
                               sink_batch=10000, agent_args=agent_args))
            else:
                batch = int(workload.split("-")[1])
                record(f"flumery {label}{args.source} ({batch})",
                       partial(run_flumery, log, work, args.source, size, expected, flumery, sink_batch=batch))
    if "syslog-ng" in peers:
        record("syslog-ng tuned", partial(run_syslog_ng, log, work, size, SYSLOG_NG_CONF))
    if "rsyslog" in peers:
        record("rsyslog tuned", partial(run_rsyslog, log, work, size))
    if "syslog-ng" in peers:
        record("syslog-ng defaults", partial(run_syslog_ng, log, work, size, SYSLOG_NG_DEFAULT_CONF))
    return runs


def span(values, fmt: str) -> str:
    low, high = min(values), max(values)
    return format(low, fmt) if format(low, fmt) == format(high, fmt) else f"{format(low, fmt)}–{format(high, fmt)}"


def summary(rounds: list[list[Run]], lines: int, source: str) -> None:
    """Per program: the ranges over the rounds; then each round's ratios to the peers (same round, same load)."""
    print(f"\n{len(rounds)} round(s), ranges over the rounds:")
    print("| | seconds from launch | events/s from launch | steady events/s (10–90 %) |")
    print("|---|---|---|---|")
    for i, run in enumerate(rounds[0]):
        same = [r[i] for r in rounds]
        print(f"| {run.name} | {span([r.seconds for r in same], '.2f')} | "
              f"{span([lines / r.seconds / 1000 for r in same], ',.0f')}k | "
              f"{span([r.steady / 1000 for r in same], ',.0f')}k |")
    names = [r.name for r in rounds[0]]
    flumery = [n for n in names if n.startswith("flumery")]
    for peer in ("syslog-ng tuned", "rsyslog tuned"):
        if peer not in names:
            continue
        print(f"\nFlumery / {peer} (same round; >1: Flumery faster), from launch | steady:")
        for name in flumery:
            f, p = names.index(name), names.index(peer)
            launch = [r[p].seconds / r[f].seconds for r in rounds]
            steady = [r[f].steady / r[p].steady for r in rounds]
            print(f"  {name:<42} {span(launch, '.2f')} | {span(steady, '.2f')}")
    for rep, name in enumerate(names):
        single = re.sub(r"replicating x3 \((\d+)[^)]*\)", rf"{source} (\1)", name)
        if "replicating" not in name or single not in names:
            continue
        one = names.index(single)
        print(f"\n{name} / {single} (time from launch): "
              f"{span([r[rep].seconds / r[one].seconds for r in rounds], '.2f')}x; "
              f"steady rate of one / of three: {span([r[one].steady / r[rep].steady for r in rounds], '.2f')}x")


def default_layout() -> str:
    """What this checkout's ``--sink-workers auto`` runs the replicating workload's 3 sinks in, here."""
    sys.path.insert(0, str(REPO))
    from app.worker_layout import usable_cores, worker_count
    cores = usable_cores()
    workers = worker_count("auto", 3, cores)
    return (f"default sink worker layout (--sink-workers auto) on {cores} usable cores: {workers} worker "
            f"process{'' if workers == 1 else 'es'} for the 3 sinks of `replicating`")


def available_peers(wanted: bool) -> dict:
    peers = {}
    if not wanted:
        return peers
    if syslog_ng_binary():
        peers["syslog-ng"] = True
    else:
        print("syslog-ng not found (make bench INSTALL_SYSLOG_NG=1 installs it); skipping it", file=sys.stderr)
    if rsyslogd():
        peers["rsyslog"] = True
    else:
        print("rsyslog not found (make bench INSTALL_RSYSLOG=1 unpacks it); skipping it", file=sys.stderr)
    return peers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated, of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--source", choices=("exec", "taildir"), default="exec")
    parser.add_argument("--work", help="working directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--no-peers", "--no-syslog-ng", action="store_true", help="Flumery only")
    parser.add_argument("--flumery", action="append",
                        help="a Flumery checkout to run (default: this one); repeat it to compare checkouts")
    args = parser.parse_args()
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.flumery = args.flumery or [str(REPO)]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown or args.rounds < 1:
        parser.error(f"--workloads: unknown {unknown} (known: {', '.join(WORKLOADS)})" if unknown
                     else "--rounds must be 1 or more")

    work = work_dir(args.work, "flumery-bench-")
    log = work / "access.log"
    make_access_log.write(log, args.lines)
    size = log.stat().st_size
    expected = line_digest([log])
    peers = available_peers(not args.no_peers)
    print(f"workload: {args.lines:,} lines, {size / 2**20:.1f} MiB ({log}); load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    if "replicating" in args.workloads:
        print(default_layout())
    rounds = []
    for n in range(args.rounds):
        print(f"round {n + 1} of {args.rounds} (Flumery outputs checked line for line: every line exactly once)")
        rounds.append(one_round(args, log, work, size, expected, peers))
    summary(rounds, args.lines, args.source)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
