"""The file side of TAILDIR: which files to tail, reading their lines, and where each one stands.

Flume's ReliableTaildirEventReader, TailFile and TaildirMatcher, with files identified by **device and inode**
only.  Flume keys a file by inode *and path*, so a file renamed by log rotation (``app.log`` -> ``app.log.1``)
looks like a new file and is read again from 0 (FLUME-3233, 3219, 3094, 2777, ...); and a file renamed to a name
the pattern does not match is dropped with its unread tail.  Here:

* a file renamed to another matching name keeps its position;
* a file renamed to a name that does not match (found again by its inode in its directory), and a file deleted
  while open, are read to their end and dropped once idle (``idleTimeout``): rename-and-create rotation loses
  nothing, even if the writer still appends to the old file for a while;
* a file whose size falls below the position (copy-truncate rotation) restarts at 0; so does a file whose bytes
  before the position changed (truncated and rewritten past the old position before the next look).  The copy
  that copy-truncate made, if it is in the same directory, is recognised by its first bytes and the bytes before
  the old position, and read from that position to its end: the lines that were still unread when the file was
  truncated are not lost, and the copy is not read again from 0 when its name matches the pattern.  A pass that
  finds the file truncated between two of its reads stops there, so it never reads the next generation as the
  continuation of the old one.  What no reader of copy-truncated files can see: a whole generation written,
  copied and truncated between two looks at the file (and, as logrotate itself warns, lines written between its
  copy and its truncate).

A position only moves forward on :meth:`TaildirReader.commit`, after the batch is in every required channel.

Reading is chunked (``READ_SIZE`` bytes at a time, split with ``bytes.split``), so memory does not grow with the
file; between rounds a tracked file holds no buffer, only two short fingerprints.  Descriptors are opened when a
file has data and closed when it goes idle, at most ``max_open`` at a time.
"""
from __future__ import annotations

import logging
import os
import re
import resource
import stat
import time
import zlib
from itertools import accumulate

from core.event import Batch
from workers.sources.taildir_position import PositionEntry, PositionStore

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20          # bytes per read
FINGERPRINT = 256            # bytes kept of a file's start and of what precedes its position
HEAD_KEY = 64                # a copy is looked up by this many first bytes
BYTE_OFFSET_HEADER = "byteoffset"
GENERATION_BYTES = 256       # the first line, up to this many bytes, names a file's generation in event ids

MATCHED, ROTATED, GONE = "matched", "rotated", "gone"


class FileGroup:
    """One ``filegroups.<g>``: a literal directory and a (Java) regex the whole file name must match."""

    def __init__(self, name: str, directory: str, pattern: re.Pattern, headers: dict[str, str],
                 cache: bool = True):
        self.name = name
        self.directory = directory
        self.pattern = pattern
        self.headers = headers
        self.cache = cache
        self._names: list[str] = []
        self._dir_mtime: int | None = None
        self._checked_at = 0.0
        self._missing_logged = False

    def matching(self) -> list[str]:
        """Paths of the regular files (symbolic links followed) whose names match, re-listing the directory
        only when its mtime changed (``cachePatternMatching``, as Flume's TaildirMatcher)."""
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            if not self._missing_logged:
                log.warning("taildir: directory %s of file group %s does not exist (yet); watching for it",
                            self.directory, self.name)
                self._missing_logged = True
            self._names, self._dir_mtime = [], None
            return []
        self._missing_logged = False
        now = time.time()
        # Re-list when the mtime changed, and also while it is too recent to trust (an entry added in the same
        # clock tick as the last listing would not change it again).
        if (not self.cache or mtime != self._dir_mtime or now - mtime / 1e9 < 2.0
                or now - self._checked_at > 60):
            try:
                names = [e.name for e in os.scandir(self.directory) if self.pattern.fullmatch(e.name)]
            except OSError as exc:
                log.warning("taildir: cannot list %s: %s", self.directory, exc)
                names = []
            self._names, self._dir_mtime, self._checked_at = names, mtime, now
        return [os.path.join(self.directory, n) for n in self._names]


