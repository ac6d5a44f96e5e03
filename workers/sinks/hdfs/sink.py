"""``hdfs``: Flume's HDFSEventSink, bucketed rolling files in HDFS (through WebHDFS) or a local file system.

Each event goes to the bucket named by its expanded ``hdfs.path`` and ``hdfs.filePrefix`` (Flume's BucketPath
escapes); each bucket has a :class:`~workers.sinks.hdfs.writer.BucketWriter` that names, rolls and closes its files
as Flume does; at most ``hdfs.maxOpenFiles`` buckets are open, the least recently written is closed beyond that.

Contract of :meth:`HdfsSink.write`: it returns once the store confirmed every append of the batch (WebHDFS
answered the create or append; a local write was fsynced).  Events whose path cannot be expanded (no or a
non-numeric ``timestamp`` header when the path needs the time) are reported with
:class:`~core.errors.RejectedEvents` after the rest was written: they go to the dead-letter channel.

Differs from Flume on purpose (better):

* **No duplicates at rest.**  Every append is journalled before it is made (file, offsets, event ids:
  :mod:`workers.sinks.journal`).  An event of a redelivered batch that the journal knows is at rest is not
  written again, so a worker killed between its write and its acknowledgement leaves each event once in HDFS.
* **No stuck in-use files.**  A sink that starts (and before each write) finishes the files that a process of the
  same sink left in use when it died: their complete appends are kept, a torn last append is cut off (HDFS
  ``truncate``), and the file is renamed to its final name.  A failed close is retried every
  ``hdfs.retryInterval`` s (``hdfs.closeTries`` times, 0 = until it works), with one log line per attempt; a clean
  stop closes every file.
* Files are created by their first append (an idle sink opens no empty file).
"""
from __future__ import annotations

import logging
import threading
import time
import zoneinfo
from collections import OrderedDict

from core.bucket_path import BucketPath, EscapeError
from core.errors import RejectedEvents
from workers.sinks.base import Sink
from workers.sinks.hdfs import config as hdfs_config
from workers.sinks.hdfs.config import HdfsConfig
from workers.sinks.hdfs.filesystems import FileSystems
from workers.sinks.hdfs.formats import EventError, FileFormat, codec_name, serializer_name
from workers.sinks.hdfs.writer import BucketWriter, Naming, OpenFile, close_file, finish_orphan_files, repair_file
from workers.sinks.journal import Journal, read_records, replay

log = logging.getLogger(__name__)

TICK_S = 0.25                  # how often the roll timer looks at the open files


class PendingClose:
    """A file whose close failed: tried again every retryInterval, closeTries times at most."""

    def __init__(self, file: OpenFile, tries: int, due: float):
        self.file, self.tries, self.due = file, tries, due


