"""A small agent to look at in Flower, and Debian's chromium to look with.

:class:`FlowerDemo` starts, on free ports: a redis-server, one agent (``flumery agent``: an HTTP source, two sink
workers) and ``flumery flower`` behind basic auth.  Its sink ``k1`` (file_roll) keeps its channel ``c1`` empty;
``k2`` (``tests.fault_sinks:SlowSink``) stands for a store that takes a second per batch of 10 events, so its
channel ``c2`` backs up and Flower shows a queue with a length.  Used by ``tests/e2e/test_flower_browser.py`` and
``docs/flower_screenshots.py``.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from agents import REPO, AgentProcess, port_open, wait_until
from conftest import RedisServer

from app.broker import free_port

USER, PASSWORD = "admin", "flower-demo-password"

CONF = """
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {http_port}
a1.sources.r1.channels = c1 c2
a1.channels.c1.type = file
a1.channels.c2.type = file
a1.channels.c2.capacity = 100000
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.channel = c1
a1.sinks.k2.type = tests.fault_sinks:SlowSink
a1.sinks.k2.directory = {out2}
a1.sinks.k2.batchSize = 10
a1.sinks.k2.delayMs = 1000
a1.sinks.k2.channel = c2
"""


def chromium_binary() -> str:
    """Debian's chromium (``make test`` installs it as root); raises if it is missing."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("Debian's chromium is not installed (apt-get install -y chromium, as root; make test does)")


def chromium(url: str, *args: str, timeout_s: float = 90) -> subprocess.CompletedProcess:
    """Run headless chromium on ``url`` (``--dump-dom`` or ``--screenshot=FILE``...), letting the page's scripts
    run for up to 5 s of virtual time.  Basic auth rides in the URL (``http://user:password@host/``)."""
    argv = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=5000", *args, url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=True)


class FlowerDemo:
    """The deployment; ``with FlowerDemo(tmp) as demo:``, then :meth:`post` events and open :attr:`url`."""

    def __init__(self, tmp: Path):
        self.tmp = Path(tmp)
        self.http_port, self.flower_port = free_port(), free_port()
        self.redis = RedisServer(self.tmp / "redis")
        self.out = self.tmp / "out"
        self.agent: AgentProcess | None = None
        self.flower: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Flower's root with the login in it (what a browser is given)."""
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.flower_port}"

    @property
    def anonymous_url(self) -> str:
        return f"http://127.0.0.1:{self.flower_port}"

    def __enter__(self) -> "FlowerDemo":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.redis.start()
        conf = CONF.format(http_port=self.http_port, out=self.out, out2=self.tmp / "out2")
        # A worker per sink whatever the cores (--sink-workers auto would run both in one on 2 cores): Flower
        # is to show two workers.
        self.agent = AgentProcess(self.tmp, conf, broker_url=self.redis.url,
                                  extra=["--sink-workers", "per-sink"]).start()
        wait_until(lambda: port_open(self.http_port) or self.agent.process.poll() is not None, 60,
                   what="the agent's http source")
        assert self.agent.process.poll() is None, self.agent.output_tail()
        # Flower asks the workers which queues they consume when it starts: start it once they can answer.
        wait_until(lambda: len(set(re.findall(r"(k[12])@a1\.\S+ ready\.", self.agent.log_path.read_text()))) == 2
                   or self.agent.process.poll() is not None, 60, what="both sink workers to be ready")
        assert self.agent.process.poll() is None, self.agent.output_tail()
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "FLUMERY_"))}
        self.flower_log = open(self.tmp / "flower.log", "ab")
        self.flower = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "flower", "-f", str(self.agent.conf), "-n", "a1",
             "--broker-url", self.redis.url, f"--port={self.flower_port}", "--address=127.0.0.1"],
            cwd=REPO, env={**clean, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"},
            stdout=self.flower_log, stderr=subprocess.STDOUT)
        wait_until(lambda: port_open(self.flower_port) or self.flower.poll() is not None, 60, what="Flower")
        assert self.flower.poll() is None, (self.tmp / "flower.log").read_text()
        # The broker page lists the queues the workers said they consume when Flower last asked them (at its
        # start, and on a refresh); ask again until both answered, while they are idle.
        wait_until(self._flower_knows_both_queues, 60, what="Flower to know both workers' queues")

    def _flower_knows_both_queues(self) -> bool:
        workers = self.api("/api/workers")
        queues = {q["name"] for info in workers.values() for q in info.get("active_queues") or []}
        if {"flumery.a1.c1", "flumery.a1.c2"} <= queues:
            return True
        self.api("/api/workers?refresh=1")
        return False

    def post(self, requests: int, events_per_request: int = 10) -> None:
        """``requests`` POSTs to the HTTP source, each answered 200."""
        for i in range(requests):
            body = json.dumps([{"headers": {"host": "web1"}, "body": f"GET /page/{i}/{j} 200"}
                               for j in range(events_per_request)]).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200

    def api(self, path: str):
        """Flower's JSON API (``/api/workers``...), with the login."""
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.flower_port}{path}",
                                         headers={"Authorization": f"Basic {auth}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def task_of(self, sink: str) -> str:
        """The id of a task (a channel message) that the worker of ``sink`` finished, once Flower has seen one."""
        def finished():
            tasks = self.api("/api/tasks?state=SUCCESS")
            return next((t for t, info in tasks.items() if (info.get("worker") or "").startswith(f"{sink}@")), None)
        return wait_until(finished, 60, what=f"Flower to see a task of {sink}")

    def stop(self) -> None:
        if self.flower is not None and self.flower.poll() is None:
            self.flower.terminate()
            try:
                self.flower.wait(30)
            except subprocess.TimeoutExpired:
                self.flower.kill()
                self.flower.wait(10)
        if self.agent is not None and self.agent.process is not None:
            self.agent.stop()
        if self.redis.process is not None:
            self.redis.stop()
