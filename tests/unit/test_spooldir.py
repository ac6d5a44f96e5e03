"""The spooldir source: its deserializers and bookkeeping (unit tests), the source against a recording channel
processor (no broker), and its configuration.  End to end: e2e/test_spooldir_agent.py."""
from __future__ import annotations

import glob
import json
import os
import random
import re
import time
from pathlib import Path

import pytest
from agents import wait_until
from conftest import FakeCounters
from helpers import ReportingThread, record_waits

from core.config import parse_agent
from core.errors import ChannelFullError, ConfigInvalid
from workers.sources import spooldir_reader
from workers.sources.base import SourceContext
from workers.sources.spooldir import SpoolDirectorySource
from workers.sources.spooldir_reader import (
    BlobDeserializer,
    LineDeserializer,
    ReadProblem,
    Undecodable,
    newline_is_0x0a,
    units16,
)
from workers.sources.spooldir_tracker import META_PREFIX, FileProblem, SetupError, SpoolTracker

ROOT = os.geteuid() == 0


# --- helpers ----------------------------------------------------------------------------------------------------

def drop(directory: Path, name: str, data: bytes | str, mtime: float | None = None) -> Path:
    """Put a file into a spooling directory the way it must be done: written elsewhere, then renamed in."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.part"            # hidden: the source never reads it
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, path)
    return path


def read_file(data: bytes, tmp_path: Path, n: int = 3, start: int = 0, **kw):
    """(bodies, starts, batch ends, problem) of reading ``data`` with the LINE deserializer."""
    path = tmp_path / f"in-{random.random()}"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    bodies, starts, ends, problem = [], [], [], None
    try:
        reader = LineDeserializer(fd, start, len(data), **kw)
        while True:
            piece = reader.read(n)
            if piece is None:
                break
            assert 0 < len(piece.bodies) <= n
            bodies += piece.bodies
            starts += piece.starts
            ends.append(piece.end)
    except ReadProblem as exc:
        problem = exc
    finally:
        os.close(fd)
    return bodies, starts, ends, problem


def flume_lines(text: str, max_length: int) -> list[str]:
    """Flume's LineDeserializer.readLine, transcribed: a character at a time, cut at maxLineLength."""
    out, i, n = [], 0, len(text)
    while True:
        sb, read = [], 0
        while i < n:
            c = text[i]
            i += 1
            read += 1
            if c == "\n":
                break
            sb.append(c)
            if read >= max_length:
                break
        if read == 0:
            return out
        out.append("".join(sb))


class Crash(BaseException):
    """Stands for a kill -9: nothing after it runs."""


class Processor:
    """A channel processor that records the batches it accepts; ``full`` refuses puts; ``hook`` runs on each."""

    def __init__(self):
        self.batches = []
        self.full = False
        self.attempts = 0
        self.hook = None

    def process(self, batch) -> None:
        self.attempts += 1
        if self.full:
            raise ChannelFullError("c1", 10, 10, len(batch))
        self.batches.append(batch)
        if self.hook:
            self.hook(self, batch)

    def bodies(self) -> list[bytes]:
        return [b for batch in self.batches for b in batch.bodies]


SOURCE_CONF = """
a1.sources = r1
a1.channels = c1
a1.sources.r1.type = spooldir
a1.sources.r1.channels = c1
a1.sources.r1.spoolDir = {spool}
a1.channels.c1.type = memory
a1.channels.c1.capacity = 100000
a1.channels.c1.transactionCapacity = 10000
"""


def make_source(spool: Path, processor: Processor | None = None, **props) -> SpoolDirectorySource:
    """A spooldir source built from agent-file text (so its configuration is validated), not started."""
    text = SOURCE_CONF.format(spool=spool) + "".join(f"a1.sources.r1.{k} = {v}\n" for k, v in props.items())
    spec = parse_agent(text, "a1").sources["r1"]
    source = spec.cls("r1", spec.config, SourceContext("a1", processor or Processor(), FakeCounters()))
    source.tracker.prepare()
    return source


def lines(n: int, prefix: str = "line") -> bytes:
    return "".join(f"{prefix}-{i:05d}\n" for i in range(n)).encode()


def metas(tracker_dir: Path) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in sorted(glob.glob(str(tracker_dir / f"{META_PREFIX}*.json")))]


# --- the LINE deserializer ----------------------------------------------------------------------------------------

def test_lines_keep_carriage_returns_empty_lines_and_a_last_line_without_newline(tmp_path):
    bodies, starts, ends, problem = read_file(b"abc\r\ndef\n\nlast", tmp_path)
    assert bodies == [b"abc\r", b"def", b"", b"last"]       # Flume: "FIXME: support \r\n" -- the \r stays
    assert starts == [0, 5, 9, 10]
    assert ends == [10, 14] and problem is None


