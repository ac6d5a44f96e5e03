"""``file_roll``: Flume's RollingFileSink, events appended to local files that roll every ``rollInterval`` s.

Durability: a batch is written with one ``write`` and fsynced (and a new file's directory entry too) before the
channel messages are acknowledged.  A failed write is cut back to where the batch began, so a retried batch
does not leave a torn or doubled line behind.  After the fsync the sink checks that the open file is still the
file at its path (device and inode): if the directory or the file was removed, renamed or replaced meanwhile,
the batch is cut back from the old file and written again into a new file (the directory is recreated), with a
warning.  So no batch is acknowledged into a file nobody can find again.

No duplicates at rest (better than Flume): before each write the sink journals the file, the offsets the write
will span and the ids of its events (:mod:`workers.sinks.journal`, in ``<data dir>/file_roll-journal/<sink>/``).
A worker killed after its write but before its acknowledgement gets that batch back: its events the journal knows
are at rest are not written again.  A worker killed during a write leaves a torn tail: the next process of the sink
on the host (at its start, and before each write) cuts it back to the last whole write, so the batch is written
once, whole.  The journal names the file of each write, so this holds after a roll too.  Events without ids (none
in Flumery: sources give every event one) cannot be recognised and may be written twice.  The journal's records
are not fsynced one by one: a power cut or kernel crash (not a process's death) may leave the last batch twice or a
torn line, as without a journal.

Files are named as by Flume's path managers: ``DEFAULT`` gives ``<prefix><start-ms>-<n>[.<ext>]`` and ``ROLLTIME``
gives ``<prefix><yyyyMMddHHmmss>-<n>[.<ext>]``.  Every worker process that serves the sink writes its own series
(a name is created exclusively, so two processes never share a file).  Unlike Flume, an idle sink does not open
empty files: the next file is opened by the first write after the interval.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from core.event import Batch
from core.files import fsync_dir, write_all
from core.options import non_negative, one_of, opt, positive
from workers.sinks import journal_ids
from workers.sinks.base import Sink
from workers.sinks.journal import Journal, read_records, replay, settle_file
from workers.sinks.local_fs import LocalFileSystem
from workers.sinks.logger import java_map

log = logging.getLogger(__name__)

REWRITE_ATTEMPTS = 3          # a path that vanishes again at once fails the write (the runner retries it later)
# Writes of this process whose ids the journal keeps as at rest: a worker writes one batch at a time and acknowledges
# it right after, so only its last write can come back; the rest is margin.  Memory: <= (2 * 8 + 32) * batchSize ids.
JOURNAL_KEEP = 8


@dataclass(frozen=True)
class FileRollConfig:
    directory: str = opt("sink.directory", doc="directory of the rolled files (created if missing)")
    roll_interval_s: int = opt("sink.rollInterval", 30, check=non_negative, doc="seconds per file; 0 = one file")
    batch_size: int = opt("sink.batchSize", 100, check=positive, doc="events per write and fsync")
    serializer: str = opt("sink.serializer", "TEXT", check=one_of("TEXT", "header_and_text"),
                          doc="TEXT (body) or header_and_text ({k=v} body)")
    append_newline: bool = opt("sink.serializer.appendNewline", True, doc="end each event with a newline")
    path_manager: str = opt("sink.pathManager", "DEFAULT", check=one_of("DEFAULT", "ROLLTIME"),
                            doc="file naming: DEFAULT or ROLLTIME")
    extension: str = opt("sink.pathManager.extension", "", doc="file name extension")
    prefix: str = opt("sink.pathManager.prefix", "", doc="file name prefix")


class FileRollSink(Sink):
    Config = FileRollConfig

    def start(self) -> None:
        self.directory = Path(self.config.directory).expanduser()
        self.series = int(time.time() * 1000)
        self.index = 0
        self.fd: int | None = None
        self.path: Path | None = None
        self.opened_at = 0.0
        self.fs = LocalFileSystem()
        # Records are not fsynced one by one (see workers/sinks/journal.py): process deaths are covered, and an
        # fsync more per batch halved the throughput of small batches.
        self.journal = Journal(self.context.data_dir / "file_roll-journal" / self.name, keep=JOURNAL_KEEP,
                               sync=False)
        self.journal.open()
        try:
            self._adopt_orphans()
        except OSError as exc:
            log.warning("file_roll sink %s: could not finish the files a stopped process left (%s); trying again "
                        "before the next write", self.name, exc)

    def serialize(self, batch) -> bytes:
        if not len(batch):
            return b""
        newline = b"\n" if self.config.append_newline else b""
        if self.config.serializer.lower() == "text":
            # The trailing newline joined in: "+ newline" would copy the whole batch once more.
            return newline.join([*batch.bodies, b""])
        return b"".join([java_map(e.headers).encode() + b" " + e.body + newline for e in batch])

    def write(self, batch) -> None:
        self._adopt_orphans()
        ids = journal_ids.compact(batch.ids)      # ranges stay ranges: no string per event
        keep = self.journal.to_write(ids) if ids else None
        if keep is not None:
            batch, ids = self._only(batch, journal_ids.expand(ids), keep)
            if not ids:
                return
        data = self.serialize(batch)
        for _ in range(REWRITE_ATTEMPTS):
            fd = self._current_file()
            offset = os.lseek(fd, 0, os.SEEK_END)
            self.journal.writing(str(self.path), offset, offset + len(data), ids)
            try:
                write_all(fd, data)
                os.fsync(fd)
            except OSError:
                self._cut_back(fd, offset)
                raise
            vanished = self._vanished(fd)
            if vanished is None:
                self.journal.written(ids)
                return
            log.warning("file_roll sink %s: %s is no longer at its path (%s); writing the batch of %d events again "
                        "into a new file", self.name, self.path, vanished, len(batch))
            if self._cut_back(fd, offset):      # the moved file (if it still exists) must not keep a second copy
                self._close()
        raise OSError(f"file_roll sink {self.name}: {self.directory} keeps vanishing; the batch is not written")

    def _only(self, batch, ids: list[str], keep: list[int]) -> tuple[Batch, list[str]]:
        """The events of ``batch`` at the positions ``keep`` (the others are at rest already, or twice in the batch:
        it came back after its worker died between its write and its acknowledgement), and their ids."""
        log.info("file_roll sink %s: %d event(s) of this batch are already at rest (written before the batch came "
                 "back) or in it twice; not writing them again", self.name, len(ids) - len(keep))
        headers = None if batch.headers is None else [batch.headers[n] for n in keep]
        kept_ids = [ids[n] for n in keep]
        return Batch([batch.bodies[n] for n in keep], headers, kept_ids), kept_ids

    def _vanished(self, fd: int) -> str | None:
        """Why the open file is not the file at ``self.path`` any more, or None if it still is."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return "removed"
        except NotADirectoryError:
            return "its directory was replaced by a file"
        opened = os.fstat(fd)
        if (at_path.st_dev, at_path.st_ino) != (opened.st_dev, opened.st_ino):
            return "another file took its name"
        return None

    def _cut_back(self, fd: int, offset: int) -> bool:
        """Cut the open file back to ``offset`` (a write that failed or went astray); True if done.  If it cannot
        be, the file is left (still in use in the journal, so the next start of the sink cuts it) for a new one."""
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        except OSError as exc:
            log.error("file_roll sink %s: could not cut %s back to %d bytes (%s); starting a new file",
                      self.name, self.path, offset, exc)
            self._close(settled=False)
            return False
        self.journal.cut(str(self.path), offset)
        return True

    def _current_file(self) -> int:
        interval = self.config.roll_interval_s
        if self.fd is not None and interval and time.monotonic() - self.opened_at >= interval:
            self._close()
        if self.fd is None:
            self._open_next()
        return self.fd

    def _next_name(self) -> str:
        self.index += 1
        stamp = (time.strftime("%Y%m%d%H%M%S") if self.config.path_manager.upper() == "ROLLTIME"
                 else str(self.series))
        ext = f".{self.config.extension}" if self.config.extension else ""
        return f"{self.config.prefix}{stamp}-{self.index}{ext}"

    def _open_next(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.directory.parent)     # the directory's own entry must survive a crash too
        while True:
            path = self.directory / self._next_name()
            try:
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                continue          # another process of this sink took the name: take the next one
        self.path = path
        # Journalled once created (not before): the journal must never name a file another process made.
        self.journal.opened(str(path), str(path))
        self.opened_at = time.monotonic()
        fsync_dir(self.directory)     # the new file's name must survive a crash as well as its content
        log.info("file_roll sink %s: writing %s", self.name, path)

    def _close(self, settled: bool = True) -> None:
        """Close the open file; ``settled``: every write to it is confirmed or cut (the journal is told)."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None
            if settled:
                self.journal.closed(str(self.path))

    def stop(self) -> None:
        try:
            self._close()
        finally:
            self.journal.close()

    def _adopt_orphans(self) -> None:
        """Finish the files that dead processes of this sink left (a torn last write cut back) and take over
        what their journals knew at rest."""
        for journal in self.journal.orphans():
            state = replay(read_records(journal))
            for path, file_state in list(state.open_files.items()):
                complete = settle_file(self.fs, path, f"file_roll sink {self.name}: {path}", file_state.writes)
                state.at_rest += complete or []
                del state.open_files[path]
            log.info("file_roll sink %s: took over the journal %s of a stopped process", self.name, journal.name)
            self.journal.adopt(journal, state)
