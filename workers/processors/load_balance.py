"""``load_balance``: Flume's LoadBalancingSinkProcessor, spreading batches over the sinks of a group.

Contract of :meth:`LoadBalancingSinkProcessor.write` (one call per batch, from one thread at a time): the selector
gives an order of the group's sinks; the batch goes to the first sink of that order that writes it, and the
call returns that sink.  A sink that raises is reported to the selector (which may back it off) and the next
sink of the order gets the same batch.  The call raises :class:`AllSinksFailed` when every sink of the order
failed or the order is empty (every sink backed off); the batch then stays unacknowledged in its channel and the
runner writes it again later.

Selectors (``selector``; names are matched case-insensitively, Flume's class names are accepted too):

* ``round_robin`` (default): the order starts one position further at every write, over the sinks not backed
  off, and wraps.  Without backoff a failing sink's turn therefore spills onto the next sink in the list
  (Flume's test gives 100/0/200 for three sinks of which the middle one fails).
* ``random``: a random order of the sinks not backed off, every write.
* ``module:Class``: a subclass of :class:`SinkSelector`; it is given every ``selector.*`` property.

With ``backoff = true`` a sink that fails is left out of the orders until ``restoreTime = now +
min(selector.maxTimeOut, 1000 * 2^k)`` ms (2 s, 4 s, 8 s, 16 s, then 30 s with the default maxTimeOut), where the
failure count ``k`` starts again at 1 when more than (the last backoff + 1 hour) has passed since the last
failure, and otherwise grows by one, up to 16.  Without backoff every sink stays in every order.

Differences from Flume, on purpose:

* A group with one sink, an unknown selector (with a did-you-mean), ``selector.*`` properties the built-in
  selectors do not have, a ``selector.maxTimeOut`` of 0 or less, and a ``backoff`` that is neither true nor false
  are configuration errors (Flume: an exception at start-up for the first two; it ignores or defaults the rest).
* Flume's class names of its own selectors are accepted as aliases (Flume itself cannot instantiate those private
  classes); a custom selector is a Python class, and it may use the backoff of :class:`SinkSelector`.
* A sink never "backs off" here (Flume's BACKOFF status means the channel was empty; Flumery calls ``write`` only
  with a batch): a write either succeeds or raises.
* A sink that raises :class:`~routing.deadletter.RejectedEvents` wrote the batch except the events its store
  refuses: that is not a sink failure (no other sink gets the batch, which would write it twice); the exception
  goes to the runner, which dead-letters those events.

The state (round-robin position, backoffs) lives in the worker process that runs the group.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import AllSinksFailed, RejectedEvents, UnknownType
from core.options import opt, positive
from core.registry import Registry, did_you_mean
from workers.processors.base import ProcessorContext, SinkProcessor

log = logging.getLogger(__name__)

DEFAULT_MAX_TIMEOUT_MS = 30000
BACKOFF_UNIT_MS = 1000
SEQUENTIAL_RANGE_MS = 3600 * 1000        # a failure within last backoff + 1 h of the previous one is "in a row"
MAX_FAILURE_COUNT = 16

SINK_SELECTORS = Registry(
    kind="sink selector",
    types={"round_robin": "workers.processors.load_balance:RoundRobinSelector",
           "random": "workers.processors.load_balance:RandomSelector"},
    flume_classes={
        "org.apache.flume.sink.LoadBalancingSinkProcessor$RoundRobinSinkSelector": "round_robin",
        "org.apache.flume.sink.LoadBalancingSinkProcessor.RoundRobinSinkSelector": "round_robin",
        "org.apache.flume.sink.LoadBalancingSinkProcessor$RandomOrderSinkSelector": "random",
        "org.apache.flume.sink.LoadBalancingSinkProcessor.RandomOrderSinkSelector": "random",
    },
)



def backoff_ms(failures: int, max_timeout_ms: int) -> int:
    """How long a sink is backed off after ``failures`` failures in a row: ``min(maxTimeOut, 1000 * 2^k)``."""
    return min(max_timeout_ms, BACKOFF_UNIT_MS * 2 ** failures)


def next_failure_count(failures: int, last_fail: float | None, now: float, max_timeout_ms: int) -> int:
    """Flume's OrderSelector rule: the failure count after a failure at ``now`` (clock seconds).

    It grows by one (up to 16) if the previous failure was less than (its backoff + 1 hour) ago, else it starts
    again at 1.  ``last_fail`` is None for a sink that never failed.
    """
    if last_fail is None:
        return 1
    allowed_s = (backoff_ms(failures, max_timeout_ms) + SEQUENTIAL_RANGE_MS) / 1000.0
    if now - last_fail < allowed_s:
        return min(failures + 1, MAX_FAILURE_COUNT)
    return 1


@dataclass
class BackoffState:
    """The failure history of one sink; it is left out of the orders until ``restore_at`` (clock seconds)."""

    failures: int = 0
    last_fail: float | None = None
    restore_at: float = float("-inf")

    def fail(self, now: float, max_timeout_ms: int) -> None:
        self.failures = next_failure_count(self.failures, self.last_fail, now, max_timeout_ms)
        self.last_fail = now
        self.restore_at = now + backoff_ms(self.failures, max_timeout_ms) / 1000.0


class SinkSelector:
    """Chooses, for every write, the order in which the group's sinks are tried (Flume's SinkSelector).

    Subclasses implement :meth:`order`, normally over :meth:`active`.  ``properties`` are the group's
    ``selector.*`` properties without the prefix.  With ``backoff``, :meth:`inform_failure` backs a sink off
    (Flume's OrderSelector rules, see the module docstring) and :meth:`active` leaves it out until it is
    restored.  ``clock`` returns seconds; ``rng`` is a :class:`random.Random` (both injectable for tests).
    """

    def __init__(self, sinks: list, properties: dict[str, str], *, backoff: bool = False,
                 max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None):
        self.sinks = list(sinks)
        self.properties = dict(properties)
        self.backoff = backoff
        self.max_timeout_ms = max_timeout_ms
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.states = {sink.name: BackoffState() for sink in self.sinks}

    def order(self) -> list:
        """The sinks to try for the next write, first choice first (may be empty)."""
        raise NotImplementedError

    def active(self) -> list:
        """The sinks not backed off, in the group's order."""
        if not self.backoff:
            return list(self.sinks)
        now = self.clock()
        return [sink for sink in self.sinks if self.states[sink.name].restore_at < now]

    def inform_failure(self, sink) -> None:
        """``sink`` raised on a write: back it off (only with ``backoff``)."""
        if self.backoff:
            self.states[sink.name].fail(self.clock(), self.max_timeout_ms)

    def next_restore_s(self) -> float | None:
        """Seconds until the first backed-off sink is restored, or None if none is backed off."""
        now = self.clock()
        waits = [s.restore_at - now for s in self.states.values() if self.backoff and s.restore_at >= now]
        return min(waits) if waits else None


class RoundRobinSelector(SinkSelector):
    """Flume's RoundRobinOrderSelector: the start moves one position per write over the active sinks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.next_head = 0

    def order(self) -> list:
        active = self.active()
        if self.next_head >= len(active):         # fewer active sinks than at the last write
            self.next_head = 0
        begin = self.next_head
        self.next_head = begin + 1
        if self.next_head == len(active):
            self.next_head = 0
        return active[begin:] + active[:begin]


class RandomSelector(SinkSelector):
    """Flume's RandomOrderSelector: a uniformly random order of the active sinks at every write."""

    def order(self) -> list:
        active = self.active()
        return self.rng.sample(active, len(active))


def selector_class(name: str) -> type:
    """The selector class for a ``selector`` value; raise :class:`UnknownType` with a user-facing message."""
    cls = SINK_SELECTORS.resolve(name)
    if not (isinstance(cls, type) and issubclass(cls, SinkSelector)):
        raise UnknownType(f"'{name}' is not a sink selector (a subclass of "
                          f"{SinkSelector.__module__}:{SinkSelector.__name__})")
    return cls


@dataclass(frozen=True)
class LoadBalanceConfig:
    backoff: bool = opt("backoff", False, doc="leave a failed sink out for 2 s, 4 s, ... up to selector.maxTimeOut "
                                                "(else it is tried at every write)")
    selector: str = opt("selector", "round_robin", doc="round_robin, random, or a 'module:Class' SinkSelector")
    max_timeout_ms: int = opt("selector.maxTimeOut", DEFAULT_MAX_TIMEOUT_MS, check=positive,
                              doc="longest backoff of a failed sink (ms)")
    selector_properties: dict[str, str] = opt("selector.*", doc="selector.<property> for a custom selector")

    def problems(self) -> list[tuple[str, str]]:
        """The selector must exist; the built-in ones take no ``selector.*`` property but maxTimeOut."""
        try:
            selector_class(self.selector)
        except UnknownType as exc:
            return [("selector", str(exc))]
        alias = SINK_SELECTORS.canonical(self.selector)
        if alias is None:
            return []                         # a custom selector: its properties are its own business
        return [(f"selector.{prop}", "unknown property" + did_you_mean(f"selector.{prop}", ["selector.maxTimeOut"])
                 + f" (the {alias} selector takes only selector.maxTimeOut)")
                for prop in self.selector_properties if prop != "maxTimeOut"]


class LoadBalancingSinkProcessor(SinkProcessor):
    """Flume's LoadBalancingSinkProcessor, batches spread over the sinks by a selector, optionally with backoff.

    Contract and selectors: see the module docstring.  ``clock`` returns seconds (default :func:`time.monotonic`)
    and ``rng`` is a :class:`random.Random` (default: seeded by the system); tests pass their own.  Not
    thread-safe: a runner calls it from one thread.
    """

    Config = LoadBalanceConfig

    def __init__(self, name: str, config: LoadBalanceConfig, context: ProcessorContext, *,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        super().__init__(name, config, context)
        sinks = self.sinks
        if len(sinks) < 2:
            raise ValueError(f"sink group {name}: the load_balance processor needs more than one sink")
        cls = selector_class(config.selector)
        self.selector = cls(sinks, config.selector_properties, backoff=config.backoff,
                            max_timeout_ms=config.max_timeout_ms, clock=clock, rng=rng)

    @classmethod
    def check(cls, config: LoadBalanceConfig, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        problems = config.problems()
        if len(refs) < 2:
            problems.append(("type", f"the load_balance processor needs more than one sink (the group has "
                                     f"{len(refs)}: {' '.join(refs) or 'none'}); a single sink needs no sink group"))
        return problems

    def write(self, batch):
        """Write ``batch`` through one sink and return it; raise :class:`AllSinksFailed` if none could."""
        errors: list[str] = []
        for sink in self.selector.order():
            try:
                sink.write(batch)
            except RejectedEvents:
                raise
            except Exception as exc:
                self.selector.inform_failure(sink)
                errors.append(f"{sink.name}: {exc}")
                log.warning("sink group %s: sink %s failed, trying the next sink if any: %s", self.name,
                            sink.name, exc)
                continue
            return sink
        raise AllSinksFailed(self._failure_message(errors))

    def _failure_message(self, errors: list[str]) -> str:
        if errors:
            message = f"all sinks of group {self.name} that were tried failed (" + "; ".join(errors) + ")"
        else:
            message = f"every sink of group {self.name} is backed off after failures"
        wait = self.selector.next_restore_s()
        if wait is not None:
            message += f"; the first backed-off sink is restored in {wait:.1f}s"
        return message
