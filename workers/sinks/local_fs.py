"""The local file system, with the calls the file sinks need (hdfs's ``file://`` paths, and the journal's finishing of
file_roll files), each returning only once the change is durable."""
from __future__ import annotations

import os
from pathlib import Path

from core.files import fsync_dir, write_all


class LocalFileSystem:
    """The local file system, as Hadoop's LocalFileSystem for ``file://`` paths; every write is fsynced, and so
    is the directory of every file created, renamed or deleted."""

    def __repr__(self) -> str:
        return "LocalFileSystem()"

    def create(self, path: str, data: bytes, length: int | None = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(os.path.dirname(path))

    def append(self, path: str, data: bytes, length: int | None = None) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def length(self, path: str) -> int | None:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None

    def truncate(self, path: str, length: int) -> bool:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, length)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def rename(self, source: str, target: str) -> bool:
        if not os.path.exists(source):
            return False
        if os.path.exists(target):
            raise FileExistsError(f"{target} exists")
        os.rename(source, target)
        fsync_dir(os.path.dirname(target))
        return True

    def delete(self, path: str) -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        fsync_dir(os.path.dirname(path))
        return True
