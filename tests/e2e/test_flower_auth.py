"""`flumery flower` (the Procfile's web process) runs only behind authentication: Flower can shut workers down.
Against a real Flower on a real Redis."""
from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from agents import REPO, wait_until

from app.broker import free_port

CONF = """
a1.channels = c1
a1.sinks = k1
a1.channels.c1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
"""


def flower(tmp_path, broker_url: str, *extra: str, **env: str) -> subprocess.Popen:
    conf = tmp_path / "a.conf"
    conf.write_text(CONF)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "FLUMERY_"))}
    return subprocess.Popen([sys.executable, "-m", "app.cli", "flower", "-f", str(conf), "-n", "a1",
                             "--broker-url", broker_url, *extra], cwd=REPO, env={**clean, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, and fail if it has not exited 30 s later, with every thread's stack (SIGUSR1: see app.worker)."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(1)
        process.kill()
        raise AssertionError("flumery flower did not exit within 30 s of SIGTERM; its output and threads:\n"
                             + process.communicate()[0][-20000:]) from None


def status(port: int, auth: str | None = None) -> int | None:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", headers=headers),
                                    timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_flower_refuses_to_start_without_authentication(tmp_path):
    process = flower(tmp_path, "redis://127.0.0.1:1/0", "--port=0")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "without authentication" in output and "FLOWER_BASIC_AUTH" in output


def test_flower_with_basic_auth_answers_401_without_it(tmp_path, redis_server):
    port = free_port()
    process = flower(tmp_path, redis_server.url, f"--port={port}", "--address=127.0.0.1",
                     FLOWER_BASIC_AUTH="admin:a-long-password")
    try:
        wait_until(lambda: status(port) is not None or process.poll() is not None, 60, what="Flower to listen")
        assert process.poll() is None, process.stdout.read()
        assert status(port) == 401
        assert status(port, "admin:wrong") == 401
        assert status(port, "admin:a-long-password") == 200
    finally:
        stop(process)


def test_flower_no_auth_is_an_explicit_choice(tmp_path, redis_server):
    port = free_port()
    process = flower(tmp_path, redis_server.url, f"--port={port}", "--address=127.0.0.1", FLUMERY_FLOWER_NO_AUTH="1")
    try:
        wait_until(lambda: status(port) is not None or process.poll() is not None, 60, what="Flower to listen")
        assert status(port) == 200
    finally:
        stop(process)
