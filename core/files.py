"""Durable small-file writes shared by the sources and sinks that keep state on disk."""
from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte of ``data`` is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a directory's entries (a file created, renamed or removed in it) survive a crash; best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | os.PathLike, data: bytes, tmp: str | os.PathLike | None = None,
                     sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a reader, or a restart after a crash, sees the old content or the
    new one, never a mix.  ``tmp`` is the temporary file (default: a hidden one beside ``path``)."""
    directory, name = os.path.split(os.fspath(path))
    if tmp is None:
        tmp = os.path.join(directory, (name if name.startswith(".") else "." + name) + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(directory or ".")
