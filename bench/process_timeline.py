#!/usr/bin/env python3
"""Where one run of the file workload spends its cores: the CPU of each of Flumery's processes over time.

    python bench/process_timeline.py [--copies 1] [--sink-batch 10000] [--lines 1000000] [--step-s 0.25]
                                     [--work DIR] [-- AGENT OPTIONS, e.g. --sink-workers one]

Runs ``bench/run.py``'s Flumery workload once (``exec`` -> ``copies`` ``file`` channels -> ``file_roll``; every
output checked line for line) while a thread reads ``/proc`` every 50 ms, and prints:

* per ``--step-s`` interval, the cores used by the agent, ``redis-server`` (with its append-only-file rewrite
  child), the sink workers and ``cat``, and how much of the output is written;
* per process, its CPU (of it in the kernel) and its minor page faults (``/proc/<pid>/stat``: memory faulted in
  again for every batch shows here, see ``app/malloc.py``), its main thread's time running and its time waiting
  for a core (``/proc/<pid>/schedstat``): a process every other one waits on (the broker) should not wait long for
  a core;
* the embedded broker's ``INFO commandstats`` (read while it runs: CPU time per command, script calls included).

It measures one run; compare runs of different code or options interleaved, several times: on a shared 2-core
machine one run moves by ±20 %.  Linux only (``/proc``).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import make_access_log  # bench/ is on sys.path when this script runs
import redis
import run as bench
from workdir import work_dir

KINDS = ("agent", "redis", "worker", "cat", "other")
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.05


class ProcStat(NamedTuple):
    cpu_s: float            # user + system CPU seconds, all threads
    system_s: float         # of which in the kernel
    minor_faults: int       # pages faulted in (not read from disk): fresh memory, zeroed by the kernel
    parent: int


def proc_stat(pid: int) -> ProcStat | None:
    """What ``/proc/<pid>/stat`` says of ``pid`` (see :class:`ProcStat`), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return ProcStat((int(fields[11]) + int(fields[12])) / CLOCK_TICK, int(fields[12]) / CLOCK_TICK,
                    int(fields[7]), int(fields[1]))


def schedstat_s(pid: int) -> tuple[float, float] | None:
    """(running, waiting for a core) seconds of ``pid``'s main thread."""
    try:
        running, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(running) / 1e9, int(waiting) / 1e9


