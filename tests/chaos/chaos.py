"""Fault injection: drive unique events through a real agent, break things, count every event at the end.

    python tests/chaos/chaos.py [--long] [--only NAME ...]     # `make chaos` runs the long version

Each scenario runs an HTTP client that posts numbered events (10 per request) at a steady rate and retries a
request until it is answered 200, so every event is acknowledged by the source exactly when it reaches a
channel.  The sink is ``file_roll``; at the end every event number is counted in its files.  A scenario reports:

* sent: events the source acknowledged (HTTP 200);
* delivered: distinct acknowledged events found in the output; lost = sent - delivered (must be 0);
* duplicated: lines present more than once in the output (delivery is at least once; but a batch whose
  file_roll or hdfs worker was killed after its write and before its acknowledgement must not be there twice:
  their journals skip what is at rest);
* recover_s: for each fault, seconds from the fault until every event acknowledged before it was delivered
  (the largest is reported).

`tests/chaos/test_chaos.py` runs the short versions in `make test`.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent         # tests/: the helpers shared with the other tests
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent))

from agents import REPO, AgentProcess, children, port_open, read_lines, sink_worker_pid  # noqa: E402
from cluster_deployment import ClusterDeployment  # noqa: E402
from conftest import RedisServer  # noqa: E402
from hadoop import HadoopCluster  # noqa: E402
from helpers import ReportingThread, wait_until  # noqa: E402
from sentinel import SentinelDeployment  # noqa: E402
from stores import ElasticsearchProbe, HBaseProbe, MongoProbe  # noqa: E402

from app.broker import free_port  # noqa: E402

PER_REQUEST = 10


@dataclass
class Result:
    scenario: str
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    recover_s: float = 0.0
    faults: int = 0
    unrecovered: int = 0         # faults whose recovery the watcher did not see in time (must be 0)
    peak_growth_kib: int = 0
    tmp_left: int = 0
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        return (f"| {self.scenario} | {self.faults} | {self.sent} | {self.delivered} | {self.lost} | "
                f"{self.duplicated} | {self.recover_s:.1f} | {'; '.join(self.notes)} |")


HEADER = ("| scenario | faults | sent (acked) | delivered | lost | duplicated | recover s (max) | notes |\n"
          "|---|---|---|---|---|---|---|---|")


def agent_conf(port: int, out: Path, channel_type: str = "file", capacity: int = 1_000_000,
               sinks: str | None = None) -> str:
    return f"""
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1
a1.channels.c1.type = {channel_type}
a1.channels.c1.capacity = {capacity}
a1.channels.c1.transactionCapacity = 1000
""" + (sinks or f"""
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.rollInterval = 1
a1.sinks.k1.sink.batchSize = 500
a1.sinks.k1.channel = c1
""")


class Load:
    """Posts events e0, e1, ... at ``rate`` events/s until ``total`` were acknowledged.

    Its thread is a :class:`helpers.ReportingThread`: :meth:`join` fails the scenario if the load generator raised,
    is still running, or stopped short of ``total`` (a scenario must never pass on a load that did not run).
    """

    def __init__(self, port: int, total: int, rate: float):
        self.port, self.total, self.rate = port, total, rate
        self.acked: list[tuple[float, int]] = []      # (time acknowledged, first event number of the request)
        self.refused = 0                               # 503 answers (channel full or broker down)
        self.errors = 0                                # connection refused / reset (agent down)
        self.stop = threading.Event()                  # ends the load early: join() then fails
        self.thread = ReportingThread(self._run, name=f"{type(self).__name__.lower()}-generator")

    def start(self) -> "Load":
        self.thread.start()
        return self

    def events(self, first: int) -> list[dict]:
        """The events of the request that starts with event ``first``."""
        return [{"body": f"e{first + j}"} for j in range(PER_REQUEST)]

    def _post(self, first: int) -> int | None:
        body = json.dumps(self.events(first)).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, http.client.HTTPException):   # no (complete) answer: the agent is down or was killed
            return None

    clock = staticmethod(time.monotonic)     # (tests of the harness give fake ones)
    sleep = staticmethod(time.sleep)

    def _pace(self, start: float, first: int) -> None:
        """Sleep until event ``first`` is due (the clock is read once: it moves between two reads)."""
        delay = start + first / self.rate - self.clock()
        if delay > 0:
            self.sleep(delay)

    def _run(self) -> None:
        start, first = self.clock(), 0
        while first < self.total and not self.stop.is_set():
            self._pace(start, first)
            status = self._post(first)
            if status == 200:
                self.acked.append((time.monotonic(), first))
                first += PER_REQUEST
            else:
                if status == 503:
                    self.refused += 1
                else:
                    self.errors += 1
                time.sleep(0.05)

    def acked_events(self) -> int:
        return len(self.acked) * PER_REQUEST

    def wait_for(self, events: int, timeout_s: float = 120) -> None:
        """Until ``events`` events were acknowledged (faults come on a running load); fails at once if the load
        generator died."""
        def enough() -> bool:
            self.thread.check()
            return self.acked_events() >= min(events, self.total)
        wait_until(enough, timeout_s, what=f"{events} events acknowledged (have {self.acked_events()})")

    def finished(self) -> bool:
        return not self.thread.is_alive()

    def sent_before(self, moment: float) -> set[bytes]:
        return {f"e{first + j}".encode() for t, first in self.acked if t <= moment for j in range(PER_REQUEST)}

    def all_sent(self) -> set[bytes]:
        return self.sent_before(float("inf"))

    def join(self, timeout_s: float = 600) -> None:
        """Wait for the load to end; fail if its generator raised, hangs, or ended short of ``total``."""
        self.thread.join(timeout_s)
        if self.acked_events() < self.total:
            raise AssertionError(f"the load generator ended after {self.acked_events()} of {self.total} events")


class PaddedLoad(Load):
    """A :class:`Load` whose events carry ``PAD`` after their number (``e<n> xx...``): a request's batch is then
    larger than a channel message queued inline (``routing.scripts.INLINE_MAX_BYTES``), so a batch replicated into
    several channels is stored once, shared by its messages in each channel."""

    PAD = "x" * 150

    def events(self, first: int) -> list[dict]:
        return [{"body": f"e{first + j} {self.PAD}"} for j in range(PER_REQUEST)]


class FileLoad(Load):
    """Appends lines e0, e1, ... to a log file at ``rate`` lines/s: what TAILDIR must deliver, all of it."""

    def __init__(self, path: Path, total: int, rate: float):
        super().__init__(0, total, rate)
        self.path = path

    def _run(self) -> None:
        start, first = self.clock(), 0
        with open(self.path, "ab") as log:
            while first < self.total and not self.stop.is_set():
                self._pace(start, first)
                log.write(b"".join(f"e{first + j}\n".encode() for j in range(PER_REQUEST)))
                log.flush()
                self.acked.append((time.monotonic(), first))
                first += PER_REQUEST


class Recovery:
    """Watches the output from the first fault on and records, per fault, how long it took until everything
    acknowledged before the fault was delivered.  Its watcher threads are :class:`helpers.ReportingThread`:
    one that raised fails the scenario in :meth:`wait_all`."""

    def __init__(self, out: Path, load: Load, outputs=None):
        self.load = load
        self.outputs = outputs or (lambda: read_lines(out))
        self.faults: list[tuple[float, set[bytes]]] = []
        self.recovered: list[float] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.watching = False
        self.threads: list[ReportingThread] = []

    def fault(self) -> None:
        now = time.monotonic()
        with self.lock:
            self.faults.append((now, self.load.sent_before(now)))
            if not self.watching:                 # not started yet, or done with the earlier faults
                self.watching = True
                thread = ReportingThread(self._watch, name=f"recovery-watcher-{len(self.threads)}")
                self.threads.append(thread)
                thread.start()

    def _watch(self) -> None:
        pending = len(self.recovered)
        while not self.done.is_set():
            with self.lock:
                faults = list(self.faults)
            if pending < len(faults):
                have = set(self.outputs())
                while pending < len(faults) and faults[pending][1] <= have:
                    self.recovered.append(time.monotonic() - faults[pending][0])
                    pending += 1
            with self.lock:
                if pending == len(self.faults) and self.load_finished():
                    self.watching = False          # decided under the lock: a new fault starts a new watcher
                    return
            time.sleep(0.25)

    def load_finished(self) -> bool:
        return self.load.finished()

    def wait_all(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for every fault to be seen recovered, then stop watching; the number of faults
        not seen recovered.  Fails if a watcher raised."""
        deadline = time.monotonic() + timeout_s
        for thread in list(self.threads):
            threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))
        self.done.set()
        for thread in list(self.threads):
            thread.join(30)
        return len(self.faults) - len(self.recovered)

    def worst(self) -> float:
        return max(self.recovered, default=0.0)


