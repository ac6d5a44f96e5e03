"""TAILDIR end to end: real agents, a real Redis, real Celery workers and real files; rotation under a writer, kill -9,
Flume's position file taken over, a thousand files, and the CLI's validation."""
from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from agents import REPO, AgentProcess, children, drained, read_lines, taildir_caught_up, wait_until
from helpers import ReportingThread
from test_taildir import TAILDIR_CONF

from workers.sources.taildir_position import parse

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
                            capture_output=True, text=True, cwd=REPO, timeout=60)
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
            wait_until(lambda generation_start=generation_start: writer.written >= generation_start + every or not writer.is_alive(), 60,
                       what=f"{every} more lines written")
            if writer.written > generation_start:
                wait_until(lambda generation_start=generation_start: line_of("app.log", generation_start) in set(read_lines(out)), 60,
                           what=f"line {generation_start}, the first of the current generation, delivered")
            if not writer.is_alive():
                break
            rotations += 1
            target = logs / f"app.log.{rotations}"
            if how == "rename":
                os.rename(path, target)              # the writer keeps writing to the old file for a while
                path.touch()
                moved_at = writer.written
                wait_until(lambda moved_at=moved_at: writer.written >= moved_at + 20 or not writer.is_alive(), 30,
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
    # A small channel keeps the source back-pressured, and a sink that takes 20 ms a batch of 1,000 (at most 50,000
    # lines/s) leaves 1.2 s at least between the last stop (140,000 lines delivered) and the end of the file, so each
    # kill finds the source in the middle of it (an unbounded sink could finish the file between two looks at the
    # output, and did once).  The sink writes "<event id> <line>": what a store keyed by the id would hold.
    conf = agent_conf(tmp_path, r"app\\.log", capacity=5000, sink="a1.sinks.k1.delayMs = 20").replace(
        "a1.sinks.k1.type = file_roll", "a1.sinks.k1.type = tests.fault_sinks:KeyedFileSink").replace(
        "a1.sinks.k1.sink.directory", "a1.sinks.k1.directory").replace(
        "a1.sinks.k1.sink.batchSize", "a1.sinks.k1.batchSize")

    def delivered() -> list[tuple[bytes, bytes]]:
        return [tuple(line.split(b" ", 1)) for line in read_lines(out)]

    kills = 0
    for stop_at in (20_000, 80_000, 140_000):
        agent = AgentProcess(tmp_path, conf, broker_url=redis_server.url).start()
        wait_until(lambda stop_at=stop_at: len(delivered()) >= stop_at, 120, what=f"{stop_at} lines")
        position = parse((tmp_path / "pos.json").read_bytes())[0].pos
        workers = children(agent.process.pid)
        assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
        assert position < (logs / "app.log").stat().st_size, "the source had finished the file: not mid-file"
        kills += 1
        wait_until(lambda workers=workers: all(gone(pid) for pid in workers), 60, what="the killed agent's sink workers to end")
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
