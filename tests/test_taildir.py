"""TAILDIR: Flume's test vectors, the reader and the position file (unit, real files), the source's loop with a
recording channel processor, and end to end with real agents, a real Redis and real Celery workers."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
import zlib
from pathlib import Path

import pytest

from agents import AgentProcess, drained, read_lines, taildir_caught_up, wait_until
from helpers import ReportingThread, record_waits
from core.errors import ChannelFullError, ConfigInvalid
from core.config import parse_agent
from core.options import build
from conftest import FakeCounters, VECTORS
from core.java_regex import compile_java
from workers.sources.taildir import TaildirConfig, TaildirSource
from workers.sources.taildir_position import JOURNAL_SUFFIX, PositionEntry, PositionStore, parse, to_json
from workers.sources.taildir_reader import FileGroup, TaildirReader
from workers.sources.base import SourceContext

VECTOR_DATA = json.loads(VECTORS.read_text())["TaildirSource"]


def vector(name: str) -> dict:
    return next(v for v in VECTOR_DATA if v.get("test") == name)


class Clock:
    """A monotonic clock the test moves by hand (idle timeouts)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_reader(tmp_path: Path, pattern: str = r"file.*", *, headers: dict | None = None, pos_file: str = "pos.json",
                **options) -> TaildirReader:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    group = FileGroup("f1", str(logs), compile_java(pattern), headers or {})
    return TaildirReader([group], PositionStore(str(tmp_path / pos_file)), **options)


def drain(reader: TaildirReader, batch_size: int = 100, final: bool = False, commit: bool = True,
          scan: bool = True) -> list[bytes]:
    """What the source does in one round: scan, then every file's batches, committing each."""
    if scan:
        reader.scan()
    out: list[bytes] = []
    for tf in reader.pending() if not final else list(reader.files.values()):
        for batch, end, tail in reader.batches(tf, batch_size, final):
            out += batch.bodies
            if commit:
                reader.commit(tf, end, tail)
    return out


def tracked(reader: TaildirReader, name: str):
    return next(f for f in reader.files.values() if os.path.basename(f.path) == name)


# --- Flume's vectors ------------------------------------------------------------------------------------------

def test_vector_position_file_format_round_trips():
    v = next(v for v in VECTOR_DATA if "position_file_format" in v)
    example = v["example"].encode()
    entries = parse(example)
    assert entries == [PositionEntry(2496272, 12, "/var/log/test1/example.log"),
                       PositionEntry(2496275, 0, "/var/log/test2/log.1")]
    assert to_json(entries) == example                       # byte for byte what Flume's Gson writes
    assert to_json([]) == b"[]" and parse(b"") == []          # nothing tracked; Flume may leave the file empty


def test_position_file_escapes_like_gson():
    # new Gson() escapes < > & = ' as \u003c ...; non-ASCII stays UTF-8.
    entry = PositionEntry(7, 3, "/var/log/a=b&c<d>'é\"\\.log")
    data = to_json([entry])
    assert data == ('[{"inode":7,"pos":3,"file":"/var/log/a\\u003db\\u0026c\\u003cd\\u003e\\u0027é\\"\\\\.log"}]'
                    ).encode()
    assert parse(data) == [entry]


def test_vector_load_position_file(tmp_path):
    v = vector("testLoadPositionFile")
    reader = make_reader(tmp_path)
    logs = tmp_path / "logs"
    for name, text in v["files"].items():
        (logs / name).write_text(text)
    # "[{inode(f1),pos=len(file2)=22,path f1},{inode(f2),22,f2},{inode(f3),22,f3}]"
    pos = len(v["files"]["file2"])
    entries = [PositionEntry(os.stat(logs / n).st_ino, pos, str(logs / n)) for n in ("file1", "file2", "file3")]
    (tmp_path / "pos.json").write_bytes(to_json(entries))
    reader.start()
    assert {os.path.basename(f.path): f.pos for f in reader.files.values()} == v["expected_pos"]


def test_vector_skip_to_end_position(tmp_path):
    # Files found at start without a position start at their end; files known from the position file keep it;
    # files that appear later start at 0 (else rename-and-create rotation would lose the new file's first lines).
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "file1").write_text("file1line1\nfile1line2\n")
    (logs / "file0").write_text("file0line1\nfile0line2\n")
    (tmp_path / "pos.json").write_bytes(to_json([PositionEntry(os.stat(logs / "file0").st_ino, 11,
                                                               str(logs / "file0"))]))
    reader = make_reader(tmp_path, skip_to_end=True)
    reader.start()
    assert tracked(reader, "file1").pos == (logs / "file1").stat().st_size
    assert tracked(reader, "file0").pos == 11
    (logs / "file2").write_text("file2line1\nfile2line2\n")
    assert drain(reader) == [b"file0line2", b"file2line1", b"file2line2"]


def test_vector_new_line_boundaries(tmp_path):
    v = vector("testNewLineBoundaries")
    reader = make_reader(tmp_path)
    (tmp_path / "logs" / "file1").write_bytes(v["file"].encode())
    reader.start()
    assert drain(reader) == [b.encode() for b in v["expected_bodies"]]