def count(result: Result, load: Load, out: Path) -> Result:
    lines = read_lines(out)
    sent = load.all_sent()
    seen = Counter(lines)
    result.sent = len(sent)
    result.delivered = len(sent & set(seen))
    result.lost = result.sent - result.delivered
    result.duplicated = sum(n - 1 for n in seen.values() if n > 1)
    return result


def settle(result: Result, load: Load, recovery: Recovery, out: Path, timeout_s: float = 180) -> None:
    """Wait for the load to end and everything acknowledged to be delivered; record the worst recovery."""
    load.join()
    result.unrecovered = recovery.wait_all(timeout_s)
    if result.unrecovered:
        result.notes.append(f"{result.unrecovered} faults not seen recovered within {timeout_s:.0f} s")
    if not wait_delivered(recovery.outputs, load, timeout_s):
        result.notes.append(f"not every acknowledged event delivered within {timeout_s:.0f} s")
    result.recover_s = recovery.worst()


def wait_delivered(outputs, load: Load, timeout_s: float) -> bool:
    """Until ``outputs()`` (the lines delivered) holds every acknowledged event (True), or ``timeout_s`` (False)."""
    sent = load.all_sent()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sent <= set(outputs()):
            return True
        time.sleep(0.25)
    return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- scenarios --------------------------------------------------------------------------------------------------

def worker_kills(tmp: Path, total: int, rate: float, kills: int, interval_s: float, vt_s: float) -> Result:
    """kill -9 of the agent's (solo) sink worker, repeatedly; the agent restarts it.  ``vt_s`` is the visibility
    timeout: the killed worker's batch comes back after it."""
    port, out = free_port(), tmp / "out"
    agent = AgentProcess(tmp, agent_conf(port, out), env={"FLUMERY_VISIBILITY_TIMEOUT_S": str(vt_s)}).start()
    result = Result("kill -9 sink worker (solo pool, main process)", faults=kills)
    result.notes.append(f"visibility timeout {vt_s:.0f} s")
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(out, load)
        for k in range(kills):
            load.wait_for(int((k + 1) * interval_s * rate))   # faults come on a running load
            pid = sink_worker_pid(agent)
            recovery.fault()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: sink_worker_pid(agent) != pid, 60, what="the restarted worker")
        settle(result, load, recovery, out)
    finally:
        agent.stop()
    return count(result, load, out)


def replicated_conf(port: int, outs: list[Path]) -> str:
    """An http source replicating into one file channel per output, each drained by its own file_roll sink (its own
    sink worker)."""
    names = range(1, len(outs) + 1)
    return (f"""
a1.sources = r1
a1.channels = {' '.join(f'c{n}' for n in names)}
a1.sinks = {' '.join(f'k{n}' for n in names)}
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = {' '.join(f'c{n}' for n in names)}
""" + "".join(f"""
a1.channels.c{n}.type = file
a1.channels.c{n}.transactionCapacity = 1000
a1.sinks.k{n}.type = file_roll
a1.sinks.k{n}.sink.directory = {out}
a1.sinks.k{n}.sink.rollInterval = 1
a1.sinks.k{n}.sink.batchSize = 500
a1.sinks.k{n}.channel = c{n}
""" for n, out in zip(names, outs)))


def unit_worker_pid(agent: AgentProcess, unit: str) -> int:
    """The pid of the agent's sink worker for ``unit`` (its Celery node name starts with ``<unit>@``)."""
    return sink_worker_pid(agent, f"--hostname\0{unit}@".encode(), f"the sink worker of {unit}")


def numbers(out: Path) -> list[bytes]:
    """The event numbers (``e<n>``) of the lines a :class:`PaddedLoad` sent, as a file_roll sink wrote them."""
    return [line.split(b" ", 1)[0] for line in read_lines(out)]


def replicated_worker_kills(tmp: Path, total: int, rate: float, kills: int, interval_s: float, vt_s: float,
                            one_worker: bool = False) -> Result:
    """kill -9 of one of two sink workers, in turn, while a replicating source fills their two channels with the
    same batches (stored once in Redis, shared by both channels' messages).  Each output must get every event once,
    and once everything is delivered no message and no shared data may be left in Redis: a reference count off by
    one would keep the data for ever, or delete it while the other channel still needs it (that channel's sink
    would then fail to decode its message).  ``one_worker``: the agent runs both sinks in one worker process
    (``--sink-workers one``, two threads), killed each time."""
    port, outs = free_port(), [tmp / "out1", tmp / "out2"]
    server = RedisServer(tmp / "redis").start()
    agent = AgentProcess(tmp, replicated_conf(port, outs), broker_url=server.url,
                         extra=["--sink-workers", "one" if one_worker else "per-sink"],
                         env={"FLUMERY_VISIBILITY_TIMEOUT_S": str(vt_s)}).start()
    result = Result("kill -9 the one sink worker (two sink threads) of replicated batches (shared data)" if one_worker
                    else "kill -9 one of two sink workers of replicated batches (shared data)", faults=kills)
    result.notes.append(f"visibility timeout {vt_s:.0f} s")
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = PaddedLoad(port, total, rate).start()
        recovery = Recovery(outs[0], load, outputs=lambda: set(numbers(outs[0])) & set(numbers(outs[1])))
        for k in range(kills):
            load.wait_for(int((k + 1) * interval_s * rate))
            unit = "k1+k2" if one_worker else f"k{k % 2 + 1}"
            pid = unit_worker_pid(agent, unit)
            recovery.fault()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid, unit=unit: unit_worker_pid(agent, unit) != pid, 60,
                       what=f"the restarted worker of {unit}")
        settle(result, load, recovery, outs[0])
        client = server.client()
        try:
            wait_until(lambda: not client.keys("flumery.msg:*"), 30, what="no message left in Redis")
        except AssertionError:
            result.notes.append(f"{len(client.keys('flumery.msg:*'))} message or shared-data keys left in Redis "
                                "after everything was delivered")
    finally:
        agent.stop()
        server.stop()
    sent, per_output = load.all_sent(), [Counter(numbers(out)) for out in outs]
    result.sent = len(sent)
    result.delivered = min(len(sent & set(seen)) for seen in per_output)
    result.lost = result.sent - result.delivered
    result.duplicated = sum(n - 1 for seen in per_output for n in seen.values() if n > 1)
    return result


