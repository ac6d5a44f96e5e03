"""Sinks for tests, some misbehaving on purpose, loaded by agents under test as third-party components
(``tests.fault_sinks:Class``).

They write like a TEXT file_roll sink (one file per worker process, fsynced) so tests can count what arrived.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import RejectedEvents
from core.options import non_negative, opt, positive
from workers.sinks.base import Sink
from workers.sinks.file_roll import FileRollSink


@dataclass(frozen=True)
class FaultConfig:
    directory: str = opt("directory")
    batch_size: int = opt("batchSize", 100, check=positive)
    marker: str = opt("marker", "POISON", doc="bodies containing this are refused")


class _FileSink(Sink):
    Config = FaultConfig

    def start(self) -> None:
        Path(self.config.directory).mkdir(parents=True, exist_ok=True)
        self.path = Path(self.config.directory) / f"part-{os.getpid()}"

    def append(self, bodies: list[bytes]) -> None:
        if bodies:
            with open(self.path, "ab") as f:
                f.write(b"".join(b + b"\n" for b in bodies))
                f.flush()
                os.fsync(f.fileno())


class RejectingSink(_FileSink):
    """Writes every event except those whose body contains the marker, which the 'store' rejects as malformed."""

    def write(self, batch) -> None:
        marker = self.config.marker.encode()
        bad = {i: f"malformed: body contains {self.config.marker}" for i, b in enumerate(batch.bodies) if marker in b}
        self.append([b for i, b in enumerate(batch.bodies) if i not in bad])
        if bad:
            raise RejectedEvents(bad)


class FailingSink(_FileSink):
    """Fails a whole write while the batch holds a marked event and the file ``<directory>/broken`` exists."""

    def write(self, batch) -> None:
        marker = self.config.marker.encode()
        if (Path(self.config.directory) / "broken").exists() and any(marker in b for b in batch.bodies):
            raise OSError("store refuses this batch")
        self.append(batch.bodies)


@dataclass(frozen=True)
class KeyedConfig(FaultConfig):
    delay_ms: int = opt("delayMs", 0, check=non_negative, doc="time each write takes at least")


class KeyedFileSink(_FileSink):
    """Writes ``<event id> <body>`` lines: what a store keyed by the event id (ES ``_id``, Mongo ``_id``) would hold
    is then the last body written under each id, so a test can count duplicates at rest as well as on the wire.
    ``delayMs`` bounds its rate, for a test that must stop the agent before the source reaches the end of a file."""

    Config = KeyedConfig

    def write(self, batch) -> None:
        if self.config.delay_ms:
            time.sleep(self.config.delay_ms / 1000)
        ids = list(batch.ids) if batch.ids is not None else [""] * len(batch)
        self.append([i.encode() + b" " + b for i, b in zip(ids, batch.bodies)])


class KillAfterWriteFileRoll(FileRollSink):
    """A real ``file_roll`` sink whose worker process kills itself (SIGKILL) right after a write returned, before
    the runner acknowledges the batch, whenever the file ``<sink.directory>.kill`` exists (removed first, so one
    kill per file): the window in which an at-least-once sink writes a batch twice, hit every time instead of by
    chance."""

    def write(self, batch) -> None:
        super().write(batch)
        trigger = Path(f"{self.config.directory}.kill")
        try:
            trigger.unlink()
        except FileNotFoundError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class SlowConfig(FaultConfig):
    delay_ms: int = opt("delayMs", 300, check=positive)


class SlowSink(_FileSink):
    """Takes ``delayMs`` to write each batch, like a store that answers slowly."""

    Config = SlowConfig

    def write(self, batch) -> None:
        time.sleep(self.config.delay_ms / 1000)
        self.append(batch.bodies)


class HeldSink(SlowSink):
    """A store that hangs: while the file ``<directory>.hold`` exists a write does not return; otherwise it
    writes like :class:`SlowSink` (``delayMs`` per batch).  Every write also records whether another write of
    the same sink was still running when it began (in ``<directory>.overlap``, with both threads' names): a sink
    writes one batch at a time, whatever pool runs the worker's tasks."""

    def start(self) -> None:
        super().start()
        self.writing: list[str] = []

    def write(self, batch) -> None:
        me = threading.current_thread().name
        if self.writing:
            with open(f"{self.config.directory}.overlap", "a") as f:
                f.write(f"{me} began while {self.writing} wrote\n")
        self.writing.append(me)
        try:
            while Path(f"{self.config.directory}.hold").exists():
                time.sleep(0.05)
            super().write(batch)
        finally:
            self.writing.remove(me)
