"""TAILDIR: Flume's test vectors, the reader and the position file (unit, real files), the source's loop with a
recording channel processor, and its configuration.  End to end: e2e/test_taildir_agent.py."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
import zlib
from pathlib import Path

import pytest
from agents import wait_until
from conftest import VECTORS, FakeCounters
from helpers import record_waits

from core.config import parse_agent
from core.errors import ChannelFullError, ConfigInvalid
from core.java_regex import compile_java
from core.options import build
from workers.sources.base import SourceContext
from workers.sources.taildir import TaildirConfig, TaildirSource
from workers.sources.taildir_position import JOURNAL_SUFFIX, PositionEntry, PositionStore, parse, to_json
from workers.sources.taildir_reader import FileGroup, TaildirReader

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
    for _batch, end, tail in reader.batches(tf, 50):
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
