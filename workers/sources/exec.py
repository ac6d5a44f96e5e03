"""``exec``: Flume's ExecSource, one event per line a command writes to its standard output.

Lines are put in batches of ``batchSize``, or sooner when ``batchTimeout`` ms passed since the first line of the
batch.  Full batches read at once (a command writing faster than the channels take) go in one put, each still
its own channel message, within the channels' ``transactionCapacity`` and byte limits.  While the channels are full the source stops reading the pipe, so the command blocks on its writes
(back-pressure) instead of lines being dropped, which Flume's exec source does.  Lines end at ``\\n``; a
``\\r`` before it is removed; a last line without newline is kept.  As in Flume, exec cannot resume: lines the
agent read but had not yet put when it was killed are gone (prefer TAILDIR or spooldir for files).
"""
from __future__ import annotations

import fcntl
import logging
import os
import select
import shlex
import subprocess
import time
from dataclasses import dataclass

from core.event import Batch
from core.options import non_negative, opt, positive
from workers.sources.base import Source

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20


@dataclass(frozen=True)
class ExecConfig:
    command: str = opt("command", doc="the command to run")
    shell: str = opt("shell", "", doc="run the command through this shell, e.g. '/bin/sh -c'")
    restart: bool = opt("restart", False, doc="run the command again when it exits")
    restart_throttle_ms: int = opt("restartThrottle", 10000, check=non_negative, doc="ms to wait before a restart")
    log_stderr: bool = opt("logStdErr", False, doc="log the command's standard error")
    batch_size: int = opt("batchSize", 20, check=positive, doc="lines per batch (channel message)")
    batch_timeout_ms: int = opt("batchTimeout", 3000, check=positive, doc="ms before a partial batch is put")
    charset: str = opt("charset", "UTF-8", inert="bodies are the command's bytes, never re-encoded")


def _widen_pipe(fd: int) -> None:
    """Let the command's output pipe hold READ_SIZE bytes instead of 64 KiB (Linux): a fast command then fills
    it between two reads, and the source reads many lines per call instead of waking per 64 KiB."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, READ_SIZE)
    except (AttributeError, OSError):      # not Linux, or above the user's pipe buffer allowance: keep the default
        pass


class ExecSource(Source):
    Config = ExecConfig

    def argv(self) -> list[str]:
        if self.config.shell:
            return shlex.split(self.config.shell) + [self.config.command]
        return shlex.split(self.config.command)

    def close(self) -> None:
        process = getattr(self, "process", None)
        if process and process.poll() is None:
            process.terminate()

    def serve(self) -> None:
        while not self.stopping.is_set():
            code = self.run_once()
            if code is None or not self.config.restart:
                return
            log.info("exec source %s: command exited with %s; restarting in %d ms", self.name, code,
                     self.config.restart_throttle_ms)
            if self.stopping.wait(self.config.restart_throttle_ms / 1000):
                return

    def run_once(self) -> int | None:
        """Run the command to its end; its exit status, or None if the source was stopped meanwhile."""
        try:
            self.process = subprocess.Popen(self.argv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.error("exec source %s: cannot run %r: %s", self.name, self.config.command, exc)
            return 127
        self.spawn(self._drain_stderr, "stderr")
        _widen_pipe(self.process.stdout.fileno())
        ok = self._pump(self.process.stdout.fileno())
        if not ok:
            self.close()
            self.process.wait()
            return None
        return self.process.wait()

    def _pump(self, fd: int) -> bool:
        batch: list[bytes] = []             # line bodies not yet put
        pending = b""
        first_at = 0.0
        size, timeout_s = self.config.batch_size, self.config.batch_timeout_ms / 1000
        while True:
            wait = max(0.0, first_at + timeout_s - time.monotonic()) if batch else 1.0
            readable, _, _ = select.select([fd], [], [], wait)
            if not readable:
                if batch and not self._flush(batch):
                    return False
                batch = []
                if self.stopping.is_set():
                    return False
                continue
            data = os.read(fd, READ_SIZE)
            if not data:
                if pending:
                    batch.append(pending.removesuffix(b"\r"))
                return self._flush(batch)
            # The unfinished line goes in front of the first line only: "pending + data" would copy every read.
            lines = data.split(b"\n")
            lines[0] = pending + lines[0]
            pending = lines.pop()
            if b"\r" in data or (lines and b"\r" in lines[0]):        # lines[0] holds what was pending
                lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
            if lines and not batch:
                first_at = time.monotonic()
            batch += lines
            while len(batch) >= size:
                count = self._ready(batch, size)
                if not self._flush(batch[:count], size):
                    return False
                del batch[:count]
                first_at = time.monotonic()

    def _ready(self, batch: list[bytes], size: int) -> int:
        """How many lines of ``batch`` (at least ``size``) to put now: every full batch it holds, in one put as
        far as the channels' limits allow (``ChannelProcessor.put_limits``).  When the command writes faster
        than the channels take, several batches are read at once: one transaction and one broker round trip
        (one fsync of a file channel) for all of them instead of one each, each batch still its own message."""
        events, nbytes = self.processor.put_limits()
        count = max(size, min(len(batch), events) // size * size)
        if count > size and nbytes and sum(map(len, batch[:count])) > nbytes:
            return size
        return count

    def _flush(self, bodies: list[bytes], size: int = 0) -> bool:
        if not bodies:
            return True
        return self.deliver(Batch(bodies), message_events=size if len(bodies) > size else 0)

    def _drain_stderr(self) -> None:
        for line in self.process.stderr:
            if self.config.log_stderr:
                log.info("exec source %s stderr: %s", self.name, line.rstrip().decode(errors="replace"))
