"""The hdfs sink's write journal: where each batch went, so that a batch delivered again is not written twice and
a crash leaves no in-use file behind.

Every process that runs an hdfs sink keeps one journal in ``<data dir>/hdfs-journal/<sink>/``: ``<id>.journal``
(records) and ``<id>.lock`` (held with ``flock`` while the process lives, so a journal whose lock can be taken
belongs to a process that is gone).  Records, each fsynced before the sink goes on:

* ``open``: an in-use file was created (its in-use and final paths);
* ``write``: *before* an append, the file, the offsets it will span and the ids of its events;
* ``cut``: a failed append was cut back off its file (its events are not at rest);
* ``closed``: the file was renamed to its final name (or removed);
* ``known``: ids known to be at rest (carried over from an adopted journal, or kept through a compaction).

A ``write`` whose append was confirmed puts its ids into the at-rest index (:meth:`Journal.at_rest`); the sink
skips an event found there.  The index keeps the ids of the last ``keep`` writes: a channel message comes back
only if it was not acknowledged, and only the last batches of a process can be written but unacknowledged.

After a crash, the next process of the sink adopts the journal (:meth:`Journal.orphans` then :meth:`Journal.adopt`):
for each file still in use it keeps the appends that the file's length shows complete, cuts a torn last append
off, renames or removes the file, and carries the ids at rest over into its own journal.
"""
from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from core.files import fsync_dir, write_all

log = logging.getLogger(__name__)

FRAME = struct.Struct(">I")
COMPACT_EVERY = 2048              # records between rewrites of the journal


@dataclass
class FileState:
    """What a journal says of one in-use file."""

    final: str
    writes: list[tuple[int, int, list[str]]] = field(default_factory=list)      # (start, end, ids), not cut


@dataclass
class JournalState:
    """A journal read back: files still in use, and ids at rest (ids of writes to closed files included)."""

    open_files: dict[str, FileState] = field(default_factory=dict)
    at_rest: list[list[str]] = field(default_factory=list)