def test_max_line_length_splits_long_lines_as_flume_does(tmp_path):
    # Flume's TestLineDeserializer.testMaxLineLength: 26 letters, maxLineLength 10.
    bodies, starts, _, _ = read_file(b"abcdefghijklmnopqrstuvwxyz\n", tmp_path, max_line_length=10)
    assert bodies == [b"abcdefghij", b"klmnopqrst", b"uvwxyz"] and starts == [0, 10, 20]
    # A line of exactly maxLineLength characters is followed by an empty event (its newline read on its own).
    bodies, starts, _, _ = read_file(b"abcdefghij\n0123456789012345678\n0123456789", tmp_path, max_line_length=10)
    assert bodies == [b"abcdefghij", b"", b"0123456789", b"012345678", b"0123456789"]
    assert starts == [0, 10, 11, 21, 31]
    # ... but not at the end of the file.
    assert read_file(b"abcdefghij", tmp_path, max_line_length=10)[0] == [b"abcdefghij"]
    assert read_file(b"abc\n", tmp_path, max_line_length=3)[0] == [b"abc", b""]
    assert read_file(b"abc\n", tmp_path, max_line_length=4)[0] == [b"abc"]


def test_max_line_length_counts_characters_not_bytes(tmp_path):
    text = "é中" * 6 + "\n"                               # 12 characters, 30 bytes of UTF-8
    bodies, starts, _, _ = read_file(text.encode(), tmp_path, max_line_length=5)
    assert [b.decode() for b in bodies] == ["é中é中é", "中é中é中", "é中"]
    assert starts == [0, 12, 25]
    # Java counts UTF-16 units: an emoji counts 2.  It is never cut in two (Flume would write two '?').
    bodies, _, _, _ = read_file("abcd😀ef\n".encode(), tmp_path, max_line_length=5)
    assert [b.decode() for b in bodies] == ["abcd", "😀ef"]
    assert units16("a😀é") == 4


def test_events_offsets_and_resume_match_flume_on_random_text(tmp_path):
    rnd = random.Random(7)
    alphabet = ["a", "b", "\n", "é", "中", "\r", " "]
    for _ in range(400):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 300)))
        charset = rnd.choice(["UTF-8", "UTF-8", "GBK", "ISO-8859-1"])
        if charset == "ISO-8859-1":
            text = text.replace("中", "x")
        data = text.encode(charset)
        limit, size, n = rnd.randint(1, 15), rnd.randint(1, 40), rnd.randint(1, 7)
        bodies, starts, ends, problem = read_file(data, tmp_path, n, max_line_length=limit, read_size=size,
                                                  input_charset=charset)
        assert problem is None
        assert [b.decode() for b in bodies] == flume_lines(text, limit)
        for body, start, stop in zip(bodies, starts, starts[1:] + [len(data)]):     # each offset is exact
            assert data[start:stop].decode(charset) in (body.decode(), body.decode() + "\n")
        assert ends[-1:] in ([], [len(data)]) and all(e in starts or e == len(data) for e in ends)
        if ends:                                          # resuming at a committed batch end reads the rest
            end = rnd.choice(ends)
            rest = read_file(data, tmp_path, n, start=end, max_line_length=limit, read_size=size,
                             input_charset=charset)[0]
            assert rest == bodies[starts.index(end) if end in starts else len(bodies):]


def test_replace_and_ignore_match_flume_on_random_bad_bytes(tmp_path):
    rnd = random.Random(11)
    for _ in range(400):
        parts = []
        for _ in range(rnd.randint(0, 200)):
            if rnd.random() < 0.15:
                parts.append(rnd.choice([b"\xff", b"\xc3", b"\xe4\xb8", b"\x80", b"\xed\xa0\x80"]))
            else:
                parts.append(rnd.choice(["a", "\n", "é", "中", " "]).encode())
        data = b"".join(parts)
        policy = rnd.choice(["REPLACE", "IGNORE"])
        limit = rnd.randint(1, 12)
        bodies, _, _, problem = read_file(data, tmp_path, rnd.randint(1, 5), max_line_length=limit,
                                          read_size=rnd.randint(1, 30), decode_error_policy=policy)
        assert problem is None
        text = data.decode("utf-8", "replace" if policy == "REPLACE" else "ignore")
        assert [b.decode() for b in bodies] == flume_lines(text, limit)


def test_decode_fail_hands_out_the_events_before_the_bad_line_then_stops(tmp_path):
    data = b"ok 1\nok 2\nbad \xff\xfe here\nnever\n"
    bodies, starts, ends, problem = read_file(data, tmp_path, n=10)
    assert bodies == [b"ok 1", b"ok 2"] and ends == [10]
    assert isinstance(problem, Undecodable)
    assert problem.offset == 10 and problem.bad_offset == 14
    assert "offset 14" in str(problem) and "FAIL" in str(problem)
    # Inside a line longer than maxLineLength: the chunks before the bad one were handed out.
    bodies, _, _, problem = read_file(b"abcdef\xffghijk\n", tmp_path, max_line_length=4)
    assert bodies == [b"abcd"] and problem.offset == 4 and problem.bad_offset == 6


