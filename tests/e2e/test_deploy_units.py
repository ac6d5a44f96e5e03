"""The deployment files run for real: the systemd units' commands (an agent's sources and two sink worker
instances, separate processes on a Redis the test starts) share the channels with nothing lost and no event
taken twice; `systemd-analyze verify` accepts the units; app.json matches the Procfile."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from agents import REPO, port_open, read_lines, wait_until

from app.broker import free_port

UNITS = REPO / "deploy" / "systemd"
CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1
a1.channels.c1.type = file
a1.channels.c1.transactionCapacity = 100
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.rollInterval = 0
a1.sinks.k1.sink.batchSize = 50
a1.sinks.k1.channel = c1
"""


def unit(name: str) -> dict[str, list[str]]:
    """The [Service] settings of a unit file, each key with all its values."""
    out: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def command(name: str, env: dict[str, str], instance: str = "") -> tuple[list[str], dict[str, str]]:
    """A unit's ExecStart as systemd would run it, from the repository instead of /opt/flumery."""
    settings = unit(name)
    env = dict(env)
    for assignment in settings.get("Environment", []):
        key, value = assignment.split("=", 1)
        env[key] = value.replace("%i", instance)
    line = settings["ExecStart"][0].replace("/opt/flumery", str(REPO)).replace("%i", instance)
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line)
    return shlex.split(line), env


def post(port: int, first: int, n: int) -> int:
    body = json.dumps([{"body": f"e{first + j}"} for j in range(n)]).encode()
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", data=body), timeout=10) as r:
        return r.status


def writers_of(logs: dict[str, Path]) -> set[str]:
    """The sink worker instances that opened a file in the store, from their own logs.  (File names cannot
    tell: two processes that start in the same millisecond share a name series, one taking ``-1``, the
    other ``-2``.)"""
    return {n for n, log in logs.items() if log.exists() and b"file_roll sink k1: writing " in log.read_bytes()}


def test_units_pass_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    for path in UNITS.glob("*.service"):
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/flumery", str(REPO)))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_the_units_run_an_agent_and_two_sink_workers_that_share_the_channel(tmp_path, redis_server):
    port, out = free_port(), tmp_path / "out"
    conf = tmp_path / "a1.conf"
    conf.write_text(CONF.format(port=port, out=out))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLUMERY_", "REDIS_", "FLOWER_"))}
    env = {**clean, "FLUMERY_CONF_FILE": str(conf), "FLUMERY_AGENT": "a1", "REDIS_URL": redis_server.url,
           "METRICS_PORT": str(free_port()), "HOME": str(tmp_path / "home")}
    processes, logs = [], {n: tmp_path / f"sinks{n}.log" for n in ("1", "2")}
    try:
        argv, agent_env = command("flumery-agent.service", env)
        agent_env["FLUMERY_DATA_DIR"] = str(tmp_path / "data")        # the unit's /var/lib/flumery
        processes.append(subprocess.Popen(argv, env=agent_env, stdout=open(tmp_path / "agent.log", "wb"),
                                          stderr=subprocess.STDOUT))
        for n in ("1", "2"):
            argv, worker_env = command("flumery-sinks@.service", env, instance=n)
            processes.append(subprocess.Popen(argv, env=worker_env, stdout=open(logs[n], "wb"),
                                              stderr=subprocess.STDOUT))
        wait_until(lambda: port_open(port), 60, what="the agent's http source")
        # A worker that starts a second later than the other may find the channel already drained, so the
        # test keeps sending (3,000 events at least, 60,000 at most) until both workers have written a share.
        sent, deadline = 0, time.monotonic() + 90
        while sent < 3000 or (len(writers_of(logs)) < 2 and sent < 60000 and time.monotonic() < deadline):
            assert post(port, sent, 20) == 200
            sent += 20
        wanted = {f"e{i}".encode() for i in range(sent)}
        wait_until(lambda: wanted <= set(read_lines(out)), 120, what="every event in the store")
        lines = Counter(read_lines(out))
        assert sum(lines.values()) == sent and set(lines) == wanted, "an event was written twice or is missing"
        writers = writers_of(logs)
        names = [Path(f"/proc/{p.pid}/cmdline").read_bytes().split(b"\0") for p in processes[1:]]
        assert [n[n.index(b"--hostname") + 1].split(b".%h")[0] for n in names] == [b"k1@a1.sinks.1", b"k1@a1.sinks.2"]
        assert len(writers) == 2, f"both workers should have written a share of the events: {sorted(writers)}"
    finally:
        for process in processes:
            process.terminate()
        codes = [process.wait(60) for process in processes]
    assert codes == [0, 0, 0], codes


def test_app_json_matches_the_procfile():
    app = json.loads((REPO / "app.json").read_text())
    procfile = {line.split(":", 1)[0] for line in (REPO / "Procfile").read_text().splitlines()
                if line and not line.startswith("#")}
    assert set(app["formation"]) == procfile
    example = (REPO / "deploy" / "flumery.env.example").read_text()
    for name in app["env"]:
        assert name in example, f"{name} is not documented in deploy/flumery.env.example"
