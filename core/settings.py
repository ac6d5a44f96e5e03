"""Process settings, read from the environment (12-factor) and overridden by command-line flags.

| variable | meaning | default |
|---|---|---|
| ``FLUMERY_CONF_FILE`` | the Flume agent file | (none) |
| ``FLUMERY_AGENT`` | the agent name in that file | (none) |
| ``FLUMERY_BROKER_URL``, else ``REDIS_URL`` | the Redis broker: ``redis://``, ``rediss://``, ``sentinel://`` or ``redis-cluster://`` (below) | embedded Redis (``flumery agent``) |
| ``FLUMERY_DATA_DIR`` | embedded broker data, file_roll defaults, state | ``~/.flumery/<agent>`` |
| ``FLUMERY_SINKS`` | comma-separated sinks/sink groups a worker serves | all sinks of the agent |
| ``FLUMERY_VISIBILITY_TIMEOUT_S`` | seconds before a message held by a dead worker is given back | 30 |
| ``FLUMERY_SINK_RETRY_MAX_S`` | longest pause between two attempts of a failing sink write | 5 |
| ``FLUMERY_KEY_PREFIX`` | kombu's ``global_keyprefix``: put in front of every Redis key (kombu's and Flumery's); on a Redis Cluster it must hold a hash tag (``{a1}.``) | (none); ``{<agent>}.`` on a Redis Cluster |
| ``FLUMERY_SENTINEL_MASTER`` | the master's name under Redis Sentinel, when the ``sentinel://`` URL has no ``?master_name=`` | (none) |
| ``FLUMERY_MIN_REPLICAS`` | replicas that must hold a put into a ``file`` channel before the source is acknowledged (Redis ``WAIT``) | 1 with ``sentinel://`` and ``redis-cluster://``, else 0 |
| ``FLUMERY_REPLICA_TIMEOUT_MS`` | how long a put waits for those replicas before it fails (not acknowledged; the source retries) | 1000 |
| ``FLUMERY_BROKER_MAXMEMORY`` | the embedded broker's ``maxmemory``: ``25%`` of the host, ``512mb``, ``2gb``, ``0`` | 25% |

**Redis Cluster**: ``redis-cluster://h1:7000;redis-cluster://h2:7001`` (any number of seed nodes, ``;``-separated;
``redis-cluster://:password@h1:7000`` with a password).  Every key of one agent is put under a prefix holding a
Redis hash tag, so all of them lie in one hash slot and so on one master: the agent's name by default
(``{a1}.``), else ``FLUMERY_KEY_PREFIX``, which must then hold a hash tag itself (``{tenant1}.``; a prefix
without one is refused).  Different agents land on different slots, so on different masters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from core.errors import SettingsError

BROKER_URL_FILE = "broker.url"
CLUSTER_SCHEME = "redis-cluster"


@dataclass(frozen=True)
class Settings:
    conf_file: str | None = None
    agent: str | None = None
    broker_url: str | None = None
    data_dir: str | None = None
    sinks: tuple[str, ...] = ()
    visibility_timeout_s: float = 30.0
    sink_retry_max_s: float = 5.0
    key_prefix: str = ""            # kombu's global_keyprefix; see core.keys
    sentinel_master: str = ""       # the master's name under Sentinel (else ?master_name= in the URL)
    min_replicas: int | None = None  # replicas confirming a durable put; None: 1 under Sentinel, else 0
    replica_timeout_ms: int = 1000
    broker_maxmemory: str = "25%"

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        env = os.environ if environ is None else environ
        sinks = tuple(s.strip() for s in env.get("FLUMERY_SINKS", "").split(",") if s.strip())
        return cls(
            conf_file=env.get("FLUMERY_CONF_FILE") or None,
            agent=env.get("FLUMERY_AGENT") or None,
            broker_url=env.get("FLUMERY_BROKER_URL") or env.get("REDIS_URL") or None,
            data_dir=env.get("FLUMERY_DATA_DIR") or None,
            sinks=sinks,
            visibility_timeout_s=_float(env, "FLUMERY_VISIBILITY_TIMEOUT_S", 30.0),
            sink_retry_max_s=_float(env, "FLUMERY_SINK_RETRY_MAX_S", 5.0),
            key_prefix=env.get("FLUMERY_KEY_PREFIX", ""),
            sentinel_master=env.get("FLUMERY_SENTINEL_MASTER", ""),
            min_replicas=_whole(env, "FLUMERY_MIN_REPLICAS", None),
            replica_timeout_ms=_whole(env, "FLUMERY_REPLICA_TIMEOUT_MS", 1000),
            broker_maxmemory=env.get("FLUMERY_BROKER_MAXMEMORY") or "25%",
        )

    def with_(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def data_path(self) -> Path:
        if self.data_dir:
            return Path(self.data_dir).expanduser().resolve()
        return Path("~/.flumery").expanduser().resolve() / (self.agent or "default")

    def resolved_broker_url(self) -> str | None:
        """The configured broker URL, else the one a running ``flumery agent`` recorded in the data dir (a file only
        its user can read: the URL holds the embedded broker's password)."""
        if self.broker_url:
            return self.broker_url
        recorded = self.data_path() / BROKER_URL_FILE
        if recorded.exists():
            return recorded.read_text().strip() or None
        return None

    def transport_options(self) -> dict:
        """kombu Redis transport options (broker, result and transport alike): the visibility timeout is
        Flumery's crash-recovery time for workers whose death nobody reports."""
        vt = self.visibility_timeout_s
        # Every Redis key, kombu's and Flumery's (see core.keys), goes under this prefix; none by default.
        key_prefix = self.redis_key_prefix()
        prefix = {"global_keyprefix": key_prefix} if key_prefix else {}
        # Sentinel-managed pools cannot make a put wait for a free connection: allow many instead.
        master = {"master_name": self.master_name(), "max_connections": 64} if self.uses_sentinel() else {}
        return {
            **prefix,
            **master,
            # A message taken by a worker that died is given back after this many seconds.
            "visibility_timeout": vt,
            # Look for such messages every few seconds, and really scan each time (kombu's default throttle
            # scans one time in ten, which turns a 30 s timeout into minutes).
            "unacked_restore_interval": max(1.0, min(5.0, vt / 6)),
            "unacked_restore_throttle": 1,
            # A worker killed while holding the sweep mutex must not block sweeps for kombu's default 5 minutes.
            "unacked_mutex_expire": int(max(5, min(60, vt))),
        }

    def uses_sentinel(self) -> bool:
        return (self.resolved_broker_url() or "").startswith("sentinel://")

    def uses_cluster(self) -> bool:
        return (self.resolved_broker_url() or "").startswith(CLUSTER_SCHEME + "://")

    def redis_key_prefix(self) -> str:
        """What goes in front of every Redis key (kombu's ``global_keyprefix``): ``FLUMERY_KEY_PREFIX``, and on a
        Redis Cluster ``{<agent>}.`` when that is unset, so that every key of the agent lies in one hash slot.
        Raises SettingsError on a cluster for a prefix without a hash tag, or with neither a prefix nor an agent."""
        if not self.uses_cluster():
            return self.key_prefix
        if self.key_prefix:
            if not hash_tag(self.key_prefix):
                raise SettingsError(
                    f"FLUMERY_KEY_PREFIX: '{self.key_prefix}' has no Redis hash tag; on a Redis Cluster "
                    "(redis-cluster:// broker URL) every key of an agent must lie in one hash slot, so the prefix "
                    "must hold one, e.g. '{tenant1}.' (or leave it unset: the agent's name becomes the tag)")
            return self.key_prefix
        if not self.agent:
            raise SettingsError("a Redis Cluster broker (redis-cluster://) needs the agent's name (-n or "
                                "FLUMERY_AGENT) or FLUMERY_KEY_PREFIX with a hash tag: it puts the agent's keys "
                                "in one hash slot")
        if "{" in self.agent or "}" in self.agent:
            raise SettingsError(f"agent name '{self.agent}': on a Redis Cluster it becomes the hash tag of every key "
                                "and must not hold '{' or '}'; set FLUMERY_KEY_PREFIX to a hash tag instead")
        return "{" + self.agent + "}."

    def master_name(self) -> str:
        """The Sentinel master's name: ``?master_name=`` of the (last) ``sentinel://`` URL, else
        ``FLUMERY_SENTINEL_MASTER``; raises SettingsError when there is none."""
        url = self.resolved_broker_url() or ""
        query = parse_qs(urlsplit(url.split(";")[-1]).query)
        name = (query.get("master_name") or [self.sentinel_master])[0]
        if not name:
            raise SettingsError(f"broker URL {mask_url(url)} uses Redis Sentinel but names no master: add "
                                "?master_name=NAME to it or set FLUMERY_SENTINEL_MASTER")
        return name

    def replicas_for_durable_puts(self) -> int:
        """How many replicas must confirm a put into a durable channel (Redis ``WAIT``)."""
        if self.min_replicas is not None:
            return self.min_replicas
        return 1 if self.uses_sentinel() or self.uses_cluster() else 0

    def env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes (sink workers)."""
        out = {
            "FLUMERY_CONF_FILE": self.conf_file or "",
            "FLUMERY_AGENT": self.agent or "",
            "FLUMERY_BROKER_URL": self.broker_url or "",
            "FLUMERY_DATA_DIR": str(self.data_path()),
            "FLUMERY_SINKS": ",".join(self.sinks),
            "FLUMERY_VISIBILITY_TIMEOUT_S": repr(self.visibility_timeout_s),
            "FLUMERY_SINK_RETRY_MAX_S": repr(self.sink_retry_max_s),
            "FLUMERY_KEY_PREFIX": self.key_prefix,
            "FLUMERY_SENTINEL_MASTER": self.sentinel_master,
            "FLUMERY_MIN_REPLICAS": "" if self.min_replicas is None else str(self.min_replicas),
            "FLUMERY_REPLICA_TIMEOUT_MS": str(self.replica_timeout_ms),
            "FLUMERY_BROKER_MAXMEMORY": self.broker_maxmemory,
        }
        return out


def hash_tag(key: str) -> str:
    """The Redis Cluster hash tag of ``key`` (what lies between its first ``{`` and the next ``}``), or "" when it
    has none (then Redis hashes the whole key)."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1:end] if end > start + 1 else ""


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    parts = []
    for one in url.split(";"):
        split = urlsplit(one)
        if split.password:
            one = one.replace(f":{split.password}@", ":***@", 1)
        parts.append(one)
    return ";".join(parts)


def _whole(env, name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a whole number (got '{raw}')") from None
    if value < 0:
        raise SettingsError(f"{name}: must be 0 or more (got '{raw}')")
    return value


def _float(env, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a number of seconds (got '{raw}')") from None
    if value <= 0:
        raise SettingsError(f"{name}: must be greater than 0 (got '{raw}')")
    return value
