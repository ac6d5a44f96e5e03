"""The Procfile is a working deployment, run as the README says: ``make install``, an ``.env`` made from
``deploy/flumery.env.example``, ``.venv/bin/honcho start`` with no virtualenv activated.  Flower, the sources and a
sink worker against an external Redis; Ctrl-C ends every process cleanly."""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import urllib.request

from agents import REPO, read_lines, wait_until

from app.broker import free_port

HONCHO = REPO / ".venv" / "bin" / "honcho"

CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.totalEvents = 1000
a1.sources.r1.batchSize = 100
a1.sources.r1.channels = c1
a1.channels.c1.type = file
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.channel = c1
"""


def procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def env_file(path, **values: str) -> None:
    """``cp deploy/flumery.env.example .env`` and edit it: the example's variables, set to ``values``."""
    text = (REPO / "deploy" / "flumery.env.example").read_text()
    for name, value in values.items():
        text, n = re.subn(rf"^#? ?{name}=.*$", f"{name}={value}", text, flags=re.M)
        assert n == 1, f"{name} is not in deploy/flumery.env.example"
    path.write_text(text)


def flower_api(port: int, path: str, auth: str = "admin:test-password"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_procfile_lines_exec_their_program():
    assert procfile() and all(command.startswith("exec ") for command in procfile().values())


def test_dot_env_is_not_committed():
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


def test_honcho_runs_the_procfile_without_an_activated_venv_and_stops_cleanly(tmp_path, redis_server):
    out = tmp_path / "out"
    conf = tmp_path / "agent.conf"
    conf.write_text(CONF.format(out=out))
    web_port = free_port()
    env_file(tmp_path / ".env", REDIS_URL=redis_server.url, FLUMERY_CONF_FILE=str(conf), FLUMERY_AGENT="a1",
             PORT=str(web_port), METRICS_PORT=str(free_port()), FLOWER_BASIC_AUTH="admin:test-password")
    # A fresh login shell: nothing of the virtualenv on PATH.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8",
           "FLOWER_UNAUTHENTICATED_API": "1"}
    log_path = tmp_path / "honcho.log"
    with open(log_path, "wb") as log:
        honcho = subprocess.Popen([str(HONCHO), "-e", str(tmp_path / ".env"), "start"], cwd=REPO, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: len(read_lines(out)) >= 1000 or honcho.poll() is not None, 90,
                   what="1000 events through the Procfile deployment")
        assert honcho.poll() is None, log_path.read_text(errors="replace")[-3000:]

        def workers_seen_by_flower():
            try:
                workers = flower_api(web_port, "/api/workers?refresh=1")
            except OSError:
                return None
            served = {name: info for name, info in workers.items()
                      if info.get("stats", {}).get("total", {}).get("flumery.take")}
            return served or None

        workers = wait_until(workers_seen_by_flower, 60, what="Flower to show the worker and its flumery.take tasks")
        queues = flower_api(web_port, "/api/queues/length")["active_queues"]
        os.killpg(honcho.pid, signal.SIGINT)               # Ctrl-C in honcho's terminal
        honcho.wait(60)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGINT)
            try:
                honcho.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(honcho.pid, signal.SIGKILL)
                honcho.wait(10)
    output = log_path.read_text(errors="replace")
    assert [re.match(r"k1@a1\.sinks\.1\.", name) is not None for name in workers] == [True], workers
    assert {"name": "flumery.a1.c1", "messages": 0} in queues
    assert {"name": "flumery.a1.__dead__", "messages": 0} in queues
    stops = dict(re.findall(r"\| (\w+)\.1 stopped \(rc=(-?\d+)\)", output))
    assert stops == {"web": "0", "sources": "0", "sinks": "0"}, output[-3000:]
    assert sorted(read_lines(out), key=int) == [str(i).encode() for i in range(1000)]
