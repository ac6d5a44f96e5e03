"""Flume agent files: parse, validate, and build the typed configuration of one agent.

Flume drops a broken component with a log line and starts the rest.  Flumery refuses to start the agent and
reports **every** problem at once, each as ``<full key>: <what is wrong> (<the bad value>)`` with a did-you-mean
where a name looks misspelt (see :class:`ConfigInvalid`).  Accepted and differing from Flume on purpose:

* ``${env:VAR}`` / ``${env:VAR:-default}`` in values; what came from the environment is shown as
  ``<from ${env:VAR}>`` in every error, notice and summary (it may be a secret);
* unknown keys are errors, not silence;
* Flume's fully qualified class names of built-in components are aliases of their short type names.
"""
from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import options, properties, registries
from core.errors import ConfigFileUnreadable, ConfigInvalid, UnknownType
from core.options import ConfigError
from core.registry import did_you_mean

LIST_KEYS = ("sources", "channels", "sinks", "sinkgroups")



@dataclass(frozen=True)
class ComponentSpec:
    """A component of the agent, validated: build it with ``cls(name, config, context)``."""

    key: str                 # full key prefix, e.g. "a1.sources.r1"
    name: str
    type: str                # the type as written in the file
    cls: type
    config: Any


@dataclass(frozen=True)
class SourceSpec(ComponentSpec):
    channels: tuple[str, ...] = ()
    selector: ComponentSpec | None = None
    interceptors: tuple[ComponentSpec, ...] = ()


@dataclass(frozen=True)
class SinkSpec(ComponentSpec):
    channel: str = ""
    max_attempts: int = 0        # Flumery: failed writes before an event is dead-lettered (0 = retry for ever)


@dataclass(frozen=True)
class SinkGroupSpec:
    key: str
    name: str
    sinks: tuple[str, ...]
    processor: ComponentSpec


@dataclass(frozen=True)
class AgentConfig:
    name: str
    file: str
    sources: dict[str, SourceSpec]
    channels: dict[str, ComponentSpec]
    sinks: dict[str, SinkSpec]
    sinkgroups: dict[str, SinkGroupSpec]
    notices: tuple[str, ...] = ()
    # full key -> its value, where parts of it came from the environment (see mask())
    from_env: dict[str, properties.Expanded] = dataclasses.field(default_factory=dict)

    def mask(self, text: str, key: str = "") -> str:
        """``text`` (about the full key ``key``, if given) fit to print: values from the environment masked."""
        return _mask(self.from_env, text, key)

    def sink_units(self) -> list[tuple[str, tuple[str, ...]]]:
        """(unit name, sinks) for every sink group and every sink outside a group: one runner each."""
        grouped = {s for g in self.sinkgroups.values() for s in g.sinks}
        units = [(g.name, g.sinks) for g in self.sinkgroups.values()]
        units += [(name, (name,)) for name in self.sinks if name not in grouped]
        return units

    def channel_of_unit(self, sinks: tuple[str, ...]) -> str:
        return self.sinks[sinks[0]].channel


# --- loading --------------------------------------------------------------------------------------------------

def load_agent(path: str | os.PathLike, agent: str, environ: dict[str, str] | None = None) -> AgentConfig:
    """Read ``path`` and return the validated configuration of ``agent``; raise :class:`ConfigInvalid`."""
    return read_agent(path, agent, environ)[1]


