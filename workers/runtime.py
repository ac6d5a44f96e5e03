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
4. While the batches come full (the channel holds more), the task keeps draining for up to ``DRAIN_MAX_S``:
   the acknowledgement of each batch and the take of the one after the next are one transaction, made while
   the next is being written, and no Celery delivery is paid per batch.  The task's result counts every event
   and message it wrote.

If the worker is asked to stop while the store is failing, the gathered messages are given back to the front of
the channel and the task's message is rejected with requeue (or, if the task's own batch was already written,
acknowledged while the later batch goes back): nothing is acknowledged that was not written.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

from celery.worker import state as worker_state

from core.config import AgentConfig, load_agent
from core.counters import EVENT_PUT_SUCCESS, EVENT_TAKE_ATTEMPT, EVENT_TAKE_SUCCESS, MetricsStore
from core.errors import Requeue, SettingsError, SinkBusy, UndecodableMessage
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

# A task keeps draining its channel (batch after batch, while it holds events) at most this long, so that Celery's
# event loop (remote control, the shutdown signal, other channels of the same worker) runs in between.
DRAIN_MAX_S = 1.0
# Under Celery's threads pool, how long a task waits for a busy sink of its channel before giving its message back
# (a busy sink is draining the channel, which returns within DRAIN_MAX_S while the store answers).
CLAIM_WAIT_S = 2 * DRAIN_MAX_S


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
        self.all_runners: list[SinkRunner] = []
        for unit, sinks in served_units(settings, self.config):
            runner = self._build_runner(unit, sinks, context)
            self.all_runners.append(runner)
        self.by_channel: dict[str, list[SinkRunner]] = {}
        for runner in self.all_runners:
            self.by_channel.setdefault(runner.channel, []).append(runner)
        # A batch replicated into several of the channels drained here crosses from Redis once, not once each.
        self.channel.shares_data = len(self.by_channel) > 1
        # Several sinks outside a group on one channel compete for its messages, as in Flume.
        self.runners = {channel: itertools.cycle(rs) for channel, rs in self.by_channel.items()}
        # A sink writes one batch at a time.  Celery's threads pool runs tasks side by side in this process (the
        # agent's shared sink worker does): a task claims a runner (see _claim) for its whole take transaction.
        self.claims = {runner.unit: threading.Lock() for runner in self.all_runners}
        # Takes the next batch while a sink writes the current one (see _drain): one thread per runner at most.
        self._ahead = ThreadPoolExecutor(max_workers=max(1, len(self.all_runners)),
                                         thread_name_prefix="flumery-take-ahead")

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
        then go on draining the channel (:meth:`_drain`), unless the worker is stopping: then acknowledge what was
        gathered and return.  Returns ``{"events": written, "messages": messages}``."""
        runner = self._claim(channel)
        started = time.monotonic()
        extras: list[str] = []                    # tags of the messages of the batch beyond the task's own
        self.housekeeper.hold([tag])
        try:
            self._gather(channel, runner.batch_size, batch, extras)
            sink = self._write(runner, channel, batch, extras)    # Requeue: nothing written, the task goes back
            if self.should_stop():
                self.channel.ack_tag(*extras)
                # the task's own message is acknowledged by Celery right after we return
                self._observe(sink, started)
                return {"events": len(batch), "messages": 1 + len(extras)}
            events, messages = self._drain(runner, channel, extras, (sink, started))
            return {"events": len(batch) + events, "messages": 1 + len(extras) + messages}
        finally:
            # Whatever happened, this task renews none of these leases any more (a message given back and taken by
            # another worker must expire if that worker dies).
            self.housekeeper.release([tag, *extras])
            self.claims[runner.unit].release()

    def _claim(self, channel: str) -> SinkRunner:
        """A runner of ``channel`` that no other task of this process is using, claimed for the caller (who
        releases ``self.claims[runner.unit]``).  Under the solo and prefork pools a task never waits here.  Under
        the threads pool, a task of a channel whose every sink is busy (draining it already, or retrying a failing
        store) waits up to :data:`CLAIM_WAIT_S`, then raises SinkBusy (a Requeue): its message goes back to the
        channel and the thread is free for the other channels, so one stuck store never holds every thread."""
        runners = self.by_channel.get(channel)
        if runners is None:
            raise Requeue(f"this worker serves no sink of channel '{channel}'")
        for _ in runners:
            runner = next(self.runners[channel])
            if self.claims[runner.unit].acquire(blocking=False):
                return runner
        if self.claims[runner.unit].acquire(timeout=CLAIM_WAIT_S):
            return runner
        raise SinkBusy(f"every sink of channel '{channel}' is busy with another batch")

    def _drain(self, runner: SinkRunner, channel: str, written: list[str], timing: tuple) -> tuple[int, int]:
        """Go on taking and writing ``channel`` while it holds events, for up to :data:`DRAIN_MAX_S`, without a
        Celery delivery per batch.  ``written``: tags of a batch written and not yet acknowledged;
        ``timing``: (the sink that wrote it, when it was taken), for the latency histogram.

        While this thread writes a full batch N (and waits for its fsync), another acknowledges batch N-1, written
        before, and takes batch N+1, in one call (:meth:`~routing.transport.Channel.ack_and_fetch`): the broker's
        round trip and the sink's write overlap, and nothing is acknowledged before its write returned.  After a
        batch that came short (the channel was empty behind it), the same call follows its write.  Returns
        (events, messages) written; when it returns (or raises), every batch it wrote is acknowledged or will be
        delivered again, and every batch it took and did not write is given back (or its lease runs out)."""
        queue, size = queue_name(self.config.name, channel), runner.batch_size
        deadline = time.monotonic() + DRAIN_MAX_S
        events = messages = 0
        done, tags = written, []        # tags of the batch written last (not acknowledged), of the batch in hand
        try:
            taken_at = time.monotonic()
            _, taken = self.channel.ack_and_fetch(queue, done, size)
            self.housekeeper.release(done)
            self._observe(*timing)      # the batch of the task's own message (which Celery acknowledges)
            done = []
            batch, tags = self._combine(channel, taken)
            while batch is not None:
                going_on, ahead = not self.should_stop() and time.monotonic() < deadline, None
                if going_on and len(batch) >= size:
                    next_taken_at = time.monotonic()
                    ahead = self._ahead.submit(self.channel.ack_and_fetch, queue, done, size)
                try:
                    sink = self._write(runner, channel, batch, tags)      # on Requeue it gave ``tags`` back
                except Requeue:
                    self.housekeeper.release(tags)
                    tags = []
                    if ahead is not None:
                        _, taken = ahead.result()         # it acknowledged ``done``
                        self._acknowledged(done, timing)
                        done = []
                        for extra in self._combine(channel, taken)[1]:
                            self.channel.give_back(extra, front=True)
                            self.housekeeper.release([extra])
                    break
                events, messages = events + len(batch), messages + len(tags)
                if ahead is not None:
                    _, taken = ahead.result()
                    self._acknowledged(done, timing)
                elif going_on:
                    # The batch came short: the channel held no more when it was taken.  Acknowledge it (and the
                    # one before) and take what came meanwhile, after the write, in one call; going back to Celery
                    # for the next message instead cost three or four broker writes, each an fsync.
                    next_taken_at = time.monotonic()
                    _, taken = self.channel.ack_and_fetch(queue, [*done, *tags], size)
                    self._acknowledged(done, timing)
                    self._acknowledged(tags, (sink, taken_at))
                    tags = []
                else:
                    break
                done, timing = tags, (sink, taken_at)
                taken_at, (batch, tags) = next_taken_at, self._combine(channel, taken)
            self.channel.ack_tag(*done, *tags)
            self._acknowledged(done, timing)
            if tags:
                self._acknowledged(tags, (sink, taken_at))
            done = tags = []
            return events, messages
        finally:
            self.housekeeper.release([*done, *tags])

    def _acknowledged(self, tags: list[str], timing: tuple) -> None:
        """``tags`` (one batch) were acknowledged: their leases need no renewing; the batch's time from take to
        acknowledgement goes into its sink's latency histogram."""
        if tags:
            self.housekeeper.release(tags)
            self._observe(*timing)

    def _observe(self, sink, started: float) -> None:
        if sink is not None:        # None: every event of the batch went to the dead-letter channel
            self.metrics.group("SINK", sink.name).observe_batch(time.monotonic() - started)

    def _write(self, runner: SinkRunner, channel: str, batch: Batch, extras: list[str]):
        """Write ``batch``; on Requeue (stopping while the store fails) give ``extras`` back first.  Returns the
        sink that wrote it (see :meth:`SinkRunner.write`)."""
        channel_counters = self.metrics.group("CHANNEL", channel)
        channel_counters.add(EVENT_TAKE_ATTEMPT, len(batch))
        try:
            sink = runner.write(batch, self.should_stop, self.settings.sink_retry_max_s)
        except Requeue:
            for extra in extras:
                self.channel.give_back(extra, front=True)
            raise
        channel_counters.add(EVENT_TAKE_SUCCESS, len(batch))
        return sink

    def _gather(self, channel: str, wanted: int, batch: Batch, extras: list) -> None:
        """Take more of ``channel`` (in one transaction) until ``batch`` holds ``wanted`` events."""
        if len(batch) >= wanted:
            return
        more, tags = self._combine(channel, self.channel.fetch(queue_name(self.config.name, channel),
                                                               wanted - len(batch)))
        if more is not None:
            batch.extend(more)
            extras.extend(tags)

    def _combine(self, channel: str, taken: list[dict]) -> tuple[Batch | None, list[str]]:
        """The messages ``taken`` from ``channel`` as one batch (None if none could be decoded) and their tags,
        held by the housekeeper from now on."""
        batch, tags = None, []
        for payload in taken:
            tag = payload["properties"]["delivery_tag"]
            try:
                _, more = codec.decode_stored(payload)
            except UndecodableMessage as exc:
                # Leave it to its own task delivery, where it is dealt with as a poison message.
                log.warning("channel %s: message %s cannot be combined (%s); giving it back", channel, tag, exc)
                self.channel.give_back(tag, front=True)
                continue
            tags.append(tag)
            if batch is None:
                batch = more
            else:
                batch.extend(more)
        self.housekeeper.hold(tags)
        return batch, tags

    def stop(self) -> None:
        for runner in self.all_runners:
            try:
                runner.stop()
            except Exception:
                log.exception("sink %s did not stop cleanly", runner.unit)
        self._ahead.shutdown(wait=True)
        self.metrics.stop()
