"""``flumery agent``: one Flume agent, run on Celery.

Role ``all`` (the default) runs everything in one command: the broker (embedded Redis unless a URL is given),
the agent's sources in this process, and its sinks in ``celery worker`` child processes, laid out by
``--sink-workers`` (:mod:`app.worker_layout`): a worker serving one sink group or lone sink runs ``--pool
solo`` (one take transaction at a time, as Flume's SinkRunner), one serving several a thread per unit.  Role
``sources`` runs only the sources (the sinks then run as ``celery -A app worker`` elsewhere); role ``sinks`` only
supervises the workers.

Stopping (SIGTERM or Ctrl-C): sources stop accepting and finish or abandon (unacknowledged) their in-flight put;
then the workers get SIGTERM, finish their current batch or give it back to the channel; then the embedded
broker flushes its append-only file.  Whatever is still in a channel stays there for the next start.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import redis
from prometheus_client.core import CounterMetricFamily

from app import running
from app.broker import EmbeddedRedis, die_with_parent, maxmemory_bytes, reachable
from app.celery_app import create_app
from app.metrics import MetricsServer, sink_latency, snapshot
from app.reload import FileWatch
from app.reload import plan as reload_plan
from app.throughput import ThroughputLog
from app.worker import BOOTSTRAP as WORKER_BOOTSTRAP
from app.worker import pool_options
from app.worker_layout import parse_layout, usable_cores
from app.worker_layout import plan as layout_plan
from core.config import AgentConfig, read_agent
from core.counters import MetricsStore
from core.errors import ConfigInvalid
from core.files import make_private_dir, write_atomically
from core.keys import exchange_name, queue_name
from core.settings import BROKER_URL_FILE, Settings
from routing.channels import channel_queues
from routing.deadletter import DEAD_CHANNEL
from routing.processor import ChannelProcessor, ChannelWriter
from routing.transport import connect, owner_prefix, read_sizes, redis_client
from workers.interceptors.base import InterceptorContext
from workers.sources.base import SourceContext

log = logging.getLogger(__name__)

ROLES = ("all", "sources", "sinks")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKER_RESTART_FIRST_S = 1.0
WORKER_RESTART_MAX_S = 30.0
WORKER_STOP_TIMEOUT_S = 60.0
WORKER_HEALTHY_AFTER_S = 5.0      # a worker that ran this long before dying is restarted at once


class Agent:
    def __init__(self, config: AgentConfig, settings: Settings, role: str = "all",
                 metrics_port: int | None = None, worker_log_level: str = "INFO", stats_interval_s: float = 60.0,
                 reload_interval_s: float = 30.0, metrics_bind: str = "0.0.0.0", sink_workers: str | int = "auto"):
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        self.sink_workers = parse_layout(str(sink_workers))     # see app.worker_layout
        self.cores = usable_cores()                             # once: the layout must not change under a worker
        self.config = config
        self.settings = settings.with_(agent=config.name, conf_file=settings.conf_file or config.file)
        self.role = role
        self.metrics_port = metrics_port
        self.metrics_bind = metrics_bind          # Flume's monitoring server listens on every interface
        self.worker_log_level = worker_log_level
        self.stats_interval_s = stats_interval_s      # the periodic throughput line (0: none)
        self.throughput: ThroughputLog | None = None
        self.stop_reason = "after an error"          # what the stop line says, unless a signal asked for it
        self.embedded: EmbeddedRedis | None = None
        self.sources: dict = {}
        self.workers: dict[str, subprocess.Popen] = {}     # by worker name (see worker_plan)
        self.serving: dict[str, list] = {}          # worker name -> the units it was started for
        self.started_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {}          # sink unit -> times its worker was restarted
        self.writer: ChannelWriter | None = None
        self.metrics: MetricsStore | None = None
        self.metrics_server: MetricsServer | None = None
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()     # SIGHUP
        self.reload_interval_s = reload_interval_s    # Flume polls its file every 30 s; 0: only on SIGHUP
        self.watch = FileWatch(self.settings.conf_file)
        self.worker_conf = self.settings.conf_file   # the accepted copy its sink workers read (see _accept)
        self._lock_file = None
        self._record = None               # this agent's entry in app.running (for `flumery dlq`)

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
        text, accepted = read_agent(self.settings.conf_file, self.config.name)
        if replace(accepted, file=self.config.file) != self.config:
            raise RuntimeError(f"{self.settings.conf_file} changed while the agent started; start it again")
        self._accept(text)
        url = self.settings.broker_url
        if not reachable(url, self.settings.transport_options()):   # refused (password, certificate): one line
            raise RuntimeError(f"cannot reach the broker at {running.mask_password(url)}")
        self._record = running.register(self.config.name, self.settings.conf_file, data, url, bool(self.embedded),
                                        self.settings.redis_key_prefix())
        client = self.redis = redis_client(url, self.settings.transport_options())
        self._check_persistence(client)
        self._declare()
        self.metrics = MetricsStore(client, self.config.name, key_prefix=self.settings.redis_key_prefix()).start()
        self._start_counters()
        if self.stats_interval_s > 0:            # before the components start: the first line counts from zero
            self.throughput = ThroughputLog(self.snapshot, self.stats_interval_s).start()
        if self.role in ("all", "sinks"):
            for name, units in self.worker_plan().items():
                self._start_worker(name, units)
        if self.role in ("all", "sources"):
            self._start_sources()
        if self.metrics_port is not None:
            self.metrics_server = MetricsServer(self.metrics_port, self.snapshot, self.config.name,
                                                bind=self.metrics_bind, extra_fn=self.agent_metrics).start()
            log.info("metrics on http://%s:%d/metrics", self.metrics_bind, self.metrics_server.port)
        log.info("agent '%s' started (pid %d, role %s): sources %s; sinks %s", self.config.name, os.getpid(),
                 self.role, ", ".join(self.sources) or "none",
                 ", ".join(self.workers) if self.role != "sources" else "elsewhere")

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
        self._check_replicas(client, durable)

    def _check_replicas(self, client, durable: list[str]) -> None:
        """Say at start, not at the first refused put, that the broker has fewer replicas than durable puts wait
        for (FLUMERY_MIN_REPLICAS; 1 by default under Sentinel and on a Redis Cluster)."""
        wanted = self.settings.replicas_for_durable_puts()
        if not wanted:
            return
        try:
            have = int(client.info("replication").get("connected_slaves", 0))
        except redis.exceptions.ResponseError:
            return                         # managed Redis without INFO: cannot tell
        if have < wanted:
            log.warning("puts into the durable channels %s wait for %d replica(s) (FLUMERY_MIN_REPLICAS) but the "
                        "broker's master has %d connected: they are refused (HTTP 503, sources retry) until enough "
                        "replicas are back; set FLUMERY_MIN_REPLICAS=%d to accept puts on fewer (a failover may "
                        "then lose them)", ", ".join(durable), wanted, have, have)

    def _declare(self) -> None:
        """Declare the agent's exchange and one durable queue per channel, bound by channel name."""
        with connect(self.settings.broker_url, self.settings.transport_options()) as conn:
            channel = conn.default_channel
            for queue in channel_queues(self.config.name, self.config.channels):
                queue(channel).declare()

    def _start_sources(self) -> None:
        app = create_app(self.settings)
        self.writer = ChannelWriter(app, self.config, self.settings.broker_url, self.settings.transport_options(),
                                    self.settings.replicas_for_durable_puts(), self.settings.replica_timeout_ms)
        for name, spec in self.config.sources.items():
            self._start_source(name, spec)

    def _start_source(self, name: str, spec) -> None:
        chain = InterceptorContext(self.config.name, name)
        interceptors = [i.cls(i.name, i.config, chain) for i in spec.interceptors]
        processor = ChannelProcessor(spec, self.writer, interceptors, self.metrics)
        context = SourceContext(self.config.name, processor, self.metrics.group("SOURCE", name),
                                self.settings.data_path())
        source = spec.cls(name, spec.config, context)
        try:
            source.start()
        except OSError as exc:         # a port in use, a directory that cannot be read...
            raise RuntimeError(f"{spec.key}: source '{name}' ({spec.type}) could not start: {exc}") from exc
        self.sources[name] = source

    def _start_counters(self) -> None:
        """Flume's counters start at 0 with their component: reset those of the components this role runs (the
        channels, the dead-letter one included, go with the sources; a worker started elsewhere, e.g. by
        ``flumery worker``, adds to the counts of its sinks), and start the channels' clocks."""
        channels = [*self.config.channels, DEAD_CHANNEL]
        owned = []
        if self.role in ("all", "sources"):
            owned += [f"SOURCE.{n}" for n in self.config.sources] + [f"CHANNEL.{n}" for n in channels]
        if self.role in ("all", "sinks"):
            owned += [f"SINK.{n}" for n in self.config.sinks]
        self.metrics.reset(owned)
        if self.role in ("all", "sources"):
            for name in channels:
                self.metrics.group("CHANNEL", name).started()

    def worker_plan(self) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
        """The sink worker processes the agent runs, by name: the sink units (sink group or lone sink, with its
        sinks) each serves (see :mod:`app.worker_layout`).  Units are dealt out in name order: a reload that only
        reorders the sinks in the file keeps every worker as it is."""
        return layout_plan(self.config.sink_units(), self.sink_workers, self.cores)

    def _start_worker(self, name: str, units: list[tuple[str, tuple[str, ...]]]) -> None:
        channels = list(dict.fromkeys(self.config.channel_of_unit(sinks) for _, sinks in units))
        env = {**os.environ, **self.settings.with_(sinks=tuple(u for u, _ in units), conf_file=self.worker_conf).env()}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        # --quiet: no Celery banner per worker; the line logged below says what the worker does.
        # Not `python -m celery -A app`: that imports from the working directory first (see app.worker).
        argv = [sys.executable, "-c", WORKER_BOOTSTRAP, "--quiet", "worker", *pool_options(len(units)),
                "--loglevel", self.worker_log_level, "--hostname", f"{name}@{self.config.name}.%h",
                "--queues", ",".join(queue_name(self.config.name, c) for c in channels),
                "--without-gossip", "--without-mingle"]
        # Own process group: a Ctrl-C in the terminal reaches only the agent, which then stops the workers in order.
        # The agent's session, not one of its own: see _sink_worker_child.
        self.started_at[name] = time.monotonic()
        self.serving[name] = units
        self.workers[name] = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, process_group=0,
                                              preexec_fn=_sink_worker_child)
        log.info("sink worker for %s (pid %d) drains channel%s %s", name, self.workers[name].pid,
                 "" if len(channels) == 1 else "s", ", ".join(channels))

    # -- run -------------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop cleanly; the exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.reload_requested.set())
        try:
            self.start()
            self.supervise()
        finally:
            self.stop()
        return 0

    def _on_signal(self, signum, _frame) -> None:
        self.stop_reason = signal.Signals(signum).name
        self.stop_requested.set()

    def supervise(self) -> None:
        """Wait for a stop request; restart the embedded broker if it exited on its own (see
        :meth:`~app.broker.EmbeddedRedis.keep_running`), and a sink worker that died on its own: after 1 s, or, if
        it keeps dying within seconds of its start (it cannot start), after a delay that doubles up to 30 s."""
        delay: dict[str, float] = {}
        due: dict[str, float] = {}
        next_poll = time.monotonic() + self.reload_interval_s
        while not self.stop_requested.wait(0.5):
            if self.embedded is not None:
                self.embedded.keep_running()
            now = time.monotonic()
            polled = self.reload_interval_s > 0 and now >= next_poll
            if polled:
                next_poll = now + self.reload_interval_s
            if self.reload_requested.is_set() or (polled and self.watch.changed()):
                self.reload_requested.clear()
                self.reload()
            plan = self.worker_plan()
            for unit, process in list(self.workers.items()):
                if process.poll() is None:
                    continue
                if unit not in due:
                    if now - self.started_at[unit] >= WORKER_HEALTHY_AFTER_S or unit not in delay:
                        delay[unit] = WORKER_RESTART_FIRST_S          # it was running: not a crash loop
                    log.warning("sink worker for %s exited with %s; restarting it in %.0fs", unit,
                                process.returncode, delay[unit])
                    self._give_back_held_by(process.pid)
                    due[unit] = now + delay[unit]
                    delay[unit] = min(delay[unit] * 2, WORKER_RESTART_MAX_S)
                elif now >= due[unit]:
                    del due[unit]
                    for member, _sinks in plan[unit]:
                        self.restarts[member] = self.restarts.get(member, 0) + 1
                    self._start_worker(unit, plan[unit])

    # -- hot reload (app/reload.py) --------------------------------------------------------------------------
    def reload(self) -> bool:
        """Read the agent file again and replace only what changed (see :mod:`app.reload`); an invalid file
        changes nothing.  True when the new file was applied."""
        path = self.settings.conf_file
        try:
            text, new = read_agent(path, self.config.name)
        except ConfigInvalid as exc:
            log.error("reload of %s refused, the running flow is unchanged (%d error%s):", path, len(exc.errors),
                      "" if len(exc.errors) == 1 else "s")
            for error in exc.errors:
                log.error("  %s", error)
            return False
        change = reload_plan(self.config, new)
        if change.empty():
            log.info("reload of %s: nothing changed", path)
            return True
        old, self.config = self.config, new
        self._accept(text)
        if self.role in ("all", "sources"):
            self._reload_sources(change, old)
        if self.role in ("all", "sinks"):
            self._reload_workers(change)
        for name in change.removed_channels:
            held = read_sizes(self.redis, exchange_name(new.name), self.settings.redis_key_prefix()).get(name, 0)
            log.warning("channel %s is no longer in %s; the %d events it holds stay in Redis until it is back",
                        name, path, held)
        log.info("reloaded %s: %s", path, change.describe())
        return True

    def _accept(self, text: str) -> None:
        """Keep the exact text of the agent file this agent validated, for its sink workers to read: a worker
        (re)started later must build the configuration the agent accepted, never a file edited since, which may
        be invalid or half-written."""
        directory = self.settings.data_path() / "accepted"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / (hashlib.sha256(text.encode()).hexdigest()[:16] + ".conf")
        write_atomically(path, text.encode(), mode=0o600)
        self.worker_conf = str(path)

    def _reload_sources(self, change, old) -> None:
        for name in change.stop_sources:
            source = self.sources.pop(name, None)
            if source is not None:
                source.stop()
        self._declare()
        if self.writer is not None:
            self.writer.agent = self.config          # channel limits apply from the next put
        for name in change.start_sources:
            self._start_source(name, self.config.sources[name])
        for name in change.added_channels:
            self.metrics.group("CHANNEL", name).started()

    def _reload_workers(self, change) -> None:
        """Replace every worker whose set of units is not in the new plan or serves a unit that changed or went
        (with ``--sink-workers one``, any such change replaces the one worker), and start the workers of the new
        plan that are not running."""
        plan = self.worker_plan()
        changed = set(change.stop_units)
        stop = [name for name, units in self.serving.items()
                if plan.get(name) != units or any(unit in changed for unit, _ in units)]
        stopping = [(name, self.workers.pop(name)) for name in stop if name in self.workers]
        for name in stop:
            self.serving.pop(name, None)
        start = [name for name in plan if name not in self.workers]
        for name, process in stopping:
            # The reload's own line names the units that changed; a shared worker also restarts the others.
            log.info("reload: stopping the sink worker for %s (pid %d)", name, process.pid)
            process.terminate()                       # warm shutdown: the batch is written or given back
        for _unit, process in stopping:
            try:
                process.wait(WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                self._give_back_held_by(process.pid)
        for name in start:
            self._start_worker(name, plan[name])

    def _give_back_held_by(self, pid: int) -> None:
        """A sink worker of ours died: its messages go back to their channels now, not when their leases
        expire (the visibility timeout stays for workers on other hosts, whose death nobody reports)."""
        try:
            with connect(self.settings.broker_url, self.settings.transport_options()) as conn:
                returned = conn.default_channel.give_back_held_by(owner_prefix(pid))
        except Exception as exc:           # the broker is down: the leases expire as before
            log.warning("could not give back the messages of dead sink worker %d (they come back after the "
                        "visibility timeout): %s", pid, exc)
            return
        if returned:
            log.warning("gave back %d channel message%s held by dead sink worker %d", returned,
                        "" if returned == 1 else "s", pid)

    def stop(self) -> None:
        self.stop_requested.set()
        log.info("agent '%s' stopping (%s): sources stop accepting, workers finish or give back their batch",
                 self.config.name, self.stop_reason)
        if self.throughput:
            self.throughput.stop()
            self.throughput = None
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
        running.unregister(self._record)
        self._record = None
        if self.embedded:
            self.embedded.stop()
            self.embedded = None
            (self.settings.data_path() / BROKER_URL_FILE).unlink(missing_ok=True)
        log.info("agent '%s' stopped", self.config.name)

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
        self.serving.clear()

    # -- metrics ---------------------------------------------------------------------------------------------
    def agent_metrics(self):
        """What the Flume counters leave out, as Prometheus metric families: sink worker restarts (only the agent
        knows them) and the sinks' batch latency histograms."""
        restarts = CounterMetricFamily("flumery_sink_worker_restarts", "times the agent restarted a dead sink "
                                       "worker", labels=["agent", "unit"])
        for unit, _sinks in self.config.sink_units():
            restarts.add_metric([self.config.name, unit], self.restarts.get(unit, 0))
        return [restarts, sink_latency(self.metrics, self.config)]

    def snapshot(self) -> dict:
        sizes = read_sizes(self.redis, exchange_name(self.config.name), self.settings.redis_key_prefix())
        return snapshot(self.metrics, self.config, sizes)


def _sink_worker_child() -> None:
    """preexec_fn of a sink worker (in the child, before exec): it dies with the agent, and may write to the
    agent's terminal.

    A sink worker stays in the agent's session (in a process group of its own), where it used to start a session of
    its own.  Linux schedules each session as one group (autogroups, on by default in most distributions' kernels):
    a worker in a session of its own weighed as much as the agent and as the embedded broker, whose session is its
    own.  Replicating into 3 sinks on 2 cores, the broker, the one process every source and sink waits on, then
    waited for a core about as long as it ran or longer (0.85-1.39 s against 0.80-1.17 s, fifteen runs); with the
    workers in the agent's session the broker is weighed against the agent and its workers together: it waited
    0.6-0.7 s, and the run took 2.39-3.10 s instead of 2.95-3.42 s (six interleaved pairs; one sink: no difference).
    On a shared host the agent and its workers also weigh as one service, not as one per sink.  A background process
    group is stopped by SIGTTOU when it writes to a terminal set to ``tostop``: the worker ignores SIGTTOU, so its
    log lines are written as the agent's are."""
    die_with_parent()
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
