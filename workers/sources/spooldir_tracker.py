"""The bookkeeping of the ``spooldir`` source: which files to read, in what order, how far each was read, and
marking a file done.

Files to read (:meth:`SpoolTracker.scan`): regular files of ``spoolDir`` (and of its subdirectories with
``recursiveDirectorySearch``) whose name fully matches ``includePattern`` and not ``ignorePattern`` (ignore wins),
does not start with ``.`` and does not end with ``fileSuffix``; subdirectories that are hidden, match
``ignorePattern`` or are the ``trackerDir`` are not entered, nor symbolic links to directories.  With
``trackingPolicy = tracker_dir``, files that have a tracker file are done.  Order: ``oldest`` or ``youngest`` by
modification time, ties by path; ``random``.

Progress (:meth:`load_progress`, :meth:`save_progress`): while a file is being read, a small JSON record in
``trackerDir`` (``.flumery-progress-<hash of the path>.json``) holds the file's identity when it was picked up
(device, inode, size, modification time in ns) and the byte offset after the last committed batch.  It is
replaced atomically (written to a temporary file, fsynced, renamed over) after every committed batch, and removed
once the file is done.  A restart resumes at that offset, provided the file is still the one that was picked up
(same inode, size and modification time; the device number is not compared, since it may change across reboots,
but the recorded one keeps being used for event ids).  Flume keeps one such record
(``.flumespool-main.meta``) for the file it reads.

Done (:meth:`complete`): ``deletePolicy = immediate`` deletes the file; else ``trackingPolicy = rename`` renames it
with ``fileSuffix``, and ``tracker_dir`` writes ``<trackerDir>/<path relative to spoolDir><fileSuffix>`` (Flume
writes an empty file; here it holds the file's identity, so that a different file given the same name later is
told apart; an empty tracker file, as Flume leaves, still means done).  The directory is fsynced after each of
these.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import stat
from dataclasses import dataclass
from typing import NamedTuple

from core.files import fsync_dir, write_atomically

META_PREFIX = ".flumery-progress-"
META_SUFFIX = ".json"


class FileId(NamedTuple):
    """What identifies a spooled file and tells whether it changed."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "FileId":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def same(self, other: "FileId") -> bool:
        """The same file with the same content, as far as can be told (the device number is not compared)."""
        return (self.ino, self.size, self.mtime_ns) == (other.ino, other.size, other.mtime_ns)

    def changes(self, now: "FileId") -> str:
        """What differs from ``self`` to ``now``, in words."""
        if now.ino != self.ino:
            return f"it was replaced by another file (inode {self.ino} -> {now.ino})"
        what = []
        if now.size != self.size:
            what.append(f"its size changed from {self.size} to {now.size} bytes")
        if now.mtime_ns != self.mtime_ns:
            what.append("its modification time changed")
        return " and ".join(what) or "nothing"


@dataclass(frozen=True)
class Candidate:
    rel: str             # path relative to spoolDir, with '/'
    path: str            # spoolDir/rel
    fid: FileId


class SetupError(Exception):
    """The spooling or tracker directory cannot be used (yet); the message says why."""


class FileProblem(Exception):
    """A file breaks the spooling directory's rules (it changed, or its name was used before)."""