def kill_after_write(tmp: Path, total: int, rate: float, kills: int, interval_s: float) -> Result:
    """kill -9 of the sink worker right after a write, before its acknowledgement, ``kills`` times: the batch comes
    back and must not be written twice (file_roll's journal).  The sink is a real file_roll that kills its own process
    after a write when asked to (``tests.fault_sinks:KillAfterWriteFileRoll``): the window is hit every time."""
    port, out = free_port(), tmp / "out"
    sinks = f"""
a1.sinks.k1.type = tests.fault_sinks:KillAfterWriteFileRoll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.rollInterval = 1
a1.sinks.k1.sink.batchSize = 500
a1.sinks.k1.channel = c1
"""
    agent = AgentProcess(tmp, agent_conf(port, out, sinks=sinks)).start()
    result = Result("kill -9 sink worker right after its write, before its ack", faults=kills)
    trigger = Path(f"{out}.kill")
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(out, load)
        for k in range(kills):
            load.wait_for(int((k + 1) * interval_s * rate))
            pid = sink_worker_pid(agent)
            recovery.fault()
            trigger.touch()
            wait_until(lambda pid=pid: sink_worker_pid(agent) != pid, 60,
                       what="the worker to kill itself after a write")
        settle(result, load, recovery, out)
        died = agent.output().count("exited with -9")
        assert died == kills, f"{died} sink worker deaths by SIGKILL in the agent's log, {kills} wanted"
        result.notes.append(f"rollInterval 1 s; {died} kills right after a write, each restarted by the agent")
    finally:
        agent.stop()
    return count(result, load, out)


def held_batch_kill(tmp: Path, vt_s: float) -> Result:
    """kill -9 of a sink worker while it holds a batch it cannot write yet; the store comes back at once, so only
    the visibility timeout ``vt_s`` delays the batch: it comes back to the channel and the restarted worker writes
    it.  The agent sees its worker die and gives the worker's messages back at once, so recovery does not wait for
    the lease.  recover_s is the time from the kill until the batch is in the store."""
    port, out = free_port(), tmp / "out"
    agent = AgentProcess(tmp, agent_conf(port, out), env={"FLUMERY_VISIBILITY_TIMEOUT_S": str(vt_s)}).start()
    result = Result("kill -9 sink worker holding a batch", faults=1)
    result.notes.append(f"visibility timeout {vt_s:.0f} s")
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, 50, 1000).start()
        load.join()
        wait_until(lambda: len(read_lines(out)) >= 50, 60, what="the first events")
        # The lines are visible as soon as they are written; the sink then checks that its file is still at its
        # path: moving the directory before that check would make it write those 50 events again, into a store
        # that is broken on purpose, and hold them instead of the batch this scenario means.
        time.sleep(0.5)
        aside = tmp / "out-aside"
        out.rename(aside)
        out.write_text("not a directory\n")           # the store fails: the worker holds the next batch
        time.sleep(1.5)                                # past the roll interval: the next write opens a new file
        held = Load(port, 60, 1000)
        held.acked, held.total = [], 10
        assert held._post(50) == 200
        load.acked.append((time.monotonic(), 50))
        wait_until(lambda: "write of 10 events failed" in agent.output(), 30, what="the worker failing the batch")
        os.kill(sink_worker_pid(agent), signal.SIGKILL)
        killed_at = time.monotonic()
        out.unlink()
        aside.rename(out)
        wanted = {f"e{50 + j}".encode() for j in range(PER_REQUEST)}
        wait_until(lambda: wanted <= set(read_lines(out)), min(300.0, max(60.0, vt_s / 2)), what="the held batch")
        result.recover_s = time.monotonic() - killed_at
    finally:
        agent.stop()
    return count(result, load, out)


def pool_child_kills(tmp: Path, total: int, rate: float, kills: int, interval_s: float, vt_s: float) -> Result:
    """kill -9 of a prefork pool child of a separate `celery -A app worker`; Celery replaces the child."""
    port, out = free_port(), tmp / "out"
    redis_server = RedisServer(tmp / "redis").start()
    conf = agent_conf(port, out)
    sources = AgentProcess(tmp, conf, broker_url=redis_server.url, role="sources").start()
    env = {**sources.env, "FLUMERY_CONF_FILE": str(sources.conf), "FLUMERY_AGENT": "a1",
           "FLUMERY_BROKER_URL": redis_server.url, "FLUMERY_VISIBILITY_TIMEOUT_S": str(vt_s)}
    log = open(tmp / "worker.log", "ab")
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "app", "worker", "--pool", "prefork",
                               "--concurrency", "1", "--loglevel", "INFO", "--without-gossip",
                               "--without-mingle"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    result = Result("kill -9 sink worker (prefork pool child)", faults=kills)
    result.notes.append(f"visibility timeout {vt_s:.0f} s")
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(out, load)
        for k in range(kills):
            load.wait_for(int((k + 1) * interval_s * rate))   # faults come on a running load
            child = wait_until(lambda: (children(worker.pid) or [None])[0], 60, what="the pool child")
            recovery.fault()
            os.kill(child, signal.SIGKILL)
            wait_until(lambda child=child: (children(worker.pid) or [child])[0] != child, 60, what="a new pool child")
        settle(result, load, recovery, out)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        sources.stop()
        redis_server.stop()
    return count(result, load, out)


def agent_kill(tmp: Path, total: int, rate: float) -> Result:
    """kill -9 of the whole agent (sources, and with it its broker and workers) mid-flow, then a restart."""
    port, out = free_port(), tmp / "out"
    conf = agent_conf(port, out)
    agent = AgentProcess(tmp, conf).start()
    result = Result("kill -9 agent (sources process) + restart", faults=1)
    wait_until(lambda: port_open(port), 60, what="the http source")
    load = Load(port, total, rate).start()
    recovery = Recovery(out, load)
    load.wait_for(int(3 * rate))
    recovery.fault()
    agent.process.kill()
    agent.process.wait(30)
    agent.log.close()
    restarted = AgentProcess(tmp, conf).start()
    try:
        settle(result, load, recovery, out)
        result.notes.append(f"{load.errors} requests refused while the agent was down, then retried")
    finally:
        restarted.stop()
    return count(result, load, out)


def taildir_agent_kill(tmp: Path, total: int, rate: float) -> Result:
    """kill -9 of a TAILDIR agent while its log grows, then a restart: it resumes from its position file."""
    log_dir, out = tmp / "logs", tmp / "out"
    log_dir.mkdir()
    conf = f"""
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = TAILDIR
a1.sources.r1.filegroups = f1
a1.sources.r1.filegroups.f1 = {log_dir}/app\\.log
a1.sources.r1.positionFile = {tmp}/taildir_position.json
a1.sources.r1.batchSize = 500
a1.sources.r1.channels = c1
a1.channels.c1.type = file
a1.channels.c1.transactionCapacity = 1000
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.rollInterval = 1
a1.sinks.k1.sink.batchSize = 1000
a1.sinks.k1.channel = c1
"""
    load = FileLoad(log_dir / "app.log", total, rate).start()
    agent = AgentProcess(tmp, conf).start()
    result = Result("kill -9 agent (TAILDIR source) + restart", faults=1)
    recovery = Recovery(out, load)
    wait_until(lambda: out.exists() and any(out.iterdir()), 60, what="first output")
    load.wait_for(int(3 * rate))
    recovery.fault()
    agent.process.kill()
    agent.process.wait(30)
    agent.log.close()
    time.sleep(1)
    restarted = AgentProcess(tmp, conf).start()
    try:
        settle(result, load, recovery, out)
    finally:
        restarted.stop()
    return count(result, load, out)


