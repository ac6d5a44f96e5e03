"""The Celery application, and every Celery/kombu setting Flumery's delivery guarantees depend on.

All of them live in :func:`celery_config` so that they are set once, the same way, for sink workers, for
``flumery agent`` and for Flower.  This is also the worker bootstrap: a ``celery -A app worker`` whose agent
file, agent name or broker is missing or wrong refuses to start with one line saying what to fix.
"""
from __future__ import annotations

import logging

from celery import Celery, signals

from app.broker import reachable
from core.errors import BrokerRefused, ConfigInvalid, SettingsError
from core.settings import Settings
from routing.channels import channel_queues
from routing.transport import install as install_transport
from workers.runtime import served_channels
from workers.tasks import register_tasks

log = logging.getLogger(__name__)


def celery_config(settings: Settings, queues: list) -> dict:
    options = settings.transport_options()
    config = dict(
        # None when unknown: only a worker needs one, and it refuses to start without (see check_worker).
        broker_url=settings.resolved_broker_url(),
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
    """The Celery app for the agent named by ``settings`` (from the environment when None).

    Raises :class:`~core.errors.ConfigInvalid` or :class:`~core.errors.SettingsError` when the agent file
    it names is not valid.
    """
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


def worker_problem(settings: Settings) -> str | None:
    """Why a sink worker with these settings cannot serve anything, in one line; None if it can."""
    missing = [name for name, value in (("FLUMERY_CONF_FILE", settings.conf_file),
                                         ("FLUMERY_AGENT", settings.agent)) if not value]
    if missing:
        return (f"set {' and '.join(missing)} to say which agent's sinks this worker serves "
                f"(see deploy/flumery.env.example)")
    if not settings.resolved_broker_url():
        return ("no broker: set FLUMERY_BROKER_URL (or REDIS_URL), or FLUMERY_DATA_DIR to the data dir of a "
                "running `flumery agent`")
    try:
        served_channels(settings)
    except ConfigInvalid as exc:
        return f"{settings.conf_file}: agent '{settings.agent}' is not valid: " + "; ".join(map(str, exc.errors))
    except SettingsError as exc:
        return str(exc)
    try:                                  # a wrong password or certificate: Celery would retry it for ever
        reachable(settings.resolved_broker_url(), settings.transport_options())
    except BrokerRefused as exc:
        return str(exc)
    return None


@signals.worker_init.connect(weak=False, dispatch_uid="flumery.check_worker")
def check_worker(sender=None, **_) -> None:
    """Refuse to start a worker that would say 'ready' and serve nothing (or retry a broker that was never
    configured a hundred times)."""
    app = getattr(sender, "app", None)
    settings = getattr(app, "flumery_settings", None)
    if settings is None:
        return                          # not Flumery's app
    problem = worker_problem(settings)
    if problem:
        raise SystemExit(f"flumery: {problem}")
