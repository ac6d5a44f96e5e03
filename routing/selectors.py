"""Channel selectors: which channels must (required) and may (optional) receive an event.

Pure functions of the event's headers, with Flume's exact semantics (``ReplicatingChannelSelector``,
``MultiplexingChannelSelector``; checked against Flume's own test cases in ``tests/unit/test_selectors.py``):

* replicating: every channel of the source is required, except those listed in ``optional``;
* multiplexing on header ``header`` (default ``flume.selector.header``) with value ``v``:
  required = ``mapping.v``, or ``default`` when ``v`` is not mapped or the header is missing or blank;
  optional = ``optional.v`` minus required, looked up by the raw value even when required fell back to
  the default;
* load_balancing: exactly one required channel per event, in turn (``policy`` round_robin) or at random.

Contract: ``select(headers) -> (required, optional)``, both lists of channel names in a stable order.  A selector
is built as ``Selector(name, config, SelectorContext(channels))`` with the source's channels; its ``check`` hook
gets the same channels as ``refs``.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from core.component import Component
from core.options import one_of, opt
from core.registry import did_you_mean

DEFAULT_HEADER = "flume.selector.header"


def _unique(names) -> list[str]:
    return list(dict.fromkeys(names))


def _unknown(prop: str, names, channels) -> list[tuple[str, str]]:
    return [(prop, f"channel '{n}' is not one of this source's channels ({', '.join(channels)})"
             + did_you_mean(n, channels)) for n in names if n not in channels]


@dataclass(frozen=True)
class SelectorContext:
    """What a selector gets: the channels of its source, in the order the source lists them."""

    channels: tuple[str, ...]


class Selector(Component):
    """Base of channel selectors (see the module docstring for the contract)."""

    def __init__(self, name: str, config, context: SelectorContext):
        super().__init__(name, config, context)
        self.channels = list(context.channels)

    def select(self, headers: dict[str, str]) -> tuple[list[str], list[str]]:
        raise NotImplementedError

    @property
    def uniform(self) -> bool:
        """True when every event goes to the same channels (the channel processor then skips per-event
        selection)."""
        return False


@dataclass(frozen=True)
class ReplicatingConfig:
    optional: list[str] = opt("optional", [], doc="channels whose failure does not fail the put")


class ReplicatingSelector(Selector):
    """Every channel of the source is required, except those listed in ``optional`` (the default selector)."""

    Config = ReplicatingConfig

    def __init__(self, name: str, config: ReplicatingConfig, context: SelectorContext):
        super().__init__(name, config, context)
        optional = set(config.optional)
        self.optional = [c for c in self.channels if c in optional]
        self.required = [c for c in self.channels if c not in optional]

    @classmethod
    def check(cls, config: ReplicatingConfig, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        return _unknown("optional", config.optional, list(refs))

    def select(self, headers: dict[str, str]) -> tuple[list[str], list[str]]:
        return self.required, self.optional

    @property
    def uniform(self) -> bool:
        return True


@dataclass(frozen=True)
class MultiplexingConfig:
    header: str = opt("header", DEFAULT_HEADER, doc="the header whose value picks the channels")
    mapping: dict = opt("mapping.*", doc="mapping.<value> = required channels for that value")
    optional: dict = opt("optional.*", doc="optional.<value> = optional channels for that value")
    default: list[str] = opt("default", [], doc="required channels for unmapped or missing values")


class MultiplexingSelector(Selector):
    """Routes each event by the value of one header to required and optional channels, with a default."""

    Config = MultiplexingConfig

    def __init__(self, name: str, config: MultiplexingConfig, context: SelectorContext):
        super().__init__(name, config, context)
        self.header = config.header
        self.default = _unique(config.default)
        self.mapping = {v: _unique(c.split()) for v, c in config.mapping.items()}
        self.optional = {v: _unique(c.split()) for v, c in config.optional.items()}

    @classmethod
    def check(cls, config: MultiplexingConfig, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        channels = list(refs)
        problems = _unknown("default", config.default, channels)
        for value, names in config.mapping.items():
            if not names.split():
                problems.append((f"mapping.{value}", "maps to no channel"))
            problems += _unknown(f"mapping.{value}", names.split(), channels)
        for value, names in config.optional.items():
            problems += _unknown(f"optional.{value}", names.split(), channels)
        return problems

    def select(self, headers: dict[str, str]) -> tuple[list[str], list[str]]:
        value = headers.get(self.header)
        if value is None or not value.strip():
            required = self.default
        else:
            required = self.mapping.get(value, self.default)
        optional = [c for c in self.optional.get(value, ()) if c not in required]
        return required, optional


@dataclass(frozen=True)
class LoadBalancingConfig:
    policy: str = opt("policy", "round_robin", check=one_of("round_robin", "random"),
                      doc="round_robin or random: how each event's one channel is chosen")


class LoadBalancingSelector(Selector):
    """Each event goes to exactly one of the source's channels, in turn (round_robin) or at random."""

    Config = LoadBalancingConfig

    def __init__(self, name: str, config: LoadBalancingConfig, context: SelectorContext,
                 rng: random.Random | None = None):
        super().__init__(name, config, context)
        self.policy = config.policy.lower()
        self.rng = rng or random.Random()
        self.turn = itertools.cycle(self.channels)

    def select(self, headers: dict[str, str]) -> tuple[list[str], list[str]]:
        if self.policy == "random":
            return [self.rng.choice(self.channels)], []
        return [next(self.turn)], []


