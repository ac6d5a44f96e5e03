"""What Flumery adds to every ``celery -A app`` process (sink workers, Flower): a quieter log, and the dead-letter
channel among the queues Flower shows.

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
from celery.worker import control

from routing.channels import channel_queues
from routing.deadletter import DEAD_CHANNEL

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


def install() -> None:
    """Connect the hooks (idempotent)."""
    signals.after_setup_logger.connect(quiet_per_task_lines, weak=False, dispatch_uid="flumery.quiet_per_task")
    if control.Panel.data["active_queues"] is _celery_active_queues:
        control.inspect_command(name="active_queues")(active_queues)
