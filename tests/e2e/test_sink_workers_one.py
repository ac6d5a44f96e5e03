"""``flumery agent --sink-workers one``: every sink of the agent in one worker process (Celery's threads pool, a
thread per sink unit), against a real Redis: delivery into every channel's sink, a ``kill -9`` of that process,
a sink whose store hangs while the others go on, and one write at a time per sink however the pool runs tasks.
Also ``--sink-workers N`` (sinks dealt out over N workers) and its reload."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from agents import REPO, AgentProcess, children, port_open, read_lines, sink_worker_pid, wait_until

from app.agent import Agent
from app.broker import free_port
from app.worker_layout import plan as layout_plan
from app.worker_layout import usable_cores
from core.config import load_agent
from core.settings import Settings


def post(port: int, bodies: list[str]) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", method="POST",
                                     data=json.dumps([{"body": b} for b in bodies]).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def http_source(port: int, channels: str) -> str:
    return f"""a1.sources = r1
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = {channels}
"""


def sink_conf(name: str, channel: str, sink_type: str, directory: Path, extra: str = "") -> str:
    key = "sink.directory" if sink_type == "file_roll" else "directory"
    return f"""a1.channels.{channel}.type = file
a1.sinks.{name}.type = {sink_type}
a1.sinks.{name}.channel = {channel}
a1.sinks.{name}.{key} = {directory}
{extra}"""


def worker_processes(agent: AgentProcess) -> list[bytes]:
    lines = []
    for pid in children(agent.process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"celery worker" in cmdline:
            lines.append(cmdline)
    return lines


def test_one_worker_replicates_into_every_sink_and_recovers_from_kill9(tmp_path):
    port, outs = free_port(), [tmp_path / f"out{n}" for n in (1, 2, 3)]
    conf = (http_source(port, "c1 c2 c3") + "a1.channels = c1 c2 c3\na1.sinks = k1 k2 k3\n"
            + "".join(sink_conf(f"k{n}", f"c{n}", "file_roll", outs[n - 1], f"a1.sinks.k{n}.sink.rollInterval = 0\n")
                      for n in (1, 2, 3)))
    with AgentProcess(tmp_path, conf, extra=["--sink-workers", "one"]) as agent:
        wait_until(lambda: port_open(port), 30, what="the http source")
        pid = sink_worker_pid(agent, b"--hostname\0k1+k2+k3@", "the one sink worker")
        workers = worker_processes(agent)
        assert len(workers) == 1 and b"--pool\0threads\0--concurrency\0" + b"3" in workers[0], workers
        first = [f"a{i}" for i in range(300)]
        for i in range(0, 300, 30):
            post(port, first[i:i + 30])
        for out in outs:
            wait_until(lambda out=out: len(read_lines(out)) >= 300, 60, what=f"the first 300 events in {out.name}")
        os.kill(pid, signal.SIGKILL)
        later = [f"b{i}" for i in range(300)]
        for i in range(0, 300, 30):                 # put while the worker is dead: the channels hold them
            post(port, later[i:i + 30])
        new_pid = sink_worker_pid(agent, b"--hostname\0k1+k2+k3@", "the restarted sink worker")
        assert new_pid != pid
        for out in outs:
            wait_until(lambda out=out: len(read_lines(out)) >= 600, 60, what=f"all 600 events in {out.name}")
    for out in outs:
        got = read_lines(out)
        assert sorted(got) == sorted(e.encode() for e in first + later), f"{out.name}: lost or duplicated events"
    assert "restarting it" in agent.output()


def held_flow(port: int, out1: Path, out2: Path) -> str:
    """c1 -> k1, c2 -> k2, both tests.fault_sinks:HeldSink.  k2's writes take 150 ms a batch of 10: 200 events are
    3 s of writing, longer than one task drains (DRAIN_MAX_S), so k1's messages reach the worker's threads while
    k2 still has work (a worker that ran them on k2's thread would stop delivering to k2)."""
    return (http_source(port, "c1 c2") + "a1.channels = c1 c2\na1.sinks = k1 k2\n"
            + sink_conf("k1", "c1", "tests.fault_sinks:HeldSink", out1,
                        "a1.sinks.k1.delayMs = 5\na1.sinks.k1.batchSize = 10\n")
            + sink_conf("k2", "c2", "tests.fault_sinks:HeldSink", out2,
                        "a1.sinks.k2.delayMs = 150\na1.sinks.k2.batchSize = 10\n"))


def test_a_hung_store_holds_only_its_own_sink(tmp_path):
    """k1's store hangs (its write does not return while ``out1.hold`` exists) while the channels fill; k2, in the
    same worker process, delivers everything meanwhile (see held_flow).  Once k1's store answers, k1 delivers
    everything too, and neither sink ever ran two writes at once (HeldSink records an overlap)."""
    port, out1, out2 = free_port(), tmp_path / "out1", tmp_path / "out2"
    hold = tmp_path / "out1.hold"
    hold.write_text("")
    with AgentProcess(tmp_path, held_flow(port, out1, out2), extra=["--sink-workers", "one"]) as agent:
        try:
            wait_until(lambda: port_open(port), 30, what="the http source")
            sink_worker_pid(agent, b"--hostname\0k1+k2@", "the one sink worker")
            events = [f"e{i}" for i in range(200)]
            for i in range(0, 200, 10):                 # 20 messages in each channel: k1's pile up behind its hang
                post(port, events[i:i + 10])
            wait_until(lambda: len(read_lines(out2)) >= 200, 90, what="k2's 200 events while k1's store hangs")
            assert read_lines(out1) == []
        finally:
            hold.unlink(missing_ok=True)     # a store hung for ever would keep its worker from stopping
        wait_until(lambda: len(read_lines(out1)) >= 200, 90, what="k1's 200 events once its store answers")
    for out in (out1, out2):
        overlap = tmp_path / f"{out.name}.overlap"
        assert not overlap.exists(), overlap.read_text()
        assert sorted(read_lines(out)) == sorted(e.encode() for e in events), f"{out.name}: lost or duplicated"


def test_a_reload_that_adds_a_sink_restarts_the_one_worker_with_every_sink(tmp_path):
    port, out1, out2 = free_port(), tmp_path / "out1", tmp_path / "out2"
    roll = "a1.sinks.{0}.sink.rollInterval = 0\n"
    before = (http_source(port, "c1") + "a1.channels = c1\na1.sinks = k1\n"
              + sink_conf("k1", "c1", "file_roll", out1, roll.format("k1")))
    after = (http_source(port, "c1 c2") + "a1.channels = c1 c2\na1.sinks = k1 k2\n"
             + sink_conf("k1", "c1", "file_roll", out1, roll.format("k1"))
             + sink_conf("k2", "c2", "file_roll", out2, roll.format("k2")))
    with AgentProcess(tmp_path, before, extra=["--sink-workers", "one", "--reload-interval", "0"]) as agent:
        wait_until(lambda: port_open(port), 30, what="the http source")
        alone = sink_worker_pid(agent, b"--hostname\0k1@", "k1's worker (one sink: the solo pool)")
        assert b"--pool\0solo" in Path(f"/proc/{alone}/cmdline").read_bytes()
        post(port, [f"a{i}" for i in range(50)])
        wait_until(lambda: len(read_lines(out1)) >= 50, 60, what="the first events in out1")
        agent.conf.write_text(after)
        agent.process.send_signal(signal.SIGHUP)
        both = sink_worker_pid(agent, b"--hostname\0k1+k2@", "the one worker of k1 and k2")
        wait_until(lambda: not Path(f"/proc/{alone}").exists() or b"zombie" in Path(f"/proc/{alone}/status")
                   .read_bytes().lower(), 60, what="k1's own worker to stop")
        later = [f"b{i}" for i in range(50)]
        post(port, later)
        wait_until(lambda: len(read_lines(out2)) >= 50 and len(read_lines(out1)) >= 100, 60,
                   what="the later events in out1 and out2")
        assert len(worker_processes(agent)) == 1 and both in children(agent.process.pid)
    assert sorted(read_lines(out1)) == sorted(e.encode() for e in [f"a{i}" for i in range(50)] + later)
    assert sorted(read_lines(out2)) == sorted(e.encode() for e in later)


def test_the_plan_names_one_worker_after_its_sorted_sinks_and_keeps_groups_whole(tmp_path):
    conf = tmp_path / "a1.conf"
    conf.write_text("a1.sources = r1\na1.channels = c1 c2\na1.sinks = k3 k1 k2\n"
                    "a1.sources.r1.type = seq\na1.sources.r1.channels = c1 c2\n"
                    "a1.channels.c1.type = memory\na1.channels.c2.type = memory\n"
                    + "".join(f"a1.sinks.{k}.type = null\na1.sinks.{k}.channel = {c}\n"
                              for k, c in (("k1", "c1"), ("k2", "c1"), ("k3", "c2")))
                    + "a1.sinkgroups = g1\na1.sinkgroups.g1.sinks = k1 k2\n"
                      "a1.sinkgroups.g1.processor.type = failover\n")
    config = load_agent(conf, "a1")
    one = Agent(config, Settings(), sink_workers="one").worker_plan()
    assert list(one) == ["g1+k3"] and sorted(u for u, _ in one["g1+k3"]) == ["g1", "k3"]
    per_sink = Agent(config, Settings(), sink_workers="per-sink").worker_plan()
    default = Agent(config, Settings())
    assert default.sink_workers == "auto" and default.worker_plan() == layout_plan(config.sink_units(), "auto",
                                                                                    usable_cores())
    assert sorted(per_sink) == ["g1", "k3"] and per_sink["g1"] == [("g1", ("k1", "k2"))]


def celery_cmdline(pid: int) -> bytes | None:
    """The command line of ``pid`` once it is Celery's worker (``flumery worker`` checks the agent file, then execs
    the worker in its place), else None."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    return cmdline if b"celery worker" in cmdline else None


def test_flumery_worker_serving_two_sinks_runs_a_thread_each(tmp_path, redis_server):
    """``flumery worker`` (the Procfile's ``sinks``) serving several sinks: the threads pool, so k1's hung store
    does not keep k2 from delivering; ``--sinks`` naming a sink the agent has not is refused before Celery starts."""
    port, out1, out2 = free_port(), tmp_path / "out1", tmp_path / "out2"
    hold = tmp_path / "out1.hold"
    hold.write_text("")
    conf = held_flow(port, out1, out2)
    sources = AgentProcess(tmp_path, conf, role="sources", broker_url=redis_server.url)
    env = {k: v for k, v in os.environ.items() if k not in ("FLUMERY_BROKER_URL", "REDIS_URL")}
    worker_cmd = [sys.executable, "-m", "app.cli", "worker", "-f", str(sources.conf), "-n", "a1",
                  "--broker-url", redis_server.url]
    refused = subprocess.run([*worker_cmd, "--sinks", "k1,k9"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "FLUMERY_SINKS names k9" in refused.stderr, refused.stderr
    with sources, open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(worker_cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: port_open(port), 30, what="the http source")
            cmdline = wait_until(lambda: celery_cmdline(worker.pid), 60, what="Celery's worker in place of the command")
            assert b"--pool\0threads\0--concurrency\0" + b"2" in cmdline, cmdline
            events = [f"e{i}" for i in range(200)]
            for i in range(0, 200, 10):
                post(port, events[i:i + 10])
            wait_until(lambda: len(read_lines(out2)) >= 200, 90, what="k2's events while k1's store hangs")
            assert read_lines(out1) == []
            hold.unlink()
            wait_until(lambda: len(read_lines(out1)) >= 200, 90, what="k1's events once its store answers")
        finally:
            hold.unlink(missing_ok=True)
            worker.terminate()
            try:
                code = worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(30)
                code = "killed: no exit within 60 s of SIGTERM"
            assert code == 0, f"{code}\n" + (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    for out in (out1, out2):
        assert not (tmp_path / f"{out.name}.overlap").exists()
        assert sorted(read_lines(out)) == sorted(e.encode() for e in events)


def test_a_worker_count_deals_the_sinks_out_and_a_reload_replaces_only_the_worker_whose_sinks_changed(tmp_path):
    """``--sink-workers 2`` with three sinks: workers k1+k3 and k2 (name order, dealt out).  A reload that adds k4
    deals it to the second worker: k2's worker is replaced by k2+k4's, k1+k3's keeps running (same pid), and every
    event reaches every sink once."""
    port = free_port()
    outs = {k: tmp_path / f"out{k}" for k in ("k1", "k2", "k3", "k4")}
    roll = "a1.sinks.{0}.sink.rollInterval = 0\n"

    def conf(sinks: list[str]) -> str:
        channels = " ".join(f"c{k[1]}" for k in sinks)
        return (http_source(port, channels) + f"a1.channels = {channels}\na1.sinks = {' '.join(sinks)}\n"
                + "".join(sink_conf(k, f"c{k[1]}", "file_roll", outs[k], roll.format(k)) for k in sinks))

    first, later = [f"a{i}" for i in range(60)], [f"b{i}" for i in range(60)]
    with AgentProcess(tmp_path, conf(["k1", "k2", "k3"]),
                      extra=["--sink-workers", "2", "--reload-interval", "0"]) as agent:
        wait_until(lambda: port_open(port), 30, what="the http source")
        kept = sink_worker_pid(agent, b"--hostname\0k1+k3@", "the worker of k1 and k3")
        k2 = sink_worker_pid(agent, b"--hostname\0k2@", "k2's worker")
        assert len(worker_processes(agent)) == 2
        post(port, first)
        wait_until(lambda: all(len(read_lines(outs[k])) >= 60 for k in ("k1", "k2", "k3")), 60,
                   what="the first events in out1-out3")
        agent.conf.write_text(conf(["k1", "k2", "k3", "k4"]))
        agent.process.send_signal(signal.SIGHUP)
        sink_worker_pid(agent, b"--hostname\0k2+k4@", "the worker of k2 and k4")
        wait_until(lambda: k2 not in children(agent.process.pid), 60, what="k2's own worker to stop")
        post(port, later)
        wait_until(lambda: all(len(read_lines(outs[k])) >= 120 for k in ("k1", "k2", "k3"))
                   and len(read_lines(outs["k4"])) >= 60, 60, what="the later events in every output")
        assert kept in children(agent.process.pid) and len(worker_processes(agent)) == 2
        assert f"stopping the sink worker for k2 (pid {k2})" in agent.output()
        assert "stopping the sink worker for k1+k3" not in agent.output()
    for k in ("k1", "k2", "k3"):
        assert sorted(read_lines(outs[k])) == sorted(e.encode() for e in first + later), f"{k}: lost or duplicated"
    assert sorted(read_lines(outs["k4"])) == sorted(e.encode() for e in later)
