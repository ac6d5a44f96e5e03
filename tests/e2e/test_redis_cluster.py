"""Flumery on a real Redis Cluster (three masters, one or two replicas each; see tests/cluster_deployment.py)
through ``redis-cluster://`` broker URLs: real ``flumery agent`` processes with their sink workers, every key of an
agent in one hash slot, agents spread over the masters, a master killed with its replica promoted mid-flow, and
Flower."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import redis
from agents import REPO, AgentProcess, port_open, read_lines, wait_until
from cluster_deployment import ClusterDeployment
from helpers import ReportingThread

from app.broker import free_port, reachable
from app.celery_app import create_app
from app.running import mask_password
from core.config import load_agent
from core.errors import NotReplicated, SettingsError
from core.event import Batch, Event
from core.keys import exchange_name
from core.settings import Settings
from routing import deadletter
from routing.processor import ChannelWriter
from routing.transport import read_sizes, redis_client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    deployment = ClusterDeployment(tmp_path_factory.mktemp("cluster")).start()
    yield deployment
    deployment.stop()


def seq_conf(agent: str, out, total: int) -> str:
    return f"""
{agent}.sources = r1
{agent}.channels = c1
{agent}.sinks = k1
{agent}.sources.r1.type = seq
{agent}.sources.r1.totalEvents = {total}
{agent}.sources.r1.batchSize = 100
{agent}.sources.r1.channels = c1
{agent}.channels.c1.type = file
{agent}.channels.c1.capacity = 100000
{agent}.channels.c1.transactionCapacity = 100
{agent}.sinks.k1.type = file_roll
{agent}.sinks.k1.sink.directory = {out}
{agent}.sinks.k1.channel = c1
"""


def http_conf(port: int, out) -> str:
    return f"""
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1
a1.channels.c1.type = file
a1.channels.c1.transactionCapacity = 1000
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.batchSize = 500
a1.sinks.k1.channel = c1
"""


def agent_client(cluster: ClusterDeployment, agent: str) -> redis.Redis:
    settings = Settings(broker_url=cluster.url(), agent=agent)
    return redis_client(cluster.url(), settings.transport_options())


def sizes(cluster: ClusterDeployment, agent: str) -> dict[str, int]:
    return read_sizes(agent_client(cluster, agent), exchange_name(agent), "{" + agent + "}.")


def test_the_key_prefix_is_the_agent_name_as_a_hash_tag_and_must_hold_one():
    url = "redis-cluster://h1:7000;redis-cluster://h2:7001"
    assert Settings(broker_url=url, agent="a1").transport_options()["global_keyprefix"] == "{a1}."
    assert Settings(broker_url=url, agent="a1", key_prefix="{t}.").redis_key_prefix() == "{t}."
    assert Settings(broker_url=url, agent="a1").replicas_for_durable_puts() == 1
    assert Settings(broker_url="redis://h:1/0", agent="a1").redis_key_prefix() == ""
    with pytest.raises(SettingsError, match=r"FLUMERY_KEY_PREFIX: 'flumery1\.' has no Redis hash tag"):
        Settings(broker_url=url, agent="a1", key_prefix="flumery1.").transport_options()
    with pytest.raises(SettingsError, match="needs the agent's name"):
        Settings(broker_url=url).redis_key_prefix()
    assert mask_password("redis-cluster://:s3cret@h1:7000;redis-cluster://:s3cret@h2:7001") == (
        "redis-cluster://:***@h1:7000;redis-cluster://:***@h2:7001")


def test_an_agent_flow_on_the_cluster_delivers_every_event_exactly_once(tmp_path, cluster):
    out = tmp_path / "out"
    with AgentProcess(tmp_path, seq_conf("a1", out, 5000), broker_url=cluster.url()):
        wait_until(lambda: len(read_lines(out)) >= 5000, 90, what="5000 events in the file_roll output")
        wait_until(lambda: sizes(cluster, "a1").get("c1") == 0, 30, what="the channel to drain")
    assert sorted(read_lines(out), key=int) == [str(i).encode() for i in range(5000)]
    # Every key the agent's processes wrote (Flumery's, kombu's, Celery's) is under its hash tag, so on the master
    # that owns that slot, and only there (this is the first agent on this cluster).
    master = cluster.client(cluster.master_of("{a1}"))
    assert master.exists("{a1}.flumery.a1:sizes") and master.exists("{a1}.flumery.a1:metrics:SOURCE.r1")
    assert master.exists("{a1}._kombu.binding.flumery.a1")
    assert all(key.startswith(b"{a1}.") for key in master.keys("*")), master.keys("*")
    for server in cluster.servers[:3]:
        if server.port != cluster.master_of("{a1}"):
            assert cluster.client(server.port).keys("*") == []


def test_two_agents_land_on_different_masters_and_both_deliver(tmp_path, cluster):
    other = next(name for name in (f"b{i}" for i in range(100))
                 if cluster.master_of("{" + name + "}") != cluster.master_of("{a1}"))
    outs = {"a1": tmp_path / "out-a1", other: tmp_path / f"out-{other}"}
    agents = []
    for name, out in outs.items():
        (tmp_path / name).mkdir()
        agents.append(AgentProcess(tmp_path / name, seq_conf(name, out, 3000), name=name,
                                   broker_url=cluster.url()).start())
    try:
        for name, out in outs.items():
            wait_until(lambda out=out: len(read_lines(out)) >= 3000, 90, what=f"3000 events from agent {name}")
    finally:
        codes = [agent.stop() for agent in agents]
    assert codes == [0, 0]
    for out in outs.values():
        assert sorted(read_lines(out), key=int) == [str(i).encode() for i in range(3000)]
    masters = {name: cluster.master_of("{" + name + "}") for name in outs}
    assert len(set(masters.values())) == 2
    for name, port in masters.items():
        assert cluster.client(port).exists("{" + name + "}.flumery." + name + ":sizes")


def test_without_the_agent_prefix_the_broker_check_still_reaches_the_cluster(cluster):
    assert reachable(cluster.url())


def post(port: int, first: int, count: int) -> int | None:
    body = json.dumps([{"body": f"e{first + j}"} for j in range(count)]).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_a_master_killed_mid_flow_its_replica_promoted_the_flow_resumes_and_loses_nothing(tmp_path):
    """kill -9 of the master owning the agent's slot while an HTTP client posts; the cluster promotes its replica
    and the agent's source and sink worker reconnect to it.  Every event acknowledged (HTTP 200) is delivered:
    puts into the file channel waited for the replica (WAIT), so the promoted replica holds them.  Two replicas per
    master: the promoted one keeps the other, so durable puts are confirmed again (with one, they would be refused
    until the killed node is back as a replica)."""
    cluster = ClusterDeployment(tmp_path / "cluster", replicas=2).start()
    port, out, total, per_request = free_port(), tmp_path / "out", 4000, 10
    acked: list[int] = []
    failed: list[int | None] = []

    def load() -> None:
        first = 0
        while first < total:
            status = post(port, first, per_request)
            if status == 200:
                acked.append(first)
                first += per_request
            else:                             # 503 (broker unreachable, put not replicated) or no answer: retry
                failed.append(status)
                time.sleep(0.05)

    try:
        with AgentProcess(tmp_path, http_conf(port, out), broker_url=cluster.url(),
                          env={"FLUMERY_REPLICA_TIMEOUT_MS": "500"}):
            wait_until(lambda: port_open(port), 60, what="the http source")
            thread = ReportingThread(load, name="http-load")
            thread.start()
            wait_until(lambda: len(acked) * per_request >= total // 4 or not thread.is_alive(), 60,
                       what="a quarter of the events acknowledged")
            thread.check()
            old = cluster.master_of("{a1}")
            cluster.kill_master_of("{a1}")
            assert cluster.master_of("{a1}") != old
            thread.join(180)
            wait_until(lambda: len(set(read_lines(out))) >= total, 120, what=f"all {total} events delivered")
    finally:
        cluster.stop()
    lines = read_lines(out)
    assert set(lines) == {f"e{i}".encode() for i in range(total)}      # lost 0
    assert failed, "the kill never interrupted the flow: the test did not test a failover"


def flower_json(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def test_flower_on_the_cluster_sees_the_agent_s_worker_and_its_tasks(tmp_path, cluster):
    """Flower reaches the workers through Celery's remote control (a PUBLISH and a reply queue under the agent's
    prefix) and sees their tasks through Celery's events (PUBLISH on the agent's master)."""
    out, port = tmp_path / "out", free_port()
    conf = tmp_path / "a1.conf"
    conf.write_text(seq_conf("a1", out, 500))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "FLUMERY_"))}
    env.update(FLUMERY_FLOWER_NO_AUTH="1", FLOWER_UNAUTHENTICATED_API="true")     # the API answers without login
    flower = subprocess.Popen([sys.executable, "-m", "app.cli", "flower", "-f", str(conf), "-n", "a1", "--broker-url",
                               cluster.url(), f"--port={port}", "--address=127.0.0.1"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: flower_json(port, "/api/tasks") is not None or flower.poll() is not None, 60,
                   what="Flower to answer")
        assert flower.poll() is None, flower.stdout.read()
        with AgentProcess(tmp_path, conf.read_text(), broker_url=cluster.url()):
            wait_until(lambda: len(read_lines(out)) >= 500, 90, what="500 events in the output")
            workers = wait_until(lambda: flower_json(port, "/api/workers?refresh=1"), 60, what="Flower's workers")
            assert any(name.startswith("k1@a1.") for name in workers), workers
            tasks = wait_until(lambda: flower_json(port, "/api/tasks"), 30, what="tasks seen by Flower")
            assert any(t.get("state") == "SUCCESS" for t in tasks.values()), tasks
    finally:
        flower.terminate()
        flower.wait(30)


def test_flumery_dlq_lists_and_purges_the_agent_s_dead_letters_on_the_cluster(tmp_path, cluster):
    conf = tmp_path / "a1.conf"
    conf.write_text(seq_conf("a1", tmp_path / "out", 1))
    settings = Settings(conf_file=str(conf), agent="a1", broker_url=cluster.url())
    writer = ChannelWriter(create_app(settings), load_agent(conf, "a1"), cluster.url(), settings.transport_options())
    try:
        events = [Event(f"dead-{i}".encode(), id=f"id-{i}") for i in range(3)]
        writer.put({deadletter.DEAD_CHANNEL: deadletter.mark(events, ["malformed"] * 3, "k1", "c1", 1)})
    finally:
        writer.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMERY_")}
    args = ["-f", str(conf), "-n", "a1", "--broker-url", cluster.url()]
    listed = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "list", "--json", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(line)["body"] for line in listed.stdout.splitlines()) == ["dead-0", "dead-1", "dead-2"]
    purged = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "purge", "--yes", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert purged.returncode == 0, purged.stderr
    assert sizes(cluster, "a1").get(deadletter.DEAD_CHANNEL) == 0


def test_on_a_cluster_without_replicas_durable_puts_are_refused_unless_told_otherwise(tmp_path):
    """FLUMERY_MIN_REPLICAS is 1 by default on a cluster: with no replica to confirm them, puts into a durable
    channel are not acknowledged (a memory channel's are); the agent says so at start."""
    cluster = ClusterDeployment(tmp_path / "cluster", replicas=0).start()
    conf = tmp_path / "a1.conf"
    conf.write_text(seq_conf("a1", tmp_path / "out", 1).replace(
        "a1.channels = c1\n", "a1.channels = c1 m1\na1.channels.m1.type = memory\n"))
    try:
        for min_replicas, refused in ((None, True), (0, False)):
            settings = Settings(conf_file=str(conf), agent="a1", broker_url=cluster.url(), min_replicas=min_replicas,
                                replica_timeout_ms=200)
            writer = ChannelWriter(create_app(settings), load_agent(conf, "a1"), cluster.url(),
                                   settings.transport_options(), settings.replicas_for_durable_puts(),
                                   settings.replica_timeout_ms)
            try:
                writer.put({"m1": Batch([b"memory channels never wait"])})
                if refused:
                    with pytest.raises(NotReplicated, match="0 of the 1 replica"):
                        writer.put({"c1": Batch([b"not confirmed"])})
                else:
                    writer.put({"c1": Batch([b"accepted without a replica"])})
            finally:
                writer.close()
        with AgentProcess(tmp_path, conf.read_text(), broker_url=cluster.url()) as agent:
            wait_until(lambda: "wait for 1 replica(s)" in agent.output(), 60, what="the agent's warning")
    finally:
        cluster.stop()
