"""Running real ``flumery agent`` processes in tests, and reading what their sinks wrote."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from helpers import wait_until  # noqa: F401  (re-exported: tests import it from here too)

from core.keys import metrics_prefix
from routing.transport import read_sizes

REPO = Path(__file__).resolve().parent.parent


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class AgentProcess:
    """``python -m app.cli agent`` on a config file, in its own data directory."""

    def __init__(self, tmp: Path, conf_text: str, name: str = "a1", broker_url: str | None = None,
                 role: str = "all", extra: list[str] | None = None, env: dict | None = None, cwd: Path = REPO,
                 start_new_session: bool = False):
        self.tmp = tmp
        self.start_new_session = start_new_session          # as a terminal or a service manager starts it
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
                                        stderr=subprocess.STDOUT, start_new_session=self.start_new_session)
        return self

    def stop(self, sig=signal.SIGTERM, timeout_s: float = 60) -> int:
        """Send ``sig`` and return the exit code.  An agent still running ``timeout_s`` later is killed and the
        test fails: it never outlives its test."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
            raise AssertionError(f"agent {self.name} did not stop within {timeout_s:.0f}s of signal {sig!r}; "
                                 f"killed.  Its log ends:\n{self.output_tail()}") from None
        finally:
            if self.process.poll() is not None:
                self.log.close()
        return code

    # ``with AgentProcess(...) as agent:`` starts the agent (unless started already) and stops it at the end of
    # the block; a block that ran through also checks the agent's exit code, a block that failed only stops the
    # agent, so that the failure the test sees is the block's own, not the stop's.
    expected_exit = 0

    def __enter__(self) -> "AgentProcess":
        if self.process is None:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            exited = self.process.poll()
            if exited is not None and hasattr(exc, "add_note"):
                exc.add_note(f"agent {self.name} had exited on its own, with status {exited}")
            try:
                self.stop()
            except Exception as stop_error:          # noqa: BLE001  (the block's failure is the one to see)
                if hasattr(exc, "add_note"):
                    exc.add_note(f"(and stopping the agent failed too: {stop_error})")
            if hasattr(exc, "add_note"):
                # What the agent said is often the only clue to a failure seen on CI alone.
                exc.add_note(f"agent {self.name} ({self.log_path.name}) log ends:\n{self.output_tail()}")
            return False
        code = self.stop()
        if code != self.expected_exit:
            raise AssertionError(f"agent {self.name} exited with {code}, not {self.expected_exit}; its log ends:\n"
                                 f"{self.output_tail()}")
        return False

    def output_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.output().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def broker_url(self) -> str:
        url_file = self.data_dir / "broker.url"
        wait_until(url_file.exists, what="the embedded broker")
        return url_file.read_text().strip()


def children(pid: int) -> list[int]:
    """The pids of the children of process ``pid`` (of all its threads)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def sink_worker_pid(agent: AgentProcess, marker: bytes = b"celery", what: str = "the sink worker") -> int:
    """The pid of the agent's celery worker child whose command line holds ``marker`` (e.g.
    ``b"--hostname\\0k1@"``), waited for up to 60 s."""
    def find():
        for pid in children(agent.process.pid):
            try:
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                pass
        return None
    return wait_until(find, 60, what=what)


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


def drained(redis_server, agent: str = "a1") -> bool:
    """The agent's channels hold no event, queued or in flight.  Once everything expected has arrived, a
    duplicate could only still come from a channel: wait for this instead of sleeping "for duplicates to show"."""
    return not any(read_sizes(redis_server.client(), f"flumery.{agent}").values())


def taildir_caught_up(position_file: Path) -> bool:
    """Every file in a TAILDIR source's position file is read to its end (the source rewrites the file every
    ``writePosInterval``): with :func:`drained`, the source has nothing left to send."""
    from workers.sources.taildir_position import parse  # (only the TAILDIR tests need it)
    try:
        entries = parse(Path(position_file).read_bytes())
        return bool(entries) and all(e.pos == os.path.getsize(e.file) for e in entries if os.path.exists(e.file))
    except (OSError, ValueError):
        return False


def counter(redis_server, component: str, name: str, agent: str = "a1") -> int:
    """A counter of one component (``"SOURCE.r1"``) as the agent's processes flush them to Redis (about once a
    second): how a test sees that something happened inside an agent."""
    return int(redis_server.client().hget(metrics_prefix(agent) + component, name) or 0)
