"""The Celery application, and every Celery/kombu setting Flumery's delivery guarantees depend on.

All of them live in :func:`celery_config` so that they are set once, the same way, for sink workers, for
``flumery agent`` and for Flower.
"""
from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from core.settings import Settings
from core.keys import exchange_name, queue_name
from routing.transport import install as install_transport

def transport_options(settings: Settings) -> dict:
    """kombu Redis transport options; the visibility timeout is Flumery's crash-recovery time."""
    vt = settings.visibility_timeout_s
    # Every Redis key, kombu's and Flumery's (see core.keys), goes under this prefix; none by default.
    prefix = {"global_keyprefix": settings.key_prefix} if settings.key_prefix else {}
    return {
        **prefix,
        # A message taken by a worker that died is given back after this many seconds.
        "visibility_timeout": vt,
        # Look for such messages every few seconds, and really scan each time (kombu's default throttle
        # scans one time in ten, which turns a 30 s timeout into minutes).
        "unacked_restore_interval": max(1.0, min(5.0, vt / 6)),
        "unacked_restore_throttle": 1,
        # A worker killed while holding the sweep mutex must not block sweeps for kombu's default 5 minutes.
        "unacked_mutex_expire": int(max(5, min(60, vt))),
    }


def channel_queues(agent: str, channels) -> list[Queue]:
    """One durable queue per channel, bound by the channel name on the agent's direct exchange."""
    exchange = Exchange(exchange_name(agent), type="direct", durable=True)
    return [Queue(queue_name(agent, c), exchange, routing_key=c, durable=True) for c in channels]


def celery_config(settings: Settings, queues: list[Queue]) -> dict:
    options = transport_options(settings)
    config = dict(
        broker_url=settings.resolved_broker_url() or "redis://127.0.0.1:6379/0",
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        # Sinks confirm writes by acknowledging the channel message; there are no task results to keep.
        result_backend=None,
        task_ignore_result=True,
        result_backend_transport_options=options,
        # msgpack keeps event bodies as bytes; never accept pickle from a broker (remote code execution).
        task_serializer="msgpack",
        accept_content=["msgpack", "json"],
        result_accept_content=["msgpack", "json"],
        event_serializer="json",
        # Acknowledge a channel message only after the sink's write was confirmed; a failure or a lost worker
        # gives the message back instead of dropping it.
        task_acks_late=True,
        task_acks_on_failure_or_timeout=False,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # After a lost broker connection a running batch cannot be acknowledged on the new connection anyway;
        # its message comes back after the visibility timeout.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Flower sees every worker and task.
        worker_send_task_events=True,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
    )
    if queues:
        config["task_queues"] = queues
        config["task_default_queue"] = queues[0].name
        config["task_create_missing_queues"] = False
    return config


def create_app(settings: Settings | None = None) -> Celery:
    """The Celery app for the agent named by ``settings`` (from the environment when None)."""
    from workers.runtime import served_channels   # imported here: the config loader imports components
    from workers.tasks import register_tasks

    install_transport()
    settings = settings or Settings.from_env()
    queues = []
    if settings.conf_file and settings.agent:
        queues = channel_queues(settings.agent, served_channels(settings))
    app = Celery("flumery", set_as_current=False)
    app.conf.update(celery_config(settings, queues))
    app.flumery_settings = settings
    register_tasks(app)
    return app