def test_replace_and_ignore(tmp_path):
    data = b"ok\nbad\xff\xfe here\nnext"
    assert read_file(data, tmp_path, decode_error_policy="REPLACE")[0] == [
        b"ok", "bad\ufffd\ufffd here".encode(), b"next"]
    assert read_file(data, tmp_path, decode_error_policy="IGNORE")[0] == [b"ok", b"bad here", b"next"]
    # A last line made only of dropped bytes is no event (Flume read no character); a whole line is an empty one.
    assert read_file(b"a\n\xff\n\xff", tmp_path, decode_error_policy="IGNORE")[0] == [b"a", b""]


def test_input_and_output_charsets(tmp_path):
    assert read_file("café\n".encode("latin-1"), tmp_path, input_charset="ISO-8859-1")[0] == ["café".encode()]
    # Characters the output charset cannot hold become '?', as Java's String.getBytes writes them.
    assert read_file("a€é\n".encode(), tmp_path, output_charset="ISO-8859-1")[0] == ["a?é".encode("latin-1")]
    assert read_file("x\n".encode(), tmp_path, output_charset="UTF-16LE")[0] == ["x".encode("utf-16-le")]
    assert newline_is_0x0a("UTF-8") and newline_is_0x0a("windows-1252") and newline_is_0x0a("GBK")
    assert not newline_is_0x0a("UTF-16") and not newline_is_0x0a("UTF-32LE") and not newline_is_0x0a("nope")


def test_valid_utf8_passes_through_untouched(tmp_path):
    data = "plain\nnon-ascii é中😀\n".encode()
    bodies, _, _, _ = read_file(data, tmp_path, n=10)
    assert bodies == data.split(b"\n")[:2]


def test_a_huge_line_is_streamed_in_bounded_memory(tmp_path):
    data = b"x" * 100_000 + b"\nend"
    path = tmp_path / "huge"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = LineDeserializer(fd, 0, len(data), max_line_length=100, read_size=1000)
        total, largest = [], 0
        while (piece := reader.read(7)) is not None:
            total += piece.bodies
            largest = max(largest, len(reader.buf))
        assert total == [b"x" * 100] * 1000 + [b"", b"end"]
        assert largest <= 2000                              # never the whole line in memory
    finally:
        os.close(fd)


def test_a_line_of_dropped_bytes_has_a_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(spooldir_reader, "IGNORE_CAP", 5000)
    bodies, _, _, problem = read_file(b"ok\n" + b"\xff" * 20_000 + b"\n", tmp_path, decode_error_policy="IGNORE",
                                      read_size=1000, max_line_length=10)
    assert bodies == [b"ok"] and problem.offset == 3 and "IGNORE" in str(problem)


