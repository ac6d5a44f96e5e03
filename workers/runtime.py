"""What a sink worker process runs: Flume's SinkRunner, on Celery.

A channel message reaches a worker as the ``flumery.take`` task.  :meth:`WorkerRuntime.take` is the sink's take
transaction:

1. It gathers more messages of the same channel (atomically taken, see :mod:`routing.transport`) until the
   sink's ``batchSize`` is reached or the channel is empty, so that one store write and one fsync cover many
   small source batches.
2. It writes them through the sink group's processor, retrying with exponential backoff (capped at
   ``FLUMERY_SINK_RETRY_MAX_S``) for as long as the store fails; meanwhile every held message's visibility lease
   is renewed, so no other worker receives it.
3. Only after the write was confirmed does it acknowledge the gathered messages; the task's own message is
   acknowledged by Celery when the task returns (``acks_late``).

If the worker is asked to stop while the store is failing, the gathered messages are given back to the front of
the channel and the task's message is rejected with requeue: nothing is acknowledged that was not written.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from functools import lru_cache

from celery.worker import state as worker_state

from core.config import AgentConfig, load_agent
from core.counters import EVENT_PUT_SUCCESS, EVENT_TAKE_ATTEMPT, EVENT_TAKE_SUCCESS, MetricsStore
from core.errors import Requeue, SettingsError, UndecodableMessage
from core.event import Batch
from core.keys import queue_name
from core.settings import Settings
from routing import codec, deadletter
from routing.processor import ChannelWriter
from routing.transport import connect, redis_client
from workers.processors.base import ProcessorContext
from workers.processors.default import DefaultSinkProcessor
from workers.runner import SinkRunner
from workers.sinks.base import SinkContext

log = logging.getLogger(__name__)



@lru_cache(maxsize=8)
def _load(conf_file: str, agent: str) -> AgentConfig:
    return load_agent(conf_file, agent)


def agent_config(settings: Settings) -> AgentConfig:
    """The agent whose sinks this worker serves; raises SettingsError or ConfigInvalid."""
    if not (settings.conf_file and settings.agent):
        raise SettingsError("set FLUMERY_CONF_FILE and FLUMERY_AGENT to say which agent's sinks to serve")
    return _load(settings.conf_file, settings.agent)


def served_units(settings: Settings, config: AgentConfig) -> list[tuple[str, tuple[str, ...]]]:
    """The sink units (sink groups and lone sinks) this worker serves: all, or those named in FLUMERY_SINKS."""
    units = config.sink_units()
    if not settings.sinks:
        return units
    by_name = {name: unit for unit in units for name in (unit[0], *unit[1])}
    unknown = [s for s in settings.sinks if s not in by_name]
    if unknown:
        raise SettingsError(f"FLUMERY_SINKS names {', '.join(unknown)}, which agent '{config.name}' does "
                         f"not have (sinks and groups: {', '.join(sorted(by_name))})")
    return list(dict.fromkeys(by_name[s] for s in settings.sinks))


def served_channels(settings: Settings) -> list[str]:
    config = agent_config(settings)
    return list(dict.fromkeys(config.channel_of_unit(sinks) for _, sinks in served_units(settings, config)))


class Housekeeper:
    """Every ``period_s``: renews the leases of the messages this process holds, and gives back messages whose
    lease expired (their worker died), so recovery does not wait for the next Celery restore sweep."""

    def __init__(self, channel, period_s: float):
        self.channel = channel
        self.period_s = period_s
        self.held: set[str] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._run, name="flumery-housekeeper", daemon=True).start()

    def hold(self, tags) -> None:
        with self.lock:
            self.held.update(tags)

    def release(self, tags) -> None:
        with self.lock:
            self.held.difference_update(tags)

    def _run(self) -> None:
        while True:
            time.sleep(self.period_s)
            with self.lock:
                tags = list(self.held)
            try:
                self.channel.touch(tags)
                self.channel.reclaim()
            except Exception as exc:
                log.warning("housekeeping of %d held messages failed: %s", len(tags), exc)


def worker_should_stop() -> bool:
    return bool(worker_state.should_stop is not None or worker_state.should_terminate is not None)


class WorkerRuntime:
    """The sinks one worker process serves, built once per process from the agent file."""

    _current: "WorkerRuntime | None" = None
    _lock = threading.Lock()

    @classmethod
    def current(cls, settings: Settings, app) -> "WorkerRuntime":
        with cls._lock:
            current = cls._current
            if current is None or current.pid != os.getpid() or current.settings != settings:
                if current is not None and current.pid == os.getpid():
                    current.stop()
                cls._current = cls(settings, app)
            return cls._current

    def __init__(self, settings: Settings, app, should_stop=worker_should_stop):
        self.pid = os.getpid()
        self.settings = settings
        self.should_stop = should_stop
        self.config = agent_config(settings)
        url = settings.resolved_broker_url()
        self.connection = connect(url, settings.transport_options())
        self.channel = self.connection.default_channel
        self.writer = ChannelWriter(app, self.config, url, settings.transport_options(),
                                    settings.replicas_for_durable_puts(), settings.replica_timeout_ms)
        self.metrics = MetricsStore(redis_client(url, settings.transport_options()), self.config.name,
                                    key_prefix=settings.redis_key_prefix()).start()
        self.housekeeper = Housekeeper(self.channel, max(1.0, settings.visibility_timeout_s / 4))
        context = SinkContext(self.config.name, settings.data_path(), self.metrics)
        self.runners: dict[str, itertools.cycle] = {}
        self.all_runners: list[SinkRunner] = []
        for unit, sinks in served_units(settings, self.config):
            runner = self._build_runner(unit, sinks, context)
            self.all_runners.append(runner)
        by_channel: dict[str, list[SinkRunner]] = {}
        for runner in self.all_runners:
            by_channel.setdefault(runner.channel, []).append(runner)
        # Several sinks outside a group on one channel compete for its messages, as in Flume.
        self.runners = {channel: itertools.cycle(rs) for channel, rs in by_channel.items()}

    def _build_runner(self, unit: str, sinks: tuple[str, ...], context: SinkContext) -> SinkRunner:
        built = [self.config.sinks[s].cls(s, self.config.sinks[s].config, context) for s in sinks]
        group = self.config.sinkgroups.get(unit)
        if group is not None:
            processor = group.processor.cls(unit, group.processor.config, ProcessorContext(built))
        else:
            processor = DefaultSinkProcessor(unit, None, ProcessorContext(built))
        limits = [self.config.sinks[s].max_attempts for s in sinks]
        max_attempts = 0 if 0 in limits else max(limits)
        channel = self.config.channel_of_unit(sinks)
        return SinkRunner(unit, processor, channel, self.metrics,
                          lambda events, reasons, attempts: self.bury(events, reasons, unit, channel, attempts),
                          max_attempts)

    def bury(self, events: list, reasons: list[str], unit: str, channel: str, attempts: int) -> None:
        """Put events into the dead-letter channel (one reason for all, or one per event)."""
        reasons = reasons if len(reasons) == len(events) else reasons[:1] * len(events)
        dead = deadletter.mark(events, reasons, unit, channel, attempts)
        self.writer.put({deadletter.DEAD_CHANNEL: dead})
        self.metrics.group("CHANNEL", deadletter.DEAD_CHANNEL).add(EVENT_PUT_SUCCESS, len(dead))

    def take(self, channel: str, batch: Batch, tag: str) -> dict:
        """Process one channel message (and whatever else of the channel fits the sink's batch): write it,
        then acknowledge what was gathered.  Returns ``{"events": written, "messages": messages}``."""
        runners = self.runners.get(channel)
        if runners is None:
            raise Requeue(f"this worker serves no sink of channel '{channel}'")
        runner = next(runners)
        started = time.monotonic()
        held = [tag]
        extras: list[str] = []                    # tags of messages gathered beyond the task's own
        self.housekeeper.hold(held)
        try:
            self._gather(channel, runner.batch_size, batch, extras, held)
            channel_counters = self.metrics.group("CHANNEL", channel)
            channel_counters.add(EVENT_TAKE_ATTEMPT, len(batch))
            try:
                sink = runner.write(batch, self.should_stop, self.settings.sink_retry_max_s)
            except Requeue:
                for extra in extras:
                    self.channel.give_back(extra, front=True)
                raise
            self.channel.ack_tag(*extras)
            channel_counters.add(EVENT_TAKE_SUCCESS, len(batch))
            if sink is not None:      # the task's own message is acknowledged by Celery right after we return
                self.metrics.group("SINK", sink.name).observe_batch(time.monotonic() - started)
            return {"events": len(batch), "messages": 1 + len(extras)}
        finally:
            self.housekeeper.release(held)

    def _gather(self, channel: str, wanted: int, batch: Batch, extras: list, held: list) -> None:
        """Take more of ``channel`` (in one transaction) until ``batch`` holds ``wanted`` events."""
        if len(batch) >= wanted:
            return
        taken = self.channel.fetch(queue_name(self.config.name, channel), wanted - len(batch))
        for payload in taken:
            tag = payload["properties"]["delivery_tag"]
            try:
                _, more = codec.decode_stored(payload)
            except UndecodableMessage as exc:
                # Leave it to its own task delivery, where it is dealt with as a poison message.
                log.warning("channel %s: message %s cannot be combined (%s); giving it back", channel, tag, exc)
                self.channel.give_back(tag, front=True)
                continue
            held.append(tag)
            self.housekeeper.hold([tag])
            extras.append(tag)
            batch.extend(more)

    def stop(self) -> None:
        for runner in self.all_runners:
            try:
                runner.stop()
            except Exception:
                log.exception("sink %s did not stop cleanly", runner.unit)
        self.metrics.stop()
