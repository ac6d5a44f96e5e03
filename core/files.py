"""Durable small-file writes shared by the sources and sinks that keep state on disk."""
from __future__ import annotations

import contextlib
import os
import tempfile


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
                     sync_dir: bool = True, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a reader, or a restart after a crash, sees the old content or the
    new one, never a mix.  ``tmp`` is the temporary file; by default a new hidden one beside ``path``
    (``.<name>.<random>.tmp``), so that writers of the same path in several processes (an agent's sources and its
    sinks started together on one data directory) never rename each other's file away.  The file gets permission
    bits ``mode`` (0o600 for a secret) before any byte is written."""
    directory, name = os.path.split(os.fspath(path))
    if tmp is None:
        # mkstemp: O_EXCL (a planted file or symbolic link is never opened) and mode 0o600 until the fchmod.
        fd, tmp = tempfile.mkstemp(prefix=(name if name.startswith(".") else "." + name) + ".", suffix=".tmp",
                                   dir=directory or ".")
    else:
        # O_NOFOLLOW: a symbolic link planted where the temporary file goes must not redirect the write.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)          # mkstemp's is 0o600; an explicit one left by an earlier run keeps its mode
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(directory or ".")


def make_private_dir(path: str | os.PathLike) -> bool:
    """Create ``path``, and each missing parent, with mode 0o700 (owner only).  Returns True if ``path`` existed
    already (its mode is then left as it is: it may be a directory the operator shares on purpose)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        return True
    missing = []
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
    return False
