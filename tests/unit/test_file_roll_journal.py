"""file_roll's write journal (workers/sinks/journal.py, shared with hdfs): a batch that comes back after its worker
died between its write and its acknowledgement is not written twice; a write torn by the kill is cut back and the
batch written once, whole; both hold after a roll, after the journal was compacted, and when the batch comes back
to another live process of the sink.  A "kill" here is what kill -9 leaves: the files and the journal as they are,
no close, no clean-stop records, the journal's lock let go (the kernel does that)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import workers.sinks.file_roll as file_roll_module
import workers.sinks.journal as journal_module
from core.event import Batch, IdRange
from core.options import build
from workers.sinks.base import SinkContext
from workers.sinks.file_roll import JOURNAL_KEEP, FileRollSink


def sink(tmp: Path, **props) -> FileRollSink:
    props = {"sink.directory": str(tmp / "out"), "sink.rollInterval": "0", **props}
    config, errors, _ = build(FileRollSink.Config, props, "a1.sinks.k1.")
    assert not errors, errors
    s = FileRollSink("k1", config, SinkContext("a1", tmp / "data"))
    s.start()
    return s


def batch(*bodies: str) -> Batch:
    """Events whose ids are their bodies (stable across deliveries, as every source's ids are)."""
    return Batch([b.encode() for b in bodies], None, [f"id-{b}" for b in bodies])


def kill(s: FileRollSink) -> None:
    if s.fd is not None:
        os.close(s.fd)
    os.close(s.journal.fd)
    os.close(s.journal.lock_fd)


def lines(tmp: Path) -> list[bytes]:
    out = tmp / "out"
    return sorted(line for p in out.iterdir() for line in p.read_bytes().splitlines())


def contents(tmp: Path) -> list[bytes]:
    return sorted(p.read_bytes() for p in (tmp / "out").iterdir())


def journal_dir(tmp: Path) -> Path:
    return tmp / "data" / "file_roll-journal" / "k1"


class Killed(BaseException):
    """The process dies in the middle of a write (not an OSError: nothing of the sink gets to react)."""


def torn_write(monkeypatch, keep_bytes: int):
    real = file_roll_module.write_all

    def half(fd, data):
        real(fd, bytes(data[:keep_bytes]))
        raise Killed()

    monkeypatch.setattr(file_roll_module, "write_all", half)
    return lambda: monkeypatch.setattr(file_roll_module, "write_all", real)


# --- the three decisions ---------------------------------------------------------------------------------------------

def test_a_batch_back_after_a_complete_write_is_not_written_again(tmp_path):
    first = sink(tmp_path)
    first.write(batch("a", "b"))
    kill(first)                                   # written and fsynced, never acknowledged
    second = sink(tmp_path)
    second.write(batch("a", "b"))                 # the batch comes back
    second.write(batch("b", "c"))                 # gathered with a new message: only the new event is written
    second.stop()
    assert lines(tmp_path) == [b"a", b"b", b"c"]
    assert not list(journal_dir(tmp_path).iterdir()), "a clean stop leaves no journal"


def test_a_torn_write_is_cut_back_and_the_batch_written_once(tmp_path, monkeypatch):
    first = sink(tmp_path)
    first.write(batch("a"))
    restore = torn_write(monkeypatch, 3)
    with pytest.raises(Killed):
        first.write(batch("bbbb", "cccc"))
    restore()
    kill(first)
    assert contents(tmp_path) == [b"a\nbbb"], "the kill left a torn write"
    second = sink(tmp_path)                       # cuts the torn tail at its start
    assert contents(tmp_path) == [b"a\n"]
    second.write(batch("bbbb", "cccc"))
    second.stop()
    assert lines(tmp_path) == [b"a", b"bbbb", b"cccc"]
    assert all(c.endswith(b"\n") for c in contents(tmp_path))


def test_a_file_whose_only_write_was_torn_is_removed(tmp_path, monkeypatch):
    first = sink(tmp_path)
    restore = torn_write(monkeypatch, 2)
    with pytest.raises(Killed):
        first.write(batch("xyz"))
    restore()
    kill(first)
    second = sink(tmp_path)
    assert contents(tmp_path) == []
    second.write(batch("xyz"))
    second.stop()
    assert contents(tmp_path) == [b"xyz\n"]


def test_a_batch_back_after_a_roll_is_not_doubled(tmp_path):
    first = sink(tmp_path, **{"sink.rollInterval": "1"})
    first.write(batch("a", "b"))
    first.opened_at -= 1.1                        # the first file is 1.1 s old: the next write rolls
    first.write(batch("c"))
    kill(first)
    assert contents(tmp_path) == [b"a\nb\n", b"c\n"]
    second = sink(tmp_path, **{"sink.rollInterval": "1"})
    second.write(batch("a", "b"))                 # written into the file that rolled
    second.write(batch("c"))                      # written into the file in use at the kill
    second.stop()
    assert contents(tmp_path) == [b"a\nb\n", b"c\n"]


def test_a_batch_back_in_the_same_process_after_a_roll_is_not_doubled(tmp_path):
    """A worker stalled past the visibility timeout gets its own batch again, maybe after its file rolled."""
    s = sink(tmp_path, **{"sink.rollInterval": "1"})
    s.write(batch("a"))
    s.opened_at -= 1.1
    s.write(batch("b"))
    s.write(batch("a"))
    s.stop()
    assert contents(tmp_path) == [b"a\n", b"b\n"]


def test_ids_given_as_a_range_are_recognised(tmp_path):
    """The http source numbers a request's events (an IdRange on the wire)."""
    ids = IdRange("f00d", 0, 3)
    first = sink(tmp_path)
    first.write(Batch([b"x", b"y", b"z"], None, ids))
    kill(first)
    second = sink(tmp_path)
    second.write(Batch([b"x", b"y", b"z"], None, IdRange("f00d", 0, 3)))
    second.stop()
    assert lines(tmp_path) == [b"x", b"y", b"z"]


# --- other processes of the sink ------------------------------------------------------------------------------------

def test_a_batch_back_to_another_live_process_of_the_sink_is_not_doubled(tmp_path):
    """A prefork pool: the batch of a killed child comes back, after the visibility timeout, to a sibling that has
    written many batches of its own meanwhile."""
    sibling = sink(tmp_path)
    dying = sink(tmp_path)
    dying.write(batch("held"))
    kill(dying)
    for n in range(JOURNAL_KEEP * 3):
        sibling.write(batch(f"own{n}"))
    sibling.write(batch("held"))
    sibling.stop()
    assert lines(tmp_path).count(b"held") == 1
    assert len(lines(tmp_path)) == JOURNAL_KEEP * 3 + 1


def test_several_dead_processes_are_taken_over_at_once(tmp_path):
    for name in ("p1", "p2", "p3"):
        dying = sink(tmp_path)
        for n in range(JOURNAL_KEEP + 2):
            dying.write(batch(f"{name}-{n}"))
        kill(dying)
    heir = sink(tmp_path)
    for name in ("p1", "p2", "p3"):
        heir.write(batch(f"{name}-{JOURNAL_KEEP + 1}"))      # each dead process's last batch comes back
    heir.stop()
    assert len(lines(tmp_path)) == len(set(lines(tmp_path))) == 3 * (JOURNAL_KEEP + 2)


def test_what_was_taken_over_survives_the_heirs_own_death(tmp_path):
    first = sink(tmp_path)
    first.write(batch("a"))
    kill(first)
    second = sink(tmp_path)                       # takes over, then dies before the batch came back
    kill(second)
    third = sink(tmp_path)
    third.write(batch("a"))
    third.stop()
    assert lines(tmp_path) == [b"a"]


def _age_directory(path: Path, seconds: float) -> int:
    """Set the directory's mtime ``seconds`` into the past (as if its last change were that old); returns it."""
    then = os.stat(path).st_mtime_ns - int(seconds * 1e9)
    os.utime(path, ns=(then, then))
    return then


def test_the_journal_directory_is_not_listed_again_while_nothing_changes(tmp_path, monkeypatch):
    """orphans() runs before every write: with the directory unchanged for a while, it costs one stat."""
    s = sink(tmp_path)
    s.write(batch("first"))
    _age_directory(journal_dir(tmp_path), 10)
    listed = []
    real_glob = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: listed.append(pattern) or real_glob(self, pattern))
    for n in range(50):
        s.write(batch(f"b{n}"))
    s.stop()
    assert len(listed) <= 1


