"""Process settings, read from the environment (12-factor) and overridden by command-line flags.

| variable | meaning | default |
|---|---|---|
| ``FLUMERY_CONF_FILE`` | the Flume agent file | (none) |
| ``FLUMERY_AGENT`` | the agent name in that file | (none) |
| ``FLUMERY_BROKER_URL``, else ``REDIS_URL`` | the Redis broker | embedded Redis (``flumery agent``) |
| ``FLUMERY_DATA_DIR`` | embedded broker data, file_roll defaults, state | ``~/.flumery/<agent>`` |
| ``FLUMERY_SINKS`` | comma-separated sinks/sink groups a worker serves | all sinks of the agent |
| ``FLUMERY_VISIBILITY_TIMEOUT_S`` | seconds before a message held by a dead worker is given back | 30 |
| ``FLUMERY_SINK_RETRY_MAX_S`` | longest pause between two attempts of a failing sink write | 5 |
| ``FLUMERY_BROKER_MAXMEMORY`` | the embedded broker's ``maxmemory``: ``25%`` of the host, ``512mb``, ``2gb``, ``0`` | 25% |
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

BROKER_URL_FILE = "broker.url"


@dataclass(frozen=True)
class Settings:
    conf_file: str | None = None
    agent: str | None = None
    broker_url: str | None = None
    data_dir: str | None = None
    sinks: tuple[str, ...] = ()
    visibility_timeout_s: float = 30.0
    sink_retry_max_s: float = 5.0
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
            "FLUMERY_BROKER_MAXMEMORY": self.broker_maxmemory,
        }
        return out


def _float(env, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name}: expected a number of seconds (got '{raw}')") from None
    if value <= 0:
        raise SystemExit(f"{name}: must be greater than 0 (got '{raw}')")
    return value
