"""The agent's periodic throughput line: what each component moved since the previous line.

Every ``interval_s`` (``flumery agent --stats-interval``, default 60 s) the agent reads Flume's counters of the
whole agent (every process adds its counts to Redis, see :mod:`app.metrics`) and logs, at INFO, one line such as

    last 60 s: sources r1 +1200 (20/s); sinks k1 +1180 (19.7/s); channels c1 20 held

(events accepted by each source, events written by each sink, events held by each channel that holds any, and the
dead letters when there are some).  An interval in which nothing moved logs nothing.  Together with the start, stop
and error lines this is what the agent logs at INFO; the per-event and per-task lines are at DEBUG.
"""
from __future__ import annotations

import logging
import threading
import time

from routing.deadletter import DEAD_CHANNEL

log = logging.getLogger(__name__)


def _count(snapshot: dict, component: str, counter: str) -> int:
    try:
        return int(snapshot.get(component, {}).get(counter, "0"))
    except ValueError:
        return 0


def _moved(before: dict, after: dict, kind: str, counter: str, seconds: float) -> list[str]:
    out = []
    for component in after:
        if not component.startswith(kind + "."):
            continue
        n = max(0, _count(after, component, counter) - _count(before, component, counter))
        if n:
            out.append(f"{component.partition('.')[2]} +{n} ({n / seconds:.3g}/s)")
    return out


def summary(before: dict, after: dict, seconds: float) -> str | None:
    """The throughput line between two snapshots of Flume's JSON taken ``seconds`` apart; None if nothing
    moved."""
    seconds = max(seconds, 1e-9)
    sources = _moved(before, after, "SOURCE", "EventAcceptedCount", seconds)
    sinks = _moved(before, after, "SINK", "EventDrainSuccessCount", seconds)
    dead = DEAD_CHANNEL
    dead_before, dead_after = (_count(s, f"CHANNEL.{dead}", "ChannelSize") for s in (before, after))
    if not sources and not sinks and dead_before == dead_after:
        return None
    parts = [f"last {seconds:.0f} s:"]
    parts.append("sources " + ", ".join(sources) + ";" if sources else "sources idle;")
    parts.append("sinks " + ", ".join(sinks) + ";" if sinks else "sinks idle;")
    held = [f"{c.partition('.')[2]} {_count(after, c, 'ChannelSize')} held" for c in after
            if c.startswith("CHANNEL.") and c != f"CHANNEL.{dead}" and _count(after, c, "ChannelSize")]
    parts.append("channels " + (", ".join(held) if held else "empty"))
    if dead_after or dead_before:
        parts[-1] += f"; dead letters {dead_after} ({dead_after - dead_before:+d})"
    return " ".join(parts)


class ThroughputLog:
    """Logs :func:`summary` every ``interval_s`` from ``snapshot_fn()`` (Flume's JSON of the agent)."""

    def __init__(self, snapshot_fn, interval_s: float, clock=time.monotonic):
        self.snapshot_fn = snapshot_fn
        self.interval_s = interval_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flumery-throughput", daemon=True)

    def start(self) -> "ThroughputLog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _read(self) -> dict | None:
        try:
            return self.snapshot_fn()
        except Exception as exc:           # the broker is down: say so, keep the agent running
            log.warning("throughput: cannot read the agent's counters: %s", exc)
            return None

    def _run(self) -> None:
        previous, since = self._read() or {}, self.clock()
        while not self._stop.wait(self.interval_s):
            current = self._read()
            if current is None:
                continue
            now = self.clock()
            line = summary(previous, current, now - since)
            if line:
                log.info("%s", line)
            previous, since = current, now
