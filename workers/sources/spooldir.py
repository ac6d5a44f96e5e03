"""``spooldir``: Flume's SpoolDirectorySource, reads the files dropped in a directory, then renames, deletes or tracks them.

The files of ``spoolDir`` are read one at a time (in ``consumeOrder``), each cut into events by its
``deserializer`` (``LINE``: one event per line; ``BLOB``: one event per file; see
:mod:`workers.sources.spooldir_reader`), and put in batches of ``batchSize`` events.  A file is marked done
(renamed with ``fileSuffix``, recorded in ``trackerDir`` with ``trackingPolicy = tracker_dir``, or deleted with
``deletePolicy = immediate``) only after every batch of it is in every required channel.  Which files are read and
how progress is kept: :mod:`workers.sources.spooldir_tracker`.

Delivery: after every committed batch the offset reached is recorded durably in ``trackerDir``, so an agent
killed at any point re-reads at most the one batch it had not recorded yet, and never loses one.  Every event's
id is ``<device>:<inode>:<byte offset of the event>``, the same when a batch is read again, so keyed stores
overwrite instead of duplicating.  While the channels are full the source reads no further (it retries the same
batch, backing off up to ``maxBackoff`` ms); memory stays bounded (files are streamed; a ``BLOB`` file is read
whole, up to ``deserializer.maxBlobLength``).  The directory is listed again once the files of the last listing
were read, or every ``pollDelay`` ms while there is nothing to read.

Files are expected immutable and uniquely named, as in Flume, but a file that breaks the rules stops only
itself, never the source (Flume's source stops for good and needs a restart): a file that changed after it was
picked up (its size or modification time, or the file behind its name), a file named like one already completed,
a file that cannot be decoded (``decodeErrorPolicy = FAIL``) or opened, a ``BLOB`` file larger than
``maxBlobLength``: each is logged once at ERROR with the file and what is wrong, left as it is (not marked done),
and skipped until it changes, while the other files keep flowing.  An empty file is marked done at once
(FLUME-1934).  ``headers`` are only added when ``fileHeader`` / ``basenameHeader`` ask for them.

Other differences from Flume, on purpose: a ``BLOB`` file larger than ``maxBlobLength`` is refused (Flume cuts it
into several events); ``LINE`` never cuts a character outside the BMP in two; ``inputCharset`` must write a
newline as the byte 0x0A (UTF-16/32 files are refused at validation); tracker files record which file was done,
and their path keeps the file's subdirectory; no canary file is written into ``spoolDir`` (permissions are
checked with ``access``); the first pause against full channels is 50 ms (Flume: 250 ms), doubling up to
``maxBackoff``.  ``bufferMaxLineLength`` still sets the line length, ``bufferMaxLines`` is accepted and ignored, as
in Flume.  Throughput: every batch costs one put and one fsynced progress record, so raise ``batchSize`` (up to
the channel's ``transactionCapacity``) for large files.
"""
from __future__ import annotations

import codecs
import logging
import os
from dataclasses import dataclass, replace

from core import counters as names
from core import java_regex
from core.event import Batch
from core.options import one_of, opt, positive
from core.registry import did_you_mean
from workers.sources.base import Source, SourceContext
from workers.sources.spooldir_reader import BlobDeserializer, LineDeserializer, ReadProblem, newline_is_0x0a
from workers.sources.spooldir_tracker import Candidate, FileId, FileProblem, SetupError, SpoolTracker

log = logging.getLogger(__name__)

LINE, BLOB = "LINE", "BLOB"
DESERIALIZERS = {
    "line": LINE,
    "org.apache.flume.serialization.linedeserializer$builder": LINE,
    "blob": BLOB,
    "org.apache.flume.sink.solr.morphline.blobdeserializer$builder": BLOB,
}
DESERIALIZERS_NOT_YET = {"avro", "org.apache.flume.serialization.avroeventdeserializer$builder"}


def deserializer_kind(value: str) -> str | None:
    """LINE or BLOB for a deserializer name (Flume's alias or Builder class name), else None."""
    return DESERIALIZERS.get(value.strip().lower())


