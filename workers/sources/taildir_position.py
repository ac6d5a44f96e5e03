"""TAILDIR's position file, byte-compatible with Flume's, plus Flumery's commit journal beside it.

The position file is what Flume's TaildirSource writes with ``new Gson().toJson(...)``: a JSON array with no
white space, one object per tracked file with the keys in the order ``inode``, ``pos``, ``file``::

    [{"inode":2496272,"pos":12,"file":"/var/log/test1/example.log"}]

Gson escapes ``< > & = '`` (and U+2028/U+2029) as ``\\u003c`` ..., which :func:`to_json` does too, so a file
written by Flumery is the one Flume would have written and a file written by Flume loads unchanged.  Flumery
replaces it atomically (temporary file, fsync, rename, fsync of the directory) where Flume truncates and
rewrites it in place, so a crash never leaves a torn position file.

The journal (``<positionFile>.flumery-journal``) closes the gap between two rewrites: after every commit (a
batch confirmed in every required channel) one line ``{"inode":..,"pos":..,"file":..}`` is appended to it with a
plain ``write``.  That survives the process being killed (it is in the kernel's page cache at once), so a restart
after ``kill -9`` resumes at the last commit and re-reads at most the batch that was not yet committed, instead of
everything since the last rewrite (up to ``writePosInterval``).  The journal is fsynced with the position file
and emptied after each rewrite; Flume ignores it.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from core.files import write_atomically

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".flumery-journal"

# Gson's default (HTML-safe) escaping beyond what json.dumps(ensure_ascii=False) already does.
_GSON_EXTRA = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "=": "\\u003d", "'": "\\u0027",
               "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GSON_TABLE = str.maketrans(_GSON_EXTRA)


@dataclass(frozen=True)
class PositionEntry:
    inode: int
    pos: int
    file: str


def to_json(entries) -> bytes:
    """The position file's bytes for ``entries`` (iterable of PositionEntry), exactly as Flume's Gson writes."""
    items = ",".join('{"inode":%d,"pos":%d,"file":%s}' % (e.inode, e.pos, _gson_string(e.file)) for e in entries)
    return ("[" + items + "]").encode("utf-8", "surrogateescape")


def _gson_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).translate(_GSON_TABLE)


def parse(data: bytes) -> list[PositionEntry]:
    """The entries of a position file; raises ValueError if it is not a Flume position file.

    Flume leaves the file empty when nothing is tracked; that is an empty list.
    """
    text = data.decode("utf-8", "surrogateescape").strip()
    if not text:
        return []
    raw = json.loads(text)
    if not isinstance(raw, list):
        raise ValueError("expected a JSON array")
    return [_entry(item) for item in raw]


def _entry(item) -> PositionEntry:
    if not isinstance(item, dict):
        raise ValueError(f"expected objects with inode, pos and file (got {item!r:.80})")
    inode, pos, path = item.get("inode"), item.get("pos"), item.get("file")
    if type(inode) is not int or type(pos) is not int or not isinstance(path, str) or pos < 0:
        raise ValueError(f"expected integer inode and pos >= 0 and a file path (got {item!r:.120})")
    return PositionEntry(inode, pos, path)


class PositionStore:
    """Reads and writes one position file and its journal.  Used from one thread."""

    def __init__(self, path: str):
        self.path = os.path.abspath(os.path.expanduser(path))
        self.journal_path = self.path + JOURNAL_SUFFIX
        self._journal_fd: int | None = None

    # -- loading ----------------------------------------------------------------------------------------------
    def load(self) -> dict[tuple[int, str], int]:
        """``{(inode, path): pos}`` from the position file, then the journal's later commits on top."""
        positions: dict[tuple[int, str], int] = {}
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            log.info("taildir: no position file %s yet; files start at their beginning (or end with skipToEnd)",
                     self.path)
            data = b""
        except OSError as exc:
            log.error("taildir: cannot read position file %s (%s); starting without positions", self.path, exc)
            data = b""
        try:
            for e in parse(data):
                positions[(e.inode, e.file)] = e.pos
        except ValueError as exc:     # Flume logs and starts without positions, too
            log.error("taildir: position file %s is not a Flume position file (%s); starting without positions",
                      self.path, exc)
        for e in self._journal_entries():
            positions[(e.inode, e.file)] = e.pos
        return positions

    def _journal_entries(self) -> list[PositionEntry]:
        try:
            with open(self.journal_path, "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error("taildir: cannot read journal %s: %s", self.journal_path, exc)
            return []
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                out.append(_entry(json.loads(line.decode("utf-8", "surrogateescape"))))
            except ValueError:        # a torn last line (power loss): the commits before it still count
                log.warning("taildir: ignoring a damaged line of %s", self.journal_path)
        return out

    # -- writing ----------------------------------------------------------------------------------------------
    def record(self, inode: int, pos: int, path: str) -> None:
        """Journal one commit (no fsync: it must survive a killed process, not a power cut)."""
        if self._journal_fd is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._journal_fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                                       0o644)
        line = '{"inode":%d,"pos":%d,"file":%s}\n' % (inode, pos, _gson_string(path))
        os.write(self._journal_fd, line.encode("utf-8", "surrogateescape"))

    def write(self, entries) -> None:
        """Replace the position file atomically with ``entries``, then empty the journal."""
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        write_atomically(self.path, to_json(entries), tmp=f"{self.path}.tmp{os.getpid()}")
        if self._journal_fd is not None:
            os.ftruncate(self._journal_fd, 0)
        elif os.path.exists(self.journal_path):
            os.truncate(self.journal_path, 0)

    def remove_journal(self) -> None:
        """After a final :meth:`write` (a clean stop) the journal holds nothing: remove it."""
        self.close()
        try:
            os.unlink(self.journal_path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