def redis_restart(tmp: Path, total: int, rate: float, appendfsync: str) -> Result:
    """kill -9 of the broker (append-only file on) mid-flow, restarted a second later on the same port."""
    port, out = free_port(), tmp / "out"
    server = RedisServer(tmp / "redis", appendfsync=appendfsync).start()
    agent = AgentProcess(tmp, agent_conf(port, out), broker_url=server.url).start()
    result = Result(f"kill -9 + restart Redis (appendfsync {appendfsync})", faults=1)
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(out, load)
        load.wait_for(int(3 * rate))
        recovery.fault()
        server.stop(kill=True)
        time.sleep(1)
        server.start()
        settle(result, load, recovery, out)
        result.notes.append(f"{load.refused} requests answered 503 while Redis was down")
    finally:
        agent.stop()
        server.stop()
    return count(result, load, out)


def sentinel_failover(tmp: Path, total: int, rate: float) -> Result:
    """kill -9 of the Redis master under Sentinel mid-flow (a master, two replicas, three sentinels); the
    sentinels promote a replica and the agent's sources and workers follow.  Puts into the file channel wait for
    a replica (WAIT), so the failover loses nothing the source acknowledged; the promoted master keeps the other
    replica, so puts are confirmed again once the sentinels have re-pointed it."""
    port, out = free_port(), tmp / "out"
    deployment = SentinelDeployment(tmp / "sentinel", replicas=2).start()
    agent = AgentProcess(tmp, agent_conf(port, out), broker_url=deployment.url(),
                         env={"FLUMERY_REPLICA_TIMEOUT_MS": "500"}).start()
    result = Result("kill -9 Redis master under Sentinel", faults=1)
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(out, load)
        wait_until(lambda: load.acked, 60, what="the first acknowledged request")
        load.wait_for(int(2 * rate))
        recovery.fault()
        killed_at = time.monotonic()
        promoted_s = deployment.kill_master()
        settle(result, load, recovery, out)
        times = [t for t, _ in load.acked]
        pause_s = max((b - a for a, b in zip(times, times[1:]) if b > killed_at), default=0.0)
        result.notes.append(f"replica promoted {promoted_s:.1f} s after the kill; the flow paused {pause_s:.1f} s "
                            f"(longest gap between acknowledgements); {load.refused} requests answered 503, "
                            f"{load.errors} failed, all retried")
    finally:
        agent.stop()
        deployment.stop()
    return count(result, load, out)


def cluster_failover(tmp: Path, total: int, rate: float) -> Result:
    """kill -9 of the Redis Cluster master that owns the agent's hash slot mid-flow (three masters, two replicas
    each); the cluster promotes a replica and the agent's source and sink worker reconnect to it (they ask the
    cluster again where the slot is).  Puts into the file channel wait for a replica (WAIT), so the failover loses
    nothing the source acknowledged; the promoted master keeps the other replica, so puts are confirmed again."""
    port, out = free_port(), tmp / "out"
    cluster = ClusterDeployment(tmp / "cluster", replicas=2).start()
    agent = AgentProcess(tmp, agent_conf(port, out), broker_url=cluster.url(),
                         env={"FLUMERY_REPLICA_TIMEOUT_MS": "500"}).start()
    result = Result("kill -9 Redis Cluster master of the agent's slot", faults=1)
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(out, load)
        wait_until(lambda: load.acked, 60, what="the first acknowledged request")
        load.wait_for(int(2 * rate))
        recovery.fault()
        killed_at = time.monotonic()
        promoted_s = cluster.kill_master_of("{a1}")
        settle(result, load, recovery, out)
        times = [t for t, _ in load.acked]
        pause_s = max((b - a for a, b in zip(times, times[1:]) if b > killed_at), default=0.0)
        result.notes.append(f"replica promoted {promoted_s:.1f} s after the kill; the flow paused {pause_s:.1f} s "
                            f"(longest gap between acknowledgements); {load.refused} requests answered 503, "
                            f"{load.errors} failed, all retried")
    finally:
        agent.stop()
        cluster.stop()
    return count(result, load, out)


def hot_reloads(tmp: Path, total: int, rate: float, every_s: float) -> Result:
    """The agent file changes every ``every_s`` seconds (SIGHUP) between two valid versions that differ in the
    source (an interceptor) and the sink (its batch size): each reload replaces the HTTP source and restarts the
    sink worker while the load runs."""
    port, out = free_port(), tmp / "out"
    first = agent_conf(port, out)
    second = first.replace("a1.sinks.k1.sink.batchSize = 500", "a1.sinks.k1.sink.batchSize = 200") + (
        "a1.sources.r1.interceptors = i1\na1.sources.r1.interceptors.i1.type = timestamp\n")
    agent = AgentProcess(tmp, first, extra=["--reload-interval", "0"]).start()
    result = Result(f"hot reload every {every_s:.0f} s (source and sink replaced)")
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(out, load)
        while load.thread.is_alive():
            if load.stop.wait(every_s) or not load.thread.is_alive():
                break
            agent.conf.write_text(second if result.faults % 2 == 0 else first)
            agent.process.send_signal(signal.SIGHUP)
            result.faults += 1
            recovery.fault()
        settle(result, load, recovery, out)
        reloads = agent.output().count("reloaded ")
        result.notes.append(f"{reloads} reloads applied; {load.refused} requests answered 503, {load.errors} "
                            f"failed, all retried")
    finally:
        agent.stop()
    return count(result, load, out)


def store_outage(tmp: Path, total: int, rate: float, outage_s: float) -> Result:
    """The file_roll directory disappears (a regular file takes its path) for ``outage_s``, then comes back."""
    port, out = free_port(), tmp / "out"
    agent = AgentProcess(tmp, agent_conf(port, out)).start()
    result = Result(f"store unavailable for {outage_s:.0f} s", faults=1)
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(out, load)
        wait_until(lambda: out.exists() and any(out.iterdir()), 60, what="first output")
        load.wait_for(int(2 * rate))
        aside = tmp / "out-aside"
        out.rename(aside)
        out.write_text("not a directory\n")             # opening the next file fails, even as root
        time.sleep(outage_s)
        out.unlink()
        aside.rename(out)
        recovery.fault()                                 # recovery: from the store's return to the backlog drained
        settle(result, load, recovery, out)
    finally:
        agent.stop()
    return count(result, load, out)


def store_removed(tmp: Path, total: int, rate: float) -> Result:
    """``rm -rf`` of the file_roll directory mid-flow, with ``rollInterval = 0`` (one file, kept open).  The
    directory is renamed away, read (what the sink wrote before the removal counts as delivered), then removed; the
    sink must recreate it and write there everything it had not yet written into a file at its path."""
    port, out = free_port(), tmp / "out"
    sinks = f"""
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.rollInterval = 0
a1.sinks.k1.sink.batchSize = 500
a1.sinks.k1.channel = c1
"""
    agent = AgentProcess(tmp, agent_conf(port, out, sinks=sinks)).start()
    result = Result("store directory removed mid-flow", faults=1)
    kept: list[bytes] = []
    merged = tmp / "merged"
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(out, load, outputs=lambda: kept + read_lines(out))
        wait_until(lambda: out.exists() and any(out.iterdir()), 60, what="first output")
        load.wait_for(int(2 * rate))
        removed = tmp / "out-removed"
        out.rename(removed)
        recovery.fault()
        kept += read_lines(removed)
        shutil.rmtree(removed)
        settle(result, load, recovery, out)
        result.notes.append(f"{len(kept)} events were in the directory when it was removed")
    finally:
        agent.stop()
    merged.mkdir()
    (merged / "all").write_bytes(b"".join(line + b"\n" for line in kept + read_lines(out)))
    return count(result, load, merged)