def test_vector_backoff_without_new_line(tmp_path):
    v = vector("testBackoffWithoutNewLine")
    clock = Clock()
    reader = make_reader(tmp_path, idle_timeout_s=120, clock=clock)
    path = tmp_path / "logs" / "file1"
    path.write_bytes(v["steps"][0]["file"].encode())
    reader.start()
    out = drain(reader, batch_size=5)
    assert out == [s.encode() for s in v["steps"][0]["expected_new"]]
    with open(path, "ab") as f:
        f.write(v["steps"][1]["append"].encode())
    new = drain(reader, batch_size=5)
    assert new == [s.encode() for s in v["steps"][1]["expected_new"]]
    out += new
    assert drain(reader, batch_size=5) == []                 # the last line still has no newline: held back
    # "unterminated last line is emitted only after the file goes idle/closed" (Flume's closeTailFiles)
    clock.now += 121
    idle = reader.idle()
    assert [f.path for f in idle] == [str(path)]
    out += drain(reader, batch_size=5, final=True, scan=False)
    reader.retire(idle[0])
    assert len(out) == v["steps"][2]["expected_total"] and out[-1] == b"file1line4"
    assert reader.open_count == 0 and tracked(reader, "file1").pos == path.stat().st_size


def test_vector_basic_commit_failure(tmp_path):
    reader = make_reader(tmp_path)
    (tmp_path / "logs" / "file1").write_text("a\nb\nc\n")
    reader.start()
    tf = tracked(reader, "file1")
    batch, _, _ = next(reader.batches(tf, 2))                # read, then the put fails: never committed
    assert batch.bodies == [b"a", b"b"] and tf.pos == 0
    assert drain(reader, batch_size=2) == [b"a", b"b", b"c"]  # read again from the same position
    assert tf.pos == 6


# --- reader unit tests ------------------------------------------------------------------------------------------

def test_partial_last_line_is_held_back_until_completed(tmp_path):
    reader = make_reader(tmp_path)
    path = tmp_path / "logs" / "file1"
    path.write_bytes(b"one\ntw")
    reader.start()
    assert drain(reader) == [b"one"]
    assert drain(reader) == []
    with open(path, "ab") as f:
        f.write(b"o\r")
    assert drain(reader) == []                               # a lone \r does not end a line
    with open(path, "ab") as f:
        f.write(b"\nthree\n")
    assert drain(reader) == [b"two", b"three"]


def test_ids_and_headers(tmp_path):
    reader = make_reader(tmp_path, headers={"topic": "web", "byteoffset": "shadowed"}, file_header=True,
                         file_header_key="path", byte_offset_header=True)
    path = tmp_path / "logs" / "file1"
    path.write_bytes(b"ab\r\n\ncd\n")
    reader.start()
    tf = tracked(reader, "file1")
    [(batch, end, _)] = list(reader.batches(tf, 10))
    st = path.stat()
    assert batch.bodies == [b"ab", b"", b"cd"] and end == 8
    generation = "%08x" % zlib.crc32(b"ab\r")                  # the first line names the file's generation
    assert list(batch.ids) == [f"{st.st_dev}:{st.st_ino}:{generation}:{o}" for o in (0, 4, 5)]
    # Flume sets byteoffset first, then the group's headers, then the file header.
    assert batch.headers == [{"byteoffset": "shadowed", "topic": "web", "path": str(path)}] * 3


def test_no_header_maps_unless_configured(tmp_path):
    reader = make_reader(tmp_path)
    (tmp_path / "logs" / "file1").write_text("x\n" * 1000)
    reader.start()
    tf = tracked(reader, "file1")
    batches = [b for b, _, _ in reader.batches(tf, 300)]
    assert [len(b) for b in batches] == [300, 300, 300, 100]
    assert all(b.headers is None for b in batches)
    shared = make_reader(tmp_path, headers={"k": "v"}, pos_file="p2.json")
    shared.start()
    batch = next(b for b, _, _ in shared.batches(tracked(shared, "file1"), 300))
    assert len({id(h) for h in batch.headers}) == 1          # one map shared by all events of the file


def test_long_lines_and_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr("workers.sources.taildir_reader.READ_SIZE", 7)
    reader = make_reader(tmp_path)
    lines = [b"x" * n for n in (0, 1, 6, 7, 8, 20, 3)] + [b"crlf\r", b"y" * 15 + b"\r"]
    data = b"\n".join(lines) + b"\n"
    (tmp_path / "logs" / "file1").write_bytes(data)
    reader.start()
    tf = tracked(reader, "file1")
    got, ids = [], []
    for batch, end, tail in reader.batches(tf, 3):
        got += batch.bodies
        ids += [int(i.rsplit(":", 1)[1]) for i in batch.ids]
        reader.commit(tf, end, tail)
        assert data[:end].endswith(tail) and data[end - 1:end] == b"\n"
    assert got == [line.removesuffix(b"\r") for line in lines]
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    assert ids == offsets and tf.pos == len(data)


def test_journal_survives_a_kill_and_position_file_is_flumes(tmp_path):
    reader = make_reader(tmp_path)
    path = tmp_path / "logs" / "file1"
    path.write_text("".join(f"line{i}\n" for i in range(100)))
    reader.start()
    reader.write_positions()
    tf = tracked(reader, "file1")
    batches = reader.batches(tf, 10)
    for _ in range(3):
        batch, end, tail = next(batches)
        reader.commit(tf, end, tail)
    # The "agent" dies here: the position file still says 0, the journal says 30 lines.
    assert parse((tmp_path / "pos.json").read_bytes())[0].pos == 0
    again = make_reader(tmp_path)
    again.start()
    assert tracked(again, "file1").pos == tf.pos == len("".join(f"line{i}\n" for i in range(30)))
    assert drain(again)[0] == b"line30"
    again.write_positions()
    raw = (tmp_path / "pos.json").read_bytes()
    st = path.stat()
    assert raw == f'[{{"inode":{st.st_ino},"pos":{st.st_size},"file":"{path}"}}]'.encode()
    assert (tmp_path / ("pos.json" + JOURNAL_SUFFIX)).read_bytes() == b""