class HdfsSink(Sink):
    Config = HdfsConfig

    @classmethod
    def check(cls, config: HdfsConfig, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        return hdfs_config.check(config)

    @classmethod
    def advice(cls, config: HdfsConfig) -> list[tuple[str, str]]:
        return hdfs_config.advice(config)

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        c = self.config
        zone = zoneinfo.ZoneInfo(c.time_zone) if c.time_zone else None
        unit = c.round_unit.lower() if c.round else None
        self.path = BucketPath(c.path, zone, unit, c.round_value, c.use_local_timestamp)
        self.prefix = BucketPath(c.file_prefix, zone, unit, c.round_value, c.use_local_timestamp)
        self.files = FileSystems(c.webhdfs_address, c.call_timeout_ms / 1000, c.proxy_user)
        self.format = FileFormat(c.file_type, serializer_name(c.serializer) or "text", c.append_newline,
                                 c.write_format, codec_name(c.codec) if c.codec else None, c.avro_sync_interval,
                                 c.avro_codec)
        self.naming = Naming(c.in_use_prefix, "" if c.empty_in_use_suffix else c.in_use_suffix, c.file_suffix)
        self.close_tries = c.close_tries if c.close_tries > 0 and c.retry_interval_s > 0 else (
            1 if c.retry_interval_s <= 0 else 0)
        self.journal = Journal(self.context.data_dir / "hdfs-journal" / self.name)
        self.journal.open()
        self.writers: OrderedDict[str, BucketWriter] = OrderedDict()
        self.pending: list[PendingClose] = []
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        try:
            self._adopt_orphans()
        except Exception as exc:
            log.warning("hdfs sink %s: could not finish the files left in use by a stopped process yet (%s); "
                        "trying again before the first write", self.name, exc)
        self.roller = threading.Thread(target=self._roll_timer, name=f"hdfs-roller-{self.name}", daemon=True)
        self.roller.start()

    def stop(self) -> None:
        """Close every file (a file whose close fails is left to the next start, which finishes it)."""
        self.stopping.set()
        self.roller.join(30)
        with self.lock:
            for key in list(self.writers):
                self._close(self.writers.pop(key), retry=False)
            for pending in self.pending:
                self._close_file(pending.file, retry=False, tries=pending.tries)
            self.pending = []
            left = len(self.journal.open_files)
            self.journal.close()
        if left:
            log.error("hdfs sink %s: %d file(s) could not be closed; the next start of this sink finishes them",
                      self.name, left)

    # -- writing ----------------------------------------------------------------------------------------------------
    def write(self, batch) -> None:
        with self.lock:
            # An append that failed may still land (HDFS shows it once a lease recovery ends): nothing is written
            # until every such append is settled, or its events could end up in a second file as well.
            for writer in list(self.writers.values()):
                writer.repair()
            for pending in self.pending:
                repair_file(pending.file, self.journal)
            self._adopt_orphans()
            buckets, rejected = self._plan(batch)
            for key, (directory, prefix, events) in buckets.items():
                self._writer(key, directory, prefix).write(events)
        if rejected:
            raise RejectedEvents(rejected)

    def _plan(self, batch) -> tuple[dict, dict[int, str]]:
        """Group the batch's events by bucket, in order; skip those at rest; note those that can never be
        written."""
        buckets: dict[str, tuple[str, str, list]] = {}
        rejected: dict[int, str] = {}
        events = list(batch)
        fresh = self.journal.to_write([event.id for event in events])
        wanted = None if fresh is None else set(fresh)
        skipped = 0
        for index, event in enumerate(events):
            if wanted is not None and index not in wanted:
                skipped += 1
                continue
            try:
                directory = self.path.expand(event.headers)
                prefix = self.prefix.expand(event.headers)
                self.format.check(event)
            except (EscapeError, EventError) as exc:
                rejected[index] = f"hdfs sink {self.name}: {exc}"
                continue
            key = f"{directory}/{prefix}"
            if key not in buckets:
                buckets[key] = (directory, prefix, [])
            buckets[key][2].append(event)
        if skipped:
            log.info("hdfs sink %s: %d event(s) of this batch are already at rest (written before the batch "
                     "came back) or in it twice; not writing them again", self.name, skipped)
        return buckets, rejected

    def _writer(self, key: str, directory: str, prefix: str) -> BucketWriter:
        writer = self.writers.get(key)
        if writer is not None:
            self.writers.move_to_end(key)
            return writer
        c = self.config
        writer = BucketWriter(directory, prefix, self.files, self.format, self.naming, self.journal,
                              c.roll_count, c.roll_size, on_roll=self._close_file)
        self.writers[key] = writer
        while len(self.writers) > c.max_open_files:
            _, eldest = self.writers.popitem(last=False)
            log.info("hdfs sink %s: more than %d open files; closing the least recently written", self.name,
                     c.max_open_files)
            self._close(eldest)
        return writer

    # -- closing ----------------------------------------------------------------------------------------------------
    def _close(self, writer: BucketWriter, retry: bool = True) -> None:
        """Close a bucket writer's file (see :meth:`_close_file`)."""
        f, writer.file = writer.file, None
        if f is not None:
            self._close_file(f, retry)

    def _close_file(self, f: OpenFile, retry: bool = True, tries: int = 0) -> bool:
        """Close (rename) a file; on failure log it and (``retry``) try again every retryInterval, up to
        closeTries attempts.  A file left in use is finished by the next start of the sink."""
        try:
            close_file(f, self.journal)
            return True
        except Exception as exc:
            tries += 1
            more = retry and (self.close_tries == 0 or tries < self.close_tries)
            if more:
                log.warning("hdfs sink %s: closing %s failed (attempt %d: %s); trying again in %d s", self.name,
                            f.tmp_uri, tries, exc, self.config.retry_interval_s)
                self.pending.append(PendingClose(f, tries, time.monotonic() + self.config.retry_interval_s))
            else:
                log.error("hdfs sink %s: closing %s failed (attempt %d: %s); it stays in use until the next "
                          "start of this sink finishes it", self.name, f.tmp_uri, tries, exc)
            return False

    def _roll_timer(self) -> None:
        """Flume's roll timers: close files open for rollInterval s or idle for idleTimeout s; retry closes."""
        while not self.stopping.wait(TICK_S):
            try:
                with self.lock:
                    self._roll_due(time.monotonic())
            except Exception:
                log.exception("hdfs sink %s: roll timer", self.name)

    def _roll_due(self, now: float) -> None:
        c = self.config
        for key, writer in list(self.writers.items()):
            f = writer.file
            if f is None:
                continue
            if c.roll_interval_s and now - f.opened_at >= c.roll_interval_s:
                log.debug("hdfs sink %s: %s open for %d s: rolling", self.name, f.tmp_uri, c.roll_interval_s)
            elif c.idle_timeout_s and now - writer.last_write >= c.idle_timeout_s:
                log.info("hdfs sink %s: %s idle for %d s: closing", self.name, f.tmp_uri, c.idle_timeout_s)
            else:
                continue
            del self.writers[key]           # as Flume: the next event of the bucket makes a new bucket writer
            self._close(writer)
        due = [p for p in self.pending if p.due <= now]
        self.pending = [p for p in self.pending if p.due > now]
        for pending in due:
            self._close_file(pending.file, tries=pending.tries)

    # -- files left in use by processes that are gone --------------------------------------------------------------
    def _adopt_orphans(self) -> None:
        for journal in self.journal.orphans():
            state = replay(read_records(journal))
            if state.open_files:
                log.info("hdfs sink %s: %d file(s) left in use by a stopped process (journal %s); finishing them",
                         self.name, len(state.open_files), journal.name)
            finished = finish_orphan_files(state, self.files)
            self.journal.adopt(journal, finished)
