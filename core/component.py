"""The one shape every pluggable component has, whatever its kind.

A component is a class with:

* ``Config``: a frozen dataclass of its settings, each field declared with :func:`core.options.opt` (the Flume
  property it reads, its default, a check, a doc line).  :func:`core.options.build` makes it from the
  properties of the agent file, reporting every error at once;
* ``check(config, refs)``: the one validation hook, for what a single property's check cannot see (two
  properties together, or the names the component refers to: a selector's channels, a sink group's sinks,
  passed as ``refs``).  It returns ``(property, message)`` pairs; :mod:`core.config` turns them into errors
  naming the full key;
* ``__init__(name, config, context)``: built in one step from validated config, with a context object of its
  kind that carries what it needs from the running agent (a source's channel processor and counters, a sink's
  data directory, a selector's channels, a sink processor's sinks).

Each kind has a base class that subclasses :class:`Component` and states the kind's contract:
:class:`workers.sources.base.Source`, :class:`workers.sinks.base.Sink`,
:class:`workers.interceptors.base.Interceptor`, :class:`workers.processors.base.SinkProcessor`,
:class:`routing.selectors.Selector` and :class:`routing.channels.Channel`.  A new component is one module
plus one line in :mod:`core.registries`.
"""
from __future__ import annotations

from typing import Any, ClassVar


class Component:
    """Base of every component: ``(name, config, context)``, one ``Config``, one ``check`` hook."""

    Config: ClassVar[type]

    def __init__(self, name: str, config: Any, context: Any):
        self.name = name
        self.config = config
        self.context = context

    @classmethod
    def check(cls, config: Any, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """``(property, message)`` for each problem that single-property checks cannot see; [] if none."""
        return []

    @classmethod
    def advice(cls, config: Any) -> list[tuple[str, str]]:
        """``(property, message)`` for settings that are valid but likely unwanted (``flumery validate`` and the
        agent show them as notices); [] if none."""
        return []