def test_rename_within_the_pattern_keeps_the_position(tmp_path):
    reader = make_reader(tmp_path, r"app\.log.*")
    logs = tmp_path / "logs"
    (logs / "app.log").write_text("a\nb\n")
    reader.start()
    assert drain(reader) == [b"a", b"b"]
    os.rename(logs / "app.log", logs / "app.log.1")
    with open(logs / "app.log.1", "a") as f:
        f.write("c\n")
    (logs / "app.log").write_text("new1\n")
    assert sorted(drain(reader)) == [b"c", b"new1"]           # Flume would read app.log.1 again from 0
    assert drain(reader) == []


def test_rename_out_of_the_pattern_is_read_to_its_end_then_dropped(tmp_path):
    clock = Clock()
    reader = make_reader(tmp_path, r"app\.log", idle_timeout_s=10, clock=clock)
    logs = tmp_path / "logs"
    writer = open(logs / "app.log", "a")
    writer.write("a\nb\n")
    writer.flush()
    reader.start()
    assert drain(reader) == [b"a", b"b"]
    os.rename(logs / "app.log", logs / "app.log.1")             # not matched any more
    writer.write("c\nd\n")                                       # the writer has not reopened yet
    writer.flush()
    reader.scan()
    old = tracked(reader, "app.log.1")
    assert old.state == "rotated"
    writer.write("e\npartial")
    writer.close()
    (logs / "app.log").write_text("new1\n")
    assert drain(reader) == [b"c", b"d", b"e", b"new1"]
    assert {os.path.basename(e.file) for e in reader.entries()} == {"app.log", "app.log.1"}
    clock.now += 11
    for tf in reader.idle():
        final = []
        for batch, end, tail in reader.batches(tf, 100, final=True):
            final += batch.bodies
            reader.commit(tf, end, tail)
        assert final == ([b"partial"] if tf is old else [])
        reader.retire(tf)
    assert [os.path.basename(e.file) for e in reader.entries()] == ["app.log"]
    assert reader.open_count == 0


def test_copytruncate_restarts_at_zero_and_reads_the_copy_s_unread_tail(tmp_path):
    reader = make_reader(tmp_path, r"app\.log")
    logs = tmp_path / "logs"
    lines = [f"2026-12-01 line number {i:04d} of the first generation".encode() for i in range(100)]
    (logs / "app.log").write_bytes(b"\n".join(lines) + b"\n")
    reader.start()
    tf = tracked(reader, "app.log")
    for batch, end, tail in reader.batches(tf, 50):
        reader.commit(tf, end, tail)
        break                                                    # the source lags: 50 lines unread
    shutil.copyfile(logs / "app.log", logs / "app.log.1")        # logrotate copytruncate
    os.truncate(logs / "app.log", 0)
    with open(logs / "app.log", "ab") as f:
        f.write(b"second generation line\n" * 3 + b"x" * 5000 + b"\n")   # grows past the old position
    out = drain(reader) + drain(reader)                          # the copy is found in the first round
    assert sorted(out) == sorted(lines[50:] + [b"second generation line"] * 3 + [b"x" * 5000])
    assert drain(reader) == []


def copytruncate(path: Path, copy: Path, new_generation: bytes) -> None:
    """logrotate's copytruncate, then the application writes ``new_generation`` into the same inode."""
    shutil.copyfile(path, copy)
    os.truncate(path, 0)
    with open(path, "ab") as f:
        f.write(new_generation)


def fixed_width_lines(generation: int, count: int) -> list[bytes]:
    # All lines of one width: a read that crosses from one generation into the next at the same offset lands
    # on a line start, so only the count shows the loss (as in the end-to-end rotation test).
    return [f"generation {generation} line {i:05d} of a log that is rotated".encode() for i in range(count)]


def test_copytruncate_while_a_batch_is_being_put_loses_nothing(tmp_path, monkeypatch):
    """The file is copied and truncated, and grows past the read offset again, while the source is putting a
    batch (between two reads of one pass): the rest of the pass must not read the next generation as if it
    continued the old one (that lost the copy's unread lines and the new generation's first ones)."""
    monkeypatch.setattr("workers.sources.taildir_reader.READ_SIZE", 1000)
    reader = make_reader(tmp_path, r"app\.log")
    logs = tmp_path / "logs"
    first, second = fixed_width_lines(1, 200), fixed_width_lines(2, 400)
    (logs / "app.log").write_bytes(b"".join(line + b"\n" for line in first))
    reader.start()
    tf = tracked(reader, "app.log")
    out = []
    for batch, end, tail in reader.batches(tf, 10):
        out += batch.bodies                                       # the put...
        if len(out) == 10:                                        # ...during which logrotate runs
            copytruncate(logs / "app.log", logs / "app.log.1", b"".join(line + b"\n" for line in second))
        reader.commit(tf, end, tail)
    out += drain(reader) + drain(reader)
    assert sorted(out) == sorted(first + second)


def test_copytruncate_after_a_first_line_shorter_than_the_fingerprint_reads_the_copy(tmp_path):
    """Only one short line had been read (the file's head known by fewer than HEAD_KEY bytes) when the file was
    copied and truncated: the copy is still recognised and read from the position."""
    reader = make_reader(tmp_path, r"app\.log")
    logs = tmp_path / "logs"
    (logs / "app.log").write_bytes(b"started\n")
    reader.start()
    assert drain(reader) == [b"started"]
    rest = fixed_width_lines(1, 50)
    with open(logs / "app.log", "ab") as f:
        f.write(b"".join(line + b"\n" for line in rest))
    second = fixed_width_lines(2, 100)
    copytruncate(logs / "app.log", logs / "app.log.1", b"".join(line + b"\n" for line in second))
    out = drain(reader) + drain(reader)
    assert sorted(out) == sorted(rest + second)