def failover_outage(tmp: Path, total: int, rate: float, outage_s: float) -> Result:
    """The primary of a failover group loses its store for ``outage_s``: events go to the backup meanwhile."""
    port, primary, backup = free_port(), tmp / "primary", tmp / "backup"
    sinks = f"""
a1.sinks = k1 k2
a1.sinkgroups = g1
a1.sinkgroups.g1.sinks = k1 k2
a1.sinkgroups.g1.processor.type = failover
a1.sinkgroups.g1.processor.priority.k1 = 10
a1.sinkgroups.g1.processor.priority.k2 = 5
a1.sinkgroups.g1.processor.maxpenalty = 5000
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {primary}
a1.sinks.k1.sink.rollInterval = 1
a1.sinks.k1.sink.batchSize = 500
a1.sinks.k1.channel = c1
a1.sinks.k2.type = file_roll
a1.sinks.k2.sink.directory = {backup}
a1.sinks.k2.sink.rollInterval = 1
a1.sinks.k2.sink.batchSize = 500
a1.sinks.k2.channel = c1
"""
    conf = agent_conf(port, primary, sinks=sinks).replace("a1.sinks = k1\n", "")
    agent = AgentProcess(tmp, conf).start()
    result = Result(f"failover group, primary store unavailable for {outage_s:.0f} s", faults=1)
    merged = tmp / "merged"
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        wait_until(lambda: primary.exists() and any(primary.iterdir()), 60, what="first output")
        load.wait_for(int(2 * rate))
        fault_at = time.monotonic()
        aside = tmp / "primary-aside"
        primary.rename(aside)
        primary.write_text("not a directory\n")
        wait_until(lambda: backup.exists() and any(backup.iterdir()), outage_s + 30, what="the backup taking over")
        took_over = time.monotonic() - fault_at
        time.sleep(max(0.0, outage_s - took_over))
        primary.unlink()
        aside.rename(primary)
        load.join()
        merged.mkdir()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            lines = read_lines(primary) + read_lines(backup)
            if load.all_sent() <= set(lines):
                break
            time.sleep(0.25)
        result.recover_s = took_over
        result.notes.append(f"backup took over {took_over:.1f} s after the fault; "
                            f"{len(read_lines(backup))} events went to the backup")
    finally:
        agent.stop()
    (merged / "all").write_bytes(b"".join(line + b"\n" for line in read_lines(primary) + read_lines(backup)))
    return count(result, load, merged)


def channel_full(tmp: Path, total: int, rate: float, hold_s: float) -> Result:
    """No sink for ``hold_s`` (sources only): the channel fills, the HTTP source answers 503, memory stays flat;
    then sink workers start and everything acknowledged is delivered."""
    port, out = free_port(), tmp / "out"
    server = RedisServer(tmp / "redis").start()
    conf = agent_conf(port, out, capacity=2000)
    sources = AgentProcess(tmp, conf, broker_url=server.url, role="sources").start()
    result = Result(f"channel held full for {hold_s:.0f} s (no sink)", faults=1)
    sinks = None
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(out, load)
        wait_until(lambda: load.refused > 0, 60, what="the first 503")
        baseline = rss_kib(sources.process.pid)
        peak = baseline
        end = time.monotonic() + hold_s
        while time.monotonic() < end:
            peak = max(peak, rss_kib(sources.process.pid))
            time.sleep(0.5)
        recovery.fault()
        sinks = AgentProcess(tmp, conf, broker_url=server.url, role="sinks").start()
        settle(result, load, recovery, out)
        result.notes.append(f"{load.refused} requests answered 503; agent RSS {baseline // 1024} MiB at the first "
                            f"503, at most {peak // 1024} MiB while full")
        result.peak_growth_kib = peak - baseline
    finally:
        if sinks:
            sinks.stop()
        sources.stop()
        server.stop()
    return count(result, load, out)


# --- avro hops: three tier-1 agents -> collector(s) -> file_roll ----------------------------------------------------

class TaggedLoad(Load):
    """A Load whose events are ``<tag>e0``, ``<tag>e1``, ...: several tier-1 agents send distinct events."""

    def __init__(self, port: int, total: int, rate: float, tag: str):
        super().__init__(port, total, rate)
        self.tag = tag

    def _post(self, first: int) -> int | None:
        body = json.dumps([{"body": f"{self.tag}e{first + j}"} for j in range(PER_REQUEST)]).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, http.client.HTTPException):   # no (complete) answer: the agent is down or was killed
            return None

    def sent_before(self, moment: float) -> set[bytes]:
        return {f"{self.tag}e{first + j}".encode() for t, first in self.acked if t <= moment
                for j in range(PER_REQUEST)}


class Loads:
    """Several loads seen as one (by Recovery, settle and count)."""

    def __init__(self, loads: list[Load]):
        self.loads = loads
        self.thread = self

    def is_alive(self) -> bool:
        return any(load.thread.is_alive() for load in self.loads)

    def finished(self) -> bool:
        return not self.is_alive()

    def start(self) -> "Loads":
        for load in self.loads:
            load.start()
        return self

    def join(self, timeout_s: float = 600) -> None:
        for load in self.loads:
            load.join(timeout_s)

    def sent_before(self, moment: float) -> set[bytes]:
        return set().union(*(load.sent_before(moment) for load in self.loads))

    def all_sent(self) -> set[bytes]:
        return self.sent_before(float("inf"))

    @property
    def errors(self) -> int:
        return sum(load.errors + load.refused for load in self.loads)


def collector_conf(port: int, out: Path) -> str:
    return f"""
c.sources = r1
c.channels = ch
c.sinks = k1
c.sources.r1.type = avro
c.sources.r1.bind = 127.0.0.1
c.sources.r1.port = {port}
c.sources.r1.channels = ch
c.channels.ch.type = file
c.channels.ch.capacity = 1000000
c.channels.ch.transactionCapacity = 1000
c.sinks.k1.type = file_roll
c.sinks.k1.sink.directory = {out}
c.sinks.k1.sink.rollInterval = 1
c.sinks.k1.sink.batchSize = 1000
c.sinks.k1.channel = ch
"""


def tier1_conf(http_port: int, collector_ports: list[int]) -> str:
    """http -> file channel -> one avro sink, or a load_balance group (backoff) of one avro sink per collector."""
    names = [f"k{i + 1}" for i in range(len(collector_ports))]
    text = f"""
t.sources = r1
t.channels = c1
t.sinks = {' '.join(names)}
t.sources.r1.type = http
t.sources.r1.bind = 127.0.0.1
t.sources.r1.port = {http_port}
t.sources.r1.channels = c1
t.channels.c1.type = file
t.channels.c1.capacity = 1000000
t.channels.c1.transactionCapacity = 1000
"""
    for name, port in zip(names, collector_ports, strict=True):
        text += f"""t.sinks.{name}.type = avro
t.sinks.{name}.hostname = 127.0.0.1
t.sinks.{name}.port = {port}
t.sinks.{name}.batch-size = 500
t.sinks.{name}.connect-timeout = 2000
t.sinks.{name}.request-timeout = 3000
t.sinks.{name}.channel = c1
"""
    if len(names) > 1:
        text += f"""t.sinkgroups = g1
t.sinkgroups.g1.sinks = {' '.join(names)}
t.sinkgroups.g1.processor.type = load_balance
t.sinkgroups.g1.processor.backoff = true
t.sinkgroups.g1.processor.selector = round_robin
"""
    return text


