"""exec source and file_roll sink in detail, without a broker (a recording processor stands in for channels)."""
from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from agents import wait_until
from conftest import FakeCounters

from core.event import Batch, Event
from core.options import build
from workers.sinks.base import SinkContext
from workers.sinks.file_roll import FileRollSink
from workers.sources.base import SourceContext
from workers.sources.exec import ExecSource


class Recorder:
    """Stands in for the channel processor: records each put batch (and when it came)."""

    def __init__(self, put_events: int = 1):
        self.batches: list[tuple[float, list[bytes]]] = []
        self.message_events: list[int] = []
        self.put_events = put_events            # 1: a put never carries more than one batch
        self.lock = threading.Lock()

    def process(self, batch, message_events: int = 0):
        with self.lock:
            self.batches.append((time.monotonic(), list(batch.bodies)))
            self.message_events.append(message_events)

    def put_limits(self) -> tuple[int, int]:
        return self.put_events, 0

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [b for _, bodies in self.batches for b in bodies]


def exec_source(props: dict, put_events: int = 1) -> tuple[ExecSource, Recorder]:
    config, errors, _ = build(ExecSource.Config, props, "a1.sources.r1.")
    assert not errors, errors
    recorder = Recorder(put_events)
    return ExecSource("r1", config, SourceContext("a1", recorder, FakeCounters())), recorder


def test_exec_lines_batches_and_crlf():
    source, rec = exec_source({"command": "printf 'a\\r\\nb\\nc\\nd\\nlast-without-newline'", "batchSize": "2"})
    source.start()
    wait_until(lambda: len(rec.bodies()) >= 5, 10, what="5 lines")
    source.stop()
    assert rec.bodies() == [b"a", b"b", b"c", b"d", b"last-without-newline"]
    assert [len(b) for _, b in rec.batches] == [2, 2, 1]


def test_exec_joins_lines_and_crlf_split_across_reads():
    """A line (and its CR LF) written in parts, with pauses, so that the parts come in separate reads."""
    command = "printf 'ab'; sleep 0.2; printf 'c\\r'; sleep 0.2; printf '\\nd\\r'; sleep 0.2; printf '\\ne\\n'"
    source, rec = exec_source({"command": command, "shell": "/bin/sh -c", "batchSize": "1"})
    source.start()
    wait_until(lambda: len(rec.bodies()) >= 3, 10, what="3 lines")
    source.stop()
    assert rec.bodies() == [b"abc", b"d", b"e"]


def test_exec_puts_full_batches_read_at_once_together_within_the_put_limit(tmp_path):
    log = tmp_path / "lines"
    log.write_bytes(b"".join(b"%d\n" % i for i in range(1003)))
    source, rec = exec_source({"command": f"cat {log}", "batchSize": "100"}, put_events=450)
    source.start()
    wait_until(lambda: len(rec.bodies()) >= 1003, 10, what="1003 lines")
    source.stop()
    assert rec.bodies() == [b"%d" % i for i in range(1003)]
    sizes = [len(b) for _, b in rec.batches]
    # one read holds every line: puts of 4 batches (the limit 450 holds 4 of 100), then the 3 lines at the end
    assert sizes == [400, 400, 200, 3] and rec.message_events == [100, 100, 100, 0]


def test_exec_shell_restart_and_throttle():
    source, rec = exec_source({"command": "echo run", "shell": "/bin/sh -c", "restart": "true",
                               "restartThrottle": "300", "batchTimeout": "50"})
    source.start()
    wait_until(lambda: len(rec.bodies()) >= 3, 10, what="three runs")
    source.stop()
    times = [t for t, _ in rec.batches]
    assert rec.bodies()[:3] == [b"run"] * 3
    assert all(b - a >= 0.25 for a, b in zip(times, times[1:3]))      # restartThrottle between runs


def test_exec_batch_timeout_puts_a_partial_batch_while_the_command_runs():
    source, rec = exec_source({"command": "/bin/sh -c 'echo early; sleep 5; echo late'", "batchSize": "100",
                               "batchTimeout": "200"})
    source.start()
    wait_until(lambda: rec.bodies() == [b"early"], 3, what="the partial batch before the command ends")
    source.stop()


def test_exec_log_stderr(caplog):
    caplog.set_level("INFO")
    source, rec = exec_source({"command": "/bin/sh -c 'echo out; echo oops >&2'", "logStdErr": "true"})
    source.start()
    wait_until(lambda: rec.bodies() == [b"out"], 10, what="stdout line")
    wait_until(lambda: "oops" in caplog.text, 10, what="the stderr line in the log")
    source.stop()


def file_roll(tmp_path, **props) -> FileRollSink:
    props = {"sink.directory": str(tmp_path / "out"), **props}
    config, errors, _ = build(FileRollSink.Config, props, "a1.sinks.k1.")
    assert not errors, errors
    sink = FileRollSink("k1", config, SinkContext("a1", tmp_path))
    sink.start()
    return sink


