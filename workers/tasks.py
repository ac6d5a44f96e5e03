"""The Celery task that carries a channel message: ``flumery.take(channel, bodies, headers, ids)``.

Sources never call it through Celery's ``send_task``: they put its messages into channel queues with a
capacity-checked transaction (:mod:`routing.processor`; the message format is :mod:`routing.codec`).  Celery
workers consume them like any other task.  The task returns normally only after the batch was written and
confirmed; then Celery acknowledges the message (``acks_late``).  Every other outcome gives the message back
(``Reject(requeue=True)``), except a message that cannot be decoded at all: its raw content goes to the
dead-letter channel, then it is dropped from its channel.
"""
from __future__ import annotations

import logging
import time

from celery import signals
from celery.exceptions import Reject

from core.errors import Requeue, SinkBusy, UndecodableMessage
from routing import codec
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def take(task, channel, bodies, headers=None, ids=None):
    """The task body; ``task.app.flumery_settings`` names the agent whose sinks this worker serves.

    Returns what was done, for Flower: ``{"events": written, "messages": channel messages acknowledged}``.
    """
    runtime = WorkerRuntime.current(task.app.flumery_settings, task.app)
    try:
        return runtime.take(channel, codec.decode_args(bodies, headers, ids), task.request.id)
    except Requeue as exc:
        log.log(logging.DEBUG if isinstance(exc, SinkBusy) else logging.INFO,
                "channel message %s goes back to channel %s: %s", task.request.id, channel, exc)
        raise Reject(str(exc), requeue=True) from None
    except UndecodableMessage as exc:
        # Keep its raw content as one dead letter, then drop the message from its channel.
        raw = codec.raw_event(channel, bodies, headers, ids, task.request.id)
        runtime.bury([raw], [f"undecodable channel message: {exc}"], "", channel, 1)
        log.error("channel message %s of channel %s cannot be decoded; it went to the dead-letter channel: %s",
                  task.request.id, channel, exc)
        raise Reject(str(exc), requeue=False) from None
    except Exception as exc:
        # Celery would drop the message of a failed acks_late task (acks_on_failure_or_timeout=False rejects
        # it without requeue): never let an unexpected error reach Celery.
        log.exception("channel message %s of channel %s failed; it goes back to the channel",
                      task.request.id, channel)
        time.sleep(1.0)
        raise Reject(f"unexpected error: {exc}", requeue=True) from None


def register_tasks(app) -> None:
    app.task(name=codec.TASK_NAME, bind=True, acks_late=True, ignore_result=True)(take)


def stop_sinks(**_) -> None:
    runtime = WorkerRuntime._current
    if runtime is not None:
        runtime.stop()


signals.worker_process_shutdown.connect(stop_sinks, weak=False, dispatch_uid="flumery.stop_sinks.process")
signals.worker_shutdown.connect(stop_sinks, weak=False, dispatch_uid="flumery.stop_sinks")
