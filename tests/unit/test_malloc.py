"""app/malloc.py: glibc keeps the buffers of one batch for the next instead of faulting them in again.  Each case
runs in a fresh interpreter (mallopt settings last for the process), counting the page faults of 50 "batches":
four buffers of 1.3-1.4 MiB held together, as a sink holds the broker's reply and the text it writes, then freed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app import malloc

REPO = Path(__file__).resolve().parents[2]

BATCHES = """
import resource, sys
sys.path.insert(0, {repo!r})
from app import malloc
applied = malloc.keep_batch_buffers() if {tuned} else None

def batch():
    held = [b"x" * 1_400_000, b"y" * 1_300_000, b"z" * 1_300_000, b"w" * 1_400_000]
    del held

for _ in range(3):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    batch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_TOUCHED = 50 * 5_400_000 // 4096          # ~66,000


def faults(tuned: bool) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", BATCHES.format(repo=str(REPO), tuned=tuned)], capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    return out[0], int(out[1])


def test_batch_buffers_are_faulted_in_once_not_per_batch():
    assert malloc.glibc(), "these machines run glibc; the settings are glibc's"
    _, untuned = faults(tuned=False)
    applied, tuned = faults(tuned=True)
    # The premise: by default glibc gives the freed buffers back and faults them in again for every batch.
    assert untuned > PAGES_TOUCHED // 2, f"glibc here kept the buffers by itself ({untuned} faults)"
    assert applied == "True"
    assert tuned < PAGES_TOUCHED // 100, f"{tuned} page faults for 50 batches after keep_batch_buffers()"


def test_another_c_library_is_left_alone(monkeypatch):
    def no_glibc(name):
        raise ValueError(f"unrecognized configuration name {name!r}")
    monkeypatch.setattr(malloc.os, "confstr", no_glibc)
    monkeypatch.setattr(malloc.ctypes, "CDLL", lambda *_: (_ for _ in ()).throw(AssertionError("mallopt called")))
    assert malloc.glibc() is False
    assert malloc.keep_batch_buffers() is False


def test_the_agent_and_the_sink_process_apply_it(monkeypatch, tmp_path):
    """Both processes that handle batches call it: the agent (``flumery agent``) and the process where Celery runs
    the sinks (``worker_ready``, or a prefork pool process), whichever way the worker was started."""
    from app import cli, worker_hooks

    calls = []
    monkeypatch.setattr(malloc, "keep_batch_buffers", lambda: calls.append("applied") or True)

    class StubAgent:
        def __init__(self, *args, **kwargs):
            calls.append("agent built")

        def run(self):
            return 0
    monkeypatch.setattr(cli, "Agent", StubAgent)
    conf = tmp_path / "a.conf"
    conf.write_text("a1.sources = r1\na1.channels = c1\na1.sinks = k1\na1.sources.r1.type = seq\n"
                    "a1.sources.r1.channels = c1\na1.channels.c1.type = memory\na1.sinks.k1.type = null\n"
                    "a1.sinks.k1.channel = c1\n")
    assert cli.main(["agent", "-f", str(conf), "-n", "a1", "--data-dir", str(tmp_path / "data")]) == 0
    assert calls == ["applied", "agent built"]

    calls.clear()
    monkeypatch.setattr(worker_hooks.WorkerRuntime, "current", lambda *_: type("Runtime", (), {"all_runners": []}))
    app = type("App", (), {"flumery_settings": type("Settings", (), {"conf_file": str(conf)})()})()
    worker_hooks.start_sinks(app)
    assert calls == ["applied"]
