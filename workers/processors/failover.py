"""``failover``: Flume's FailoverSinkProcessor, a priority list of sinks with a penalty box.

Contract of :meth:`FailoverSinkProcessor.write` (one call per batch, from one thread at a time):

1. Failed sinks whose penalty has expired are retried first, oldest expiry first, each with the batch.  The
   first that writes it goes back to the live pool (and becomes the active sink if its priority is the highest)
   and the call returns it.  One that fails again stays in the penalty box with a longer penalty.
2. Otherwise the batch goes to the active sink, the live sink of highest priority.  If it fails, it is moved to
   the penalty box and the next live sink by priority gets the same batch, and so on: the call raises
   :class:`AllSinksFailed` only when no live sink is left.  The batch then stays unacknowledged in its channel and
   the runner writes it again later.

Penalty after ``k`` consecutive failures: ``min(maxpenalty, 2^k * 1000 ms)``, i.e. 2 s, 4 s, 8 s, ... up to
``maxpenalty`` (30 s by default).  A sink is retried once its penalty has passed (strictly later, as in Flume); its
count starts at 1 again when it fails after having recovered.

Properties: ``priority.<sink>`` (a whole number; higher wins) and ``maxpenalty`` (ms).  Sinks without a priority
get -1, -2, ... in the order of the group's ``sinks`` list.  Differences from Flume, on purpose:

* Two sinks with the same priority are a configuration error naming the key and the value.  Flume keeps one of
  them and silently leaves the other out of the group (which one depends on Java's HashMap order), so events
  would never reach it even when every other sink is down.
* Unparsable priorities or ``maxpenalty`` values are errors (Flume falls back to a default with a log line), and
  so is a ``priority.<sink>`` for a sink that is not in the group (Flume ignores it).
* Unspecified priorities follow the ``sinks`` list order (Flume: the HashMap order of the sink names).
* Flume computes the penalty in 32-bit ints, which overflow after 21 consecutive failures (the penalty then
  becomes negative or tiny); here it stays at ``maxpenalty``.
* Flume retries penalised sinks even while the channel is empty (its runner polls); Flumery calls ``write`` only
  with a batch, so an expired sink is retried with the next batch.  A sink never "backs off" here: a write
  either succeeds or raises.
* A sink that raises :class:`~routing.deadletter.RejectedEvents` wrote the batch except the events its store
  refuses: that is not a sink failure, so there is no failover (which would write the rest twice); the sink
  counts as working and the exception goes to the runner, which dead-letters those events.

The state (live pool, penalty box) lives in the worker process that runs the group.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import AllSinksFailed, RejectedEvents
from core.options import convert, non_negative, opt
from core.registry import did_you_mean
from workers.processors.base import ProcessorContext, SinkProcessor

log = logging.getLogger(__name__)

FAILURE_PENALTY_MS = 1000
DEFAULT_MAX_PENALTY_MS = 30000
_MAX_EXPONENT = 62             # 2^62 s is beyond any maxpenalty; keeps the arithmetic small for endless failures



@dataclass(frozen=True)
class FailoverConfig:
    priority: dict[str, str] = opt("priority.*", doc="priority.<sink>: a whole number, unique in the group; the "
                                                     "live sink with the highest is used (sinks without one get "
                                                     "-1, -2, ... in the order of sinks)")
    max_penalty_ms: int = opt("maxpenalty", DEFAULT_MAX_PENALTY_MS, check=non_negative,
                              doc="longest wait (ms) before a failed sink is retried (2 s, 4 s, 8 s, ... up to this)")

    def problems(self) -> list[tuple[str, str]]:
        """Every ``priority.<sink>`` must name a sink and be a whole number."""
        problems = []
        for sink, raw in self.priority.items():
            if not sink:
                problems.append(("priority.", f"sink name missing after 'priority.' (got '{raw}')"))
                continue
            try:
                convert(raw, int)
            except ValueError as exc:
                problems.append((f"priority.{sink}", f"{exc} (got '{raw}')"))
        return problems

    @property
    def priorities(self) -> dict[str, int]:
        """The explicit priorities, by sink name (valid after :meth:`check`)."""
        return {sink: convert(raw, int) for sink, raw in self.priority.items()}


def assign_priorities(members: list[str], explicit: dict[str, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Flume's priorities of ``members``: the explicit ones, else -1, -2, ... in list order.

    Returns ``(priority by sink, problems)``; a problem ``(property, message)`` is a priority shared by two sinks,
    reported on the ``priority.<sink>`` key that is set in the file.
    """
    priorities: dict[str, int] = {}
    owner: dict[int, str] = {}
    problems: list[tuple[str, str]] = []
    implicit = 0
    for sink in members:
        if sink in explicit:
            value = explicit[sink]
        else:
            implicit -= 1
            value = implicit
        if value in owner:
            problems.append(_duplicate(sink, owner[value], value, explicit))
            continue
        owner[value] = sink
        priorities[sink] = value
    return priorities, problems


def _duplicate(sink: str, other: str, value: int, explicit: dict[str, int]) -> tuple[str, str]:
    dropped = "Flume would silently leave one of them out of the group; give every sink its own priority"
    if sink in explicit and other in explicit:
        return f"priority.{sink}", f"{value} is also the priority of sink '{other}': {dropped}"
    key_sink, unset = (sink, other) if sink in explicit else (other, sink)
    return (f"priority.{key_sink}",
            f"{value} is also the priority that sink '{unset}' gets because it has none (sinks without a "
            f"priority get -1, -2, ... in the order of the group's sinks): {dropped}")


