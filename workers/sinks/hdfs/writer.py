"""Flume's BucketWriter: the files of one bucket (an expanded ``hdfs.path`` + ``hdfs.filePrefix``), named, rolled
and closed as Flume does, with every append journalled first.

Naming: a counter starts at the clock's milliseconds when the bucket writer is made and is incremented before each
open, so the first file is ``<prefix>.<T+1>``; the name ends with ``hdfs.fileSuffix``, else the codec's
extension.  While written, a file is ``<inUsePrefix><name><inUseSuffix>``; closing renames it to ``<name>``.
A name taken already (another process of the sink made it the same millisecond) is skipped for the next one.

Rolling: ``rollCount`` (events) and ``rollSize`` (body bytes) are checked before each event, so a file holds
exactly that many; ``rollInterval`` and ``idleTimeout`` are watched by the sink's roll timer.

Appends: one per file per sink write.  Before it, a ``write`` record goes to the journal; after a failure the file
is *repaired* before anything else is written to it: its length tells whether the append landed whole (then it
counts as written), not at all, or torn (then it is cut back to where the append began).  A file that cannot be
repaired yet stays *dirty* and every write and close tries again first.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from core.event import Event
from workers.sinks.hdfs.filesystems import FileSystems
from workers.sinks.hdfs.formats import FileFormat
from workers.sinks.journal import FileState, Journal, JournalState, settle_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Naming:
    """The naming properties of a sink."""

    in_use_prefix: str = ""
    in_use_suffix: str = ".tmp"
    suffix: str = ""


@dataclass
class OpenFile:
    """A file being written: where it is, what it holds, and whether a failed append still needs repairing."""

    fs: object
    path: str                   # in-use path, inside its file system
    final_path: str
    tmp_uri: str
    encoder: object
    opened_at: float = field(default_factory=time.monotonic)
    length: int = 0             # bytes confirmed
    events: int = 0
    body_bytes: int = 0
    dirty: tuple[int, int, list[str]] | None = None     # a failed append: (start, end, ids)


class BucketWriter:
    """The writer of one bucket; the sink calls it with its lock held (one thread at a time)."""

    def __init__(self, directory_uri: str, prefix: str, files: FileSystems, file_format: FileFormat,
                 naming: Naming, journal: Journal, roll_count: int, roll_size: int,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 on_roll: Callable[[OpenFile], None] | None = None):
        self.fs, self.directory, self.base_uri = files.resolve(directory_uri)
        self.directory = self.directory.rstrip("/") or ""
        self.prefix = prefix
        self.format = file_format
        self.naming = naming
        self.journal = journal
        self.roll_count = roll_count
        self.roll_size = roll_size
        self.counter = clock_ms()
        self.file: OpenFile | None = None
        self.last_write = time.monotonic()
        # What to do with a file that rolled: close it (the sink retries a failed close on its own time).
        self.on_roll = on_roll or (lambda f: close_file(f, self.journal))

    def __repr__(self) -> str:
        return f"BucketWriter({self.base_uri}{self.directory}/{self.prefix})"

    # -- writing ----------------------------------------------------------------------------------------------------
    def write(self, events: Sequence[Event]) -> None:
        """Append ``events`` (rolling as Flume does); return once every append was confirmed."""
        self.repair()
        chunk: list[Event] = []
        count = body = 0                  # what the current file will hold once ``chunk`` is in
        if self.file is not None:
            count, body = self.file.events, self.file.body_bytes
        for event in events:
            if self.file is not None and self._should_roll(count, body):
                self._append(chunk)
                chunk = []
                rolled, self.file = self.file, None
                self.on_roll(rolled)
            if self.file is None:
                self._open()
                count = body = 0
            chunk.append(event)
            count += 1
            body += len(event.body)
        if chunk:
            self._append(chunk)
        self.last_write = time.monotonic()

    def _should_roll(self, count: int, body: int) -> bool:
        """Flume's check before each event: the file holds rollCount events or rollSize body bytes."""
        return (self.roll_count > 0 and count >= self.roll_count) or (self.roll_size > 0 and body >= self.roll_size)

    def _name(self) -> str:
        self.counter += 1
        name = f"{self.prefix}.{self.counter}"
        return name + (self.naming.suffix or self.format.extension)

    def _open(self) -> None:
        """Choose the next file name; the file is created (exclusively) by its first append."""
        name = self._name()
        final = f"{self.directory}/{name}"
        tmp = f"{self.directory}/{self.naming.in_use_prefix}{name}{self.naming.in_use_suffix}"
        self.file = OpenFile(self.fs, tmp, final, self.base_uri + tmp, self.format.new_file())
        self.journal.opened(self.file.tmp_uri, self.base_uri + final)
        log.info("hdfs: creating %s", self.file.tmp_uri)

    def _append(self, events: list[Event]) -> None:
        f = self.file
        first = f.length == 0
        data = f.encoder.encode(events, first)
        ids = [e.id for e in events if e.id]
        start, end = f.length, f.length + len(data)
        self.journal.writing(f.tmp_uri, start, end, ids)
        try:
            if first:
                f.fs.create(f.path, data, end)
            else:
                f.fs.append(f.path, data, end)
        except FileExistsError:
            # The name was free a moment ago: another process of this sink took it.  Nothing of ours is there.
            self.journal.cut(f.tmp_uri, start)
            self.journal.closed(f.tmp_uri)
            self.file = None
            self._open()
            return self._append(events)
        except Exception:
            f.dirty = (start, end, ids)
            self._try_repair()
            raise
        self._confirmed(f, events, end, ids)

    def _confirmed(self, f: OpenFile, events: list[Event], end: int, ids: list[str]) -> None:
        f.length = end
        f.events += len(events)
        f.body_bytes += sum(len(e.body) for e in events)
        self.journal.written(ids)

    # -- repairing after a failed append --------------------------------------------------------------------------
    def repair(self) -> None:
        """Settle a failed append before anything else (raises while the store cannot tell)."""
        if self.file is not None:
            repair_file(self.file, self.journal)

    def _try_repair(self) -> None:
        try:
            self.repair()
        except Exception as exc:
            log.warning("hdfs: %s cannot be repaired yet (%s); it will be before the next write", self.file.tmp_uri,
                        exc)

    def close(self) -> None:
        """Close the current file (see :func:`close_file`); on failure it stays this writer's."""
        if self.file is not None:
            close_file(self.file, self.journal)
            self.file = None


