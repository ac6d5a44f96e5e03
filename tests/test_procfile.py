"""The Procfile is a working deployment: Flower, the sources and a sink worker against an external Redis."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from agents import REPO, read_lines, wait_until
from app.broker import free_port

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


def flower_api(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.load(response)


def test_procfile_processes_run_a_deployment(tmp_path, redis_server):
    out = tmp_path / "out"
    conf = tmp_path / "agent.conf"
    conf.write_text(CONF.format(out=out))
    web_port = free_port()
    env = {**os.environ, "REDIS_URL": redis_server.url, "FLUMERY_CONF_FILE": str(conf), "FLUMERY_AGENT": "a1",
           "PORT": str(web_port), "METRICS_PORT": str(free_port()), "FLOWER_UNAUTHENTICATED_API": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("FLUMERY_BROKER_URL", None)
    processes = {}
    try:
        for name, command in procfile().items():
            processes[name] = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=REPO, env=env,
                                               stdout=open(tmp_path / f"{name}.log", "wb"),
                                               stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: len(read_lines(out)) >= 1000, 90, what="1000 events through the Procfile deployment")

        def worker_seen_by_flower():
            try:
                workers = flower_api(web_port, "/api/workers?refresh=1")
            except OSError:
                return False
            return any(info.get("stats", {}).get("total", {}).get("flumery.take") for info in workers.values())

        wait_until(worker_seen_by_flower, 60, what="Flower to show the worker and its flumery.take tasks")
        queues = flower_api(web_port, "/api/queues/length")
        assert {"name": "flumery.a1.c1", "messages": 0} in queues["active_queues"]
    finally:
        for process in processes.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            process.wait(60)
    assert sorted(read_lines(out), key=int) == [str(i).encode() for i in range(1000)]