def penalty_ms(failures: int, max_penalty_ms: int) -> int:
    """Flume's failover penalty after ``failures`` consecutive failures: ``min(maxpenalty, 2^k * 1000)``."""
    return min(max_penalty_ms, FAILURE_PENALTY_MS * 2 ** min(failures, _MAX_EXPONENT))


@dataclass
class FailedSink:
    """A sink in the penalty box: retried by the first write after ``refresh`` (clock seconds)."""

    sink: object
    priority: int
    failures: int = 0
    refresh: float = 0.0

    def fail(self, now: float, max_penalty_ms: int) -> None:
        """Count one more consecutive failure at ``now`` and push ``refresh`` back by the new penalty."""
        self.failures += 1
        self.refresh = now + penalty_ms(self.failures, max_penalty_ms) / 1000.0


class FailoverSinkProcessor(SinkProcessor):
    """Flume's FailoverSinkProcessor, a priority list of sinks with a penalty box.

    The contract of :meth:`write` is in the module docstring.  ``clock`` returns seconds (default
    :func:`time.monotonic`); tests pass a fake one.  ``live`` maps priority to sink; ``failed`` holds the
    penalised sinks.  Not thread-safe: a runner calls it from one thread.
    """

    Config = FailoverConfig

    def __init__(self, name: str, config: FailoverConfig, context: ProcessorContext, *,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(name, config, context)
        sinks = self.sinks
        self.clock = clock
        priorities, problems = assign_priorities([s.name for s in sinks], config.priorities)
        if problems:
            raise ValueError(f"sink group {name}: " + "; ".join(f"{k}: {m}" for k, m in problems))
        self.live: dict[int, object] = {priorities[s.name]: s for s in sinks}
        self.failed: list[FailedSink] = []

    @classmethod
    def check(cls, config: FailoverConfig, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """Priorities must be numbers, name sinks of the group (``refs``) and be unique (see the module
        docstring)."""
        problems = config.problems()
        if problems:
            return problems
        sinks = list(refs)
        for sink in config.priority:
            if sink and sink not in sinks:
                problems.append((f"priority.{sink}", f"sink '{sink}' is not in this group (sinks: "
                                 f"{' '.join(sinks) or 'none'})" + did_you_mean(sink, sinks)))
        explicit = {s: p for s, p in config.priorities.items() if s in sinks}
        problems += assign_priorities(sinks, explicit)[1]
        return problems

    @property
    def active(self):
        """The live sink of highest priority, or None when every sink is penalised."""
        return self.live[max(self.live)] if self.live else None

    def write(self, batch):
        """Write ``batch`` through one sink and return it; raise :class:`AllSinksFailed` if none could."""
        recovered = self._retry_expired(batch)
        if recovered is not None:
            return recovered
        errors: list[str] = []
        while self.live:
            sink = self.active
            try:
                sink.write(batch)
            except RejectedEvents:
                raise
            except Exception as exc:
                errors.append(f"{sink.name}: {exc}")
                self._penalise(sink, exc)
                continue
            return sink
        raise AllSinksFailed(self._failure_message(errors))

    def _retry_expired(self, batch):
        """Flume's retry of penalised sinks: the first expired one that writes ``batch`` is returned."""
        now = self.clock()
        for failed in sorted(self.failed, key=lambda f: f.refresh):
            if not failed.refresh < now:
                break
            try:
                failed.sink.write(batch)
            except RejectedEvents:
                self._restore(failed)
                raise
            except Exception as exc:
                failed.fail(self.clock(), self.config.max_penalty_ms)
                log.warning("sink group %s: sink %s failed again (%d in a row), next retry in %.1fs: %s",
                            self.name, failed.sink.name, failed.failures, failed.refresh - self.clock(), exc)
                continue
            self._restore(failed)
            return failed.sink
        return None

    def _penalise(self, sink, exc: Exception) -> None:
        """Move the active ``sink`` from the live pool to the penalty box, with its first penalty."""
        priority = max(self.live)
        del self.live[priority]
        failed = FailedSink(sink, priority)
        failed.fail(self.clock(), self.config.max_penalty_ms)
        self.failed.append(failed)
        nxt = self.active
        log.warning("sink group %s: sink %s failed and is penalised for %.1fs; %s: %s", self.name, sink.name,
                    failed.refresh - self.clock(), f"failing over to {nxt.name}" if nxt else "no sink left", exc)

    def _restore(self, failed: FailedSink) -> None:
        self.failed.remove(failed)
        self.live[failed.priority] = failed.sink
        log.info("sink group %s: sink %s recovered after %d failures; active sink: %s", self.name,
                 failed.sink.name, failed.failures, self.active.name)

    def _failure_message(self, errors: list[str]) -> str:
        message = f"all sinks of group {self.name} failed, nothing left to fail over to"
        if errors:
            message += " (" + "; ".join(errors) + ")"
        if self.failed:
            soonest = min(self.failed, key=lambda f: f.refresh)
            wait = max(0.0, soonest.refresh - self.clock())
            message += f"; next retry: sink {soonest.sink.name} in {wait:.1f}s"
        return message
