"""A benchmark's working directory: the one given (kept, for a look afterwards), or a temporary one that is removed
when the benchmark exits, however it exits short of being killed (a 1M-line run leaves ~0.7 GB behind)."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path


def work_dir(given: str | Path | None, prefix: str) -> Path:
    """``given`` (created if missing), or a new temporary directory named ``prefix...``, removed at exit."""
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