class SpoolTracker:
    def __init__(self, spool_dir: str, *, tracker_dir: str = ".flumespool", file_suffix: str = ".COMPLETED",
                 tracking_policy: str = "rename", delete_policy: str = "never",
                 include: re.Pattern | None = None, ignore: re.Pattern | None = None,
                 recursive: bool = False, consume_order: str = "oldest", rng: random.Random | None = None):
        self.spool_dir = os.path.abspath(spool_dir)
        self.tracker_dir = (tracker_dir if os.path.isabs(tracker_dir)
                            else os.path.join(self.spool_dir, tracker_dir))
        self.suffix = file_suffix
        self.delete = delete_policy.lower() == "immediate"
        self.tracker_policy = not self.delete and tracking_policy.lower() == "tracker_dir"
        self.include = include or re.compile(r"^.*$")
        self.ignore = ignore or re.compile(r"^$")
        self.recursive = recursive
        self.order = consume_order.lower()
        self.rng = rng or random.Random()
        self._tracker_key: tuple[int, int] | None = None
        self._markers: dict[str, tuple[tuple, FileId, bool]] = {}    # rel -> (marker stat, file id, done?)

    # -- start-up ----------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check the directories, create the tracker directory, drop stale progress records.  Raises
        :class:`SetupError`."""
        spool = self.spool_dir
        if not os.path.isdir(spool):
            raise SetupError(f"spoolDir '{spool}' does not exist or is not a directory")
        writes = self.delete or not self.tracker_policy
        need = os.R_OK | os.X_OK | (os.W_OK if writes else 0)
        if not os.access(spool, need):
            what = ("read and write (to rename or delete files)" if writes else "read")
            raise SetupError(f"spoolDir '{spool}': no permission to {what} it"
                             + ("; trackingPolicy = tracker_dir needs only read access" if writes else ""))
        try:
            os.makedirs(self.tracker_dir, exist_ok=True)
        except OSError as exc:
            raise SetupError(f"trackerDir '{self.tracker_dir}' cannot be created: {exc.strerror}"
                             "; give trackerDir a writable directory") from None
        if not os.path.isdir(self.tracker_dir) or not os.access(self.tracker_dir, os.W_OK | os.X_OK):
            raise SetupError(f"trackerDir '{self.tracker_dir}' is not a writable directory")
        st = os.stat(self.tracker_dir)
        self._tracker_key = (st.st_dev, st.st_ino)
        self.collect_garbage()

    def collect_garbage(self) -> None:
        """Remove progress records of files that are gone or done (a crash between done and removing it)."""
        with os.scandir(self.tracker_dir) as entries:
            metas = [e.path for e in entries if e.name.startswith(META_PREFIX)]
        for meta in metas:
            if meta.endswith(".tmp"):
                _remove(meta)
                continue
            record = _read_json(meta)
            rel = record.get("path") if isinstance(record, dict) else None
            if not isinstance(rel, str) or not os.path.exists(os.path.join(self.spool_dir, rel)):
                _remove(meta)
            elif self.tracker_policy and os.path.exists(self.marker_path(rel)):
                try:
                    fid = FileId.of(os.stat(os.path.join(self.spool_dir, rel)))
                except OSError:
                    continue
                if self._marker_verdict(rel, fid) is True:
                    _remove(meta)

    # -- which files ---------------------------------------------------------------------------------------------
    def scan(self) -> list[Candidate]:
        """The files to read, in consumeOrder.  Raises OSError if spoolDir cannot be listed."""
        found: list[Candidate] = []
        self._walk(self.spool_dir, "", found, top=True)
        if self.order == "random":
            self.rng.shuffle(found)
        elif self.order == "youngest":
            found.sort(key=lambda c: (-c.fid.mtime_ns, c.rel))
        else:
            found.sort(key=lambda c: (c.fid.mtime_ns, c.rel))
        return found

    def _walk(self, directory: str, prefix: str, found: list[Candidate], top: bool = False) -> None:
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError:
            if top:
                raise
            return
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if self.recursive and not self.ignore.fullmatch(name) and not self._is_tracker_dir(entry):
                        self._walk(entry.path, f"{prefix}{name}/", found)
                    continue
                if (name.endswith(self.suffix) or not self.include.fullmatch(name)
                        or self.ignore.fullmatch(name)):
                    continue
                st = entry.stat()
            except OSError:
                continue                               # gone meanwhile, or a dangling link
            if not stat.S_ISREG(st.st_mode):
                continue
            candidate = Candidate(prefix + name, entry.path, FileId.of(st))
            if self.tracker_policy and self._marker_verdict(candidate.rel, candidate.fid) is True:
                continue
            found.append(candidate)

    def _is_tracker_dir(self, entry: os.DirEntry) -> bool:
        st = entry.stat(follow_symlinks=False)
        return (st.st_dev, st.st_ino) == self._tracker_key

    # -- tracker files (trackingPolicy = tracker_dir) --------------------------------------------------------------
    def marker_path(self, rel: str) -> str:
        return os.path.join(self.tracker_dir, rel + self.suffix)

    def _marker_verdict(self, rel: str, fid: FileId) -> bool | None:
        """True: the tracker file says this file is done; False: it records another file of the same name;
        None: no tracker file."""
        try:
            mst = os.stat(self.marker_path(rel))
        except OSError:
            self._markers.pop(rel, None)
            return None
        key = (mst.st_ino, mst.st_size, mst.st_mtime_ns)
        cached = self._markers.get(rel)
        if cached and cached[0] == key and cached[1] == fid:
            return cached[2]
        record = _read_json(self.marker_path(rel)) if mst.st_size else None
        if isinstance(record, dict) and all(isinstance(record.get(k), int) for k in ("ino", "size", "mtime_ns")):
            done = fid.same(FileId(record.get("dev", 0), record["ino"], record["size"], record["mtime_ns"]))
        else:
            done = True                                # Flume's empty tracker file: done, whatever the file
        self._markers[rel] = (key, fid, done)
        return done

    def name_conflict(self, candidate: Candidate) -> str | None:
        """Why the file must not be read because a file of the same name was done before, or None."""
        if self.delete:
            return None
        if self.tracker_policy:
            if self._marker_verdict(candidate.rel, candidate.fid) is False:
                return (f"a file of the same name was already completed (tracker file "
                        f"'{self.marker_path(candidate.rel)}' records another file)")
            return None
        done = candidate.path + self.suffix
        if os.path.lexists(done):
            return f"a file of the same name was already completed ('{done}' exists)"
        return None

    # -- progress ------------------------------------------------------------------------------------------------
    def meta_path(self, rel: str) -> str:
        digest = hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        return os.path.join(self.tracker_dir, f"{META_PREFIX}{digest}{META_SUFFIX}")

    def load_progress(self, candidate: Candidate) -> tuple[int, int]:
        """(offset to resume at, device number for event ids).  Raises :class:`FileProblem` if the file is not
        the one whose reading was begun."""
        record = _read_json(self.meta_path(candidate.rel))
        if not isinstance(record, dict) or record.get("path") != candidate.rel:
            return 0, candidate.fid.dev
        try:
            then = FileId(int(record["dev"]), int(record["ino"]), int(record["size"]), int(record["mtime_ns"]))
            offset = int(record["offset"])
        except (KeyError, TypeError, ValueError):
            return 0, candidate.fid.dev
        if not then.same(candidate.fid):
            raise FileProblem(f"{then.changes(candidate.fid)} after Flumery began reading it; its first {offset} "
                              f"bytes were delivered")
        if not 0 <= offset <= then.size:
            return 0, candidate.fid.dev
        return offset, then.dev

    def save_progress(self, candidate: Candidate, dev: int, offset: int) -> None:
        """Record durably that the file was delivered up to ``offset``."""
        fid = candidate.fid
        record = {"path": candidate.rel, "dev": dev, "ino": fid.ino, "size": fid.size,
                  "mtime_ns": fid.mtime_ns, "offset": offset}
        # No directory fsync per batch: a rename lost in a crash only means resuming from an earlier record.
        write_atomically(self.meta_path(candidate.rel), json.dumps(record).encode(), sync_dir=False)

    def drop_progress(self, rel: str) -> None:
        _remove(self.meta_path(rel))

    # -- done ----------------------------------------------------------------------------------------------------
    def complete(self, candidate: Candidate) -> str:
        """Mark the file done by the policies; returns what was done, for the log.  Raises :class:`FileProblem`
        or OSError (the file is then not done)."""
        path = candidate.path
        try:
            now = FileId.of(os.stat(path))
        except FileNotFoundError:
            raise FileProblem("it was removed or renamed before it could be marked done") from None
        if not candidate.fid.same(now):
            raise FileProblem(f"{candidate.fid.changes(now)} while it was being read")
        if self.delete:
            os.remove(path)
            fsync_dir(os.path.dirname(path))
            action = "deleted"
        elif self.tracker_policy:
            marker = self.marker_path(candidate.rel)
            if self._marker_verdict(candidate.rel, candidate.fid) is False:
                raise FileProblem(f"a file of the same name was already completed (tracker file '{marker}')")
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            record = {"path": candidate.rel, "dev": now.dev, "ino": now.ino, "size": now.size,
                      "mtime_ns": now.mtime_ns}
            write_atomically(marker, json.dumps(record).encode())
            action = f"recorded as done in '{marker}'"
        else:
            done = path + self.suffix
            if os.path.lexists(done):
                raise FileProblem(f"a file of the same name was already completed ('{done}' exists)")
            os.rename(path, done)
            fsync_dir(os.path.dirname(path))
            action = f"renamed to '{done}'"
        self.drop_progress(candidate.rel)
        return action


# --- small file helpers ---------------------------------------------------------------------------------------

def _read_json(path: str):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