def read_records(path: Path) -> list[dict]:
    """Every whole record of a journal file (a torn last record, cut by a crash, is ignored)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records, at = [], 0
    while at + FRAME.size <= len(data):
        (size,) = FRAME.unpack_from(data, at)
        if at + FRAME.size + size > len(data):
            break
        try:
            records.append(msgpack.unpackb(data[at + FRAME.size:at + FRAME.size + size], raw=False))
        except (ValueError, msgpack.UnpackException):
            break
        at += FRAME.size + size
    return records


def replay(records: list[dict]) -> JournalState:
    state = JournalState()
    for record in records:
        op = record.get("op")
        if op == "open":
            state.open_files[record["tmp"]] = FileState(record["final"])
        elif op == "write" and record["tmp"] in state.open_files:
            state.open_files[record["tmp"]].writes.append((record["start"], record["end"], record["ids"]))
        elif op == "cut" and record["tmp"] in state.open_files:
            writes = state.open_files[record["tmp"]].writes
            if writes and writes[-1][0] == record["start"]:
                writes.pop()
        elif op == "closed":
            closed = state.open_files.pop(record["tmp"], None)
            if closed is not None:
                state.at_rest += [ids for _, _, ids in closed.writes]
        elif op == "known":
            state.at_rest.append(record["ids"])
    return state


class Journal:
    """This process's journal for one sink (see the module docstring).  Not thread-safe: the sink serialises."""

    def __init__(self, directory: Path, keep: int = 64):
        self.directory = Path(directory)
        self.keep = keep
        self.name = f"{os.getpid()}-{time.time_ns()}"
        self.path = self.directory / f"{self.name}.journal"
        self.lock_path = self.directory / f"{self.name}.lock"
        self.recent: deque[list[str]] = deque()
        self.index: dict[str, int] = {}          # id -> how many of the recent writes hold it
        self.open_files: dict[str, FileState] = {}
        self.fd: int | None = None
        self.lock_fd: int | None = None
        self.records = 0

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        fsync_dir(self.directory)

    def close(self) -> None:
        """Remove the journal if no file is left in use (else the next process adopts it), and let go of it."""
        if self.fd is None:
            return
        os.close(self.fd)
        self.fd = None
        if not self.open_files:
            for path in (self.path, self.lock_path):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            fsync_dir(self.directory)
        os.close(self.lock_fd)
        self.lock_fd = None

    # -- records ----------------------------------------------------------------------------------------------------
    def _append(self, record: dict) -> None:
        data = msgpack.packb(record, use_bin_type=True)
        write_all(self.fd, FRAME.pack(len(data)) + data)
        os.fsync(self.fd)
        self.records += 1

    def opened(self, tmp: str, final: str) -> None:
        self._append({"op": "open", "tmp": tmp, "final": final})
        self.open_files[tmp] = FileState(final)

    def writing(self, tmp: str, start: int, end: int, ids: list[str]) -> None:
        """Before an append: record it.  Its ids are at rest once :meth:`written` is called."""
        self._append({"op": "write", "tmp": tmp, "start": start, "end": end, "ids": ids})
        self.open_files[tmp].writes.append((start, end, ids))

    def written(self, ids: list[str]) -> None:
        self._remember(ids)

    def cut(self, tmp: str, start: int) -> None:
        """A failed append was cut off its file: its events are not at rest."""
        self._append({"op": "cut", "tmp": tmp, "start": start})
        writes = self.open_files[tmp].writes
        if writes and writes[-1][0] == start:
            writes.pop()

    def closed(self, tmp: str) -> None:
        self._append({"op": "closed", "tmp": tmp})
        self.open_files.pop(tmp, None)
        if self.records >= COMPACT_EVERY:
            self.compact()

    def at_rest(self, event_id: str) -> bool:
        return event_id in self.index

    def _remember(self, ids: list[str]) -> None:
        if not ids:
            return
        self.recent.append(ids)
        for i in ids:
            self.index[i] = self.index.get(i, 0) + 1
        while len(self.recent) > self.keep:
            for i in self.recent.popleft():
                left = self.index.get(i, 0) - 1
                if left > 0:
                    self.index[i] = left
                else:
                    self.index.pop(i, None)

    def compact(self) -> None:
        """Rewrite the journal with only what is still needed: files in use with their writes, recent ids."""
        records = []
        for tmp, state in self.open_files.items():
            records.append({"op": "open", "tmp": tmp, "final": state.final})
            records += [{"op": "write", "tmp": tmp, "start": s, "end": e, "ids": ids} for s, e, ids in state.writes]
        records += [{"op": "known", "ids": ids} for ids in self.recent]
        tmp_path = self.path.with_suffix(".compacting")
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            for record in records:
                data = msgpack.packb(record, use_bin_type=True)
                write_all(fd, FRAME.pack(len(data)) + data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, self.path)
        fsync_dir(self.directory)
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.records = len(records)

    # -- journals of processes that are gone --------------------------------------------------------------------------
    def orphans(self) -> list[Path]:
        """Journals of this sink whose process is gone (their lock is free)."""
        found = []
        for lock_path in sorted(self.directory.glob("*.lock")):
            if lock_path == self.lock_path:
                continue
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue                          # its process is alive
            finally:
                os.close(fd)
            found.append(lock_path.with_suffix(".journal"))
        return found

    def adopt(self, journal: Path, finished: JournalState) -> None:
        """Take over what ``journal`` knew (``finished``: its state once its in-use files were dealt with): its
        ids at rest go into this journal; then it is removed."""
        for ids in finished.at_rest[-self.keep:]:
            self._append({"op": "known", "ids": ids})
            self._remember(ids)
        for tmp, state in finished.open_files.items():     # files that could not be finished: ours now
            self._append({"op": "open", "tmp": tmp, "final": state.final})
            self.open_files[tmp] = FileState(state.final, list(state.writes))
            for start, end, ids in state.writes:
                self._append({"op": "write", "tmp": tmp, "start": start, "end": end, "ids": ids})
        for path in (journal, journal.with_suffix(".lock")):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        fsync_dir(self.directory)
