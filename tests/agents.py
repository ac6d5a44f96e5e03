"""Running real ``flumery agent`` processes in tests, and reading what their sinks wrote."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def wait_until(predicate, timeout_s: float = 30.0, interval_s: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class AgentProcess:
    """``python -m app.cli agent`` on a config file, in its own data directory."""

    def __init__(self, tmp: Path, conf_text: str, name: str = "a1", broker_url: str | None = None,
                 role: str = "all", extra: list[str] | None = None, env: dict | None = None, cwd: Path = REPO):
        self.tmp = tmp
        self.conf = tmp / f"{name}.conf"
        self.conf.write_text(conf_text)
        self.name = name
        self.data_dir = tmp / "data"
        self.log_path = tmp / f"agent-{role}.log"
        self.args = [sys.executable, "-m", "app.cli", "agent", "-f", str(self.conf), "-n", name,
                     "--data-dir", str(self.data_dir), "--role", role, *(extra or [])]
        if broker_url:
            self.args += ["--broker-url", broker_url]
        self.env = {**os.environ, "FLUMERY_VISIBILITY_TIMEOUT_S": "5", **(env or {})}
        self.env.pop("FLUMERY_BROKER_URL", None)
        self.env.pop("REDIS_URL", None)
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    def start(self) -> "AgentProcess":
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.args, cwd=self.cwd, env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        return self

    def stop(self, sig=signal.SIGTERM, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout_s)
        self.log.close()
        return code

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def broker_url(self) -> str:
        url_file = self.data_dir / "broker.url"
        wait_until(url_file.exists, what="the embedded broker")
        return url_file.read_text().strip()


def read_lines(directory: Path) -> list[bytes]:
    """Every line of every file in ``directory`` (what a file_roll sink wrote)."""
    lines: list[bytes] = []
    try:
        paths = sorted(directory.iterdir()) if directory.is_dir() else []
    except FileNotFoundError:          # renamed away by a fault-injection test meanwhile
        paths = []
    for path in paths:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue
        if data:
            lines += data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")
    return lines