def test_a_sibling_that_dies_after_the_listing_is_still_taken_over(tmp_path):
    sibling = sink(tmp_path)
    dying = sink(tmp_path)
    sibling.write(batch("own"))                               # lists the directory: sees dying's lock, held
    _age_directory(journal_dir(tmp_path), 10)
    sibling.journal._listed_mtime_ns = os.stat(journal_dir(tmp_path)).st_mtime_ns
    dying.write(batch("held"))
    kill(dying)                                               # frees its lock; the directory does not change
    sibling.write(batch("held"))
    sibling.stop()
    assert lines(tmp_path).count(b"held") == 1


def test_a_lock_file_created_in_the_same_clock_tick_as_the_listing_is_seen(tmp_path):
    """Coarse file-system timestamps: a new lock file may leave the directory's mtime as it was when listed.
    A recent mtime is not trusted, so the directory is listed again."""
    heir = sink(tmp_path)
    heir.write(batch("own"))
    stamp = heir.journal._listed_mtime_ns
    dying = sink(tmp_path)                                    # its lock file: a change within the same tick
    dying.write(batch("held"))
    kill(dying)
    os.utime(journal_dir(tmp_path), ns=(stamp, stamp))
    heir.write(batch("held"))
    heir.stop()
    assert lines(tmp_path).count(b"held") == 1