class TailFile:
    """One tracked file (a device and inode), wherever it is now."""

    __slots__ = ("dev", "ino", "path", "group", "pos", "fd", "head", "tail", "state", "size", "mtime",
                 "seen", "last_active", "headers", "prefix", "generation")

    def __init__(self, dev: int, ino: int, path: str, group: FileGroup, pos: int, now: float):
        self.dev, self.ino, self.path, self.group, self.pos = dev, ino, path, group, pos
        self.fd: int | None = None
        self.head = b""                  # the file's first bytes (up to FINGERPRINT)
        self.tail = b""                  # the bytes just before pos, as last read (up to FINGERPRINT)
        self.state = MATCHED
        self.size = 0
        self.mtime = 0
        self.seen: tuple[int, int] | None = None   # (size, mtime) when a round last reached the end
        self.last_active = now
        self.headers: dict | None = None
        self.prefix = f"{dev}:{ino}:"    # event ids: <dev>:<inode>:<generation>:<line start offset>
        self.generation: str | None = None   # a hash of the first line; changes when the file is truncated

    @property
    def key(self) -> tuple[int, int]:
        return self.dev, self.ino

    def needs_tail(self) -> bool:
        return self.size > self.pos and self.seen != (self.size, self.mtime)

    def __repr__(self) -> str:
        return f"TailFile({self.path!r}, inode={self.ino}, pos={self.pos}, {self.state})"


