"""Flumery's application package (the top layer: Celery app, agent, CLI, dead-letter tool, metrics).

``celery -A app worker`` and ``celery -A app flower`` find the Celery app here as ``app.app``.  It is built on
first use (PEP 562 module ``__getattr__``) rather than at import, so that ``flumery validate`` and the other
commands that import ``app.*`` never read broker settings they do not need.  The import inside ``__getattr__``
is lazy on purpose: importing the Celery app imports every layer below, which ``import app.cli`` must not pay
twice, and a broken agent file must not break ``import app``.  Building it also installs :mod:`app.worker_hooks`
(quieter per-task logs, the dead-letter channel in Flower) in the ``celery -A app`` processes that use it.
"""
from __future__ import annotations

from core.errors import ConfigInvalid, FlumeryError

_app = None


def __getattr__(name: str):
    global _app
    if name in ("app", "celery"):
        if _app is None:
            from app import worker_hooks  # lazy: see the module docstring
            from app.celery_app import create_app  # lazy: see the module docstring
            try:
                _app = create_app()
            except ConfigInvalid as exc:
                # The worker bootstrap: one clear message and exit status 2, not a traceback.
                raise SystemExit("flumery: the agent file is not valid:\n"
                                 + "\n".join(f"  {e}" for e in exc.errors)) from None
            except FlumeryError as exc:
                raise SystemExit(f"flumery: {exc}") from None
            worker_hooks.install(_app)
        return _app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
