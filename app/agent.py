"""``flumery agent``: one Flume agent, run on Celery.

Role ``all`` (the default) runs everything in one command: the broker (embedded Redis unless a URL is given),
the agent's sources in this process, and its sinks in ``celery worker`` child processes, one per sink group or
lone sink (``--pool solo``: one take transaction at a time, as Flume's SinkRunner).  Role ``sources`` runs only
the sources (the sinks then run as ``celery -A app worker`` elsewhere); role ``sinks`` only supervises the
workers.

Stopping (SIGTERM or Ctrl-C): sources stop accepting and finish or abandon (unacknowledged) their in-flight put;
then the workers get SIGTERM, finish their current batch or give it back to the channel; then the embedded
broker flushes its append-only file.  Whatever is still in a channel stays there for the next start.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis
from kombu import Connection

from app.broker import EmbeddedRedis, check_access, die_with_parent, masked, maxmemory_bytes
from app.celery_app import channel_queues, create_app, transport_options
from core.config import AgentConfig
from app.metrics import MetricsServer, MetricsStore
from app.worker import BOOTSTRAP as WORKER_BOOTSTRAP
from core.files import make_private_dir, write_atomically
from core.settings import BROKER_URL_FILE, Settings
from routing.channels import exchange_name, queue_name
from routing.processor import ChannelProcessor, ChannelWriter
from routing.transport import Transport, read_sizes

log = logging.getLogger(__name__)

ROLES = ("all", "sources", "sinks")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKER_RESTART_FIRST_S = 1.0
WORKER_RESTART_MAX_S = 30.0
WORKER_HEALTHY_AFTER_S = 5.0      # a worker that ran this long before dying is restarted at once


class Agent:
    def __init__(self, config: AgentConfig, settings: Settings, role: str = "all",
                 metrics_port: int | None = None, worker_log_level: str = "INFO", metrics_bind: str = "0.0.0.0"):
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        self.config = config
        self.settings = settings.with_(agent=config.name, conf_file=settings.conf_file or config.file)
        self.role = role
        self.metrics_port = metrics_port
        self.metrics_bind = metrics_bind          # Flume's monitoring server listens on every interface
        self.worker_log_level = worker_log_level
        self.embedded: EmbeddedRedis | None = None
        self.sources: dict = {}
        self.workers: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.writer: ChannelWriter | None = None
        self.metrics: MetricsStore | None = None
        self.metrics_server: MetricsServer | None = None
        self.stop_requested = threading.Event()
        self._lock_file = None

    # -- start -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        data = self.settings.data_path()
        if make_private_dir(data) and data.stat().st_mode & 0o077:
            log.warning("data dir %s can be read by other users (mode %o); the broker's files in it are private, "
                        "but chmod 700 it to keep the rest so", data, data.stat().st_mode & 0o777)
        if not self.settings.broker_url:
            self._lock(data)
            durable = any(c.cls.durable for c in self.config.channels.values())
            self.embedded = EmbeddedRedis(data / "redis", fsync_always=durable,
                                          maxmemory=maxmemory_bytes(self.settings.broker_maxmemory))
            self.settings = self.settings.with_(broker_url=self.embedded.start())
            # The URL holds the broker's password: readable by this user only.
            write_atomically(data / BROKER_URL_FILE, (self.settings.broker_url + "\n").encode(), mode=0o600)
        url = self.settings.broker_url
        if not check_access(url):          # refused (password, certificate): BrokerRefused, one line
            raise RuntimeError(f"cannot reach the broker at {masked(url)}")
        client = self.redis = redis.Redis.from_url(url)
        self._check_persistence(client)
        self._declare()
        self.metrics = MetricsStore(client, self.config.name).start()
        if self.role in ("all", "sinks"):
            for unit, sinks in self.config.sink_units():
                self._start_worker(unit, sinks)
        if self.role in ("all", "sources"):
            self._start_sources()
        if self.metrics_port is not None:
            self.metrics_server = MetricsServer(self.metrics_port, self.snapshot, self.config.name,
                                                self.metrics_bind).start()
            log.info("metrics on http://%s:%d/metrics", self.metrics_bind, self.metrics_server.port)

    def _lock(self, data: Path) -> None:
        self._lock_file = open(data / "agent.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another flumery agent with an embedded broker runs on {data}; "
                               f"give a different --data-dir, or --broker-url to share a broker") from None

    def _check_persistence(self, client) -> None:
        durable = [name for name, c in self.config.channels.items() if c.cls.durable]
        if not durable or self.embedded:
            return
        try:
            appendonly = client.config_get("appendonly").get("appendonly")
        except redis.exceptions.ResponseError:
            return                         # managed Redis without CONFIG: cannot tell
        if appendonly != "yes":
            log.warning("channels %s are 'file' (durable) but the broker has appendonly=%s: a broker crash "
                        "loses what they hold", ", ".join(durable), appendonly)

    def _declare(self) -> None:
        """Declare the agent's exchange and one durable queue per channel, bound by channel name."""
        with Connection(self.settings.broker_url, transport=Transport,
                        transport_options=transport_options(self.settings)) as conn:
            channel = conn.default_channel
            for queue in channel_queues(self.config.name, self.config.channels):
                queue(channel).declare()

    def _start_sources(self) -> None:
        app = create_app(self.settings)
        self.writer = ChannelWriter(app, self.config, self.settings.broker_url, transport_options(self.settings))
        for name, spec in self.config.sources.items():
            interceptors = [i.cls(i.name, i.config) for i in spec.interceptors]
            processor = ChannelProcessor(spec, self.writer, interceptors, self.metrics)
            source = spec.cls(name, spec.config, processor, self.metrics.group("SOURCE", name))
            try:
                source.start()
            except OSError as exc:         # a port in use, a directory that cannot be read...
                raise RuntimeError(f"{spec.key}: source '{name}' ({spec.type}) could not start: {exc}") from exc
            self.sources[name] = source
        for name in self.config.channels:
            self.metrics.group("CHANNEL", name).started()

    def _start_worker(self, unit: str, sinks: tuple[str, ...]) -> None:
        channel = self.config.channel_of_unit(sinks)
        env = {**os.environ, **self.settings.with_(sinks=(unit,)).env()}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        # Not `python -m celery -A app`: that imports from the working directory first (see app.worker).
        argv = [sys.executable, "-c", WORKER_BOOTSTRAP, "--pool", "solo",
                "--loglevel", self.worker_log_level, "--hostname", f"{unit}@{self.config.name}.%h",
                "--queues", queue_name(self.config.name, channel), "--without-gossip", "--without-mingle"]
        # Own session: a Ctrl-C in the terminal reaches only the agent, which then stops the workers in order.
        self.started_at[unit] = time.monotonic()
        self.workers[unit] = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                              preexec_fn=die_with_parent)
        log.info("sink worker for %s (pid %d) drains channel %s", unit, self.workers[unit].pid, channel)

    # -- run -------------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop cleanly; the exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_requested.set())
        try:
            self.start()
            self.supervise()
        finally:
            self.stop()
        return 0

    def supervise(self) -> None:
        """Wait for a stop request; restart a sink worker that died on its own: after 1 s, or, if it keeps
        dying within seconds of its start (it cannot start), after a delay that doubles up to 30 s."""
        units = dict(self.config.sink_units())
        delay = {unit: WORKER_RESTART_FIRST_S for unit in units}
        due: dict[str, float] = {}
        while not self.stop_requested.wait(0.5):
            now = time.monotonic()
            for unit, process in list(self.workers.items()):
                if process.poll() is None:
                    continue
                if unit not in due:
                    if now - self.started_at[unit] >= WORKER_HEALTHY_AFTER_S:
                        delay[unit] = WORKER_RESTART_FIRST_S          # it was running: not a crash loop
                    log.warning("sink worker for %s exited with %s; restarting it in %.0fs", unit,
                                process.returncode, delay[unit])
                    due[unit] = now + delay[unit]
                    delay[unit] = min(delay[unit] * 2, WORKER_RESTART_MAX_S)
                elif now >= due[unit]:
                    del due[unit]
                    self._start_worker(unit, units[unit])

    def stop(self) -> None:
        self.stop_requested.set()
        for source in self.sources.values():
            try:
                source.stop()
            except Exception:
                log.exception("source %s did not stop cleanly", source.name)
        self.sources.clear()
        self._stop_workers()
        if self.metrics_server:
            self.metrics_server.stop()
            self.metrics_server = None
        if self.metrics:
            self.metrics.stop()
        if self.writer:
            self.writer.close()
            self.writer = None
        if self.embedded:
            self.embedded.stop()
            self.embedded = None
            (self.settings.data_path() / BROKER_URL_FILE).unlink(missing_ok=True)

    def _stop_workers(self, timeout_s: float = 60.0) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                process.terminate()       # Celery warm shutdown: finish or give back the current batch
        deadline = time.monotonic() + timeout_s
        for unit, process in self.workers.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("sink worker for %s did not stop in %.0fs; killing it (its batch comes back after "
                          "the visibility timeout)", unit, timeout_s)
                process.kill()
                process.wait()
        self.workers.clear()

    # -- metrics ---------------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        sizes = read_sizes(self.redis, exchange_name(self.config.name))
        return self.metrics.snapshot(self.config, sizes)