class HopFleet:
    """Collectors (avro -> file channel -> file_roll, each its own agent and embedded broker) and three tier-1
    agents (HTTP -> file channel -> avro sink(s)), each tier-1 agent fed by its own load of distinct events."""

    def __init__(self, tmp: Path, collectors: int, total: int, rate: float):
        self.tmp = tmp
        self.ports = [free_port() for _ in range(collectors)]
        self.outs = [tmp / f"out{i}" for i in range(collectors)]
        self.collectors = [self._collector(i) for i in range(collectors)]
        self.tiers = []
        self.loads = []
        for n in range(3):
            http = free_port()
            home = tmp / f"tier{n}"
            home.mkdir()
            self.tiers.append(AgentProcess(home, tier1_conf(http, self.ports), name="t"))
            self.loads.append(TaggedLoad(http, total, rate, f"t{n}-"))
        self.load = Loads(self.loads)

    def _collector(self, i: int) -> AgentProcess:
        home = self.tmp / f"collector{i}"
        home.mkdir(exist_ok=True)
        return AgentProcess(home, collector_conf(self.ports[i], self.outs[i]), name="c")

    def start(self) -> "HopFleet":
        for agent in self.collectors + self.tiers:
            agent.start()
        wait_until(lambda: all(port_open(p) for p in self.ports + [load.port for load in self.loads]), 90,
                   what="the fleet's sources")
        self.load.start()
        return self

    def outputs(self) -> list[bytes]:
        return [line for out in self.outs for line in read_lines(out)]

    def kill_collector(self, i: int) -> None:
        """kill -9 of the collector agent and of its embedded broker (and so of its sink worker)."""
        agent = self.collectors[i]
        redis_pid = int((agent.data_dir / "redis" / "redis.pid").read_text())
        workers = children(agent.process.pid)
        for pid in [agent.process.pid, redis_pid, *workers]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        agent.process.wait(30)
        agent.log.close()

    def restart_collector(self, i: int) -> None:
        self.collectors[i] = self._collector(i).start()
        wait_until(lambda: port_open(self.ports[i]), 90, what="the restarted collector")

    def stop(self) -> None:
        for load in self.loads:
            load.stop.set()
        for agent in self.tiers + self.collectors:
            if agent.process is not None and agent.process.poll() is None:
                agent.stop()

    def merged(self) -> Path:
        merged = self.tmp / "merged"
        merged.mkdir(exist_ok=True)
        (merged / "all").write_bytes(b"".join(line + b"\n" for line in self.outputs()))
        return merged


def hop_settle(result: Result, fleet: HopFleet, recovery: Recovery) -> Result:
    fleet.load.join()
    recovery.wait_all(240)
    sent = fleet.load.all_sent()
    wait_until(lambda: sent <= set(fleet.outputs()), 240, 0.25, what="every acknowledged event at the collectors")
    result.recover_s = recovery.worst()
    return result


def hop_collector_kill(tmp: Path, total: int, rate: float, down_s: float) -> Result:
    """kill -9 of the collector (agent, embedded broker, sink worker) mid-flow; restarted ``down_s`` later on the
    same data directory: what it had answered OK to is in its append-only file and is delivered."""
    fleet = HopFleet(tmp, 1, total, rate)
    result = Result("avro hop: kill -9 collector (with its broker) + restart", faults=1)
    try:
        fleet.start()
        recovery = Recovery(tmp, fleet.load, fleet.outputs)
        wait_until(lambda: len(fleet.outputs()) > rate, 90, what="the first events at the collector")
        recovery.fault()
        fleet.kill_collector(0)
        time.sleep(down_s)
        fleet.restart_collector(0)
        recovery.fault()                 # and from the restart until the tier-1 backlog is delivered
        hop_settle(result, fleet, recovery)
        result.notes.append(f"collector down {down_s:.0f} s; recovery counted from the kill and from the restart")
    finally:
        fleet.stop()
    return count(result, fleet.load, fleet.merged())


def hop_collector_frozen(tmp: Path, total: int, rate: float, frozen_s: float) -> Result:
    """The collector is unreachable for ``frozen_s``: SIGSTOP of its agent (its avro source accepts connections in
    the kernel but answers nothing, so the tier-1 sinks time out and retry), then SIGCONT.  Calls answered late are
    sent again by then: duplicates, no loss."""
    fleet = HopFleet(tmp, 1, total, rate)
    result = Result(f"avro hop: collector unreachable (SIGSTOP) for {frozen_s:.0f} s", faults=1)
    try:
        fleet.start()
        recovery = Recovery(tmp, fleet.load, fleet.outputs)
        wait_until(lambda: len(fleet.outputs()) > rate, 90, what="the first events at the collector")
        agent = fleet.collectors[0].process
        os.kill(agent.pid, signal.SIGSTOP)
        time.sleep(frozen_s)
        os.kill(agent.pid, signal.SIGCONT)
        recovery.fault()                     # recovery: from the collector's return to the backlog delivered
        hop_settle(result, fleet, recovery)
        result.notes.append("recovery from SIGCONT")
    finally:
        fleet.stop()
    return count(result, fleet.load, fleet.merged())


def hop_tier1_worker_kills(tmp: Path, total: int, rate: float, kills: int, interval_s: float) -> Result:
    """kill -9 of the avro sink worker of a tier-1 agent, repeatedly (its agent gives back what it held and
    restarts it)."""
    fleet = HopFleet(tmp, 1, total, rate)
    result = Result("avro hop: kill -9 tier-1 avro sink worker", faults=kills)
    try:
        fleet.start()
        recovery = Recovery(tmp, fleet.load, fleet.outputs)
        for k in range(kills):
            time.sleep(interval_s)
            tier = fleet.tiers[k % len(fleet.tiers)]
            pid = sink_worker_pid(tier)
            recovery.fault()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda tier=tier, pid=pid: sink_worker_pid(tier) != pid, 60, what="the restarted worker")
        hop_settle(result, fleet, recovery)
    finally:
        fleet.stop()
    return count(result, fleet.load, fleet.merged())


def hop_balanced_collector_kill(tmp: Path, total: int, rate: float, down_s: float) -> Result:
    """Three tier-1 agents, each with a load_balance group (backoff) of two avro sinks, one per collector; kill -9
    of one collector (with its broker) mid-flow: its share goes to the other; restarted ``down_s`` later it
    delivers what it had acknowledged.  recover_s is until that is delivered too."""
    fleet = HopFleet(tmp, 2, total, rate)
    result = Result("avro hop: one of two load-balanced collectors kill -9 + restart", faults=1)
    try:
        fleet.start()
        recovery = Recovery(tmp, fleet.load, fleet.outputs)
        wait_until(lambda: read_lines(fleet.outs[1]) and read_lines(fleet.outs[0]), 90,
                   what="events at both collectors")
        recovery.fault()
        killed_at = time.monotonic()
        fleet.kill_collector(1)
        before = len(read_lines(fleet.outs[0]))
        wait_until(lambda: len(read_lines(fleet.outs[0])) > before + rate, 60, what="the other collector going on")
        went_on = time.monotonic() - killed_at
        time.sleep(max(0.0, down_s - went_on))
        fleet.restart_collector(1)
        recovery.fault()
        hop_settle(result, fleet, recovery)
        result.notes.append(f"the other collector took the traffic within {went_on:.1f} s; killed one down "
                            f"{down_s:.0f} s")
    finally:
        fleet.stop()
    return count(result, fleet.load, fleet.merged())