# --- a clean first start, permissions, bounds ----------------------------------------------------------------------

def test_a_first_start_without_a_journal_and_the_journals_permissions(tmp_path):
    assert not (tmp_path / "data").exists()
    s = sink(tmp_path)
    s.write(batch("a"))
    directory = journal_dir(tmp_path)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    modes = {p.suffix: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    assert modes == {".journal": 0o600, ".lock": 0o600}
    [out] = (tmp_path / "out").iterdir()
    assert stat.S_IMODE(out.stat().st_mode) == 0o644 & ~_umask()      # the output files as before
    s.stop()
    assert list(directory.iterdir()) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_journal_stays_bounded_and_still_cuts_a_torn_write(tmp_path, monkeypatch):
    """One file written for ever (rollInterval 0): the journal is compacted (its file and the index stay small),
    and after a compaction a torn write is still cut back to the last whole write, not further."""
    monkeypatch.setattr(journal_module, "COMPACT_BYTES", 4096)
    s = sink(tmp_path)
    for n in range(400):
        s.write(batch(f"{n}-a", f"{n}-b"))
    assert s.journal.path.stat().st_size < 3 * 4096
    assert len(s.journal.index) <= 2 * 2 * JOURNAL_KEEP          # two ids a write; up to 2 * keep writes
    assert len(s.journal.open_files[str(s.path)].writes) <= 2 + 4096 // 40
    restore = torn_write(monkeypatch, 4)
    with pytest.raises(Killed):
        s.write(batch("torn-a", "torn-b"))
    restore()
    kill(s)
    again = sink(tmp_path)
    again.write(batch("399-a", "399-b"))          # the last whole batch comes back: at rest already
    again.write(batch("torn-a", "torn-b"))
    again.stop()
    got = lines(tmp_path)
    assert len(got) == len(set(got)) == 802
    assert all(c.endswith(b"\n") for c in contents(tmp_path))


def test_a_failed_write_is_cut_and_its_events_are_not_taken_for_at_rest(tmp_path, monkeypatch):
    s = sink(tmp_path)
    real = os.fsync

    def failing(fd):
        if fd == s.fd:
            raise OSError(5, "Input/output error")
        return real(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError):
        s.write(batch("a"))
    monkeypatch.setattr(os, "fsync", real)
    s.write(batch("a"))                           # the runner's retry: written, not skipped
    s.stop()
    assert lines(tmp_path) == [b"a"]


def test_a_file_longer_than_its_journal_says_is_left_whole(tmp_path):
    """file_roll's journal is not fsynced record by record: a power cut can take its last records while the data,
    fsynced and acknowledged, stays.  The next start must not cut acknowledged events off."""
    first = sink(tmp_path)
    first.write(batch("a"))
    journal_length = first.journal.path.stat().st_size
    first.write(batch("b"))
    first.write(batch("c"))
    kill(first)
    os.truncate(first.journal.path, journal_length)      # the records of the last two writes are gone
    second = sink(tmp_path)
    second.stop()
    assert lines(tmp_path) == [b"a", b"b", b"c"]


def test_a_message_gathered_twice_into_one_batch_is_written_once(tmp_path):
    """A prefork child killed holding a message: its lease gives it back and so does Celery (the task is rejected
    when its worker is lost), and the next child can gather both copies into one write."""
    s = sink(tmp_path)
    s.write(batch("a", "b", "c", "a", "b", "c", "d"))
    s.stop()
    assert lines(tmp_path) == [b"a", b"b", b"c", b"d"]