def kind_of(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return "other"
    if b"--hostname" in cmdline:
        return "worker"
    if b"redis-" in cmdline:           # redis-server, and its rewrite child (redis-aof-rewrite)
        return "redis"
    if b"app.cli agent" in cmdline:
        return "agent"
    return "cat" if cmdline.startswith(b"cat ") else "other"


class Sampler:
    """Reads the CPU of this process's descendants (the agent, its broker, workers and command) until stopped;
    other processes of the machine are left out."""

    def __init__(self, outputs: list[Path]):
        self.outputs = outputs
        self.ours = {os.getpid()}
        self.kinds: dict[int, str] = {}
        self.samples: list[tuple[float, dict[int, float], int]] = []    # (time, pid -> CPU s, output bytes)
        self.sched: dict[int, tuple[float, float]] = {}
        self.last: dict[int, ProcStat] = {}          # each process's last reading
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        try:
            self._sample()
        except BaseException as exc:      # noqa: BLE001  (reported by main: a dead sampler is a failed run)
            self.error = exc

    def _sample(self) -> None:
        while not self.stop.is_set():
            now, cpu = time.monotonic(), {}
            for pid in sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
                read = proc_stat(pid)
                if read is None or pid == os.getpid():
                    continue
                used, parent = read.cpu_s, read.parent
                if parent in self.ours:
                    self.ours.add(pid)      # pids mostly grow: a parent is usually met before its children
                if pid not in self.ours:
                    continue
                # Read again at every sample: between fork and exec a child shows its parent's command line.
                kind = kind_of(pid)
                if kind != "other" or pid not in self.kinds:
                    self.kinds[pid] = kind
                cpu[pid], self.last[pid] = used, read
                self.sched[pid] = schedstat_s(pid) or self.sched.get(pid, (0.0, 0.0))
            self.samples.append((now, cpu, self._written()))
            time.sleep(SAMPLE_S)

    def _written(self) -> int:
        """Bytes in the outputs so far (the benchmark removes old outputs while this thread already runs)."""
        total = 0
        for out in self.outputs:
            try:
                total += sum(f.stat().st_size for f in out.iterdir())
            except FileNotFoundError:
                pass
        return total


class BrokerStats:
    """Polls the embedded broker's INFO commandstats (its port and password are in the agent's data dir)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir / "redis"
        self.last: dict = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="broker-stats", daemon=True)

    def _run(self) -> None:
        client = None
        while not self.stop.wait(0.1):
            try:
                if client is None:
                    port = re.search(r"^port (\d+)", (self.data_dir / "redis.conf").read_text(), re.M).group(1)
                    password = (self.data_dir / "password").read_text().strip()
                    client = redis.Redis(port=int(port), password=password, socket_timeout=1)
                self.last = client.info("commandstats")
            except (OSError, AttributeError, redis.RedisError):
                client = None           # not started yet, or stopped: the last stats read are kept


def print_timeline(sampler: Sampler, started: float, step_s: float, total_bytes: int) -> None:
    print("    s  " + " ".join(f"{k:>7}" for k in KINDS) + "    sum  written")
    previous: dict[int, float] = {}
    edge = started + step_s
    for at, cpu, written in sampler.samples:
        if at < edge:
            continue
        used = Counter()
        for pid, seconds in cpu.items():
            used[sampler.kinds[pid]] += seconds - previous.get(pid, 0.0)
        previous = dict(cpu)
        print(f"{edge - started:5.2f}  " + " ".join(f"{used[k] / step_s:7.2f}" for k in KINDS)
              + f"  {sum(used.values()) / step_s:5.2f}  {100 * written / total_bytes:6.1f} %")
        edge += step_s
        if written >= total_bytes and not any(used.values()):
            break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=1, help="channels and file_roll sinks (replicating if > 1)")
    parser.add_argument("--sink-batch", type=int, default=10000, help="the sinks' batchSize")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--step-s", type=float, default=0.25)
    parser.add_argument("--work", help="working directory (default: a temporary one, removed afterwards)")
    parser.add_argument("agent_args", nargs="*", help="options passed on to `flumery agent` (after --)")
    args = parser.parse_args()
    work = work_dir(args.work, "flumery-timeline-")
    log = work / "access.log"
    if not log.exists():
        make_access_log.write(log, args.lines)
    expected, total = bench.line_digest([log]), log.stat().st_size
    outputs = [work / f"flumery-out-{n}" for n in range(1, args.copies + 1)]

    sampler, broker = Sampler(outputs), BrokerStats(work / "data")
    sampler.thread.start()
    broker.thread.start()
    started = time.monotonic()
    try:
        seconds, _ = bench.run_flumery(log, work, "exec", total, expected, bench.REPO, copies=args.copies,
                                       sink_batch=args.sink_batch, agent_args=tuple(args.agent_args))
    finally:
        sampler.stop.set()
        broker.stop.set()
        sampler.thread.join()
        broker.thread.join()
    if sampler.error is not None:
        raise RuntimeError(f"the /proc sampler failed: {sampler.error!r}") from sampler.error
    print(f"{args.copies} channel(s), sink batchSize {args.sink_batch}: {seconds:.2f} s from launch; every line "
          f"written exactly once in each output")
    print_timeline(sampler, started, args.step_s, total * args.copies)
    print("\nper process: CPU s (all threads), of it in the kernel; page faults (minor); main thread running | "
          "waiting for a core, s")
    for pid in sorted(sampler.kinds, key=lambda p: (sampler.kinds[p], p)):
        last = sampler.last.get(pid)            # the last reading: CPU time and faults only grow
        running, waiting = sampler.sched.get(pid, (0.0, 0.0))
        if last and (last.cpu_s or running):
            print(f"  {sampler.kinds[pid]:7} {pid:>8}  {last.cpu_s:5.2f}  {last.system_s:5.2f}  {last.minor_faults:>9,}"
                  f"   {running:5.2f} | {waiting:5.2f}")
    print("\nbroker, INFO commandstats (the most CPU first):")
    for name, stat in sorted(broker.last.items(), key=lambda kv: -kv[1]["usec"])[:10]:
        print(f"  {name.removeprefix('cmdstat_'):12} {stat['calls']:8,} calls  {stat['usec'] / 1e6:6.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