def test_copy_matching_the_pattern_is_not_read_again(tmp_path):
    reader = make_reader(tmp_path, r"app\.log.*")
    logs = tmp_path / "logs"
    lines = [f"2026-12-01 event {i:04d} with some text to make it long".encode() for i in range(100)]
    (logs / "app.log").write_bytes(b"\n".join(lines) + b"\n")
    reader.start()
    assert drain(reader) == lines
    shutil.copyfile(logs / "app.log", logs / "app.log.1")
    os.truncate(logs / "app.log", 0)
    (logs / "app.log").write_bytes(b"fresh\n")
    assert drain(reader) == [b"fresh"]


def test_truncated_and_rewritten_past_the_position_is_read_again(tmp_path):
    reader = make_reader(tmp_path)
    path = tmp_path / "logs" / "file1"
    path.write_text("old line one\nold line two\n")
    reader.start()
    assert drain(reader) == [b"old line one", b"old line two"]
    inode = path.stat().st_ino
    with open(path, "r+b") as f:                                  # same inode, new content, larger
        f.truncate(0)
        f.write(b"new content line A\nnew content line B\n")
    assert path.stat().st_ino == inode
    assert drain(reader) == [b"new content line A", b"new content line B"]


def test_deleted_file_is_finished_through_its_descriptor(tmp_path):
    clock = Clock()
    reader = make_reader(tmp_path, idle_timeout_s=5, clock=clock)
    path = tmp_path / "logs" / "file1"
    path.write_text("".join(f"{i}\n" for i in range(20)))
    reader.start()
    tf = tracked(reader, "file1")
    batch, end, tail = next(reader.batches(tf, 5))
    reader.commit(tf, end, tail)
    path.unlink()
    reader.scan()
    assert tf.state == "gone" and tf.fd is not None
    assert drain(reader) == [str(i).encode() for i in range(5, 20)]
    assert reader.entries() == []                                # a deleted file has no position to keep
    clock.now += 6
    for f in reader.idle():
        reader.retire(f)
    assert reader.files == {} and reader.open_count == 0


def test_deleted_closed_file_is_forgotten_and_new_files_are_found(tmp_path):
    reader = make_reader(tmp_path)
    logs = tmp_path / "logs"
    (logs / "file1").write_text("a\n")
    reader.start()
    assert drain(reader) == [b"a"]
    reader.close(tracked(reader, "file1"))
    (logs / "file1").unlink()
    (logs / "file2").write_text("b\n")
    (logs / "other").write_text("not matched\n")
    assert drain(reader) == [b"b"]
    assert [os.path.basename(e.file) for e in reader.entries()] == ["file2"]


def test_descriptors_are_bounded_and_idle_files_closed(tmp_path):
    clock = Clock()
    reader = make_reader(tmp_path, max_open=4, idle_timeout_s=30, clock=clock)
    logs = tmp_path / "logs"
    for i in range(12):
        (logs / f"file{i:02d}").write_text(f"f{i} a\nf{i} b\n")
    reader.start()
    assert sorted(drain(reader, batch_size=1)) == sorted(f"f{i} {x}".encode() for i in range(12) for x in "ab")
    assert reader.open_count <= 4
    clock.now += 31
    for tf in reader.idle():
        reader.retire(tf)
    assert reader.open_count == 0 and len(reader.files) == 12


def test_renamed_while_stopped_keeps_its_position(tmp_path):
    logs = tmp_path / "logs"
    reader = make_reader(tmp_path, r"app\.log.*")
    (logs / "app.log").write_text("a\nb\n")
    reader.start()
    assert drain(reader) == [b"a", b"b"]
    reader.write_positions()
    reader.close_all()
    os.rename(logs / "app.log", logs / "app.log.1")
    with open(logs / "app.log.1", "a") as f:
        f.write("c\n")
    (logs / "app.log").write_text("new\n")
    again = make_reader(tmp_path, r"app\.log.*")
    again.start()
    assert sorted(drain(again)) == [b"c", b"new"]


def test_rotated_out_of_the_pattern_while_stopped_is_finished(tmp_path):
    logs = tmp_path / "logs"
    reader = make_reader(tmp_path, r"app\.log")
    (logs / "app.log").write_text("a\nb\n")
    reader.start()
    assert drain(reader) == [b"a", b"b"]
    reader.write_positions()
    reader.close_all()
    os.rename(logs / "app.log", logs / "app.log.1")
    with open(logs / "app.log.1", "a") as f:
        f.write("c\n")
    (logs / "app.log").write_text("new\n")
    again = make_reader(tmp_path, r"app\.log")
    again.start()
    assert sorted(drain(again)) == [b"c", b"new"]


def test_position_beyond_the_file_restarts_at_zero(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "file1").write_text("a\nb\n")
    (tmp_path / "pos.json").write_bytes(to_json([PositionEntry(os.stat(logs / "file1").st_ino, 999,
                                                               str(logs / "file1"))]))
    reader = make_reader(tmp_path)
    reader.start()
    assert drain(reader) == [b"a", b"b"]


