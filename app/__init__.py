"""Flumery's application package.

``celery -A app worker`` and ``celery -A app flower`` find the Celery app here as ``app.app``.  It is built on
first use (PEP 562 module ``__getattr__``) rather than at import, so that ``flumery validate`` and the other
commands that import ``app.*`` never read broker settings they do not need.
"""
from __future__ import annotations

_app = None


def __getattr__(name: str):
    global _app
    if name in ("app", "celery"):
        if _app is None:
            from celery import signals

            from app.broker import refuse_unusable_broker
            from app.celery_app import create_app
            _app = create_app()
            # A worker (``celery -A app worker``, or one the agent started) whose broker refuses the password or
            # the certificate stops with one line instead of retrying for ever.
            signals.celeryd_init.connect(refuse_unusable_broker, weak=False, dispatch_uid="flumery.broker_check")
        return _app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
