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
            from app.celery_app import create_app
            _app = create_app()
        return _app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