def test_missing_directory_is_watched_for(tmp_path):
    group = FileGroup("f1", str(tmp_path / "later"), compile_java(r".*\.log"), {})
    reader = TaildirReader([group], PositionStore(str(tmp_path / "pos.json")))
    reader.start()
    assert reader.files == {}
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "x.log").write_text("hello\n")
    (tmp_path / "later" / "x.txt").write_text("not matched\n")
    assert drain(reader) == [b"hello"]


# --- configuration ------------------------------------------------------------------------------------------------

TAILDIR_CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = TAILDIR
a1.sources.r1.channels = c1
{source}
a1.channels.c1.type = file
a1.channels.c1.capacity = {capacity}
a1.channels.c1.transactionCapacity = 1000
a1.sinks.k1.type = file_roll
a1.sinks.k1.channel = c1
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.batchSize = 1000
{sink}
"""


def config_errors(source: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        parse_agent(TAILDIR_CONF.format(source=source, out="/tmp/x", capacity=10000, sink=""), "a1", environ={})
    return [str(e) for e in info.value.errors]


def test_config_defaults_are_flumes():
    config, errors, _ = build(TaildirConfig, {"filegroups": "f1", "filegroups.f1": "/var/log/app/.*log"}, "r.")
    assert not errors
    assert (config.position_file, config.batch_size, config.idle_timeout_ms, config.write_pos_interval_ms,
            config.max_batch_count, config.backoff_sleep_increment_ms, config.max_backoff_sleep_ms,
            config.skip_to_end, config.file_header, config.file_header_key, config.byte_offset_header,
            config.cache_pattern_matching) == ("~/.flume/taildir_position.json", 100, 120000, 3000,
                                               9223372036854775807, 1000, 5000, False, False, "file", False, True)
    [group] = config.file_groups()
    assert group.directory == "/var/log/app" and group.pattern.fullmatch("access.log")
    assert not group.pattern.fullmatch("access.log.1")          # the whole name must match (Java's matches())


def test_config_errors_name_key_and_value():
    errors = config_errors("""a1.sources.r1.filegroups = f1 f2 f3 f4
