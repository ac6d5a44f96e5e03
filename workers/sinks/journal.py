"""The write journal of the file sinks (``hdfs``, ``file_roll``): where each batch went, so that a batch delivered
again is not written twice, and a file a crashed process left half-written is cut back to its last whole write.

Every process that runs such a sink keeps one journal in ``<data dir>/<kind>-journal/<sink>/`` (created 0700):
``<id>.journal`` (records, 0600) and ``<id>.lock`` (held with ``flock`` while the process lives, so a journal whose
lock can be taken belongs to a process that is gone).  Each record is written before the sink goes on, and with
``sync`` (hdfs) fsynced too.  Without it (file_roll: the fsync doubled the cost of a small batch) a record is in
the kernel's page cache before the data is written, which covers every death of the process (kill -9, the OOM
killer); a power cut or kernel crash can then lose the last records, so the last batch may be written twice or
leave a torn line, as without a journal, but nothing acknowledged is cut (see :func:`settle_file`).  Records:

* ``open``: a file was created (its in-use and final paths: the same for a sink that writes under the final name);
* ``write``: *before* an append, the file, the offsets it will span and the ids of its events (as parts: strings
  and ranges, see :mod:`workers.sinks.journal_ids`);
* ``cut``: a failed append was cut back off its file (its events are not at rest);
* ``closed``: the file will not be written again (hdfs: renamed to its final name or removed; file_roll: rolled);
* ``done``: ids this process wrote, kept through a compaction;
* ``known``: ids at rest that this process took over from the journal of a process that is gone.

A confirmed ``write`` puts its ids into the at-rest index; the sink skips an event found there, and an event twice
in one batch (:meth:`Journal.to_write`).  A channel message comes back only if it was not acknowledged, and a worker
acknowledges each batch right after its write: so the index keeps this process's last ``keep`` writes and, apart,
the last ``keep`` writes of each dead process it took over (``inherit`` writes at most, the newest), which may come
back later (visibility timeout, to whichever worker takes them).  Memory: at most ``(2 * keep + inherit) *
batchSize`` ids.

The journal file is rewritten with only what is still needed (files in use, with their earlier writes folded into
one, and the ids of the index) once it grew past ``COMPACT_BYTES`` and twice its last compacted size: it stays
bounded however long a file is written.

After a crash, the next process of the sink adopts the journal (:meth:`Journal.orphans`, :func:`replay`, then
:meth:`Journal.adopt`): for each file still in use, :func:`settle_file` keeps the appends the file's length shows
complete and cuts a torn last append off; the ids at rest are carried over into the adopter's journal.

Limit: the journal is per host (it lives in the worker's data directory).  A batch whose worker died and that is
then taken by a worker on another host is written again there.
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

from core.files import fsync_dir, make_private_dir, write_all
from workers.sinks.journal_ids import IdIndex, expand

log = logging.getLogger(__name__)

FRAME = struct.Struct(">I")
COMPACT_BYTES = 4 * 1024 * 1024       # journal size beyond which it is rewritten (and twice the last rewrite)
MODE = 0o600                          # the journal names files and events: owner only, like the data directory
# File systems stamp times from a coarse clock: a lock file created in the same tick as the directory's last change
# leaves its mtime as it was.  A listing is trusted for as long as the mtime stays the same only if it was made at
# least one tick after that mtime: a jiffy (at most 10 ms) where mtimes have sub-second parts, else up to 2 s (FAT).
FINE_MTIME_TICK_NS = 50_000_000
COARSE_MTIME_TICK_NS = 2_000_000_000


@dataclass
class FileState:
    """What a journal says of one file in use."""

    final: str
    writes: list[tuple[int, int, list[str]]] = field(default_factory=list)      # (start, end, ids), not cut


@dataclass
class JournalState:
    """A journal read back: files still in use, ids at rest it wrote itself (oldest first; the writes of closed
    files included), and ids it had taken over from other journals."""

    open_files: dict[str, FileState] = field(default_factory=dict)
    at_rest: list[list[str]] = field(default_factory=list)
    inherited: list[list[str]] = field(default_factory=list)


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
        elif op == "done":
            state.at_rest.append(record["ids"])
        elif op == "known":
            state.inherited.append(record["ids"])
    return state


def settle_file(fs, path: str, label: str, writes: list[tuple[int, int, list[str]]]) -> list[list[str]] | None:
    """Settle a file that a process which is gone left in use: keep the appends its length shows complete, cut a
    torn last one off (a file that ends inside the journal's last append), remove the file if nothing is left.
    ``fs`` offers ``length``, ``truncate`` and ``delete`` (see :class:`workers.sinks.local_fs.LocalFileSystem`).
    Returns the ids of the complete appends (``[]`` if the file was removed), or None if there is no file at
    ``path``."""
    length = fs.length(path)
    if length is None:
        return None
    complete = [(start, end, ids) for start, end, ids in writes if end <= length]
    keep = max((end for _, end, _ in complete), default=0)
    if length >= max((end for _, end, _ in writes), default=0):
        # Nothing torn that the journal knows of.  A file longer than its journal says (records a power cut took
        # from a journal that is not fsynced per record, or bytes someone else appended) is left whole: a cut
        # could take acknowledged events.
        keep = length
    if keep < length:
        log.warning("recovering %s: cutting a torn append off (%d bytes back to %d)", label, length, keep)
    if keep == 0:
        fs.delete(path)
        log.info("recovering %s: nothing complete in it, removed", label)
        return []
    if keep < length:
        fs.truncate(path, keep)
    return [ids for _, _, ids in complete]


def _record(record: dict) -> bytes:
    data = msgpack.packb(record, use_bin_type=True)
    return FRAME.pack(len(data)) + data


class Journal:
    """This process's journal for one sink (see the module docstring).  Not thread-safe: the sink serialises."""

    def __init__(self, directory: Path, keep: int = 64, inherit: int | None = None, sync: bool = True):
        self.directory = Path(directory)
        self.sync = sync
        self.keep = keep
        self.inherit = inherit if inherit is not None else 4 * keep
        self.name = f"{os.getpid()}-{time.time_ns()}"
        self.path = self.directory / f"{self.name}.journal"
        self.lock_path = self.directory / f"{self.name}.lock"
        self.recent: deque[list] = deque()               # ids (parts) of this process's last writes
        self.inherited: deque[list] = deque()            # ids (parts) of writes of dead processes taken over
        self.index = IdIndex()                           # the ids of both, and of up to ``keep`` writes dropped
        self.dropped = 0                                 # writes dropped from the windows since the index was made
        self.open_files: dict[str, FileState] = {}
        self.fd: int | None = None
        self.lock_fd: int | None = None
        self.size = 0                    # bytes in the journal file
        self.compact_at = COMPACT_BYTES
        self._listed_mtime_ns: int | None = None     # the directory's mtime when its lock files were last listed
        self._listed_at_ns = 0                       # and when that listing started
        self._other_locks: list[Path] = []           # the lock files of other processes then

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def open(self) -> None:
        make_private_dir(self.directory)
        # The lock is taken under another name and then renamed into place: a lock file that can be seen is
        # always held, so no other process takes a starting one for the journal of a dead process.
        taking = self.directory / f"{self.name}.taking"
        self.lock_fd = os.open(taking, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, MODE)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(taking, self.lock_path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, MODE)
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
    def _append(self, *records: dict) -> None:
        data = b"".join(_record(record) for record in records)
        try:
            write_all(self.fd, data)
            if self.sync:
                os.fsync(self.fd)
        except OSError:
            # A torn record would hide every later one from the next reader: take it back off.
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            raise
        self.size += len(data)

    def opened(self, tmp: str, final: str) -> None:
        self._append({"op": "open", "tmp": tmp, "final": final})
        self.open_files[tmp] = FileState(final)

    def writing(self, tmp: str, start: int, end: int, ids: list) -> None:
        """Before an append: record it (``ids``: journal parts, see :mod:`workers.sinks.journal_ids`; a list of
        strings is one).  Its ids are at rest once :meth:`written` is called."""
        self._append({"op": "write", "tmp": tmp, "start": start, "end": end, "ids": ids})
        self.open_files[tmp].writes.append((start, end, ids))

    def written(self, ids: list) -> None:
        self._remember(self.recent, self.keep, ids)
        self._compact_if_due()

    def cut(self, tmp: str, start: int) -> None:
        """A failed append was cut off its file: its events are not at rest."""
        self._append({"op": "cut", "tmp": tmp, "start": start})
        writes = self.open_files[tmp].writes
        if writes and writes[-1][0] == start:
            writes.pop()

    def closed(self, tmp: str) -> None:
        self._append({"op": "closed", "tmp": tmp})
        self.open_files.pop(tmp, None)
        self._compact_if_due()

    def to_write(self, ids: list) -> list[int] | None:
        """Which events of a batch to write, by position (``ids``: the batch's ids as journal parts, in order):
        those whose id is neither at rest nor earlier in the same batch (a message delivered twice, once given
        back by its lease and once by Celery, can be gathered into one batch twice).  None means all of them: the
        common case, checked without making a string per id.  An empty id (an event without one) is always
        written."""
        if self.index.isdisjoint(ids):
            return None
        seen: set[str] = set()
        keep = []
        for n, i in enumerate(expand(ids)):
            if i and (i in seen or self.index.has(i)):
                continue
            seen.add(i)
            keep.append(n)
        return keep

    def _remember(self, window: deque, limit: int, ids: list) -> None:
        if not ids:
            return
        window.append(ids)
        self.index.add(ids)
        while len(window) > limit:
            window.popleft()
            self.dropped += 1
        # The ids of dropped writes leave the index when it is remade, every ``keep`` drops (per-write bookkeeping
        # would cost more than the write itself for large batches of string ids).
        if self.dropped >= self.keep:
            self.index = IdIndex([*self.inherited, *self.recent])
            self.dropped = 0

    # -- staying bounded --------------------------------------------------------------------------------------------
    def _compact_if_due(self) -> None:
        if self.size >= self.compact_at:
            self.compact()

    def compact(self) -> None:
        """Rewrite the journal with only what is still needed: the files in use (the writes before the last one of
        each folded into one span without ids: they are complete, their ids are kept below) and the index."""
        records = []
        for tmp, state in self.open_files.items():
            records.append({"op": "open", "tmp": tmp, "final": state.final})
            if len(state.writes) > 1:
                state.writes[:-1] = [(state.writes[0][0], state.writes[-2][1], [])]
            records += [{"op": "write", "tmp": tmp, "start": s, "end": e, "ids": ids} for s, e, ids in state.writes]
        records += [{"op": "known", "ids": ids} for ids in self.inherited]
        records += [{"op": "done", "ids": ids} for ids in self.recent]
        data = b"".join(_record(record) for record in records)
        tmp_path = self.path.with_suffix(".compacting")
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, MODE)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, self.path)
        fsync_dir(self.directory)
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.size = len(data)
        self.compact_at = max(COMPACT_BYTES, 2 * self.size)

    # -- journals of processes that are gone --------------------------------------------------------------------------
    def orphans(self) -> list[Path]:
        """Journals of this sink whose process is gone (their lock is free).

        Called before every write, so it is cheap when nothing changed: the directory is listed again only when
        its mtime moved (a lock file came or went) or the last listing was too close to it to be trusted (see
        FINE_MTIME_TICK_NS); in between only the lock files of the other processes seen are tried (none,
        usually: one stat)."""
        found = []
        for lock_path in self._lock_files_of_others():
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

    def _lock_files_of_others(self) -> list[Path]:
        try:
            mtime_ns = os.stat(self.directory).st_mtime_ns
        except FileNotFoundError:
            self._listed_mtime_ns = None
            return []
        tick_ns = FINE_MTIME_TICK_NS if mtime_ns % 1_000_000_000 else COARSE_MTIME_TICK_NS
        if mtime_ns != self._listed_mtime_ns or self._listed_at_ns - mtime_ns < tick_ns:
            self._listed_at_ns = time.time_ns()
            self._other_locks = [p for p in sorted(self.directory.glob("*.lock")) if p != self.lock_path]
            self._listed_mtime_ns = mtime_ns
        return self._other_locks

    def adopt(self, journal: Path, finished: JournalState) -> None:
        """Take over what ``journal`` knew (``finished``: its state once its files in use were dealt with): its ids
        at rest go into this journal; then it is removed."""
        records = []
        for ids in finished.inherited + finished.at_rest[-self.keep:]:
            if ids:
                records.append({"op": "known", "ids": ids})
                self._remember(self.inherited, self.inherit, ids)
        for tmp, state in finished.open_files.items():     # files that could not be finished: ours now
            records.append({"op": "open", "tmp": tmp, "final": state.final})
            self.open_files[tmp] = FileState(state.final, list(state.writes))
            records += [{"op": "write", "tmp": tmp, "start": s, "end": e, "ids": ids} for s, e, ids in state.writes]
        if records:
            self._append(*records)
        for path in (journal, journal.with_suffix(".lock")):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        fsync_dir(self.directory)
        self._compact_if_due()