def repair_file(f: OpenFile, journal: Journal) -> None:
    """Settle a failed append of ``f``: it landed whole (it counts as written), not at all, or torn (cut back to
    where it began).  Raises while the store cannot tell."""
    if f.dirty is None:
        return
    start, end, ids = f.dirty
    actual = f.fs.length(f.path)
    if actual is None:
        actual = 0
    if actual == end:
        log.info("hdfs: the append to %s that failed had landed whole (%d bytes); it counts as written",
                 f.tmp_uri, end - start)
        f.dirty = None
        f.length = end
        journal.written(ids)
        return
    if actual > start:
        log.warning("hdfs: cutting a torn append off %s (%d bytes back to %d)", f.tmp_uri, actual, start)
        if start == 0:
            f.fs.delete(f.path)
        else:
            f.fs.truncate(f.path, start)
    elif start > 0:
        # Nothing visible, but the append may sit in a last block still held by the writer that failed (HDFS
        # shows it once lease recovery ends).  Truncating to the same length fails (LeaseBusy) while the file is
        # held and starts that recovery; once it succeeds the file is settled at ``start``.
        f.fs.truncate(f.path, start)
    journal.cut(f.tmp_uri, start)
    f.dirty = None


def close_file(f: OpenFile, journal: Journal) -> None:
    """Rename ``f`` to its final name (or remove it if it holds nothing); raise on failure."""
    repair_file(f, journal)
    if f.length == 0:
        f.fs.delete(f.path)
    elif f.path != f.final_path:
        _rename(f.fs, f.path, f.final_path)
    log.info("hdfs: closed %s", f.tmp_uri if not f.length else f.tmp_uri[:-len(f.path)] + f.final_path)
    journal.closed(f.tmp_uri)


def _rename(fs, source: str, target: str) -> str:
    """Rename, taking ``<target>.<n>`` if ``target`` exists already (HDFS refuses to replace a file)."""
    candidate, n = target, 0
    while True:
        try:
            if not fs.rename(source, candidate):
                if fs.length(candidate) is not None:
                    return candidate        # renamed already (a retry after a lost answer)
                raise FileNotFoundError(f"{source} is gone")
            return candidate
        except FileExistsError:
            n += 1
            candidate = f"{target}.{n}"
            log.warning("hdfs: %s exists already; renaming %s to %s instead", target, source, candidate)


# --- finishing the files of a process that is gone --------------------------------------------------------------

def finish_orphan_files(state: JournalState, files: FileSystems) -> JournalState:
    """Deal with every file a dead process left in use: keep the appends its length shows complete, cut a torn
    one off, rename the file to its final name (or remove it when nothing is left).  Returns the state with no
    open files left and the ids at rest; raises if the store cannot be reached (nothing is lost: try again)."""
    for tmp_uri, file_state in list(state.open_files.items()):
        fs, tmp, _ = files.resolve(tmp_uri)
        _, final, _ = files.resolve(file_state.final)
        state.at_rest += _finish(fs, tmp, final, tmp_uri, file_state)
        del state.open_files[tmp_uri]
    return state


def _finish(fs, tmp: str, final: str, tmp_uri: str, file_state: FileState) -> list[list[str]]:
    writes = file_state.writes
    complete = settle_file(fs, tmp, f"hdfs: {tmp_uri}", writes)
    if complete is None:
        done = fs.length(final) if final != tmp else None
        if done is None:
            return []                            # never created, or removed
        return [ids for _, end, ids in writes if end <= done]
    if not complete:
        return []
    if tmp != final:
        final = _rename(fs, tmp, final)
    log.info("hdfs: recovered %s left in use by a process that is gone: renamed to %s (%d appends kept)",
             tmp_uri, final, len(complete))
    return complete
