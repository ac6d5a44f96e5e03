"""What Flumery adds to every ``celery -A app`` process (sink workers, Flower): sinks that start with their worker,
a quieter log, and the dead-letter channel among the queues Flower shows.

* **Sinks start with the worker**, as Flume starts a sink with its agent, not at their first event (so a sink's
  ``StartTime`` is its start): in the process that runs the tasks, once the worker is ready (solo and thread
  pools) or a pool process is up (prefork).

* **Per-task log lines at DEBUG.**  Celery logs every task at INFO (``Task flumery.take[...] received`` and
  ``... succeeded``): with a logger sink that is three lines per event.  Unless the worker runs with
  ``--loglevel DEBUG``, those two loggers only pass warnings and errors; the agent logs a periodic throughput
  line instead (:mod:`app.throughput`).
* **The dead-letter channel on Flower's broker page.**  Flower lists the queues that workers report through the
  ``active_queues`` inspect command (``task_queues`` only while no worker is known).  No worker consumes the
  dead-letter channel, on purpose, so a Flumery worker adds it to that report, marked ``"flumery": "dead-letter
  channel, not consumed"``: Flower then shows its length beside the channels'.
"""
from __future__ import annotations

import logging

from celery import signals
from celery.concurrency import prefork
from celery.worker import control

from app import malloc
from routing.channels import channel_queues
from routing.deadletter import DEAD_CHANNEL
from workers.runtime import WorkerRuntime

PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")
DEAD_LETTER_NOTE = "dead-letter channel, not consumed"


def quiet_per_task_lines(loglevel=None, **_) -> None:
    """``after_setup_logger``: per-task lines only at DEBUG."""
    if loglevel is None or loglevel > logging.DEBUG:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


_celery_active_queues = control.Panel.data["active_queues"]


def active_queues(state) -> list[dict]:
    """Celery's ``active_queues`` reply, plus the agent's dead-letter queue (see the module docstring)."""
    queues = _celery_active_queues(state)
    settings = getattr(state.app, "flumery_settings", None)
    if settings is None or not settings.agent:
        return queues
    dead = channel_queues(settings.agent, [DEAD_CHANNEL])[0]
    if all(q.get("name") != dead.name for q in queues):
        queues.append({**dead.as_dict(recurse=True), "flumery": DEAD_LETTER_NOTE})
    return queues


_celery_app = None                 # the app of this process, for worker_process_init (which has no sender)


def start_sinks(celery_app) -> None:
    """Build this process's sink runtime and start its sinks (a sink that cannot start is logged and retried
    before each write, see :class:`workers.runner.SinkRunner`)."""
    settings = getattr(celery_app, "flumery_settings", None)
    if celery_app is None or settings is None or not settings.conf_file:
        return
    malloc.keep_batch_buffers()       # the process that takes and writes the batches: see app/malloc.py
    for runner in WorkerRuntime.current(settings, celery_app).all_runners:
        runner.start()


def start_sinks_when_ready(sender=None, **_) -> None:
    """``worker_ready`` (sender: the consumer).  With a prefork pool the tasks run in the pool processes, which
    start their own sinks (:func:`start_sinks_in_pool_process`)."""
    if sender is not None and not isinstance(sender.pool, prefork.TaskPool):
        start_sinks(sender.app)


def start_sinks_in_pool_process(**_) -> None:
    """``worker_process_init``, in each prefork pool process."""
    start_sinks(_celery_app)


def install(celery_app) -> None:
    """Connect the hooks for ``celery_app`` (idempotent)."""
    global _celery_app
    _celery_app = celery_app
    signals.worker_ready.connect(start_sinks_when_ready, weak=False, dispatch_uid="flumery.start_sinks")
    signals.worker_process_init.connect(start_sinks_in_pool_process, weak=False,
                                        dispatch_uid="flumery.start_sinks.pool")
    signals.after_setup_logger.connect(quiet_per_task_lines, weak=False, dispatch_uid="flumery.quiet_per_task")
    if control.Panel.data["active_queues"] is _celery_active_queues:
        control.inspect_command(name="active_queues")(active_queues)
