"""Hot reload of a running agent's file, as Flume polls its configuration (every 30 s) and on SIGHUP.

:class:`FileWatch` says when the file changed (size, modification time and content hash, so a touch that changes
nothing reloads nothing).  :func:`plan` compares the running configuration with the new one and names only the
components that changed; :class:`~app.agent.Agent` then applies it:

* a source whose type, properties, channels, selector or interceptors changed is stopped (it stops accepting:
  an in-flight put completes or is not acknowledged, so the client retries it against the new source) and the
  new one started; the others keep running;
* a sink group or lone sink whose sinks, properties or channel changed has its worker stopped (Celery's warm
  shutdown: the current batch is written or given back) and a new worker started; new units get a worker,
  removed ones are stopped;
* channels added are declared; a channel's new capacity applies from the next put; a channel removed keeps what it holds in Redis (a warning says how much), so
  putting it back in the file delivers it;
* an invalid new file is refused with every error logged, and the old flow keeps running untouched.

What a channel holds is never touched by a reload, so no event a source acknowledged is lost or doubled.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from core.config import AgentConfig


@dataclass
class ReloadPlan:
    """What a reload changes, by name."""

    stop_sources: list[str] = field(default_factory=list)
    start_sources: list[str] = field(default_factory=list)
    stop_units: list[str] = field(default_factory=list)
    start_units: list[str] = field(default_factory=list)
    added_channels: list[str] = field(default_factory=list)
    removed_channels: list[str] = field(default_factory=list)
    changed_channels: list[str] = field(default_factory=list)     # new limits, from the next put on

    def empty(self) -> bool:
        return not any((self.stop_sources, self.start_sources, self.stop_units, self.start_units,
                        self.added_channels, self.removed_channels, self.changed_channels))

    def describe(self) -> str:
        parts = [f"{label} {', '.join(names)}" for label, names in (
            ("sources restarted/started:", sorted(set(self.start_sources))),
            ("sources stopped:", sorted(set(self.stop_sources) - set(self.start_sources))),
            ("sink workers restarted/started:", sorted(set(self.start_units))),
            ("sink workers stopped:", sorted(set(self.stop_units) - set(self.start_units))),
            ("channels added:", self.added_channels), ("channels removed:", self.removed_channels),
            ("channels with new limits:", self.changed_channels)) if names]
        return "; ".join(parts) or "nothing changed"


def plan(old: AgentConfig, new: AgentConfig) -> ReloadPlan:
    """The components to stop and start to go from ``old`` to ``new`` (a pure comparison of the two)."""
    out = ReloadPlan()
    for name in old.sources:
        if new.sources.get(name) != old.sources[name]:
            out.stop_sources.append(name)
    for name in new.sources:
        if name in out.stop_sources or name not in old.sources:
            out.start_sources.append(name)
    old_units, new_units = _units(old), _units(new)
    for unit, spec in old_units.items():
        if new_units.get(unit) != spec:
            out.stop_units.append(unit)
    for unit, spec in new_units.items():
        if old_units.get(unit) != spec:
            out.start_units.append(unit)
    out.added_channels = [c for c in new.channels if c not in old.channels]
    out.removed_channels = [c for c in old.channels if c not in new.channels]
    out.changed_channels = [c for c in new.channels if c in old.channels and new.channels[c] != old.channels[c]]
    return out


def _units(config: AgentConfig) -> dict[str, tuple]:
    """Each sink unit with what its worker is built from: its sinks' specs (channel included) and its group.
    A channel's limits are read at each put, so changing them restarts nothing."""
    return {unit: (tuple(config.sinks[s] for s in sinks), config.sinkgroups.get(unit))
            for unit, sinks in config.sink_units()}


class FileWatch:
    """Says whether a file changed since the last look (content, not just its modification time)."""

    def __init__(self, path: str):
        self.path = path
        self.seen = self._fingerprint()

    def _fingerprint(self) -> tuple | None:
        try:
            stat = os.stat(self.path)
            with open(self.path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return None                     # missing or unreadable: not a change to act on yet
        return stat.st_size, digest

    def changed(self) -> bool:
        now = self._fingerprint()
        if now is None or now == self.seen:
            return False
        self.seen = now
        return True