# --- the hdfs sink on a real HDFS -----------------------------------------------------------------------------------

def hdfs_sink_conf(cluster: HadoopCluster, root: str) -> str:
    return f"""
a1.sinks.k1.type = hdfs
a1.sinks.k1.channel = c1
a1.sinks.k1.hdfs.path = {cluster.fs_uri}{root}
a1.sinks.k1.hdfs.webHdfsAddress = {cluster.http_address}
a1.sinks.k1.hdfs.fileType = DataStream
a1.sinks.k1.hdfs.rollCount = 0
a1.sinks.k1.hdfs.rollSize = 0
a1.sinks.k1.hdfs.rollInterval = 5
a1.sinks.k1.hdfs.batchSize = 1000
a1.sinks.k1.hdfs.callTimeout = 10000
a1.sinks.k1.hdfs.retryInterval = 2
"""


class HdfsOutput:
    """Every line of every file under ``root`` in HDFS (in-use files too: their appends are confirmed)."""

    def __init__(self, cluster: HadoopCluster, root: str):
        self.cluster, self.root = cluster, root

    def files(self) -> list[str]:
        try:
            return self.cluster.list_files(self.root)
        except (OSError, http.client.HTTPException):
            return []

    def lines(self) -> list[bytes]:
        out: list[bytes] = []
        for path in self.files():
            try:
                data = self.cluster.read(path)
            except (OSError, http.client.HTTPException):   # renamed meanwhile, HDFS down, or a DataNode killed
                continue                                    # mid-read (IncompleteRead): the next poll sees it
            out += data.split(b"\n")[:-1]
        return out


def hdfs_faults(tmp: Path, total: int, rate: float, name: str, fault) -> Result:
    """Drive ``total`` events through http -> file channel -> hdfs on a private Hadoop, calling ``fault(agent,
    cluster, recovery)`` while the load runs; then a clean stop.  Reports duplicates at rest and in-use files
    left after the clean stop."""
    cluster = HadoopCluster(tmp / "hadoop").start()
    port, root = free_port(), "/chaos"
    output = HdfsOutput(cluster, root)
    merged = tmp / "merged"
    conf = agent_conf(port, merged, sinks=hdfs_sink_conf(cluster, root))
    agent = AgentProcess(tmp, conf, env={"FLUMERY_VISIBILITY_TIMEOUT_S": "10"}).start()
    result = Result(name)
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(merged, load, outputs=output.lines)
        wait_until(lambda: output.files(), 60, what="the first file in HDFS")
        result.faults = fault(agent, cluster, recovery)
        load.join()
        recovery.wait_all(300)
        result.recover_s = recovery.worst()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not load.all_sent() <= set(output.lines()):
            time.sleep(0.5)
    finally:
        stopped = agent.stop()
        try:
            files = output.files()
            in_use = [f for f in files if f.endswith(".tmp")]
            if in_use:
                # A file HDFS still holds under the lease of a writer that died with the DataNode cannot be
                # settled before HDFS's 60 s lease limit: the next start of the sink finishes it.
                again = AgentProcess(tmp, conf, env={"FLUMERY_VISIBILITY_TIMEOUT_S": "10"}).start()
                try:
                    # A sink starts with its first batch: send one (numbered past the load, so not counted).
                    wait_until(lambda: port_open(port), 60, what="the restarted http source")
                    assert Load(port, 0, 1)._post(total + 1000) == 200
                    wait_until(lambda: not any(f.endswith(".tmp") for f in output.files()), 240,
                               interval_s=1, what="the next start to finish the in-use files")
                finally:
                    again.stop()
            merged.mkdir(exist_ok=True)
            (merged / "all").write_bytes(b"".join(line + b"\n" for line in output.lines()))
            after_restart = [f for f in output.files() if f.endswith(".tmp")]
        finally:
            cluster.stop()
    result.tmp_left = len(after_restart)
    result.notes.append(f"{len(files)} files; in-use (.tmp) files left: {len(in_use)} after the clean stop "
                        f"(agent exit {stopped}), {len(after_restart)} after the next start")
    return count(result, load, merged)


def hdfs_worker_kills(tmp: Path, total: int, rate: float, kills: int, interval_s: float) -> Result:
    def fault(agent, cluster, recovery):
        for _ in range(kills):
            time.sleep(interval_s)
            pid = sink_worker_pid(agent)
            recovery.fault()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: sink_worker_pid(agent) != pid, 60, what="the restarted worker")
        return kills
    return hdfs_faults(tmp, total, rate, f"hdfs: kill -9 sink worker x{kills}", fault)


def hdfs_datanode_stop(tmp: Path, total: int, rate: float, down_s: float) -> Result:
    def fault(agent, cluster, recovery):
        time.sleep(2)
        cluster.stop_role("datanode")
        time.sleep(down_s)
        cluster.start_datanode()
        recovery.fault()                      # recovery: from the DataNode's return to the backlog written
        return 1
    return hdfs_faults(tmp, total, rate, f"hdfs: DataNode stopped {down_s:.0f} s", fault)


def hdfs_namenode_restart(tmp: Path, total: int, rate: float) -> Result:
    def fault(agent, cluster, recovery):
        time.sleep(2)
        recovery.fault()
        cluster.stop_role("namenode")
        cluster.start_namenode()
        cluster.wait_ready(120)
        return 1
    return hdfs_faults(tmp, total, rate, "hdfs: NameNode restarted", fault)


# --- keyed stores: no duplicates at rest --------------------------------------------------------------------

PROBES = {"elasticsearch": ElasticsearchProbe, "mongodb": MongoProbe, "hbase": HBaseProbe}


def count_store(result: Result, load: Load, probe) -> Result:
    """lost = acknowledged events whose body is in no stored document/row; duplicated = stored documents/rows
    beyond one per body (an event stored twice under different ids).  The store is read by id: one body per
    document or row."""
    stored = Counter(probe.bodies())
    sent = load.all_sent()
    result.sent = len(sent)
    result.delivered = len(sent & set(stored))
    result.lost = result.sent - result.delivered
    result.duplicated = sum(n - 1 for n in stored.values() if n > 1)
    result.notes.append(f"{sum(stored.values())} documents/rows in the store")
    result.notes += probe.notes()
    return result


def settle_store(result: Result, load: Load, recovery: Recovery, probe, timeout_s: float = 180) -> None:
    """settle() for a store: wait until everything acknowledged is stored; record the worst recovery."""
    load.join()
    recovery.wait_all(timeout_s)
    sent = load.all_sent()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not sent <= set(probe.bodies()):
        time.sleep(0.5)
    result.recover_s = recovery.worst()


def store_worker_kills(tmp: Path, kind: str, total: int, rate: float, kills: int, interval_s: float) -> Result:
    """kill -9 of the agent's sink worker writing to a keyed store, repeatedly: batches written but not yet
    acknowledged are written again, and must overwrite (duplicated at rest 0)."""
    port = free_port()
    probe = PROBES[kind](tmp).start()
    conf = agent_conf(port, tmp / "unused", sinks=probe.sink_conf())
    agent = AgentProcess(tmp, conf).start()
    result = Result(f"{kind}: kill -9 sink worker", faults=kills)
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(tmp, load, outputs=probe.bodies)
        for _ in range(kills):
            time.sleep(interval_s)
            pid = sink_worker_pid(agent)
            recovery.fault()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: sink_worker_pid(agent) != pid, 60, what="the restarted worker")
        settle_store(result, load, recovery, probe)
        count_store(result, load, probe)
    finally:
        agent.stop()
        probe.stop()
    return result


