"""app.broker.EmbeddedRedis.keep_running: an embedded broker that exited on its own is started again, later and
later while it cannot start (its start is replaced here; the real restart is tested in tests/e2e/test_agent_flow)."""
from __future__ import annotations

import logging
import subprocess
import sys

from app import broker
from app.broker import EmbeddedRedis


def test_a_broker_that_cannot_start_again_is_tried_again_later_and_later(tmp_path, monkeypatch, caplog):
    embedded = EmbeddedRedis(tmp_path / "redis", fsync_always=True)
    embedded.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    embedded.process.wait()
    clock = [100.0]
    monkeypatch.setattr(broker.time, "monotonic", lambda: clock[0])
    starts = []

    def start():
        starts.append(clock[0])
        raise RuntimeError("no room left on the device")

    monkeypatch.setattr(embedded, "start", start)
    caplog.set_level(logging.WARNING)
    embedded.keep_running()
    assert "embedded redis-server exited with 1" in caplog.text and starts == []
    for step_s, expected in ((0.9, []), (0.1, [101.0]), (1.9, [101.0]), (0.1, [101.0, 103.0]),
                             (4.0, [101.0, 103.0, 107.0])):
        clock[0] += step_s
        embedded.keep_running()
        assert starts == expected, clock[0]
    assert "did not start again (no room left on the device); trying again in 8s" in caplog.text


def test_a_running_broker_is_left_alone(tmp_path, monkeypatch):
    embedded = EmbeddedRedis(tmp_path / "redis", fsync_always=True)
    embedded.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setattr(embedded, "start", lambda: (_ for _ in ()).throw(AssertionError("started again")))
        embedded.keep_running()
    finally:
        embedded.process.kill()
        embedded.process.wait()
