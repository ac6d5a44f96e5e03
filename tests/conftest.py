"""What every test directory shares: paths, the one helper that runs a test's own redis-server, fixtures, fakes,
and a small builder of Flume agent files.

The tests are in three directories:

* ``unit/``: one process, no broker, no Flumery process: pure functions and components driven with fakes (a
  component may still open its own local socket or run its command, as the HTTP and exec sources do);
* ``e2e/``: real redis-servers the tests start, real ``flumery`` agent, worker and CLI processes, and in-process
  Celery workers (pytest-celery's classic fixtures) against a real Redis;
* ``chaos/``: fault injection (``chaos.py`` is also the script behind ``make chaos``).

Helpers shared by all of them: :mod:`helpers` (``wait_until``, ``ReportingThread``), :mod:`agents` (agent processes
and their output), and this file.
"""
from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from app.broker import die_with_parent, free_port, redis_server_binary

pytest_plugins = ("pytester",)          # unit/test_helpers.py runs a failing test inside a test

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "flume-compat"     # a copy of ../shared/flume-compat
VECTORS = FIXTURES / "vectors.json"
EXAMPLES = FIXTURES / "examples"


# --- redis-server ---------------------------------------------------------------------------------------------------

class RedisServer:
    """A private redis-server on 127.0.0.1 for one test (append-only file on), started and stopped by the test.

    The one helper for every redis-server a test runs itself: the ``redis_server`` fixtures, the chaos scenarios
    (``stop(kill=True)`` is a kill -9; ``start()`` again restarts it on the same port and directory), and topologies
    built from several (``args``: ``--cluster-enabled yes``, ``--replicaof ...``).  Not the agent's own
    :class:`app.broker.EmbeddedRedis`, on purpose: that one is hardened (a password, CONFIG and DEBUG disabled) and
    is what some tests test, while tests need a plain server they can reconfigure (``CONFIG SET maxmemory``).
    The server dies with the test process (``PR_SET_PDEATHSIG``), so an aborted run leaves none behind.
    """

    def __init__(self, directory: Path, appendfsync: str = "everysec", *, port: int | None = None,
                 args: tuple[str, ...] = (), appendonly: bool = True):
        self.directory = Path(directory)
        self.appendfsync = appendfsync
        self.appendonly = appendonly
        self.args = tuple(args)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> "RedisServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync, "--save", "",
             "--daemonize", "no", "--logfile", str(self.directory / "redis.log"), *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent)
        client = self.client(socket_timeout=2)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    client.ping()
                    return self
                except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError,
                        redis.exceptions.TimeoutError):
                    if self.process.poll() is not None:
                        raise RuntimeError(f"test redis-server on port {self.port} exited with "
                                           f"{self.process.returncode}: {self.log_tail()}") from None
                    if time.monotonic() > deadline:
                        self.stop(kill=True)
                        raise RuntimeError(f"test redis-server on port {self.port} did not answer within "
                                           f"{timeout_s:.0f}s: {self.log_tail()}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (the append-only file is flushed), or SIGKILL with ``kill``."""
        if self.process and self.process.poll() is None:
            (self.process.kill if kill else self.process.terminate)()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)

    def client(self, **options) -> redis.Redis:
        return redis.Redis(port=self.port, **options)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.directory / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.splitlines()[-lines:]) or "(empty log)"


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of this test's own."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory):
    """One redis-server for the whole run (arq's way), for session-scoped fixtures such as pytest-celery's
    ``celery_session_worker``; whoever uses it cleans what its test left."""
    server = RedisServer(tmp_path_factory.mktemp("redis-session")).start()
    yield server
    server.stop()


# --- fakes ----------------------------------------------------------------------------------------------------------

class FakeCounters:
    """A component's counters without Redis or a metrics store: ``counts[name]`` (0 for a name never added), and
    how often ``started()``/``stopped()`` were called.  Safe to bump from the component's threads."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.start_calls = 0
        self.stop_calls = 0
        self._lock = threading.Lock()

    @property
    def values(self) -> Counter:
        """``counts`` under the name some older tests use."""
        return self.counts

    def add(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self.counts[counter] += n

    def started(self) -> None:
        self.start_calls += 1

    def stopped(self) -> None:
        self.stop_calls += 1


# --- agent files ------------------------------------------------------------------------------------------------------

def flow(source: dict, channel: dict | None = None, sink: dict | None = None, *, agent: str = "a1",
         extra: str = "") -> str:
    """The text of a Flume agent file: source ``r1`` -> channel ``c1`` -> sink ``k1`` (no sink if ``sink`` is None).

    Each dict holds one component's properties, keyed as in Flume after the component's name, values written as
    they are (``{"type": "TAILDIR", "filegroups": "f1", "filegroups.f1": "/var/log/app/.*log"}``).  The bindings
    (``r1.channels = c1``, ``k1.channel = c1``) are added; a channel defaults to ``{"type": "memory"}``.  ``extra``
    (more lines of the same file: interceptors, selectors, more components) is appended as it is.
    """
    channel = channel if channel is not None else {"type": "memory"}
    lines = [f"{agent}.sources = r1", f"{agent}.channels = c1"]
    if sink is not None:
        lines.append(f"{agent}.sinks = k1")
    lines += [f"{agent}.sources.r1.{key} = {value}" for key, value in source.items()]
    lines.append(f"{agent}.sources.r1.channels = c1")
    lines += [f"{agent}.channels.c1.{key} = {value}" for key, value in channel.items()]
    if sink is not None:
        lines += [f"{agent}.sinks.k1.{key} = {value}" for key, value in sink.items()]
        lines.append(f"{agent}.sinks.k1.channel = c1")
    return "\n".join(lines) + "\n" + (extra.strip("\n") + "\n" if extra.strip() else "")
