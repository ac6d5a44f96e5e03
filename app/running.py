"""The agents running on this machine, recorded so that short commands (``flumery dlq``) find their broker.

Each ``flumery agent`` writes ``~/.flumery/running/<agent>.<pid>.json`` (mode 0600) once its broker is up, and
removes it when it stops.  A record holds the agent's name, its configuration file, data directory and pid, and its
broker URL (and key prefix): the embedded broker's ``redis://127.0.0.1:PORT/0`` in full, an external broker's with any password
masked (a command then needs ``--broker-url``; a secret is never copied into a file).  A record whose process is
gone (the agent was killed) is ignored, and removed by the next reader.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)


def running_dir() -> Path:
    return Path("~/.flumery/running").expanduser()


def mask_password(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (for files, logs and messages); each of the
    ``;``-separated URLs of a Sentinel or Redis Cluster broker too."""
    if ";" in url:
        return ";".join(mask_password(one) for one in url.split(";"))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class RunningAgent:
    agent: str
    conf_file: str
    data_dir: str
    pid: int
    broker_url: str          # complete for an embedded broker, password masked for an external one
    embedded: bool
    key_prefix: str = ""     # FLUMERY_KEY_PREFIX of the agent: where its keys are on that broker

    def describe(self) -> str:
        broker = "its embedded broker" if self.embedded else f"the broker {self.broker_url}"
        return f"agent '{self.agent}' (running, pid {self.pid}, data dir {self.data_dir}) on {broker}"


def register(agent: str, conf_file: str, data_dir: Path, broker_url: str, embedded: bool,
             key_prefix: str = "") -> Path | None:
    """Record this process as the running agent ``agent``; the record's path (None if it cannot be written:
    the agent runs anyway, only ``flumery dlq`` will not find it without ``--data-dir``)."""
    record = RunningAgent(agent, str(conf_file), str(data_dir), os.getpid(),
                          broker_url if embedded else mask_password(broker_url), embedded, key_prefix)
    path = running_dir() / f"{agent}.{record.pid}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(record), f)
    except OSError as exc:
        log.warning("could not record the running agent in %s: %s", path.parent, exc)
        return None
    return path


def unregister(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def running(agent: str) -> list[RunningAgent]:
    """The live records of agents named ``agent``; stale records (their process is gone) are removed."""
    found = []
    for path in sorted(running_dir().glob(f"{agent}.*.json")):
        try:
            record = RunningAgent(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue                       # being written, or not ours: leave it
        if record.agent != agent:
            continue
        if _alive(record.pid):
            found.append(record)
        else:
            path.unlink(missing_ok=True)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
