"""``TAILDIR``: Flume's TaildirSource, new lines of the files matching each file group, at least once.

Each ``filegroups.<g>`` is a path whose directory part is literal and whose file-name part is a (Java) regex that
the whole name must match, e.g. ``/var/log/app/.*\\.log``.  Every matching file is read from its position to its
last complete line (``\\n`` or ``\\r\\n`` ends a line, a lone ``\\r`` does not); a last line without newline is held
back until it is completed, or until the file has been idle for ``idleTimeout`` ms, when Flume emits it as it is.
Lines go out in batches of ``batchSize``, at most ``maxBatchCount`` batches per file before the next file gets its
turn.  When no file has new lines the source sleeps ``backoffSleepIncrement`` ms more each time, up to
``maxBackoffSleep`` (as Flume's PollableSourceRunner), and wakes at once when stopped.

Delivery: a file's position moves only after its batch is in every required channel, and every commit is
journalled at once beside the position file, so a killed agent re-reads at most the batch that was being put.
The position file itself is Flume's, byte for byte (``[{"inode":..,"pos":..,"file":".."}]``), replaced atomically
every ``writePosInterval`` ms and on stop; a Flume agent's position file is taken over as it is.  Every event's
id is ``<device>:<inode>:<line start offset>``, the same for the same line across restarts and rotations, so a
keyed store turns the re-read batch into an overwrite.

Unlike Flume, files are identified by device and inode, not by inode and path: rotation by renaming (even to a
name outside the pattern) loses and repeats nothing, and so does copy-truncate, within the limits any reader of a
truncated file has; see :mod:`workers.sources.taildir_reader`.
A group directory that does not exist yet is watched for (Flume refuses to start); relative paths are taken from
the agent's working directory, as Flume's ``java.io.File`` does.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass

from core import counters as names
from core import java_regex
from core.options import opt, positive
from core.registry import did_you_mean
from workers.sources.base import Source
from workers.sources.taildir_position import PositionStore
from workers.sources.taildir_reader import FileGroup, TaildirReader

log = logging.getLogger(__name__)

LONG_MAX = 9223372036854775807
_REGEX_CHARS = re.compile(r"[*?+\[\](){}|^$\\]")


def _groups_listed(names: list[str]) -> str | None:
    return None if names else "must name at least one file group"


def _split_group_path(path: str) -> tuple[str, str]:
    directory, _, name = path.rpartition("/")
    return (directory or "/") if path.startswith("/") or directory else ".", name


@dataclass(frozen=True)
class TaildirConfig:
    filegroups: list[str] = opt("filegroups", check=_groups_listed,
                                doc="file group names, separated by spaces")
    paths: dict = opt("filegroups.*", doc="filegroups.<g> = directory/regex: files whose whole name matches")
    position_file: str = opt("positionFile", "~/.flume/taildir_position.json",
                             doc="JSON file of each file's inode and position (Flume's format)")
    headers: dict = opt("headers.*", doc="headers.<g>.<key> = value: a header for the events of group <g>")
    file_header: bool = opt("fileHeader", False, doc="add the file's absolute path as a header")
    file_header_key: str = opt("fileHeaderKey", "file", doc="the header that receives the path")
    byte_offset_header: bool = opt("byteOffsetHeader", False,
                                   doc="add the line's start offset as header 'byteoffset'")
    skip_to_end: bool = opt("skipToEnd", False,
                            doc="files found at start without a position start at their end")
    idle_timeout_ms: int = opt("idleTimeout", 120000, check=positive,
                               doc="ms without new bytes before a file is closed (its last line emitted)")
    write_pos_interval_ms: int = opt("writePosInterval", 3000, check=positive,
                                     doc="ms between two rewrites of the position file")
    batch_size: int = opt("batchSize", 100, check=positive, doc="lines per put")
    max_batch_count: int = opt("maxBatchCount", LONG_MAX, check=positive,
                               doc="batches from one file before the next file's turn")
    backoff_sleep_increment_ms: int = opt("backoffSleepIncrement", 1000, check=positive,
                                          doc="ms added to the pause after each poll that found nothing")
    max_backoff_sleep_ms: int = opt("maxBackoffSleep", 5000, check=positive, doc="longest pause between polls")
    cache_pattern_matching: bool = opt("cachePatternMatching", True,
                                       doc="list a directory again only when it changed")

    def problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        listed = list(dict.fromkeys(self.filegroups))
        for group in listed:
            if group not in self.paths:
                problems.append((f"filegroups.{group}", f"required property is missing (the path of file group "
                                 f"'{group}', listed in filegroups)"))
        for group, path in sorted(self.paths.items()):
            if group not in listed:
                problems.append((f"filegroups.{group}", f"file group '{group}' is not listed in filegroups "
                                 f"({' '.join(listed)})" + did_you_mean(group, listed) + f" (got '{path}')"))
                continue
            problems += [(f"filegroups.{group}", p) for p in _path_problems(path)]
        for key, value in sorted(self.headers.items()):
            group, dot, header = key.partition(".")
            if not dot or not header:
                problems.append((f"headers.{key}", f"expected headers.<filegroup>.<header> (got '{value}')"))
            elif group not in listed:
                problems.append((f"headers.{key}", f"file group '{group}' is not listed in filegroups "
                                 f"({' '.join(listed)})" + did_you_mean(group, listed) + f" (got '{value}')"))
        return problems

    def file_groups(self) -> list[FileGroup]:
        out = []
        for group in dict.fromkeys(self.filegroups):
            directory, name = _split_group_path(self.paths[group])
            headers = {k.partition(".")[2]: v for k, v in self.headers.items() if k.partition(".")[0] == group}
            out.append(FileGroup(group, os.path.abspath(directory), java_regex.compile_java(name), headers,
                                 self.cache_pattern_matching))
        return out


def _path_problems(path: str) -> list[str]:
    directory, name = _split_group_path(path)
    if not name:
        return [f"the file-name part (a regex) is missing after the last '/' (got '{path}')"]
    problem = java_regex.check(name)
    if problem:
        return [f"{problem}, in the file-name part '{name}' (got '{path}')"]
    if _REGEX_CHARS.search(directory) and not os.path.isdir(directory):
        return [f"the directory part is a literal path, only the file name is a regex, and directory "
                f"'{directory}' does not exist (got '{path}')"]
    return []


class TaildirSource(Source):
    Config = TaildirConfig

    @classmethod
    def check(cls, config, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        return config.problems()

    def open(self) -> None:
        config = self.config
        store = PositionStore(config.position_file)
        os.makedirs(os.path.dirname(store.path), exist_ok=True)     # fails the start if it cannot be made
        self.reader = TaildirReader(
            config.file_groups(), store, file_header=config.file_header, file_header_key=config.file_header_key,
            byte_offset_header=config.byte_offset_header, skip_to_end=config.skip_to_end,
            idle_timeout_s=config.idle_timeout_ms / 1000)
        self.reader.start()
        self.reader.write_positions()
        self._next_write = time.monotonic() + config.write_pos_interval_ms / 1000
        log.info("taildir source %s: %d files tracked, positions in %s", self.name, len(self.reader.files),
                 store.path)

    def serve(self) -> None:
        config = self.config
        idle_every = min(1.0, config.idle_timeout_ms / 2000)
        next_idle = time.monotonic() + idle_every
        backoffs = 0
        try:
            while not self.stopping.is_set():
                self.reader.scan()
                got = self._round()
                if got is None:
                    return
                now = time.monotonic()
                if now >= next_idle:
                    if self._close_idle() is None:
                        return
                    next_idle = now + idle_every
                self._maybe_write_positions()
                if got:
                    backoffs = 0
                    continue
                backoffs += 1
                self.stopping.wait(min(backoffs * config.backoff_sleep_increment_ms,
                                       config.max_backoff_sleep_ms) / 1000)
        finally:
            try:
                self.reader.write_positions()
                self.reader.store.remove_journal()
            except OSError as exc:
                log.error("taildir source %s: cannot write position file %s: %s", self.name,
                          self.reader.store.path, exc)
            self.reader.close_all()

    def _round(self) -> bool | None:
        """One turn over the files with new bytes; True if lines were put, None if stopped meanwhile."""
        got = False
        for tf in self.reader.pending():
            if self.stopping.is_set():
                return None
            sent = self._tail(tf, self.config.max_batch_count)
            if sent is None:
                return None
            got = got or sent > 0
        return got

    def _tail(self, tf, max_batches: int, final: bool = False) -> int | None:
        """Put up to ``max_batches`` batches of ``tf``; the number put, or None if stopped meanwhile."""
        sent = 0
        try:
            for batch, end, tail in self.reader.batches(tf, self.config.batch_size, final):
                if not self.deliver(batch):
                    return None
                self.reader.commit(tf, end, tail)
                self._maybe_write_positions()
                sent += 1
                if self.stopping.is_set():
                    return None
                if sent >= max_batches:
                    break
        except OSError as exc:
            names.fail(self.counters, names.EVENT_READ_FAIL, log, logging.WARNING, "taildir source %s: cannot read %s: %s",
                               self.name, tf.path, exc)
            self.reader.close(tf)
        return sent

    def _close_idle(self) -> bool | None:
        for tf in self.reader.idle():
            if self._tail(tf, LONG_MAX, final=True) is None:
                return None
            self.reader.retire(tf)
            log.debug("taildir source %s: closed idle file %s at %d", self.name, tf.path, tf.pos)
        return True

    def _maybe_write_positions(self) -> None:
        now = time.monotonic()
        if now < self._next_write:
            return
        self._next_write = now + self.config.write_pos_interval_ms / 1000
        if not self.reader.dirty:
            return
        try:
            self.reader.write_positions()
        except OSError as exc:
            log.error("taildir source %s: cannot write position file %s: %s", self.name, self.reader.store.path,
                      exc)
