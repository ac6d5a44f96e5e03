"""The sink workers ``flumery agent`` starts: ``celery worker`` on Flumery's app, with nothing imported from the
working directory.

``python -m celery -A app worker`` would put the working directory first on ``sys.path`` twice over: ``-m`` puts it
there, and Celery's ``import_from_cwd`` (used for ``-A`` and for its loader) puts it back while it imports.  A
``msgpack.py`` (or ``app/``) in the directory the agent was started from would then run inside every worker.  The
agent therefore starts ``python -c BOOTSTRAP --quiet worker ...``: the bootstrap removes every relative entry of
``sys.path`` (``''`` is the working directory) before anything is imported, and :func:`main` turns Celery's
``cwd_in_path`` into a no-op before Celery builds its loader, then starts the worker through the app object (no
``-A``).  The working directory itself stays what it was: relative paths in the agent file keep their meaning.
"""
from __future__ import annotations

import faulthandler
import importlib
import os
import signal
import sys
from contextlib import contextmanager

import celery.utils.imports
import click

# Run by ``python -c``: only ``os`` and ``sys`` (already loaded by the interpreter's start-up) are imported before
# the working directory is gone from the path.  The trailing comment keeps "celery worker" in the command line
# that ps and /proc show.
BOOTSTRAP = ("import os, sys; sys.path[:] = [p for p in sys.path if p and os.path.isabs(p)]; "
             "from app.worker import main; main()  # flumery sink worker: celery worker")


def pool_options(units: int) -> list[str]:
    """The Celery pool of a sink worker serving ``units`` sink units (sink groups or lone sinks): one, the solo pool
    (one take transaction at a time, as Flume's SinkRunner); several, a thread per unit, so that one store that
    hangs holds only its own sink (each sink still writes one batch at a time: WorkerRuntime._claim)."""
    return ["--pool", "solo"] if units <= 1 else ["--pool", "threads", "--concurrency", str(units)]


@contextmanager
def _cwd_not_in_path():
    yield None


def main() -> None:
    """The ``celery`` command line after ``-c BOOTSTRAP`` (``[--quiet] worker ...``, or another command such as
    ``flower ...``), on Flumery's app; exits with the command's status."""
    # Celery's import_from_cwd / find_module look this name up in their module when called.
    celery.utils.imports.cwd_in_path = _cwd_not_in_path
    from app import app as celery_app  # built from the FLUMERY_* environment, after the patch above

    # kill -USR1 prints every thread's stack (a process that hangs can say where); Celery's worker puts its own
    # handler, which logs the same, in place of this one.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    argv = sys.argv[1:]
    quiet = argv[:1] == ["--quiet"]
    command = argv[1:] if quiet else argv
    try:
        status = _worker(celery_app, command[1:], quiet) if command[:1] == ["worker"] else celery_app.start(argv)
    except click.ClickException as exc:         # a bad option: its usage message, not a traceback
        exc.show()
        status = exc.exit_code
    sys.exit(status)


def _worker(celery_app, args: list[str], quiet: bool):
    """``celery worker ARGS``: Celery's own ``worker`` command, run without the ``celery`` command group around it.
    The group imports every other subcommand and every installed plugin before it starts any of them (Flower with
    Tornado, click-repl with prompt_toolkit): 0.2 s of CPU at each worker start, which an agent pays once per sink
    worker and again at each reload.  Flumery's app declares no user or preload options, the only other thing the
    group adds; the worker's options, their parsing and its exit status are Celery's.  Returns the exit status."""
    _import_without("celery.bin.base", "pygments")
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker

    context = CLIContext(app=celery_app, no_color=bool(os.environ.get("NO_COLOR")), workdir=None, quiet=quiet)
    return worker.main(args=args, obj=context, prog_name="celery worker", standalone_mode=False)


def _import_without(module: str, optional: str) -> None:
    """Import ``module`` as if the package ``optional``, which it only tries to import, were not installed.

    ``celery.bin.base`` imports pygments when it can, to colour the output of ``celery inspect``, and builds a
    Python lexer on import: 30-80 ms of CPU at every worker start, which a worker never uses (pygments is there
    when pytest is, in the development venv that ``make run`` and the benchmarks use).  A ``None`` in
    ``sys.modules`` makes ``import optional`` raise ImportError (the import system's documented meaning), and
    Celery falls back to plain text; the entry is put back as it was afterwards, so later imports are unaffected."""
    missing = object()
    saved = sys.modules.get(optional, missing)
    sys.modules[optional] = None
    try:
        importlib.import_module(module)
    finally:
        if saved is missing:
            del sys.modules[optional]
        else:
            sys.modules[optional] = saved