def store_outage_keyed(tmp: Path, kind: str, total: int, rate: float, outage_s: float) -> Result:
    """The store is unavailable for ``outage_s`` mid-flow (how depends on the stand-in: see each probe's
    ``outage_note``), then back with its data; recovery is measured from its return."""
    port = free_port()
    probe = PROBES[kind](tmp).start()
    conf = agent_conf(port, tmp / "unused", sinks=probe.sink_conf())
    agent = AgentProcess(tmp, conf).start()
    result = Result(f"{kind}: store unavailable for {outage_s:.0f} s", faults=1)
    result.notes.append(probe.outage_note)
    try:
        wait_until(lambda: port_open(port), 60, what="the http source")
        load = Load(port, total, rate).start()
        recovery = Recovery(tmp, load, outputs=probe.bodies)
        wait_until(lambda: probe.count() > 0, 60, what="first documents")
        time.sleep(2)
        probe.outage(outage_s)
        recovery.fault()
        settle_store(result, load, recovery, probe)
        count_store(result, load, probe)
    finally:
        agent.stop()
        probe.stop()
    return result


def scenarios(long: bool) -> dict:
    """name -> callable(tmp) -> Result, sized for `make chaos` (long) or `make test` (short)."""
    if long:
        return {
            "worker": lambda t: worker_kills(t, 200_000, 2500, kills=5, interval_s=12, vt_s=30),
            "worker-after-write": lambda t: kill_after_write(t, 200_000, 2500, kills=5, interval_s=12),
            "replicated-worker": lambda t: replicated_worker_kills(t, 200_000, 2500, kills=6, interval_s=10,
                                                                   vt_s=30),
            "one-worker": lambda t: replicated_worker_kills(t, 200_000, 2500, kills=6, interval_s=10, vt_s=30,
                                                            one_worker=True),
            "held-batch": lambda t: held_batch_kill(t, 30),      # the default visibility timeout
        "held-batch-long-lease": lambda t: held_batch_kill(t, 600),
            "pool-child": lambda t: pool_child_kills(t, 200_000, 2500, kills=5, interval_s=12, vt_s=30),
            "agent": lambda t: agent_kill(t, 100_000, 2500),
            "agent-taildir": lambda t: taildir_agent_kill(t, 100_000, 2500),
            "redis-always": lambda t: redis_restart(t, 100_000, 2500, "always"),
            "redis-everysec": lambda t: redis_restart(t, 100_000, 2500, "everysec"),
            "sentinel": lambda t: sentinel_failover(t, 200_000, 2500),
            "cluster-failover": lambda t: cluster_failover(t, 200_000, 2500),
            "reload": lambda t: hot_reloads(t, 200_000, 2500, every_s=10),
            "store": lambda t: store_outage(t, 150_000, 2500, outage_s=30),
            "store-removed": lambda t: store_removed(t, 150_000, 2500),
            "failover": lambda t: failover_outage(t, 150_000, 2500, outage_s=30),
            "full": lambda t: channel_full(t, 40_000, 2500, hold_s=60),
            "hop-collector-kill": lambda t: hop_collector_kill(t, 40_000, 800, down_s=10),
            "hop-collector-frozen": lambda t: hop_collector_frozen(t, 40_000, 800, frozen_s=30),
            "hop-tier1-worker": lambda t: hop_tier1_worker_kills(t, 40_000, 800, kills=5, interval_s=8),
            "hop-balanced-collector-kill": lambda t: hop_balanced_collector_kill(t, 40_000, 800, down_s=15),
            "hdfs-worker": lambda t: hdfs_worker_kills(t, 200_000, 2500, kills=5, interval_s=12),
            "hdfs-datanode": lambda t: hdfs_datanode_stop(t, 150_000, 2500, down_s=30),
            "hdfs-namenode": lambda t: hdfs_namenode_restart(t, 100_000, 2500),
        }
    return {
        "worker": lambda t: worker_kills(t, 6_000, 1000, kills=2, interval_s=2, vt_s=5),
        "worker-after-write": lambda t: kill_after_write(t, 6_000, 1000, kills=2, interval_s=2),
        "replicated-worker": lambda t: replicated_worker_kills(t, 6_000, 1000, kills=2, interval_s=2, vt_s=5),
        "one-worker": lambda t: replicated_worker_kills(t, 6_000, 1000, kills=2, interval_s=2, vt_s=5,
                                                        one_worker=True),
        "held-batch": lambda t: held_batch_kill(t, 5),
        # A lease far longer than the test's wait: only the agent giving back its dead worker's messages passes.
        "held-batch-long-lease": lambda t: held_batch_kill(t, 600),
        "pool-child": lambda t: pool_child_kills(t, 6_000, 1000, kills=2, interval_s=2, vt_s=5),
        "agent": lambda t: agent_kill(t, 6_000, 1000),
        "agent-taildir": lambda t: taildir_agent_kill(t, 6_000, 1000),
        "redis-always": lambda t: redis_restart(t, 6_000, 1000, "always"),
        "sentinel": lambda t: sentinel_failover(t, 8_000, 1000),
        "cluster-failover": lambda t: cluster_failover(t, 8_000, 1000),
        "reload": lambda t: hot_reloads(t, 8_000, 1000, every_s=2),
        "store": lambda t: store_outage(t, 6_000, 1000, outage_s=3),
        "store-removed": lambda t: store_removed(t, 6_000, 1000),
        "failover": lambda t: failover_outage(t, 8_000, 1000, outage_s=3),
        "full": lambda t: channel_full(t, 6_000, 1000, hold_s=3),
        "hop-collector-kill": lambda t: hop_collector_kill(t, 3_000, 300, down_s=2),
        "hop-collector-frozen": lambda t: hop_collector_frozen(t, 3_000, 300, frozen_s=5),
        "hop-tier1-worker": lambda t: hop_tier1_worker_kills(t, 3_000, 300, kills=2, interval_s=2),
        "hop-balanced-collector-kill": lambda t: hop_balanced_collector_kill(t, 3_000, 300, down_s=3),
        "hdfs-worker": lambda t: hdfs_worker_kills(t, 8_000, 1000, kills=2, interval_s=2),
        "hdfs-datanode": lambda t: hdfs_datanode_stop(t, 8_000, 1000, down_s=5),
        "hdfs-namenode": lambda t: hdfs_namenode_restart(t, 6_000, 1000),
    }


def store_scenarios(long: bool) -> dict:
    """The keyed stores' scenarios (tests/test_store_chaos.py runs the short ones): name -> callable(tmp)."""
    total, rate, kills, interval_s, outage_s = (100_000, 2500, 5, 7, 30) if long else (6_000, 1000, 2, 2, 3)
    chosen = {}
    for kind in PROBES:
        chosen[f"{kind}-worker"] = (lambda t, k=kind: store_worker_kills(t, k, total, rate, kills, interval_s))
        chosen[f"{kind}-outage"] = (lambda t, k=kind: store_outage_keyed(t, k, total, rate, outage_s))
    return chosen


def main() -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="the full-size runs (minutes each)")
    parser.add_argument("--only", nargs="*", help="scenario names to run")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    chosen = {**scenarios(args.long), **store_scenarios(args.long)}
    results = []
    for name, run in chosen.items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"flumery-chaos-{name}-") as tmp:
            started = time.monotonic()
            result = run(Path(tmp))
            result.notes.append(f"{time.monotonic() - started:.0f} s run")
            results.append(result)
            print(result.row(), flush=True)
    print("\n" + HEADER)
    for result in results:
        print(result.row())
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if any(r.lost or r.unrecovered for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