a1.sources.r1.filegroups.f1 = /var/log/app/
a1.sources.r1.filegroups.f2 = /var/log/(unclosed
a1.sources.r1.filegroups.f3 = /no/such/.*/dir/app.log
a1.sources.r1.filegroups.f9 = /var/log/x.log
a1.sources.r1.headers.f7.k = v
a1.sources.r1.headers.f1 = v""")
    assert errors == [
        "a1.sources.r1.filegroups.f1: the file-name part (a regex) is missing after the last '/' "
        "(got '/var/log/app/')",
        "a1.sources.r1.filegroups.f2: invalid regular expression: Unclosed group near index 9, in the file-name "
        "part '(unclosed' (got '/var/log/(unclosed')",
        "a1.sources.r1.filegroups.f3: the directory part is a literal path, only the file name is a regex, and "
        "directory '/no/such/.*/dir' does not exist (got '/no/such/.*/dir/app.log')",
        "a1.sources.r1.filegroups.f4: required property is missing (the path of file group 'f4', listed in "
        "filegroups)",
        "a1.sources.r1.filegroups.f9: file group 'f9' is not listed in filegroups (f1 f2 f3 f4) "
        "(got '/var/log/x.log')",
        "a1.sources.r1.headers.f1: expected headers.<filegroup>.<header> (got 'v')",
        "a1.sources.r1.headers.f7.k: file group 'f7' is not listed in filegroups (f1 f2 f3 f4) (got 'v')",
    ]


def test_config_value_errors_name_key_and_value():
    errors = config_errors("""a1.sources.r1.filegroups = f1
a1.sources.r1.filegroups.f1 = /var/log/.*
a1.sources.r1.batchSize = 0
a1.sources.r1.skipToEnd = yes
a1.sources.r1.idleTimeout = soon
a1.sources.r1.writePosIntervall = 10""")
    assert "a1.sources.r1.batchSize: must be greater than 0 (got '0')" in errors
    assert "a1.sources.r1.skipToEnd: expected true or false (got 'yes')" in errors
    assert "a1.sources.r1.idleTimeout: expected a whole number (got 'soon')" in errors
    assert any(e.startswith("a1.sources.r1.writePosIntervall: unknown property; did you mean 'writePosInterval'")
               for e in errors)
    assert config_errors("a1.sources.r1.filegroups.f1 = /var/log/.*") == [
        "a1.sources.r1.filegroups: required property is missing"]
    assert config_errors("a1.sources.r1.filegroups = f1\na1.sources.r1.filegroups.f1 = /x/.*\n"
                         "a1.sources.r1.batchSize = 5000") == [
        "a1.sources.r1.batchSize: 5000 is larger than the transactionCapacity (1000) of channel 'c1'"]


# --- the source's loop, with a recording channel processor ----------------------------------------------------------

class Recorder:
    """Stands in for the channel processor: records every batch put, or refuses while ``full`` is set."""

    def __init__(self):
        self.batches = []
        self.attempts = 0
        self.full = threading.Event()

    def process(self, batch):
        self.attempts += 1
        if self.full.is_set():
            raise ChannelFullError("c1", 10, 10, len(batch))
        self.batches.append(batch)

    def bodies(self) -> list[bytes]:
        return [b for batch in self.batches for b in batch.bodies]


def run_source(tmp_path: Path, props: dict[str, str], full: bool = False) -> tuple[TaildirSource, Recorder]:
    props = {"filegroups": "f1", "filegroups.f1": str(tmp_path / "logs" / "file.*"),
             "positionFile": str(tmp_path / "pos.json"), "backoffSleepIncrement": "20", "maxBackoffSleep": "50",
             **props}
    config, errors, _ = build(TaildirConfig, props, "a1.sources.r1.")
    assert not errors, errors
    recorder = Recorder()
    if full:
        recorder.full.set()                   # before the source starts: its very first put meets a full channel
    source = TaildirSource("r1", config, SourceContext("a1", recorder, FakeCounters()))
    source.waits = record_waits(source.stopping)    # the pauses it takes: backoffs and put retries
    source.start()
    return source, recorder


def test_source_back_pressure_reads_nothing_further_and_loses_nothing(tmp_path):
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "file1"
    path.write_text("".join(f"{i}\n" for i in range(50)))
    source, recorder = run_source(tmp_path, {"batchSize": "10"}, full=True)
    try:
        wait_until(lambda: recorder.attempts >= 3, 10, what="put attempts against the full channel")
        with open(path, "a") as f:
            f.write("".join(f"{i}\n" for i in range(50, 100)))
        attempts = recorder.attempts
        wait_until(lambda: recorder.attempts >= attempts + 2, 10, what="two more put attempts after the append")
        assert recorder.batches == [] and source.reader.files[next(iter(source.reader.files))].pos == 0
        recorder.full.clear()
        wait_until(lambda: len(recorder.bodies()) >= 100, 10, what="100 lines")
    finally:
        source.stop()
    assert recorder.bodies() == [str(i).encode() for i in range(100)]
    assert source.counters.counts["ChannelWriteFail"] >= 3
    assert parse((tmp_path / "pos.json").read_bytes())[0].pos == path.stat().st_size
    assert not (tmp_path / ("pos.json" + JOURNAL_SUFFIX)).exists()       # clean stop: journal folded in


def test_source_takes_turns_between_files_and_stops_promptly(tmp_path):
    (tmp_path / "logs").mkdir()
    for name in ("file1", "file2"):
        (tmp_path / "logs" / name).write_text("".join(f"{name}-{i}\n" for i in range(30)))
    source, recorder = run_source(tmp_path, {"batchSize": "10", "maxBatchCount": "1",
                                             "backoffSleepIncrement": "5000", "maxBackoffSleep": "5000"})
    try:
        wait_until(lambda: len(recorder.bodies()) >= 60, 10, what="60 lines")
        wait_until(lambda: 5.0 in source.waits, 10, what="the source asleep in a 5 s backoff")
        started = time.monotonic()
    finally:
        source.stop()
    assert time.monotonic() - started < 1.0
    sources = [batch.bodies[0].split(b"-")[0] for batch in recorder.batches]
    assert sources[:4] in ([b"file1", b"file2"] * 2, [b"file2", b"file1"] * 2)   # one batch each in turn


def test_source_stops_in_the_middle_of_a_big_file(tmp_path):
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "file1"
    path.write_bytes(b"".join(b"%07d\n" % i for i in range(300_000)))
    source, recorder = run_source(tmp_path, {"batchSize": "10"})
    wait_until(lambda: len(recorder.batches) >= 5, 10, what="the first batches")
    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 2.0
    got = recorder.bodies()
    assert 0 < len(got) < 300_000 and got == [b"%07d" % i for i in range(len(got))]
    # The position file says exactly how far the committed batches went.
    assert parse((tmp_path / "pos.json").read_bytes())[0].pos == 8 * len(got)


# --- end to end: real agents, real Redis, real workers -----------------------------------------------------------

def agent_conf(tmp_path: Path, pattern: str, *, source: str = "", sink: str = "", capacity: int = 100000) -> str:
    base = f"""a1.sources.r1.filegroups = f1
a1.sources.r1.filegroups.f1 = {tmp_path / 'logs'}/{pattern}
a1.sources.r1.positionFile = {tmp_path / 'pos.json'}
a1.sources.r1.batchSize = 1000
a1.sources.r1.backoffSleepIncrement = 50
a1.sources.r1.maxBackoffSleep = 200
a1.sources.r1.writePosInterval = 500
"""
    return TAILDIR_CONF.format(source=base + source, out=tmp_path / "out", capacity=capacity, sink=sink)


def test_flume_position_file_is_loaded_unchanged_and_honoured(tmp_path, redis_server):
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "app.log"
    lines = [f"line {i:04d}".encode() for i in range(1000)]
    path.write_bytes(b"".join(line + b"\n" for line in lines) + b"partial")
    resume = sum(len(line) + 1 for line in lines[:600])
    st = path.stat()
    # What a Flume 1.11 agent leaves behind (Gson, no white space), plus an entry for a file that is gone.
    (tmp_path / "pos.json").write_text(f'[{{"inode":{st.st_ino},"pos":{resume},"file":"{path}"}},'
                                       f'{{"inode":1,"pos":5,"file":"{logs}/gone.log"}}]')
    with AgentProcess(tmp_path, agent_conf(tmp_path, r"app\\.log"), broker_url=redis_server.url):
        wait_until(lambda: len(read_lines(tmp_path / "out")) >= 400, 60, what="the 400 lines after the position")
        # The source has read to the partial line and kept its position before it: it holds it back.
        wait_until(lambda: parse((tmp_path / "pos.json").read_bytes())[0].pos == st.st_size - len(b"partial")
                   and drained(redis_server), 30, what="the position before the partial line, the channel empty")
        assert read_lines(tmp_path / "out") == lines[600:]       # the partial last line is held back
        with open(path, "ab") as f:
            f.write(b" now complete\n")
        wait_until(lambda: len(read_lines(tmp_path / "out")) >= 401, 30, what="the completed line")
    assert read_lines(tmp_path / "out") == lines[600:] + [b"partial now complete"]
    size = path.stat().st_size
    assert (tmp_path / "pos.json").read_bytes() == f'[{{"inode":{st.st_ino},"pos":{size},"file":"{path}"}}]'.encode()


def test_headers_end_to_end(tmp_path, redis_server):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"first\r\nsecond\n")
    with AgentProcess(tmp_path, agent_conf(tmp_path, r"app\\.log", source="""
a1.sources.r1.fileHeader = true
a1.sources.r1.byteOffsetHeader = true
a1.sources.r1.headers.f1.dc = eu-1
""", sink="a1.sinks.k1.sink.serializer = header_and_text"), broker_url=redis_server.url):
        wait_until(lambda: len(read_lines(tmp_path / "out")) >= 2, 60, what="two events")
    assert read_lines(tmp_path / "out") == [
        f"{{byteoffset=0, dc=eu-1, file={logs / 'app.log'}}} first".encode(),
        f"{{byteoffset=7, dc=eu-1, file={logs / 'app.log'}}} second".encode()]


def test_validate_names_key_and_value(tmp_path):
    import subprocess
    import sys
    conf = tmp_path / "bad.conf"
    conf.write_text(agent_conf(tmp_path, "(oops").replace("a1.sources.r1.batchSize = 1000",
                                                         "a1.sources.r1.batchSize = -5"))
    result = subprocess.run([sys.executable, "-m", "app.cli", "validate", "-f", str(conf), "-n", "a1"],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=60)
    assert result.returncode == 2
    assert "a1.sources.r1.batchSize: must be greater than 0 (got '-5')" in result.stderr


class Writer(ReportingThread):
    """Appends numbered lines to ``path`` (reopening after a rotation), as a logging application does, at about
    2000 lines/s (its pace: it is the load, not a wait)."""

    def __init__(self, path: Path, count: int, every_s: float = 0.0005):
        super().__init__(self._write, name="writer")
        self.path, self.count, self.every_s = path, count, every_s
        self.lock = threading.Lock()          # held by the rotator: no line is written during a copytruncate
        self.reopen = threading.Event()
        self.written = 0

    def _write(self) -> None:
        f = open(self.path, "ab")
        for i in range(self.count):
            with self.lock:
                if self.reopen.is_set():
                    f.close()
                    f = open(self.path, "ab")
                    self.reopen.clear()
                f.write(line_of(self.path.name, i) + b"\n")
                f.flush()
                self.written += 1
            if i % 20 == 0:
                time.sleep(self.every_s * 20)
        f.close()


def line_of(name: str, i: int) -> bytes:
    return f"{name} line {i:06d} padding-to-make-the-line-longer".encode()


def tracking(pos_file: Path, path: Path) -> bool:
    """The source has started and tracks ``path`` (it writes its position file at start)."""
    try:
        return any(e.file == str(path) for e in parse(pos_file.read_bytes()))
    except (OSError, ValueError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("how", ["rename", "copytruncate"])
def test_rotation_while_a_writer_appends_delivers_every_line_once(tmp_path, redis_server, how):
    """Rotations every ~800 lines while a writer appends ~2000 lines/s.  A rotation waits until the source has
    delivered the current generation's first line: a whole generation written, copied and truncated before any
    reader looked at it is what no tailer of copy-truncated files can see (the test used to start writing before
    the agent was up, and lost the first generations so, under load)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "app.log"
    path.touch()
    total, every = 30000, 800
    out = tmp_path / "out"
    with AgentProcess(tmp_path, agent_conf(tmp_path, r"app\\.log", source="a1.sources.r1.idleTimeout = 3000"),
                      broker_url=redis_server.url):
        wait_until(lambda: tracking(tmp_path / "pos.json", path), 60, what="the source to track app.log")
        writer = Writer(path, total)
        writer.start()
        rotations, generation_start = 0, 0
        while True:
            wait_until(lambda: writer.written >= generation_start + every or not writer.is_alive(), 60,
                       what=f"{every} more lines written")
            if writer.written > generation_start:
                wait_until(lambda: line_of("app.log", generation_start) in set(read_lines(out)), 60,
                           what=f"line {generation_start}, the first of the current generation, delivered")
            if not writer.is_alive():
                break
            rotations += 1
            target = logs / f"app.log.{rotations}"
            if how == "rename":
                os.rename(path, target)              # the writer keeps writing to the old file for a while
                path.touch()
                moved_at = writer.written
                wait_until(lambda: writer.written >= moved_at + 20 or not writer.is_alive(), 30,
                           what="the writer to write into the renamed file")
                with writer.lock:
                    writer.reopen.set()
                    generation_start = writer.written
            else:
                with writer.lock:
                    shutil.copyfile(path, target)
                    os.truncate(path, 0)
                    generation_start = writer.written
        writer.join(60)
        assert rotations >= 3
        wait_until(lambda: len(read_lines(out)) >= total, 60, what=f"{total} lines")
        # Duplicates, if any, would still be in the source's files or in the channel: wait until both are empty.
        wait_until(lambda: taildir_caught_up(tmp_path / "pos.json") and drained(redis_server), 60,
                   what="the source at the end of every file and the channel empty")
    got = read_lines(out)
    expected = [line_of("app.log", i) for i in range(total)]
    assert len(got) == len(set(got)), "duplicates"
    assert sorted(got) == expected


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:                                             # a zombie (not reaped by its new parent yet) is gone too
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_sigkill_mid_file_loses_nothing_and_a_keyed_store_holds_every_line_once(tmp_path, redis_server, capsys):
    """kill -9 of the agent three times in the middle of a file.  Nothing is lost.  Lines are written again after
    a restart (at least once: a batch put into the channel just before the kill, whose position was not recorded
    yet, is read and put again; a batch a sink wrote but did not acknowledge is written again), but every line
    keeps its event id (<device>:<inode>:<generation>:<offset>), so a store keyed by it holds each line once."""
    logs = tmp_path / "logs"
    logs.mkdir()
    total = 200_000
    lines = [f"event {i:07d} of a file being read when the agent is killed".encode() for i in range(total)]
    (logs / "app.log").write_bytes(b"".join(line + b"\n" for line in lines))
    out = tmp_path / "out"
    # A small channel keeps the source back-pressured, so each kill finds it in the middle of the file.  The sink
    # writes "<event id> <line>": what a store keyed by the id would hold.
    conf = agent_conf(tmp_path, r"app\\.log", capacity=5000).replace(
        "a1.sinks.k1.type = file_roll", "a1.sinks.k1.type = tests.fault_sinks:KeyedFileSink").replace(
        "a1.sinks.k1.sink.directory", "a1.sinks.k1.directory").replace(
        "a1.sinks.k1.sink.batchSize", "a1.sinks.k1.batchSize")

    def delivered() -> list[tuple[bytes, bytes]]:
        return [tuple(line.split(b" ", 1)) for line in read_lines(out)]

    kills = 0
    for stop_at in (20_000, 80_000, 140_000):
        agent = AgentProcess(tmp_path, conf, broker_url=redis_server.url).start()
        wait_until(lambda: len(delivered()) >= stop_at, 120, what=f"{stop_at} lines")
        position = parse((tmp_path / "pos.json").read_bytes())[0].pos
        workers = children(agent.process.pid)
        assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
        assert position < (logs / "app.log").stat().st_size, "the source had finished the file: not mid-file"
        kills += 1
        wait_until(lambda: all(gone(pid) for pid in workers), 60, what="the killed agent's sink workers to end")
    with AgentProcess(tmp_path, conf, broker_url=redis_server.url):
        wait_until(lambda: len({body for _, body in delivered()}) >= total, 120, what="every line")
        wait_until(lambda: taildir_caught_up(tmp_path / "pos.json") and drained(redis_server), 60,
                   what="the source at the end of the file and the channel empty")
    got = delivered()
    assert {body for _, body in got} == set(lines), "lines lost"
    at_rest: dict[bytes, bytes] = {}
    for event_id, body in got:
        assert at_rest.setdefault(event_id, body) == body, f"event id {event_id!r} names two lines"
    assert len(at_rest) == total, "a line came back under another event id: a keyed store would hold it twice"
    duplicates = len(got) - total
    with capsys.disabled():
        print(f"\n  taildir kill -9 x{kills}: {total} lines, {duplicates} duplicates written, "
              f"{len(at_rest)} distinct event ids (a keyed store holds each line once)")
    # At most the source's uncommitted batch (1000) and the sink's unacknowledged write (1000) per kill.
    assert duplicates <= kills * 2000


def test_a_thousand_files_in_one_group(tmp_path, redis_server):
    logs = tmp_path / "logs"
    logs.mkdir()
    expected = []
    for i in range(1000):
        body = [f"file {i:04d} line {j:02d}".encode() for j in range(20)]
        (logs / f"svc-{i:04d}.log").write_bytes(b"".join(b + b"\n" for b in body))
        expected += body
    (logs / "ignored.txt").write_text("not matched\n")
    with AgentProcess(tmp_path, agent_conf(tmp_path, r"svc-\\d+\\.log", capacity=100000),
                      broker_url=redis_server.url):
        wait_until(lambda: len(read_lines(tmp_path / "out")) >= len(expected), 120, what="20,000 lines")
        for i in range(0, 1000, 100):                           # appends to some files are picked up too
            with open(logs / f"svc-{i:04d}.log", "ab") as f:
                f.write(f"file {i:04d} appended\n".encode())
            expected.append(f"file {i:04d} appended".encode())
        wait_until(lambda: len(read_lines(tmp_path / "out")) >= len(expected), 60, what="the appended lines")
        wait_until(lambda: taildir_caught_up(tmp_path / "pos.json") and drained(redis_server), 60,
                   what="every file read to its end and the channel empty (no duplicate still to come)")
    assert sorted(read_lines(tmp_path / "out")) == sorted(expected)
    entries = parse((tmp_path / "pos.json").read_bytes())
    assert len(entries) == 1000 and all(re.search(r"svc-\d{4}\.log$", e.file) for e in entries)



def test_ids_differ_after_copy_truncate(tmp_path):
    """New lines written after a truncation must not reuse the old lines' ids (a keyed store would overwrite)."""
    reader = make_reader(tmp_path)
    path = tmp_path / "logs" / "file1"
    path.write_bytes(b"2026-12-01T00:00:00 first\nsecond\n")
    reader.start()
    tf = tracked(reader, "file1")
    [(before, end, tail)] = list(reader.batches(tf, 10))
    reader.commit(tf, end, tail)
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(b"2026-12-01T00:05:00 new\nsecond\n")
    reader.scan()
    [(after, _, _)] = list(reader.batches(tracked(reader, "file1"), 10))
    assert after.bodies == [b"2026-12-01T00:05:00 new", b"second"]
    assert not set(before.ids) & set(after.ids)