def _check_deserializer(value: str) -> str | None:
    if deserializer_kind(value):
        return None
    if value.strip().lower() in DESERIALIZERS_NOT_YET:
        return "Flume's AVRO deserializer is not available yet in Flumery (available: LINE, BLOB)"
    return ("unknown deserializer" + did_you_mean(value.strip().upper(), [LINE, BLOB])
            + " (available: LINE, BLOB, or Flume's class names org.apache.flume.serialization.LineDeserializer$Builder"
              " and org.apache.flume.sink.solr.morphline.BlobDeserializer$Builder)")


def _check_charset(value: str) -> str | None:
    try:
        codecs.lookup(value.strip())
    except LookupError:
        return "unknown charset"
    return None


def _check_suffix(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


@dataclass(frozen=True)
class SpoolDirConfig:
    spool_dir: str = opt("spoolDir", doc="the directory whose files are read")
    file_suffix: str = opt("fileSuffix", ".COMPLETED", check=_check_suffix,
                           doc="appended to the name of a file that was read (trackingPolicy rename)")
    delete_policy: str = opt("deletePolicy", "never", check=one_of("never", "immediate"),
                             doc="never, or immediate: delete a file once it was read")
    file_header: bool = opt("fileHeader", False, doc="add the file's absolute path as a header")
    file_header_key: str = opt("fileHeaderKey", "file", doc="the header of the path")
    basename_header: bool = opt("basenameHeader", False, doc="add the file's name as a header")
    basename_header_key: str = opt("basenameHeaderKey", "basename", doc="the header of the name")
    include_pattern: str = opt("includePattern", "^.*$", check=java_regex.check,
                               doc="Java regex: only files whose whole name matches are read")
    ignore_pattern: str = opt("ignorePattern", "^$", check=java_regex.check,
                              doc="Java regex: files (and subdirectories) whose whole name matches are not read; "
                                  "wins over includePattern")
    tracker_dir: str = opt("trackerDir", ".flumespool",
                           doc="directory of the progress records (and tracker files); relative to spoolDir")
    tracking_policy: str = opt("trackingPolicy", "rename", check=one_of("rename", "tracker_dir"),
                               doc="rename: rename a file that was read; tracker_dir: leave it, record it in "
                                   "trackerDir (needs only read access to spoolDir)")
    consume_order: str = opt("consumeOrder", "oldest", check=one_of("oldest", "youngest", "random"),
                             doc="oldest or youngest by modification time (ties by name), or random")
    poll_delay_ms: int = opt("pollDelay", 500, check=positive, doc="ms between two listings of an idle directory")
    recursive: bool = opt("recursiveDirectorySearch", False, doc="read the files of subdirectories too")
    max_backoff_ms: int = opt("maxBackoff", 4000, check=positive,
                              doc="longest pause in ms between two attempts to put into full channels")
    batch_size: int = opt("batchSize", 100, check=positive, doc="events per put")
    input_charset: str = opt("inputCharset", "UTF-8", check=_check_charset,
                             doc="charset of the files (LINE); must write a newline as the byte 0x0A")
    decode_error_policy: str = opt("decodeErrorPolicy", "FAIL", check=one_of("FAIL", "REPLACE", "IGNORE"),
                                   doc="bytes that do not decode: FAIL (stop that file), REPLACE (U+FFFD), "
                                       "IGNORE (drop them)")
    deserializer: str = opt("deserializer", "LINE", check=_check_deserializer,
                            doc="LINE (an event per line) or BLOB (an event per file), or Flume's Builder class "
                                "names; AVRO is not available yet")
    max_line_length: int = opt("deserializer.maxLineLength", 2048, check=positive,
                               doc="LINE: characters per event; a longer line is split into several events")
    output_charset: str = opt("deserializer.outputCharset", "UTF-8", check=_check_charset,
                              doc="LINE: charset of the event bodies")
    max_blob_length: int = opt("deserializer.maxBlobLength", 100_000_000, check=positive,
                               doc="BLOB: largest file in bytes; a larger file is reported and not read")
    buffer_max_line_length: int | None = opt("bufferMaxLineLength", None, check=positive,
                                             doc="deprecated in Flume: with deserializer LINE, replaces "
                                                 "deserializer.maxLineLength")
    buffer_max_lines: str = opt("bufferMaxLines", "", inert="obsolete: Flume ignores it too")

    def problems(self) -> list[tuple[str, str]]:
        problems = []
        if deserializer_kind(self.deserializer) == LINE and not newline_is_0x0a(self.input_charset):
            problems.append(("inputCharset", f"charset '{self.input_charset}' does not write a newline as the "
                                             f"byte 0x0A; the LINE deserializer cannot read it in Flumery "
                                             f"(use an ASCII-compatible charset such as UTF-8 or ISO-8859-1)"))
        return problems


class SpoolDirectorySource(Source):
    Config = SpoolDirConfig

    @classmethod
    def check(cls, config, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        return config.problems()

    def __init__(self, name: str, config: SpoolDirConfig, context: SourceContext):
        super().__init__(name, config, context)
        self.kind = deserializer_kind(config.deserializer) or LINE
        self.max_line_length = config.max_line_length
        if config.buffer_max_line_length is not None and config.deserializer.strip().upper() == LINE:
            self.max_line_length = config.buffer_max_line_length          # as Flume does
        self.tracker = SpoolTracker(
            config.spool_dir, tracker_dir=config.tracker_dir, file_suffix=config.file_suffix,
            tracking_policy=config.tracking_policy, delete_policy=config.delete_policy,
            include=java_regex.compile_java(config.include_pattern),
            ignore=java_regex.compile_java(config.ignore_pattern),
            recursive=config.recursive, consume_order=config.consume_order)
        self.poll_s = config.poll_delay_ms / 1000
        self.quarantine: dict[str, FileId] = {}     # files skipped until they change: path -> identity
        self.reported: set[tuple] = set()           # problems already logged: (path, inode, kind)
        self._listing_failed: str | None = None

    # -- main loop -------------------------------------------------------------------------------------------
    def serve(self) -> None:
        if not self._set_up():
            return
        log.info("spooldir source %s reads %s (%s deserializer, trackingPolicy %s, deletePolicy %s)", self.name,
                 self.tracker.spool_dir, self.kind, self.config.tracking_policy, self.config.delete_policy)
        while not self.stopping.is_set():
            progressed = self.poll()
            if not progressed and self.stopping.wait(self.poll_s if progressed is False else max(self.poll_s, 1)):
                return

    def poll(self) -> bool | None:
        """List the directory and read every file of the listing.  True if anything was delivered or marked
        done, False if not, None if the directory cannot be listed."""
        try:
            candidates = self.tracker.scan()
        except OSError as exc:
            if str(exc) != self._listing_failed:
                log.error("spooldir source %s: cannot list spoolDir '%s': %s", self.name, self.tracker.spool_dir,
                          exc.strerror or exc)
                self._listing_failed = str(exc)
            return None
        if self._listing_failed:
            log.info("spooldir source %s: spoolDir '%s' can be listed again", self.name, self.tracker.spool_dir)
            self._listing_failed = None
        progressed = False
        for candidate in candidates:
            if self.stopping.is_set():
                break
            try:
                progressed = self._consume(candidate) or progressed
            except Exception as exc:                # never let one file stop the source
                log.exception("spooldir source %s: file '%s' failed", self.name, candidate.path)
                self._problem(candidate, "failed", f"failed: {exc!r}; it is not marked done")
        return progressed

    def _set_up(self) -> bool:
        """Prepare the directories, retrying (as Flume's lifecycle supervisor restarts a source that failed to
        start) until they can be used or the source is stopped."""
        failed = None
        retry_s = max(self.poll_s, 1.0)
        while not self.stopping.is_set():
            try:
                self.tracker.prepare()
            except (SetupError, OSError) as exc:
                if str(exc) != failed:
                    log.error("spooldir source %s: %s; trying again every %.0f s", self.name, exc, retry_s)
                    failed = str(exc)
            else:
                if failed:
                    log.info("spooldir source %s: the directories can be used now", self.name)
                return True
            if self.stopping.wait(retry_s):
                return False
        return False

    # -- one file --------------------------------------------------------------------------------------------
    def _consume(self, candidate: Candidate) -> bool:
        """Read one file, put its events, mark it done.  True if anything was delivered or marked done."""
        held = self.quarantine.get(candidate.rel)
        if held is not None:
            if held == candidate.fid:
                return False
            del self.quarantine[candidate.rel]       # it changed: look at it again
        conflict = self.tracker.name_conflict(candidate)
        if conflict:
            self._report(candidate, "name", f"{conflict}; spooled file names must be unique: it is not read "
                                            f"(rename it to have it read)")
            return False
        try:
            fd = os.open(candidate.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError as exc:
            self._problem(candidate, "open", f"cannot be opened: {exc.strerror}")
            return False
        try:
            return self._read(fd, candidate)
        finally:
            os.close(fd)

    def _read(self, fd: int, candidate: Candidate) -> bool:
        fid = FileId.of(os.fstat(fd))
        if fid != candidate.fid:                      # changed since the listing (or replaced): take it as it is
            candidate = replace(candidate, fid=fid)
            if self.quarantine.get(candidate.rel) == fid:
                return False
        try:
            start, dev = self.tracker.load_progress(candidate)
        except FileProblem as exc:
            self._problem(candidate, "changed",
                          f"{exc}. Files in a spooling directory must not change: it is not marked done and is "
                          f"left alone (to read it again from the start, give it a new name)")
            return False
        if start:
            log.info("spooldir source %s: resuming '%s' at byte %d of %d", self.name, candidate.path, start,
                     fid.size)
        reader = self._reader(fd, start, fid.size)
        # The modification time tells apart two files that got the same inode (deletePolicy=immediate frees
        # inodes): without it a keyed store would overwrite the old file's events with the new file's.
        prefix = f"{dev}:{fid.ino}:{fid.mtime_ns}:"
        headers = self._headers(candidate)
        progressed = False
        while True:
            try:
                piece = reader.read(self.config.batch_size)
            except ReadProblem as exc:
                self._problem(candidate, "read", f"{exc}; the events before byte {exc.offset} were delivered, "
                                                 f"the file is not marked done")
                return progressed
            if piece is None:
                break
            now = FileId.of(os.fstat(fd))
            if not now.same(fid):
                self._problem(replace(candidate, fid=now), "changed",
                              f"{fid.changes(now)} while it was being read; the events before byte "
                              f"{piece.starts[0]} were delivered. Files in a spooling directory must not change: "
                              f"it is not marked done and is left alone")
                return progressed
            n = len(piece.bodies)
            batch = Batch(piece.bodies, [headers] * n if headers else None,
                          [prefix + str(offset) for offset in piece.starts])
            if not self.deliver(batch):
                return progressed                     # stopping: this batch is not committed
            self.tracker.save_progress(candidate, dev, piece.end)
            progressed = True
        try:
            action = self.tracker.complete(candidate)
        except FileProblem as exc:
            self._problem(candidate, "changed", f"{exc}; every event of it was delivered, but it is not marked done")
            return progressed
        except OSError as exc:
            self._problem(candidate, "done", f"every event of it was delivered, but it cannot be marked done: "
                                             f"{exc.strerror or exc} (a restart will not read it again)")
            return progressed
        log.info("spooldir source %s: '%s' was read, %s", self.name, candidate.path, action)
        return True

    def _reader(self, fd: int, start: int, end: int):
        c = self.config
        if self.kind == BLOB:
            return BlobDeserializer(fd, start, end, max_blob_length=c.max_blob_length)
        return LineDeserializer(fd, start, end, max_line_length=self.max_line_length,
                                input_charset=c.input_charset, output_charset=c.output_charset,
                                decode_error_policy=c.decode_error_policy)

    def _headers(self, candidate: Candidate) -> dict[str, str] | None:
        c = self.config
        headers = {}
        if c.file_header:
            headers[c.file_header_key] = _text(candidate.path)
        if c.basename_header:
            headers[c.basename_header_key] = _text(os.path.basename(candidate.path))
        return headers or None

    # -- problems --------------------------------------------------------------------------------------------
    def _problem(self, candidate: Candidate, kind: str, message: str) -> None:
        """Report a file and skip it until it changes."""
        self.quarantine[candidate.rel] = candidate.fid
        self._report(candidate, kind, message)

    def _report(self, candidate: Candidate, kind: str, message: str) -> None:
        key = (candidate.rel, candidate.fid.ino, kind)
        if key in self.reported:
            return
        self.reported.add(key)
        names.fail(self.counters, names.EVENT_READ_FAIL, log, logging.ERROR, "spooldir source %s: file '%s': %s",
                           self.name, candidate.path, message)

    def deliver(self, batch: Batch) -> bool:
        """:meth:`Source.deliver`, with Flume's ``maxBackoff`` as the longest pause between two attempts."""
        return super().deliver(batch, max_backoff_s=self.config.max_backoff_ms / 1000)


def _text(path: str) -> str:
    """A path as header text (bytes that are not UTF-8 read as U+FFFD)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