def test_a_file_shorter_than_when_picked_up_is_a_problem(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"a\nb\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = LineDeserializer(fd, 0, 10)
        assert reader.read(10).bodies == [b"a", b"b"]
        with pytest.raises(ReadProblem, match="ended at offset 4, before the 10 bytes"):
            reader.read(10)
    finally:
        os.close(fd)


def test_blob_deserializer(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 10
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = BlobDeserializer(fd, 0, len(data))
        piece = reader.read(100)
        assert piece.bodies == [data] and piece.starts == [0] and piece.end == len(data)
        assert reader.read(100) is None
        assert BlobDeserializer(fd, len(data), len(data)).read(1) is None      # resumed after delivery
        with pytest.raises(ReadProblem, match="more than deserializer.maxBlobLength"):
            BlobDeserializer(fd, 0, len(data), max_blob_length=len(data) - 1).read(1)
        assert BlobDeserializer(fd, 0, len(data), max_blob_length=len(data)).read(1).bodies == [data]
    finally:
        os.close(fd)


def test_line_reading_is_fast_enough(tmp_path):
    data = ("10.1.2.3 - - [01/Dec/2026:04:00:00 +0000] \"GET /api/v1/items/1 HTTP/1.1\" 200 512 \"-\" "
            "\"Mozilla/5.0 (X11; Linux x86_64) curl/8.0\"\n").encode() * 200_000
    path = tmp_path / "access.log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        began = time.perf_counter()
        reader, count = LineDeserializer(fd, 0, len(data)), 0
        while (piece := reader.read(1000)) is not None:
            count += len(["1:2:" + str(s) for s in piece.starts])
        elapsed = time.perf_counter() - began
    finally:
        os.close(fd)
    assert count == 200_000
    assert elapsed < 2.0, f"{count / elapsed:.0f} lines/s"


# --- the tracker: which files, progress, done -----------------------------------------------------------------

def tracker(spool: Path, **kw) -> SpoolTracker:
    t = SpoolTracker(str(spool), **kw)
    t.prepare()
    return t


def test_scan_filters_files_like_flume(tmp_path):
    spool = tmp_path / "spool"
    for name in ("a.log", "b.txt", ".hidden", "c.log.COMPLETED", "skip.log", "sub/d.log", ".hid/e.log",
                 "ignored-dir/f.log", "sub/deeper/g.log"):
        drop(spool, name, "x\n")
    os.mkfifo(spool / "fifo.log")
    os.symlink(spool / "sub", spool / "link-to-sub")
    os.symlink(spool / "a.log", spool / "link.log")
    include, ignore = re.compile(r".*\.log"), re.compile(r"skip.*|ignored-dir")
    assert sorted(c.rel for c in tracker(spool, include=include, ignore=ignore).scan()) == ["a.log", "link.log"]
    found = tracker(spool, include=include, ignore=ignore, recursive=True).scan()
    assert sorted(c.rel for c in found) == ["a.log", "link.log", "sub/d.log", "sub/deeper/g.log"]
    assert all(c.path == str(spool / c.rel) for c in found)
    # ignorePattern wins over includePattern
    assert [c.rel for c in tracker(spool, include=re.compile("a.log"), ignore=re.compile("a.*")).scan()] == []


def test_tracker_dir_inside_the_spool_directory_is_not_read(tmp_path):
    spool = tmp_path / "spool"
    drop(spool, "a.log", "x\n")
    t = tracker(spool, tracker_dir="meta", tracking_policy="tracker_dir", recursive=True)
    t.complete(t.scan()[0])
    assert (spool / "meta" / "a.log.COMPLETED").exists()
    assert t.scan() == []


def test_consume_order(tmp_path):
    spool = tmp_path / "spool"
    now = time.time()
    drop(spool, "b", "", mtime=now - 30)
    drop(spool, "a", "", mtime=now - 10)
    drop(spool, "c", "", mtime=now - 30)
    assert [c.rel for c in tracker(spool).scan()] == ["b", "c", "a"]                   # ties by name
    assert [c.rel for c in tracker(spool, consume_order="youngest").scan()] == ["a", "b", "c"]
    orders = {tuple(c.rel for c in tracker(spool, consume_order="random", rng=random.Random(i)).scan())
              for i in range(30)}
    assert len(orders) > 1 and all(sorted(o) == ["a", "b", "c"] for o in orders)


def test_progress_record_round_trip_and_identity(tmp_path):
    spool = tmp_path / "spool"
    drop(spool, "a.log", lines(10))
    t = tracker(spool)
    [c] = t.scan()
    assert t.load_progress(c) == (0, c.fid.dev)
    t.save_progress(c, c.fid.dev, 30)
    [record] = metas(spool / ".flumespool")
    assert record == {"path": "a.log", "dev": c.fid.dev, "ino": c.fid.ino, "size": c.fid.size,
                      "mtime_ns": c.fid.mtime_ns, "offset": 30}
    assert t.load_progress(c) == (30, c.fid.dev)
    # The device number may change across a reboot: not compared, and the recorded one is kept for the ids.
    moved = type(c)(c.rel, c.path, c.fid._replace(dev=c.fid.dev + 1))
    assert t.load_progress(moved) == (30, c.fid.dev)
    with (spool / "a.log").open("ab") as f:
        f.write(b"more\n")
    [grown] = t.scan()
    with pytest.raises(FileProblem, match=r"size changed from 110 to 115 bytes.*first 30 bytes were delivered"):
        t.load_progress(grown)
    drop(spool, "a.log", lines(10))                  # renamed over it: another inode
    [replaced] = t.scan()
    with pytest.raises(FileProblem, match="replaced by another file"):
        t.load_progress(replaced)


def test_complete_by_rename_tracker_file_or_delete(tmp_path):
    spool = tmp_path / "spool"
    drop(spool, "a.log", "x\n")
    t = tracker(spool)
    [c] = t.scan()
    t.save_progress(c, c.fid.dev, 2)
    assert t.name_conflict(c) is None
    assert "renamed to" in t.complete(c)
    assert sorted(os.listdir(spool)) == [".flumespool", "a.log.COMPLETED"] and metas(spool / ".flumespool") == []
    drop(spool, "a.log", "y\n")                      # the same name again
    [again] = t.scan()
    assert "already completed" in t.name_conflict(again)
    with pytest.raises(FileProblem, match="already completed"):
        t.complete(again)

    spool2 = tmp_path / "spool2"
    drop(spool2, "sub/b.log", "x\n")
    t = tracker(spool2, tracking_policy="tracker_dir", recursive=True)
    [c] = t.scan()
    assert "recorded as done" in t.complete(c)
    assert (spool2 / "sub" / "b.log").exists()
    marker = spool2 / ".flumespool" / "sub" / "b.log.COMPLETED"
    assert json.loads(marker.read_text())["ino"] == c.fid.ino
    assert t.scan() == []                            # done, left in place
    os.remove(spool2 / "sub" / "b.log")
    drop(spool2, "sub/b.log", "another\n")           # a different file with the same name
    [other] = t.scan()
    assert "already completed" in t.name_conflict(other)
    marker.write_bytes(b"")                          # Flume's tracker files are empty: done, whatever the file
    assert t.scan() == []

    spool3 = tmp_path / "spool3"
    drop(spool3, "c.log", "x\n")
    t = tracker(spool3, delete_policy="immediate", tracking_policy="tracker_dir")
    assert t.complete(t.scan()[0]) == "deleted" and os.listdir(spool3) == [".flumespool"]


def test_complete_refuses_a_file_that_changed(tmp_path):
    spool = tmp_path / "spool"
    drop(spool, "a.log", "x\n")
    t = tracker(spool)
    [c] = t.scan()
    with (spool / "a.log").open("ab") as f:
        f.write(b"y\n")
    with pytest.raises(FileProblem, match="size changed from 2 to 4 bytes.* while it was being read"):
        t.complete(c)
    os.remove(spool / "a.log")
    with pytest.raises(FileProblem, match="removed or renamed"):
        t.complete(c)


def test_stale_progress_records_are_removed_at_start(tmp_path):
    spool = tmp_path / "spool"
    drop(spool, "gone.log", "x\n")
    drop(spool, "kept.log", "x\n")
    drop(spool, "tracked.log", "x\n")
    t = tracker(spool, tracking_policy="tracker_dir")
    by_name = {c.rel: c for c in t.scan()}
    for c in by_name.values():
        t.save_progress(c, c.fid.dev, 1)
    t.complete(by_name["tracked.log"])
    t.save_progress(by_name["tracked.log"], 0, 2)   # as if killed between the tracker file and removing this
    os.remove(spool / "gone.log")
    (spool / ".flumespool" / f"{META_PREFIX}x.json.tmp").write_text("{")
    tracker(spool, tracking_policy="tracker_dir")
    assert [m["path"] for m in metas(spool / ".flumespool")] == ["kept.log"]
    assert not glob.glob(str(spool / ".flumespool" / "*.tmp"))


def test_prepare_reports_unusable_directories(tmp_path):
    with pytest.raises(SetupError, match="does not exist"):
        SpoolTracker(str(tmp_path / "nowhere")).prepare()
    (tmp_path / "file").write_text("")
    with pytest.raises(SetupError, match="cannot be created"):
        SpoolTracker(str(tmp_path), tracker_dir=str(tmp_path / "file" / "meta")).prepare()


@pytest.mark.skipif(ROOT, reason="root may write anywhere")
def test_a_read_only_spool_directory_works_with_tracker_dir(tmp_path):
    spool = tmp_path / "spool"
    drop(spool, "a.log", "x\n")
    spool.chmod(0o555)
    try:
        with pytest.raises(SetupError, match="no permission"):
            SpoolTracker(str(spool), tracker_dir=str(tmp_path / "meta")).prepare()
        t = tracker(spool, tracker_dir=str(tmp_path / "meta"), tracking_policy="tracker_dir")
        t.complete(t.scan()[0])
        assert t.scan() == []
    finally:
        spool.chmod(0o755)


# --- the source, with a recording channel processor ---------------------------------------------------------------

def test_source_puts_every_line_with_file_ids_and_no_headers_then_renames(tmp_path):
    spool = tmp_path / "spool"
    path = drop(spool, "a.log", lines(250))
    processor = Processor()
    source = make_source(spool, processor)
    st = os.stat(path)
    assert source.poll() is True
    assert [len(b) for b in processor.batches] == [100, 100, 50]
    assert processor.bodies() == lines(250).split(b"\n")[:-1]
    assert all(b.headers is None for b in processor.batches)
    file_id = f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"    # mtime: a reused inode gets other ids
    assert list(processor.batches[0].ids[:2]) == [f"{file_id}:0", f"{file_id}:11"]
    assert processor.batches[2].ids[-1] == f"{file_id}:{249 * 11}"
    assert sorted(os.listdir(spool)) == [".flumespool", "a.log.COMPLETED"]
    assert metas(spool / ".flumespool") == []
    assert source.poll() is False                        # nothing left
    assert source.counters.counts["EventAcceptedCount"] == 250
    assert source.counters.counts["AppendBatchAcceptedCount"] == 3


def test_headers_only_when_asked_for(tmp_path):
    spool = tmp_path / "spool"
    drop(spool, "sub/a.log", "x\ny\n")
    processor = Processor()
    make_source(spool, processor, fileHeader="true", basenameHeader="true", basenameHeaderKey="name",
                recursiveDirectorySearch="true").poll()
    [batch] = processor.batches
    assert batch.headers == [{"file": str(spool / "sub" / "a.log"), "name": "a.log"}] * 2


def test_a_file_is_not_marked_done_before_all_its_events_are_in_the_channels(tmp_path):
    spool = tmp_path / "spool"
    drop(spool, "a.log", lines(50))
    processor = Processor()
    source = make_source(spool, processor, batchSize=10, maxBackoff=20)

    def fill_up(p, batch):
        if len(p.batches) == 3:
            p.full = True                                # the channel is full after 3 batches
    processor.hook = fill_up
    thread = ReportingThread(source.poll, name="poll")
    thread.start()
    wait_until(lambda: processor.attempts > 6, 10, what="retries against the full channel")
    assert (spool / "a.log").exists()                    # not done while a batch waits
    assert [m["offset"] for m in metas(spool / ".flumespool")] == [30 * 11]
    attempts = processor.attempts
    # maxBackoff = 20 ms bounds the pause between attempts (Flume's default would be 4 s)
    wait_until(lambda: processor.attempts >= attempts + 5, 2, interval_s=0.01, what="5 more attempts")
    processor.full = False
    thread.join(10)
    assert processor.bodies() == lines(50).split(b"\n")[:-1]
    assert (spool / "a.log.COMPLETED").exists()


def test_stop_while_the_channel_is_full_leaves_the_batch_unacknowledged(tmp_path):
    spool = tmp_path / "spool"
    drop(spool, "a.log", lines(50))
    processor = Processor()
    processor.hook = lambda p, b: setattr(p, "full", len(p.batches) == 2)
    source = make_source(spool, processor, batchSize=10, pollDelay=60000)
    source.start()
    wait_until(lambda: processor.attempts > 3, 10, what="the full channel")
    began = time.monotonic()
    source.stop()
    assert time.monotonic() - began < 3
    assert [m["offset"] for m in metas(spool / ".flumespool")] == [20 * 11]
    rest = Processor()                                   # a new run resumes after the 2 committed batches
    make_source(spool, rest, batchSize=10).poll()
    assert rest.bodies() == lines(50).split(b"\n")[20:-1]
    assert (spool / "a.log.COMPLETED").exists()


def test_a_crash_between_put_and_progress_record_repeats_one_batch_at_most(tmp_path):
    spool = tmp_path / "spool"
    drop(spool, "a.log", lines(95))
    crashing = Processor()

    def crash(p, batch):
        if len(p.batches) == 4:
            raise Crash()                                # the put happened; its progress was never recorded
    crashing.hook = crash
    with pytest.raises(Crash):
        make_source(spool, crashing, batchSize=10).poll()
    after = Processor()
    make_source(spool, after, batchSize=10).poll()
    first, second = crashing.bodies(), after.bodies()
    assert second[0] == first[30] and first + second[10:] == lines(95).split(b"\n")[:-1]     # 10 repeated
    assert list(after.batches[0].ids) == list(crashing.batches[3].ids)      # with the same ids: overwrites
    assert (spool / "a.log.COMPLETED").exists()


def test_a_file_that_grows_while_being_read_is_reported_and_the_others_flow(tmp_path, caplog):
    spool = tmp_path / "spool"
    now = time.time()
    growing = drop(spool, "a.log", lines(30), mtime=now - 20)
    drop(spool, "b.log", lines(5, "b"), mtime=now - 10)
    processor = Processor()

    def append_once(p, batch):
        if len(p.batches) == 1:
            with growing.open("ab") as f:
                f.write(b"late\n")
    processor.hook = append_once
    source = make_source(spool, processor, batchSize=10)
    assert source.poll() is True
    assert processor.bodies() == lines(10).split(b"\n")[:-1] + lines(5, "b").split(b"\n")[:-1]
    assert sorted(os.listdir(spool)) == [".flumespool", "a.log", "b.log.COMPLETED"]
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert re.search(r"file '.*/a\.log': its size changed from 330 to 335 bytes.* while it was being read; the "
                     r"events before byte 110 were delivered", error.message), error.message
    assert source.counters.counts["EventReadFail"] == 1
    assert source.poll() is False                        # skipped from now on, reported once
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
    # After a restart it is still refused: it is not the file whose reading began.
    again = Processor()
    assert make_source(spool, again, batchSize=10).poll() is False and again.batches == []
    assert "after Flumery began reading it; its first 110 bytes were delivered" in caplog.records[-1].message


def test_a_file_replaced_after_it_was_read_is_reported(tmp_path, caplog):
    spool = tmp_path / "spool"
    drop(spool, "a.log", lines(10))
    processor = Processor()
    processor.hook = lambda p, b: drop(spool, "a.log", lines(10))      # renamed over it: another inode
    make_source(spool, processor, batchSize=100).poll()
    assert (spool / "a.log").exists() and not (spool / "a.log.COMPLETED").exists()
    assert "replaced by another file" in caplog.text


def test_a_name_already_completed_is_reported_and_not_read(tmp_path, caplog):
    spool = tmp_path / "spool"
    drop(spool, "a.log.COMPLETED", "old\n")
    drop(spool, "a.log", "new\n")
    drop(spool, "b.log", "b\n")
    processor = Processor()
    source = make_source(spool, processor)
    assert source.poll() is True and processor.bodies() == [b"b"]
    assert "a file of the same name was already completed" in caplog.text
    os.rename(spool / "a.log", spool / "a2.log")         # the remedy the message gives
    assert source.poll() is True and processor.bodies() == [b"b", b"new"]


def test_undecodable_file_stops_alone_and_resumes_at_the_bad_line_after_restart(tmp_path, caplog):
    spool = tmp_path / "spool"
    now = time.time()
    drop(spool, "bad.log", b"one\ntwo\nthr\xffee\nfour\n", mtime=now - 20)
    drop(spool, "good.log", "fine\n", mtime=now - 10)
    processor = Processor()
    make_source(spool, processor, batchSize=1).poll()
    assert processor.bodies() == [b"one", b"two", b"fine"]
    assert "bad.log" in caplog.text and "bytes at offset 11 are not valid utf-8" in caplog.text
    assert (spool / "bad.log").exists() and (spool / "good.log.COMPLETED").exists()
    again = Processor()                                  # restarted with REPLACE: resumes at the bad line
    make_source(spool, again, batchSize=1, decodeErrorPolicy="REPLACE").poll()
    assert again.bodies() == ["thr\ufffdee".encode(), b"four"]
    assert (spool / "bad.log.COMPLETED").exists()


@pytest.mark.parametrize("props,left", [
    ({}, [".flumespool", "empty.log.COMPLETED"]),
    ({"trackingPolicy": "tracker_dir"}, [".flumespool", "empty.log"]),
    ({"deletePolicy": "immediate"}, [".flumespool"]),
])
def test_empty_files_are_done_at_once(tmp_path, props, left):
    spool = tmp_path / "spool"
    drop(spool, "empty.log", b"")
    processor = Processor()
    source = make_source(spool, processor, **props)
    assert source.poll() is True and processor.batches == []
    assert source.poll() is False
    assert sorted(os.listdir(spool)) == left


def test_blob_files(tmp_path, caplog):
    spool = tmp_path / "spool"
    now = time.time()
    drop(spool, "a.bin", bytes(range(256)), mtime=now - 30)
    drop(spool, "big.bin", b"x" * 1001, mtime=now - 20)
    drop(spool, "c.bin", b"line\nwith\nnewlines\n", mtime=now - 10)
    processor = Processor()
    make_source(spool, processor, deserializer="org.apache.flume.sink.solr.morphline.BlobDeserializer$Builder",
                **{"deserializer.maxBlobLength": 1000}).poll()
    assert processor.bodies() == [bytes(range(256)), b"line\nwith\nnewlines\n"]
    assert [len(b) for b in processor.batches] == [1, 1]
    assert "big.bin" in caplog.text and "1001 bytes, more than deserializer.maxBlobLength (1000)" in caplog.text
    assert (spool / "big.bin").exists()


def test_buffer_max_line_length_is_flumes_old_name_for_max_line_length(tmp_path):
    spool = tmp_path / "spool"
    drop(spool, "a.log", "abcdefgh\n")
    processor = Processor()
    make_source(spool, processor, bufferMaxLineLength=3).poll()
    assert processor.bodies() == [b"abc", b"def", b"gh"]


def test_the_source_waits_for_its_directory_and_stop_wakes_it(tmp_path):
    spool = tmp_path / "later"
    text = SOURCE_CONF.format(spool=spool) + "a1.sources.r1.pollDelay = 100\n"
    spec = parse_agent(text, "a1").sources["r1"]
    processor = Processor()
    source = spec.cls("r1", spec.config, SourceContext("a1", processor, FakeCounters()))
    waits = record_waits(source.stopping)
    source.start()
    try:
        wait_until(lambda: waits, 10, what="the source waiting for its directory")
        drop(spool, "a.log", "hello\n")
        wait_until(lambda: processor.bodies() == [b"hello"], 10, what="the file, once the directory exists")
    finally:
        began = time.monotonic()
        source.stop()
    assert time.monotonic() - began < 2


# --- configuration ------------------------------------------------------------------------------------------------

CONF_HEAD = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = spooldir
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
"""


def config_errors(*props: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        parse_agent(CONF_HEAD + "".join(p + "\n" for p in props), "a1")
    return [str(e) for e in info.value.errors]


def test_defaults_are_flumes():
    config = parse_agent(CONF_HEAD + "a1.sources.r1.spoolDir = /var/spool\n", "a1").sources["r1"].config
    assert (config.file_suffix, config.delete_policy, config.file_header, config.file_header_key,
            config.basename_header, config.basename_header_key, config.include_pattern, config.ignore_pattern,
            config.tracker_dir, config.tracking_policy, config.consume_order, config.poll_delay_ms,
            config.recursive, config.max_backoff_ms, config.batch_size, config.input_charset,
            config.decode_error_policy, config.deserializer, config.max_line_length, config.output_charset,
            config.max_blob_length) == (
        ".COMPLETED", "never", False, "file", False, "basename", "^.*$", "^$", ".flumespool", "rename", "oldest",
        500, False, 4000, 100, "UTF-8", "FAIL", "LINE", 2048, "UTF-8", 100_000_000)


@pytest.mark.parametrize("props,expected", [
    (("a1.sources.r1.deserializer = AVRO",),
     "a1.sources.r1.deserializer: Flume's AVRO deserializer is not available yet in Flumery (available: LINE, "
     "BLOB) (got 'AVRO')"),
    (("a1.sources.r1.deserializer = org.apache.flume.serialization.AvroEventDeserializer$Builder",),
     "a1.sources.r1.deserializer: Flume's AVRO deserializer is not available yet"),
    (("a1.sources.r1.deserializer = LNIE",), "a1.sources.r1.deserializer: unknown deserializer; did you mean 'LINE'?"),
    (("a1.sources.r1.deletePolicy = sometimes",),
     "a1.sources.r1.deletePolicy: must be one of never, immediate (got 'sometimes')"),
    (("a1.sources.r1.trackingPolicy = trackerdir",), "a1.sources.r1.trackingPolicy: must be one of rename, tracker_dir"),
    (("a1.sources.r1.consumeOrder = newest",), "a1.sources.r1.consumeOrder: must be one of oldest, youngest, random"),
    (("a1.sources.r1.decodeErrorPolicy = SKIP",), "a1.sources.r1.decodeErrorPolicy: must be one of FAIL, REPLACE, IGNORE"),
    (("a1.sources.r1.includePattern = ([a-z",), "a1.sources.r1.includePattern: invalid regular expression"),
    (("a1.sources.r1.ignorePattern = a{,2}",), "a1.sources.r1.ignorePattern: invalid regular expression"),
    (("a1.sources.r1.inputCharset = EBCDIC-9",), "a1.sources.r1.inputCharset: unknown charset (got 'EBCDIC-9')"),
    (("a1.sources.r1.deserializer.outputCharset = nope",), "a1.sources.r1.deserializer.outputCharset: unknown charset"),
    (("a1.sources.r1.inputCharset = UTF-16",),
     "a1.sources.r1.inputCharset: charset 'UTF-16' does not write a newline as the byte 0x0A"),
    (("a1.sources.r1.deserializer.maxLineLength = 0",),
     "a1.sources.r1.deserializer.maxLineLength: must be greater than 0 (got '0')"),
    (("a1.sources.r1.pollDelay = soon",), "a1.sources.r1.pollDelay: expected a whole number (got 'soon')"),
    (("a1.sources.r1.batchSize = 500",), "a1.sources.r1.batchSize: 500 is larger than the transactionCapacity (100)"),
    (("a1.sources.r1.recursiveDirectorySearch = yes",), "a1.sources.r1.recursiveDirectorySearch: expected true or false"),
    (("a1.sources.r1.fileSuffix =  ",), "a1.sources.r1.fileSuffix: empty value"),
    (("a1.sources.r1.consumerOrder = oldest",), "a1.sources.r1.consumerOrder: unknown property; did you mean 'consumeOrder'?"),
    (("a1.sources.r1.deserializer.schemaType = HASH",), "a1.sources.r1.deserializer.schemaType: unknown property"),
])
def test_configuration_errors_name_the_key_and_the_value(props, expected):
    errors = config_errors("a1.sources.r1.spoolDir = /var/spool", *props)
    assert any(e.startswith(expected) for e in errors), errors


def test_spool_dir_is_required():
    assert config_errors() == ["a1.sources.r1.spoolDir: required property is missing"]


def test_flume_class_names_and_old_properties_are_accepted():
    config = parse_agent(CONF_HEAD + "a1.sources.r1.spoolDir = /s\n"
                         "a1.sources.r1.deserializer = org.apache.flume.serialization.LineDeserializer$Builder\n"
                         "a1.sources.r1.bufferMaxLines = 100\n", "a1")
    assert config.sources["r1"].config.deserializer.endswith("LineDeserializer$Builder")
    assert any("bufferMaxLines" in n and "no effect" in n for n in config.notices)
    assert parse_agent(CONF_HEAD.replace("type = spooldir", "type = org.apache.flume.source.SpoolDirectorySource")
                       + "a1.sources.r1.spoolDir = /s\n", "a1").sources["r1"].cls is SpoolDirectorySource
    # BLOB does not decode: any inputCharset is fine with it
    parse_agent(CONF_HEAD + "a1.sources.r1.spoolDir = /s\na1.sources.r1.deserializer = BLOB\n"
                "a1.sources.r1.inputCharset = UTF-16\n", "a1")