def read_agent(path: str | os.PathLike, agent: str,
               environ: dict[str, str] | None = None) -> tuple[str, AgentConfig]:
    """(the file's text, the validated configuration of ``agent`` in it): :func:`load_agent` that also gives
    the exact text it validated."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileUnreadable([ConfigError("", f"cannot read configuration file '{path}': {exc.strerror}")]) \
            from None
    except UnicodeDecodeError as exc:
        raise ConfigFileUnreadable([ConfigError("", f"configuration file '{path}' is not UTF-8 text: {exc}")]) \
            from None
    return text, parse_agent(text, agent, str(path), environ)


def parse_agent(text: str, agent: str, file: str = "<string>",
                environ: dict[str, str] | None = None) -> AgentConfig:
    builder = _Builder(agent, file, environ)
    builder.read(properties.parse(text))
    return builder.build()


class _Builder:
    def __init__(self, agent: str, file: str, environ: dict[str, str] | None):
        self.agent = agent
        self.file = file
        self.environ = environ
        self.errors: list[ConfigError] = []
        self.notices: list[str] = []
        self.props: dict[str, str] = {}          # keys relative to "<agent>."
        self.from_env: dict[str, properties.Expanded] = {}    # full key -> value with pieces from the environment
        self.explicit: set[str] = set()          # full keys set in the file
        self.line_errors: set[str] = set()       # full keys whose line was already reported as bad
        self.empty_at: dict[str, str] = {}       # full key of an empty component property -> file:line
        self.agents: set[str] = set()
        self.registries = registries.ALL

    def error(self, key: str, message: str) -> None:
        self.errors.append(ConfigError(key, message))

    def full(self, rel: str) -> str:
        return f"{self.agent}.{rel}"

    # -- lines -> this agent's properties ---------------------------------------------------------------------
    def read(self, lines: list[properties.Line]) -> None:
        seen: dict[str, int] = {}
        for line in lines:
            where = f"{self.file}:{line.number}"
            agent, dot, rel = line.key.partition(".")
            if not dot or not agent:
                self.error(line.key, f"key does not start with an agent name ({where})")
                continue
            if not rel:
                self.error(line.key, f"property name missing after the agent name ({where})")
                continue
            self.agents.add(agent)
            if agent != self.agent:
                continue
            self.explicit.add(line.key)
            if line.value == "" and _read_by_builder(rel):
                self.error(line.key, f"empty value ({where})")
                self.line_errors.add(line.key)
                continue
            if line.value == "":
                self.empty_at[line.key] = where        # the component's options decide (options.build)
            expanded = properties.expand(line.value, self.environ)
            value, problems = expanded.value, expanded.problems
            self.from_env.pop(line.key, None)
            if expanded.secrets:
                self.from_env[line.key] = expanded
            for problem in problems:
                self.error(line.key, f"{problem} ({where})")
                self.line_errors.add(line.key)
            if rel in seen:
                self.notices.append(f"{line.key} is set on lines {seen[rel]} and {line.number}; "
                                    f"the last one wins")
            seen[rel] = line.number
            self.props[rel] = value

    # -- properties -> typed configuration --------------------------------------------------------------------
    def build(self) -> AgentConfig:
        self.read_errors = len(self.errors)
        if self.agent not in self.agents:
            known = ", ".join(sorted(self.agents)) or "none"
            self.error("", f"no agent named '{self.agent}' in {self.file} (agents: {known})"
                       + did_you_mean(self.agent, self.agents))
            raise ConfigInvalid(self._masked(self.errors), self._masked_notices())
        declared, groups = self._split()
        channels = self._channels(declared["channels"], groups["channels"])
        sources = self._sources(declared["sources"], groups["sources"], channels)
        sinks = self._sinks(declared["sinks"], groups["sinks"], channels)
        sinkgroups = self._sinkgroups(declared["sinkgroups"], groups["sinkgroups"], sinks)
        self._check_agent(channels, sources, sinks)
        if self.errors:
            raise ConfigInvalid(self._masked(self._first_errors()), self._masked_notices())
        return AgentConfig(self.agent, self.file, sources, channels, sinks, sinkgroups,
                           tuple(self._masked_notices()), dict(self.from_env))

    def _masked(self, errors: list[ConfigError]) -> list[ConfigError]:
        """The errors fit to print: a value from the environment may be a secret."""
        return [ConfigError(_mask(self.from_env, e.key, e.key), _mask(self.from_env, e.message, e.key))
                for e in errors]

    def _masked_notices(self) -> list[str]:
        return [_mask(self.from_env, n, n.split(" ", 1)[0]) for n in self.notices]

    def _first_errors(self) -> list[ConfigError]:
        """Drop follow-up errors about a key whose line was already reported (an empty value is not also
        a missing property, an unset ${env:PORT} is not also a bad number)."""
        first, later = self.errors[:self.read_errors], self.errors[self.read_errors:]
        return first + [e for e in later if e.key not in self.line_errors]

    def _split(self):
        """Declared names per kind, and per kind and component name its properties."""
        declared: dict[str, list[str]] = {kind: [] for kind in LIST_KEYS}
        groups: dict[str, dict[str, dict[str, str]]] = {kind: defaultdict(dict) for kind in LIST_KEYS}
        for rel, value in self.props.items():
            kind, dot, rest = rel.partition(".")
            if kind in LIST_KEYS and not dot:
                names = value.split()
                declared[kind] = list(dict.fromkeys(names))
                continue
            if kind in LIST_KEYS:
                name, dot, prop = rest.partition(".")
                if not name or not prop:
                    self.error(self.full(rel), f"expected {self.agent}.{kind}.<name>.<property>")
                    continue
                groups[kind][name][prop] = value
                continue
            self.error(self.full(rel), "unknown key" + did_you_mean(kind, LIST_KEYS)
                       + f" (an agent has {', '.join(LIST_KEYS)})")
        for kind in LIST_KEYS:
            for name in groups[kind]:
                if name not in declared[kind]:
                    listed = " ".join(declared[kind]) or "nothing"
                    self.error(self.full(f"{kind}.{name}"),
                               f"'{name}' is configured but not listed in {self.agent}.{kind} (listed: {listed})"
                               + did_you_mean(name, declared[kind]))
        return declared, groups

    def _component(self, kind: str, key: str, name: str, type_name: str | None, props: dict[str, str],
                   default_type: str | None = None, refs: tuple[str, ...] = ()) -> ComponentSpec | None:
        """Resolve the type, build the typed config of one component and run its ``check`` hook with
        ``refs`` (the names it refers to); None (with errors) on failure."""
        type_name = type_name or default_type
        if not type_name:
            self.error(f"{key}.type", "required property is missing")
            return None
        try:
            cls = self.registries[kind].resolve(type_name)
        except UnknownType as exc:
            self.error(f"{key}.type", str(exc))
            return None
        config, errors, notices = build_config(cls, props, key + ".", refs, BUILDER_KEYS[kind])
        self.errors.extend(self._located(e) for e in errors)
        self.notices.extend(notices)
        return None if config is None else ComponentSpec(key, name, type_name, cls, config)

    def _located(self, error: ConfigError) -> ConfigError:
        """An error about an empty value, with the file and line of that value."""
        where = self.empty_at.get(error.key)
        return ConfigError(error.key, f"{error.message} ({where})") if where else error

    def _channels(self, names, groups) -> dict[str, ComponentSpec]:
        out = {}
        for name in names:
            if name.startswith("__"):
                self.error(self.full("channels"), f"channel names starting with '__' are reserved (got '{name}')")
                continue
            props = dict(groups.get(name, {}))
            component = self._component("channel", self.full(f"channels.{name}"), name,
                                        props.pop("type", None), props)
            if component:
                out[name] = component
        return out

    def _channel_refs(self, key: str, names: list[str], channels: dict, declared: list[str]) -> list[str]:
        good = []
        for name in names:
            if name in declared:
                good.append(name)
            else:
                self.error(key, f"unknown channel '{name}' (known: {', '.join(declared) or 'none'})"
                           + did_you_mean(name, declared))
        return good

    def _sources(self, names, groups, channels) -> dict[str, SourceSpec]:
        declared_channels = list(self.props.get("channels", "").split())
        out = {}
        for name in names:
            key = self.full(f"sources.{name}")
            props = dict(groups.get(name, {}))
            type_name = props.pop("type", None)
            channel_list = props.pop("channels", "").split()
            if not channel_list:
                self.error(f"{key}.channels", "required property is missing (the channels this source feeds)")
            if "channel" in props:
                self.error(f"{key}.channel", "a source feeds 'channels' (plural)")
                props.pop("channel")
            refs = self._channel_refs(f"{key}.channels", channel_list, channels, declared_channels)
            selector_props = _take_prefixed(props, "selector.")
            interceptor_props = _take_prefixed(props, "interceptors.")
            interceptor_names = props.pop("interceptors", "").split()
            component = self._component("source", key, name, type_name, props)
            selector = self._selector(key, selector_props, refs)
            interceptors = self._interceptors(key, interceptor_names, interceptor_props)
            if component and selector is not None and interceptors is not None and refs == channel_list:
                out[name] = SourceSpec(**_fields(component), channels=tuple(refs), selector=selector,
                                       interceptors=tuple(interceptors))
        return out

    def _selector(self, source_key: str, props: dict[str, str], channels: list[str]) -> ComponentSpec | None:
        key = f"{source_key}.selector"
        type_name = props.pop("type", None)
        return self._component("selector", key, "selector", type_name, props, default_type="replicating",
                               refs=tuple(channels))

    def _interceptors(self, source_key: str, names: list[str], props: dict[str, str]) -> list[ComponentSpec] | None:
        grouped: dict[str, dict[str, str]] = defaultdict(dict)
        for rel, value in props.items():
            name, dot, prop = rel.partition(".")
            grouped[name][prop] = value
        for name in grouped:
            if name not in names:
                self.error(f"{source_key}.interceptors.{name}",
                           f"interceptor '{name}' is configured but not listed in {source_key}.interceptors"
                           + did_you_mean(name, names))
        out = []
        ok = True
        for name in names:
            key = f"{source_key}.interceptors.{name}"
            iprops = dict(grouped.get(name, {}))
            component = self._component("interceptor", key, name, iprops.pop("type", None), iprops)
            ok = ok and component is not None
            if component:
                out.append(component)
        return out if ok else None

    def _sinks(self, names, groups, channels) -> dict[str, SinkSpec]:
        declared_channels = list(self.props.get("channels", "").split())
        out = {}
        for name in names:
            key = self.full(f"sinks.{name}")
            props = dict(groups.get(name, {}))
            type_name = props.pop("type", None)
            channel = props.pop("channel", "")
            if "channels" in props:
                self.error(f"{key}.channels", "a sink drains exactly one 'channel' (singular)")
                props.pop("channels")
            if not channel:
                self.error(f"{key}.channel", "required property is missing (the channel this sink drains)")
            elif len(channel.split()) > 1:
                self.error(f"{key}.channel", f"a sink drains exactly one channel (got '{channel}')")
                channel = ""
            else:
                channel = (self._channel_refs(f"{key}.channel", [channel], channels, declared_channels)
                           or [""])[0]
            max_attempts = self._max_attempts(key, props.pop("maxAttempts", "0"))
            component = self._component("sink", key, name, type_name, props)
            if component and channel:
                out[name] = SinkSpec(**_fields(component), channel=channel, max_attempts=max_attempts)
        return out

    def _max_attempts(self, key: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            self.error(f"{key}.maxAttempts", f"expected a whole number, 0 or more (got '{raw}')")
            return 0
        return value

    def _sinkgroups(self, names, groups, sinks) -> dict[str, SinkGroupSpec]:
        declared_sinks = list(self.props.get("sinks", "").split())
        out = {}
        owner: dict[str, str] = {}
        for name in names:
            key = self.full(f"sinkgroups.{name}")
            props = dict(groups.get(name, {}))
            members = props.pop("sinks", "").split()
            if not members:
                self.error(f"{key}.sinks", "required property is missing (the sinks of this group)")
            for sink in members:
                if sink not in declared_sinks:
                    self.error(f"{key}.sinks", f"unknown sink '{sink}' (known: {', '.join(declared_sinks)})"
                               + did_you_mean(sink, declared_sinks))
                elif sink in owner:
                    self.error(f"{key}.sinks", f"sink '{sink}' is already in sink group '{owner[sink]}'")
                else:
                    owner[sink] = name
            drained = {sinks[s].channel for s in members if s in sinks}
            if len(drained) > 1:
                self.error(f"{key}.sinks", "Flumery runs a sink group on one channel; these sinks drain "
                           f"{', '.join(sorted(drained))}")
            processor_props = _take_prefixed(props, "processor.")
            for prop in props:
                self.error(f"{key}.{prop}", "unknown property" + did_you_mean(prop, ["sinks", "processor.type"]))
            ptype = processor_props.pop("type", None)
            processor = self._component("processor", f"{key}.processor", name, ptype, processor_props,
                                        default_type="default", refs=tuple(members))
            if processor is not None:
                out[name] = SinkGroupSpec(key, name, tuple(members), processor)
        return out

    def _check_agent(self, channels, sources, sinks) -> None:
        declared = {kind: self.props.get(kind, "").split() for kind in LIST_KEYS}
        if not declared["channels"]:
            self.error(self.full("channels"), "an agent needs at least one channel")
        if not declared["sources"] and not declared["sinks"]:
            self.error(self.full("sources"), "an agent needs at least one source or sink")
        for source in sources.values():
            for channel in source.channels:
                self._check_batch(source, channels.get(channel))
        for sink in sinks.values():
            self._check_batch(sink, channels.get(sink.channel))
        if self.errors:
            return                         # "unused" would only echo the errors of the components that use it
        used = {c for s in sources.values() for c in s.channels} | {s.channel for s in sinks.values()}
        for name in channels:
            if name not in used:
                self.notices.append(f"{self.full('channels')}: channel '{name}' is not used by any source or sink")

    def _check_batch(self, component: ComponentSpec, channel: ComponentSpec | None) -> None:
        batch = getattr(component.config, "batch_size", None)
        if channel is None or batch is None:
            return
        prop = option_key(type(component.config), "batch_size")
        if f"{component.key}.{prop}" not in self.explicit and getattr(component.cls, "batch_size_is_flumerys", False):
            return                         # Flume's component has no batch size, so its default is not checked
        capacity = channel.config.transaction_capacity
        if batch > capacity:
            self.error(f"{component.key}.{prop}",
                       f"{batch} is larger than the transactionCapacity ({capacity}) of channel '{channel.name}'")


def build_config(cls: type, props: dict[str, str], prefix: str, refs: tuple[str, ...] = (),
                 builder_keys: tuple[str, ...] = ()) -> tuple[Any | None, list[ConfigError], list[str]]:
    """A component's validated config in one step: its ``Config`` built from ``props`` (keys relative to
    ``prefix``), then its ``check`` hook with ``refs``.  ``builder_keys``: see :func:`core.options.build`.
    Returns ``(config or None, errors, notices)``; config is None exactly when there are errors, each naming the
    full key."""
    config, errors, notices = options.build(cls.Config, props, prefix, builder_keys)
    if config is None:
        return None, errors, notices
    problems = [ConfigError(f"{prefix}{prop}", message) for prop, message in cls.check(config, tuple(refs))]
    if not problems:
        notices = notices + [f"{prefix}{prop} {message}" for prop, message in cls.advice(config)]
    return (None if problems else config), problems, notices


# The properties of each kind of component that this builder reads itself (before options.build sees the rest):
# named among the known properties, and did-you-mean candidates for a misspelt one.
BUILDER_KEYS = {
    "source": ("type", "channels", "selector.type", "interceptors"),
    "channel": ("type",),
    "sink": ("type", "channel", "maxAttempts"),
    "selector": ("type",),
    "interceptor": ("type",),
    "processor": ("type",),
}
# Last parts of keys the builder reads itself (lists of names, types, channel references): never empty.
_BUILDER_KEY_ENDS = ("type", "channels", "channel", "interceptors", "sinks", "maxAttempts")


def _read_by_builder(rel: str) -> bool:
    """Whether the config builder reads the key ``rel`` (relative to the agent) itself, rather than a component's
    options: an agent's lists (``sources``...) and the structure of each component."""
    return "." not in rel or rel.rsplit(".", 1)[1] in _BUILDER_KEY_ENDS


def _mask(from_env: dict[str, properties.Expanded], text: str, key: str) -> str:
    return properties.mask(text, [s for value in from_env.values() for s in value.secrets], from_env.get(key))


def _take_prefixed(props: dict[str, str], prefix: str) -> dict[str, str]:
    taken = {k[len(prefix):]: v for k, v in props.items() if k.startswith(prefix)}
    for k in list(props):
        if k.startswith(prefix):
            del props[k]
    return taken


def _fields(component: ComponentSpec) -> dict:
    return {f.name: getattr(component, f.name) for f in dataclasses.fields(ComponentSpec)}


def option_key(config_cls: type, field_name: str) -> str:
    """The Flume property name behind a config field (for messages)."""
    for f in dataclasses.fields(config_cls):
        if f.name == field_name:
            return f.metadata.get("key", field_name)
    return field_name