class TaildirReader:
    """Tracks the files of the groups, reads their lines in batches, and keeps the position file."""

    def __init__(self, groups: list[FileGroup], store: PositionStore, *, file_header: bool = False,
                 file_header_key: str = "file", byte_offset_header: bool = False, skip_to_end: bool = False,
                 idle_timeout_s: float = 120.0, max_open: int | None = None, clock=time.monotonic):
        self.groups = groups
        self.store = store
        self.file_header = file_header
        self.file_header_key = file_header_key
        self.byte_offset_header = byte_offset_header
        self.skip_to_end = skip_to_end
        self.idle_timeout_s = idle_timeout_s
        self.max_open = max_open or _default_max_open()
        self.clock = clock
        self.files: dict[tuple[int, int], TailFile] = {}
        self.open_count = 0
        self.dirty = False               # positions changed since the position file was last written
        self.with_headers = file_header or byte_offset_header or any(g.headers for g in groups)

    # -- start -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the position file (and journal), then track the files that exist now."""
        self.scan(self.store.load())

    # -- tracking ----------------------------------------------------------------------------------------------
    def scan(self, positions: dict[tuple[int, str], int] | None = None) -> None:
        """Look at the groups' directories: new files, renamed, rotated, truncated and vanished ones.

        ``positions`` (``{(inode, path): pos}``) is given once, at start: the loaded position file.
        """
        now = self.clock()
        seen = self._look()
        new = []
        for key, (path, group, st) in seen.items():
            tf = self.files.get(key)
            if tf is None:
                new.append((key, path, group, st))
            else:
                self._reconcile(tf, path, group, st, now)
        for tf in [f for k, f in self.files.items() if k not in seen]:
            self._lost(tf, now)
        if positions is not None:
            self._adopt(new, positions, now)
        else:
            for key, path, group, st in sorted(new, key=lambda n: n[3].st_mtime_ns):
                if key not in self.files:                     # (a copy found meanwhile is tracked already)
                    self._track(key, path, group, st, self._copy_origin(path, st), now)

    def _look(self) -> dict[tuple[int, int], tuple[str, FileGroup, os.stat_result]]:
        """The regular files matching the groups now, by (device, inode): the first group's match wins."""
        seen: dict[tuple[int, int], tuple[str, FileGroup, os.stat_result]] = {}
        for group in self.groups:
            for path in group.matching():
                try:
                    st = os.stat(path)
                except OSError:
                    continue                                  # deleted meanwhile
                if stat.S_ISREG(st.st_mode):
                    seen.setdefault((st.st_dev, st.st_ino), (path, group, st))
        return seen

    def _reconcile(self, tf: TailFile, path: str, group: FileGroup, st: os.stat_result, now: float) -> None:
        """A tracked file seen again at ``path``: follow a rename, notice a truncation or a reused inode."""
        same = tf.fd is not None or self._same_file(tf, path, st)
        if tf.path != path or tf.state != MATCHED or tf.group is not group:
            if tf.path != path and same:
                log.info("taildir: %s (inode %d) is now %s; keeping its position %d", tf.path, tf.ino, path,
                         tf.pos)
            self._moved(tf, path, MATCHED, group)
        if not same:              # truncated and rewritten while closed, or a new file that got a freed inode
            tf.size, tf.mtime = st.st_size, st.st_mtime_ns
            self._truncated(tf, "its first bytes changed")
        self._observe(tf, st, now)

    @staticmethod
    def _same_file(tf: TailFile, path: str, st: os.stat_result) -> bool:
        """Whether the closed ``tf`` is still the file at ``path``: its inode may have been freed and given to a
        new file meanwhile (only an open descriptor keeps it).  Checked by the first bytes when it changed."""
        if not tf.head or (path == tf.path and (st.st_size, st.st_mtime_ns) == (tf.size, tf.mtime)):
            return True
        return _has_bytes(path, 0, tf.head)

    def _observe(self, tf: TailFile, st: os.stat_result, now: float) -> None:
        tf.size, tf.mtime = st.st_size, st.st_mtime_ns
        if tf.size < tf.pos:
            self._truncated(tf, f"its size {tf.size} is below the position")

    def _moved(self, tf: TailFile, path: str, state: str, group: FileGroup | None = None) -> None:
        tf.path, tf.state = path, state
        if group is not None:
            tf.group = group
        self._set_headers(tf)
        self.dirty = True

    def _set_headers(self, tf: TailFile) -> None:
        """The headers every event of ``tf`` gets (group headers, then the file header), as Flume sets them."""
        if not self.with_headers:
            return
        headers = dict(tf.group.headers)
        if self.file_header:
            headers[self.file_header_key] = tf.path
        tf.headers = headers

    def _track(self, key, path: str, group: FileGroup, st: os.stat_result, pos: int, now: float) -> TailFile:
        tf = TailFile(key[0], key[1], path, group, pos, now)
        self.files[key] = tf
        self._set_headers(tf)
        self._observe(tf, st, now)
        self.dirty = True
        log.info("taildir: tracking %s (inode %d) from position %d", path, key[1], pos)
        return tf

    def _adopt(self, new, positions: dict[tuple[int, str], int], now: float) -> None:
        """First scan: positions from the position file, as Flume applies them (inode and path must match);
        also a file renamed while the agent was down, found by its inode, keeps its position."""
        by_inode: dict[int, list[tuple[str, int]]] = {}
        for (ino, path), pos in positions.items():
            by_inode.setdefault(ino, []).append((path, pos))
        used: set[tuple[int, str]] = set()
        tracked = set()
        for key, path, group, st in sorted(new, key=lambda n: n[3].st_mtime_ns):
            pos = positions.get((key[1], path))
            if pos is not None:
                used.add((key[1], path))
            else:
                pos = self._renamed_while_down(key, path, st, by_inode.get(key[1], ()), used)
            pos = self._start_position(path, st, pos)
            tf = self._track(key, path, group, st, pos, now)
            tracked.add((key[1], path))
            if pos:                        # fingerprints, to recognise truncation and copies from the start
                self._fingerprint(tf, path, pos)
        # Entries whose file now has a name outside the pattern (rotated while the agent was down): finish them.
        for (ino, path), pos in positions.items():
            if (ino, path) not in used and (ino, path) not in tracked:
                self._adopt_rotated(ino, path, pos, now)

    def _start_position(self, path: str, st: os.stat_result, pos: int | None) -> int:
        """Where a file found at start is read from: its recorded position, else its start (or its end with
        ``skipToEnd``); a position beyond its size means another file: read it from 0."""
        if pos is None:
            return st.st_size if self.skip_to_end else 0
        if pos > st.st_size:
            log.info("taildir: position %d of %s is beyond its size %d; reading it from 0", pos, path, st.st_size)
            return 0
        return pos

    @staticmethod
    def _fingerprint(tf: TailFile, path: str, pos: int) -> None:
        try:
            with open(path, "rb") as f:
                tf.head = f.read(FINGERPRINT)
                f.seek(max(0, pos - FINGERPRINT))
                tf.tail = f.read(min(pos, FINGERPRINT))
        except OSError:
            pass

    def _adopt_rotated(self, ino: int, path: str, pos: int, now: float) -> None:
        """A position-file entry whose file was renamed outside the pattern while the agent was down: read it
        from ``pos`` to its end, if it is still there and ``pos`` is a line boundary."""
        found = self._find_by_inode(os.path.dirname(path), ino, preferred=path)
        if found is None:
            log.info("taildir: %s (inode %d) from the position file is gone; forgetting it", path, ino)
            return
        fpath, st = found
        if (st.st_dev, st.st_ino) in self.files or pos > st.st_size or not self._line_end_before(fpath, pos):
            return
        group = self._group_of_dir(os.path.dirname(path))
        if group is None:
            return
        tf = self._track((st.st_dev, st.st_ino), fpath, group, st, pos, now)
        self._moved(tf, fpath, ROTATED)
        log.info("taildir: %s (inode %d) was rotated to %s; reading it from %d to its end", path, ino, fpath, pos)

    def _renamed_while_down(self, key, path: str, st, candidates, used) -> int | None:
        for old_path, pos in candidates:
            if (key[1], old_path) in used or old_path == path:
                continue
            try:
                same = os.stat(old_path)
                if (same.st_dev, same.st_ino) == key:
                    continue                                   # a hard link, not a rename
            except OSError:
                pass
            if os.path.dirname(old_path) != os.path.dirname(path):
                continue
            if pos <= st.st_size and self._line_end_before(path, pos):
                used.add((key[1], old_path))
                log.info("taildir: %s (inode %d) was renamed to %s while stopped; keeping position %d",
                         old_path, key[1], path, pos)
                return pos
        return None

    @staticmethod
    def _line_end_before(path: str, pos: int) -> bool:
        """True if ``pos`` is 0 or follows a newline: a sanity check before trusting a position by inode alone
        (inode numbers are reused)."""
        if pos == 0:
            return True
        try:
            with open(path, "rb") as f:
                f.seek(pos - 1)
                return f.read(1) == b"\n"
        except OSError:
            return False

    def _group_of_dir(self, directory: str) -> FileGroup | None:
        return next((g for g in self.groups if os.path.samefile(g.directory, directory)), None) \
            if os.path.isdir(directory) else None

    def _find_by_inode(self, directory: str, ino: int, preferred: str | None = None):
        """(path, stat) of the entry of ``directory`` with inode ``ino``, if there is one."""
        if preferred:
            try:
                st = os.stat(preferred)
                if st.st_ino == ino and stat.S_ISREG(st.st_mode):
                    return preferred, st
            except OSError:
                pass
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.inode() == ino:
                        try:
                            st = entry.stat()
                        except OSError:
                            return None
                        return (entry.path, st) if stat.S_ISREG(st.st_mode) else None
        except OSError:
            pass
        return None

    def _lost(self, tf: TailFile, now: float) -> None:
        """``tf`` no longer matches: renamed out of the pattern, or deleted.  Finish it if it can be read."""
        directory = tf.group.directory
        found = None
        if tf.state != GONE and not (tf.fd is not None and _unlinked(tf.fd)):
            found = self._find_by_inode(directory, tf.ino, preferred=tf.path if tf.state == ROTATED else None)
        if found is not None and (found[1].st_dev, found[1].st_ino) == tf.key \
                and (tf.fd is not None or self._same_file(tf, found[0], found[1])):
            path, st = found
            if tf.state != ROTATED or tf.path != path:
                log.info("taildir: %s (inode %d) was renamed to %s, outside the pattern; reading it to its end",
                         tf.path, tf.ino, path)
                self._moved(tf, path, ROTATED)
                tf.last_active = now
            self._observe(tf, st, now)
            return
        if tf.fd is not None:
            if tf.state != GONE:
                log.info("taildir: %s (inode %d) was deleted or moved away; reading what is left through its "
                         "open descriptor", tf.path, tf.ino)
                tf.state = GONE
                tf.last_active = now
                self.dirty = True
            try:
                st = os.fstat(tf.fd)
            except OSError:
                self.drop(tf)
                return
            self._observe(tf, st, now)
            return
        log.info("taildir: %s (inode %d) is gone; forgetting it at position %d", tf.path, tf.ino, tf.pos)
        self.drop(tf)

    def drop(self, tf: TailFile) -> None:
        self.close(tf)
        if self.files.get(tf.key) is tf:
            del self.files[tf.key]
            self.dirty = True

    # -- copy-truncate ------------------------------------------------------------------------------------------
    def _truncated(self, tf: TailFile, why: str) -> None:
        log.info("taildir: %s (inode %d) was truncated (%s); reading it again from 0", tf.path, tf.ino, why)
        old_pos, head, tail = tf.pos, tf.head, tf.tail
        tf.pos, tf.head, tf.tail, tf.seen, tf.generation = 0, b"", b"", None, None
        self._journal(tf)
        if old_pos and len(head) >= min(old_pos, HEAD_KEY):     # (a short file's head is all of it)
            self._adopt_copy(tf, old_pos, head, tail)

    def _adopt_copy(self, tf: TailFile, pos: int, head: bytes, tail: bytes) -> None:
        """Find the copy copy-truncate made of ``tf`` beside it and read it from ``pos`` to its end."""
        directory = os.path.dirname(tf.path)
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        if len(tail) < min(pos, HEAD_KEY):
            return                                           # no fingerprint to recognise the copy by
        now = self.clock()
        candidates = []
        for entry in entries:
            try:
                st = entry.stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in self.files and stat.S_ISREG(st.st_mode) and st.st_size >= pos:
                candidates.append((st.st_mtime_ns, entry, st))
        for _, entry, st in sorted(candidates, key=lambda c: c[0], reverse=True):      # the copy is recent
            key = (st.st_dev, st.st_ino)
            if _has_bytes(entry.path, 0, head) and _has_bytes(entry.path, pos - len(tail), tail):
                group = tf.group
                copy = self._track(key, entry.path, group, st, pos, now)
                copy.head, copy.tail = head, tail
                matched = any(g.directory == directory and g.pattern.fullmatch(entry.name) for g in self.groups)
                if not matched:
                    copy.state = ROTATED
                log.info("taildir: %s is the copy of %s made before it was truncated; reading it from %d",
                         entry.path, tf.path, pos)
                return

    def _copy_origin(self, path: str, st: os.stat_result) -> int:
        """Start position of a new file: 0, or the position of the tracked file it is a copy of."""
        if st.st_size < HEAD_KEY:
            return 0
        directory = os.path.dirname(path)
        candidates = [f for f in self.files.values()
                      if f.pos and len(f.head) >= HEAD_KEY and f.pos <= st.st_size
                      and len(f.tail) >= min(f.pos, HEAD_KEY)
                      and os.path.dirname(f.path) == directory]
        if not candidates:
            return 0
        try:
            with open(path, "rb") as f:
                first = f.read(FINGERPRINT)
                for other in candidates:
                    if first.startswith(other.head) or (len(first) < len(other.head)
                                                        and other.head.startswith(first)):
                        f.seek(other.pos - len(other.tail))
                        if f.read(len(other.tail)) == other.tail:
                            log.info("taildir: new file %s is a copy of %s; reading it from %d, not 0", path,
                                     other.path, other.pos)
                            return other.pos
        except OSError:
            pass
        return 0

    # -- reading -----------------------------------------------------------------------------------------------
    def pending(self) -> list[TailFile]:
        """Files with bytes past their position that no round has looked at yet, oldest change first."""
        return sorted((f for f in self.files.values() if f.needs_tail()), key=lambda f: f.mtime)

    def open(self, tf: TailFile) -> bool:
        if tf.fd is not None:
            return True
        if self.open_count >= self.max_open:
            self._close_least_recent()
        try:
            fd = os.open(tf.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("taildir: cannot open %s: %s", tf.path, exc)
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != tf.key:             # replaced since the last scan: the next scan sorts it out
            os.close(fd)
            return False
        tf.fd = fd
        self.open_count += 1
        tf.last_active = self.clock()
        return True

    def close(self, tf: TailFile) -> None:
        if tf.fd is not None:
            try:
                os.close(tf.fd)
            finally:
                tf.fd = None
                self.open_count -= 1

    def _close_least_recent(self) -> None:
        reopenable = [f for f in self.files.values() if f.fd is not None and f.state != GONE]
        if reopenable:
            self.close(min(reopenable, key=lambda f: f.last_active))

    def batches(self, tf: TailFile, batch_size: int, final: bool = False):
        """Yield ``(batch, end, tail)`` for the lines after ``tf.pos``, at most ``batch_size`` lines each.

        Nothing moves until the caller commits a batch (:meth:`commit` with its ``end`` and ``tail``); a caller
        that stops iterating without committing leaves the position where it was, and the next call reads the
        same lines again.  A last line without newline is held back, unless ``final`` (the file is being closed
        as idle: Flume then emits it as it is).
        """
        if not self.open(tf):
            tf.seen = (tf.size, tf.mtime)                    # not again until it changes
            return
        head = self._check_position(tf)
        if head is not None:
            yield from self._read(tf, head, batch_size, final)

    def _check_position(self, tf: TailFile) -> bytes | None:
        """Before reading the open ``tf``: notice a truncation at or before the position, and fill in the
        fingerprints a position from the position file lacks.  Returns the file's first bytes as they are now
        (kept once a read confirms the generation), or None if the file cannot be looked at."""
        fd = tf.fd
        try:
            st = os.fstat(fd)
        except OSError:
            return None
        tf.size, tf.mtime = st.st_size, st.st_mtime_ns
        if tf.size < tf.pos:
            self._truncated(tf, f"its size {tf.size} is below the position")
        elif tf.pos and tf.tail and tf.size >= tf.pos and not _fd_has_bytes(fd, tf.pos - len(tf.tail), tf.tail):
            self._truncated(tf, "the bytes before the position changed")
        head = tf.head
        if len(head) < FINGERPRINT and tf.size > len(head):
            head = os.pread(fd, FINGERPRINT, 0)
        if tf.pos and not tf.tail:                           # a position from the position file
            tf.tail = os.pread(fd, min(tf.pos, FINGERPRINT), max(0, tf.pos - FINGERPRINT))
        return head

    def _read(self, tf: TailFile, head: bytes, batch_size: int, final: bool):
        """The reading loop of :meth:`batches`, from ``tf.pos``."""
        fd = tf.fd
        base = tf.pos                    # file offset of buf[0]
        buf = b""                        # the bytes after the last complete line read (a partial line)
        bodies: list[bytes] = []         # lines read, not yet yielded
        starts: list[int] = []           # their start offsets
        end, tail = base, tf.tail        # offset after the last line read, and the bytes before it
        before = tf.tail                 # the bytes just before the next read offset, as this pass read them
        while True:
            offset = base + len(buf)
            data = os.pread(fd, READ_SIZE, offset)
            # The caller may take its time between two batches (a put against a full channel): the file may
            # have been copied, truncated and written past ``offset`` again meanwhile.  What was just read then
            # belongs to the next generation: stop without it (the next pass finds the truncation at the
            # position and reads the copy from there).  Checked after the read, so the read came before it.
            if offset == 0:
                head = data[:FINGERPRINT]
            elif not _fd_has_bytes(fd, offset - len(before), before):
                log.info("taildir: %s (inode %d) changed under the reader at %d (truncated?); looking again",
                         tf.path, tf.ino, offset)
                tf.seen = None
                return
            tf.head = head
            before = (before + data)[-FINGERPRINT:]
            if not data:                                     # the end of the file, for now
                read_end = base + len(buf)
                if final and buf:
                    bodies.append(buf)
                    starts.append(base)
                    end, tail = read_end, (tail + buf)[-FINGERPRINT:]
                if bodies:
                    yield self._batch(tf, bodies, starts), end, tail
                # Reached only when the caller asked for more after the last batch (i.e. committed it).
                tf.seen = (tf.size, tf.mtime) if read_end >= tf.size else None
                return
            tf.last_active = self.clock()
            data_off = base                                  # file offset of data[0]
            if buf:
                data = buf + data
            if b"\n" not in data:
                buf = data                                   # one line longer than READ_SIZE, so far
                continue
            lines, line_starts, buf, base = _split_lines(data, data_off)
            bodies += lines
            starts += line_starts
            while len(bodies) >= batch_size:
                end = starts[batch_size] if len(starts) > batch_size else base
                rel = end - data_off
                tail = data[max(0, rel - FINGERPRINT):rel]
                batch = self._batch(tf, bodies[:batch_size], starts[:batch_size])
                del bodies[:batch_size], starts[:batch_size]
                yield batch, end, tail
            if bodies:
                end, tail = base, data[max(0, base - data_off - FINGERPRINT):base - data_off]

    def _batch(self, tf: TailFile, bodies: list[bytes], starts: list[int]) -> Batch:
        prefix = f"{tf.prefix}{self._generation(tf)}:"
        ids = [f"{prefix}{start}" for start in starts]
        if not self.with_headers:
            return Batch(bodies, None, ids)
        const = tf.headers
        if self.byte_offset_header:
            headers = [{BYTE_OFFSET_HEADER: str(s), **const} for s in starts]
        else:
            headers = [const] * len(bodies)                  # one shared, never-mutated map
        return Batch(bodies, headers, ids)

    @staticmethod
    def _generation(tf: TailFile) -> str:
        """A hash of the file's first line, so that the lines written after a copy-truncate (or into a new file
        that got a freed inode) do not get the ids of the old lines at the same offsets.  Lines are emitted only
        once complete, so the first line no longer changes when this is first asked; it survives restarts."""
        if tf.generation is None:
            first = os.pread(tf.fd, GENERATION_BYTES, 0).split(b"\n", 1)[0]
            tf.generation = f"{zlib.crc32(first):08x}"
        return tf.generation

    def commit(self, tf: TailFile, end: int, tail: bytes) -> None:
        """The batch ending at ``end`` is in every required channel: move the position there."""
        tf.pos, tf.tail = end, tail
        self._journal(tf)

    def _journal(self, tf: TailFile) -> None:
        self.dirty = True
        if tf.state != GONE:
            self.store.record(tf.ino, tf.pos, tf.path)

    # -- idleness ------------------------------------------------------------------------------------------------
    def idle(self) -> list[TailFile]:
        """Open files without new bytes for ``idleTimeout``, and finished rotated files: to close (after a final
        round that emits a last line without newline) and, if they no longer match, to drop."""
        now = self.clock()
        return [f for f in self.files.values()
                if (f.fd is not None or f.state != MATCHED) and now - f.last_active >= self.idle_timeout_s]

    def retire(self, tf: TailFile) -> None:
        """Close an idle file; forget it if it no longer matches the pattern."""
        self.close(tf)
        if tf.state != MATCHED:
            log.info("taildir: done with %s (inode %d) at position %d", tf.path, tf.ino, tf.pos)
            self.drop(tf)

    # -- position file -----------------------------------------------------------------------------------------
    def entries(self) -> list[PositionEntry]:
        return [PositionEntry(f.ino, f.pos, f.path) for f in self.files.values() if f.state != GONE]

    def write_positions(self) -> None:
        self.store.write(self.entries())
        self.dirty = False

    def close_all(self) -> None:
        for tf in self.files.values():
            self.close(tf)
        self.store.close()


def _split_lines(data: bytes, offset: int) -> tuple[list[bytes], list[int], bytes, int]:
    """``data`` (read at file ``offset``, holding at least one newline) cut into its complete lines:
    ``(lines, their start offsets, the partial line after the last newline, that partial line's offset)``.
    ``\r\n`` ends a line too; a lone ``\r`` does not."""
    lines = data.split(b"\n")
    rest = lines.pop()
    starts = list(accumulate(map((1).__add__, map(len, lines)), initial=offset))
    rest_offset = starts.pop()
    if b"\r" in data:
        lines = [line[:-1] if line[-1:] == b"\r" else line for line in lines]
    return lines, starts, rest, rest_offset


def _fd_has_bytes(fd: int, offset: int, expected: bytes) -> bool:
    try:
        return os.pread(fd, len(expected), offset) == expected
    except OSError:
        return False


def _unlinked(fd: int) -> bool:
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return True


def _has_bytes(path: str, offset: int, expected: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(len(expected)) == expected
    except OSError:
        return False


def _default_max_open() -> int:
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ValueError, OSError):
        soft = 1024
    return max(32, min(soft // 2, 4096) if soft > 0 else 512)