def test_file_roll_text_and_header_and_text(tmp_path):
    sink = file_roll(tmp_path)
    sink.write(Batch.from_events([Event(b"one", {"a": "1"}), Event(b"two")]))
    sink.stop()
    [path] = (tmp_path / "out").iterdir()
    assert path.read_bytes() == b"one\ntwo\n"
    sink = file_roll(tmp_path / "h", **{"sink.serializer": "header_and_text"})
    sink.write(Batch.from_events([Event(b"one", {"a": "1", "b": "2"}), Event(b"two")]))
    sink.stop()
    [path] = (tmp_path / "h" / "out").iterdir()
    assert path.read_bytes() == b"{a=1, b=2} one\n{} two\n"


def test_file_roll_names_and_rolls(tmp_path):
    sink = file_roll(tmp_path, **{"sink.rollInterval": "1", "sink.pathManager.prefix": "web-",
                                  "sink.pathManager.extension": "log"})
    sink.write(Batch([b"a"]))
    sink.write(Batch([b"b"]))
    sink.opened_at -= 1.1                 # the file was opened 1.1 s ago (rather than sleeping 1.1 s)
    sink.write(Batch([b"c"]))
    sink.stop()
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 2 and all(n.startswith("web-") and n.endswith(".log") for n in names)
    assert names[0].endswith("-1.log") and names[1].endswith("-2.log")
    assert [(tmp_path / "out" / n).read_bytes() for n in names] == [b"a\nb\n", b"c\n"]


def test_file_roll_rolltime_names(tmp_path):
    sink = file_roll(tmp_path, **{"sink.pathManager": "ROLLTIME"})
    sink.write(Batch([b"x"]))
    sink.stop()
    [name] = [p.name for p in (tmp_path / "out").iterdir()]
    stamp, _, index = name.partition("-")
    assert len(stamp) == 14 and stamp.isdigit() and index == "1"


def test_file_roll_without_newline(tmp_path):
    sink = file_roll(tmp_path, **{"sink.serializer.appendNewline": "false"})
    sink.write(Batch([b"a", b"b"]))
    sink.stop()
    assert [p.read_bytes() for p in (tmp_path / "out").iterdir()] == [b"ab"]


def test_failed_write_is_cut_back_so_a_retry_leaves_no_torn_line(tmp_path, monkeypatch):
    sink = file_roll(tmp_path)
    sink.write(Batch([b"first"]))
    real_write = os.write

    def half_then_fail(fd, data):
        real_write(fd, bytes(data[:3]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(OSError):
        sink.write(Batch([b"second", b"third"]))
    monkeypatch.setattr(os, "write", real_write)
    sink.write(Batch([b"second", b"third"]))                  # the runner's retry
    sink.stop()
    assert [p.read_bytes() for p in (tmp_path / "out").iterdir()] == [b"first\nsecond\nthird\n"]


def test_two_processes_of_one_sink_never_share_a_file(tmp_path):
    a, b = file_roll(tmp_path), file_roll(tmp_path)
    b.series = a.series                                       # same start millisecond: same first name
    a.write(Batch([b"from a"]))
    b.write(Batch([b"from b"]))
    a.stop()
    b.stop()
    contents = sorted(p.read_bytes() for p in (tmp_path / "out").iterdir())
    assert contents == [b"from a\n", b"from b\n"]


def test_directory_removed_between_writes_is_recreated_and_the_batch_written_again(tmp_path, caplog):
    """rm -rf of sink.directory with rollInterval = 0: the open file is gone from its path, so the next batch
    must not be acknowledged into it; it goes into a new file in the recreated directory, with one warning."""
    caplog.set_level("WARNING")
    sink = file_roll(tmp_path, **{"sink.rollInterval": "0"})
    sink.write(Batch([b"before"]))
    shutil.rmtree(tmp_path / "out")
    sink.write(Batch([b"after-1", b"after-2"]))
    sink.write(Batch([b"after-3"]))
    sink.stop()
    assert [p.read_bytes() for p in (tmp_path / "out").iterdir()] == [b"after-1\nafter-2\nafter-3\n"]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "no longer at" in warnings[0].getMessage(), caplog.text


def test_directory_renamed_away_keeps_no_copy_of_the_rewritten_batch(tmp_path):
    """The directory moved away (as by a careless rotation): the batch written into the moved file is cut back
    there and written into a new file at the configured path, so it is neither lost nor duplicated."""
    sink = file_roll(tmp_path, **{"sink.rollInterval": "0"})
    sink.write(Batch([b"before"]))
    (tmp_path / "out").rename(tmp_path / "moved")
    sink.write(Batch([b"after"]))
    sink.stop()
    assert [p.read_bytes() for p in (tmp_path / "moved").iterdir()] == [b"before\n"]
    assert [p.read_bytes() for p in (tmp_path / "out").iterdir()] == [b"after\n"]


def test_file_replaced_at_its_path_is_not_written_into(tmp_path):
    """Another file took the name (deleted and recreated by someone else): ours is no longer the file at its
    path, so the batch goes into a fresh file of the series instead."""
    sink = file_roll(tmp_path, **{"sink.rollInterval": "0"})
    sink.write(Batch([b"before"]))
    [path] = (tmp_path / "out").iterdir()
    path.unlink()
    path.write_bytes(b"someone else's\n")
    sink.write(Batch([b"after"]))
    sink.stop()
    assert sorted(p.read_bytes() for p in (tmp_path / "out").iterdir()) == [b"after\n", b"someone else's\n"]
