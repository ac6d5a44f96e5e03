"""core.files.write_atomically: durable replacement of small state files."""
from __future__ import annotations

import os
import stat
import threading

import pytest

from core.files import write_atomically


def test_writers_of_the_same_path_at_once_never_rename_each_others_file(tmp_path):
    # An agent's sources and its sinks, started together on one data directory, both write the accepted copy of
    # the agent file: with one fixed temporary name, one writer's rename took the other's file away
    # (FileNotFoundError at start; seen on CI).
    path = tmp_path / "accepted.conf"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def writer(n: int) -> None:
        start.wait()
        try:
            for i in range(300):
                write_atomically(path, f"writer {n} round {i}\n".encode(), sync_dir=False, mode=0o600)
        except BaseException as exc:       # noqa: BLE001  (reported below, with the thread's number)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert path.read_text() in {f"writer {n} round 299\n" for n in range(4)}
    assert sorted(os.listdir(tmp_path)) == ["accepted.conf"]       # no temporary file left behind


def test_the_file_has_its_mode_and_a_failed_write_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "secret"
    write_atomically(path, b"x\n", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == b"x\n"
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomically(tmp_path / "dir", b"y\n")           # the rename onto a directory fails
    assert sorted(os.listdir(tmp_path)) == ["dir", "secret"]


def test_an_explicit_temporary_file_is_not_followed_through_a_symbolic_link(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("untouched\n")
    (tmp_path / "planted.tmp").symlink_to(target)
    with pytest.raises(OSError):
        write_atomically(tmp_path / "state", b"z\n", tmp=tmp_path / "planted.tmp")
    assert target.read_text() == "untouched\n" and not (tmp_path / "state").exists()
