"""Flumery's application package.

``celery -A app worker`` and ``celery -A app flower`` find the Celery app here as ``app.app``.  It is built on
first use (PEP 562 module ``__getattr__``) rather than at import, so that ``flumery validate`` and the other
commands that import ``app.*`` never read broker settings they do not need.  Building it also installs
:mod:`app.worker_hooks` (quieter per-task logs, the dead-letter channel in Flower).
"""
from __future__ import annotations

_app = None


def __getattr__(name: str):
    global _app
    if name in ("app", "celery"):
        if _app is None:
            # Imported here, not at the top: `flumery validate` and the other commands that import `app.*` must
            # not load Celery.  Only `celery -A app ...` processes (workers, Flower) get here.
            from app import worker_hooks
            from app.celery_app import create_app
            _app = create_app()
            worker_hooks.install()
        return _app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
