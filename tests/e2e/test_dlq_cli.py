"""``flumery dlq`` as a newcomer uses it: it finds the running agent's broker (or says plainly which one it read),
``--limit`` means events, ``--channel`` must be a channel of the agent, and a closed pipe ends it quietly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agents import REPO, AgentProcess, port_open, read_lines, wait_until
from test_agent_flow import post
from test_deadletters import CONF

from app.broker import free_port
from app.celery_app import create_app
from core.config import load_agent
from core.event import Event
from core.keys import exchange_name
from core.settings import Settings
from routing import deadletter
from routing.processor import ChannelWriter
from routing.transport import read_sizes


def flumery(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=env)


def bury(url: str, conf: Path, count: int, per_message: int) -> None:
    """Put ``count`` dead letters of channel c1 straight into the dead-letter channel, ``per_message`` a message."""
    config = load_agent(conf, "a1")
    settings = Settings(conf_file=str(conf), agent="a1", broker_url=url)
    writer = ChannelWriter(create_app(settings), config, url, settings.transport_options())
    try:
        for start in range(0, count, per_message):
            events = [Event(f"dead-{i}".encode(), id=f"id-{i}") for i in range(start, min(count, start + per_message))]
            writer.put({deadletter.DEAD_CHANNEL: deadletter.mark(events, ["malformed"] * len(events), "k1", "c1", 1)})
    finally:
        writer.close()


def sizes(redis_server) -> dict[str, int]:
    return read_sizes(redis_server.client(), exchange_name("a1"))


def test_dlq_finds_the_running_agent_without_being_told_its_data_dir(tmp_path):
    home, port, out = tmp_path / "home", free_port(), tmp_path / "out"
    env = {"HOME": str(home)}
    agent = AgentProcess(tmp_path, CONF.format(port=port, out=out, sink="RejectingSink", extra=""), env=env).start()
    dlq_env = {**agent.env}
    default_dir = home / ".flumery" / "a1"
    try:
        wait_until(lambda: port_open(port), 30, what="the http source")
        assert post(port, [{"body": "ok-1"}, {"body": "POISON-1"}, {"body": "POISON-2"}]) == 200
        wait_until(lambda: len(read_lines(out)) >= 1, 30, what="the good event")

        def listed():
            result = flumery("dlq", "list", "--json", "-f", str(agent.conf), "-n", "a1", env=dlq_env)
            return result if result.returncode == 0 and len(result.stdout.splitlines()) == 2 else None

        result = wait_until(listed, 30, what="dlq list to show the 2 dead letters of the running agent")
        assert sorted(json.loads(line)["body"] for line in result.stdout.splitlines()) == ["POISON-1", "POISON-2"]
        assert f"running, pid {agent.process.pid}, data dir {agent.data_dir}" in result.stderr
        assert not default_dir.exists()
    finally:
        stopped_with = agent.stop()
    assert stopped_with == 0

    stopped = flumery("dlq", "list", "-f", str(agent.conf), "-n", "a1", "--data-dir", str(agent.data_dir), env=dlq_env)
    assert stopped.returncode == 0, stopped.stderr
    assert "agent 'a1' is not running: dead letters stored in" in stopped.stderr
    assert stopped.stdout.startswith("2 events in the dead-letter channel of agent 'a1'")
    nowhere = flumery("dlq", "list", "-f", str(agent.conf), "-n", "a1", env=dlq_env)
    assert nowhere.returncode == 1
    assert f"agent 'a1' is not running and has no data in {default_dir}; give the --data-dir" in nowhere.stderr
    assert not default_dir.exists()


def test_replay_limit_counts_events_not_messages(tmp_path, redis_server):
    conf = tmp_path / "a1.conf"
    conf.write_text(CONF.format(port=free_port(), out=tmp_path / "out", sink="RejectingSink", extra=""))
    bury(redis_server.url, conf, 4, per_message=4)
    replayed = flumery("dlq", "replay", "--limit", "1", "-f", str(conf), "-n", "a1", "--broker-url",
                       redis_server.url)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == "replayed 1 event\n"
    assert sizes(redis_server) == {"c1": 1, deadletter.DEAD_CHANNEL: 3}
    left = flumery("dlq", "list", "--json", "-f", str(conf), "-n", "a1", "--broker-url", redis_server.url)
    assert sorted(json.loads(line)["body"] for line in left.stdout.splitlines()) == ["dead-1", "dead-2", "dead-3"]


def test_replay_into_a_channel_the_agent_does_not_have_names_its_channels(tmp_path, redis_server):
    conf = tmp_path / "a1.conf"
    conf.write_text(CONF.format(port=free_port(), out=tmp_path / "out", sink="RejectingSink", extra=""))
    bury(redis_server.url, conf, 2, per_message=2)
    refused = flumery("dlq", "replay", "--channel", "nope", "-f", str(conf), "-n", "a1", "--broker-url",
                      redis_server.url)
    assert refused.returncode == 2
    assert "--channel nope: agent 'a1' has no channel 'nope' (channels: c1)" in refused.stderr
    assert sizes(redis_server) == {deadletter.DEAD_CHANNEL: 2}


def test_list_into_a_pipe_closed_early_ends_without_a_traceback(tmp_path, redis_server):
    conf = tmp_path / "a1.conf"
    conf.write_text(CONF.format(port=free_port(), out=tmp_path / "out", sink="RejectingSink", extra=""))
    bury(redis_server.url, conf, 3000, per_message=1000)      # far more output than a pipe buffer holds
    command = (f"{sys.executable} -m app.cli dlq list --limit 3000 -f {conf} -n a1 "
               f"--broker-url {redis_server.url} | head -1")
    result = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout == "3000 events in the dead-letter channel of agent 'a1'; the oldest 3000:\n"
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
