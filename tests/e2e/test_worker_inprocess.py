"""The flumery.take task in an in-process Celery worker, against a real Redis.

The worker is pytest-celery's classic ``celery_session_worker`` (its Docker-based fixtures cannot run here), given
Flumery's own Celery app (``celery_session_app`` below: the app ``celery -A app worker`` runs, not a test app) on a
redis-server the tests start for the session.  One worker serves every test of the module, as arq's tests share one
Redis: each test starts from an empty channel, an empty dead-letter channel and empty output files.
"""
from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from agents import drained, read_lines, wait_until
from celery import signals
from conftest import flow
from legacy_messages import put_whole

from app.celery_app import create_app
from core.config import load_agent
from core.event import Batch
from core.settings import Settings
from routing import codec, deadletter
from routing.processor import ChannelWriter
from routing.transport import PutTarget, read_sizes


@pytest.fixture(scope="session")
def inprocess_settings(tmp_path_factory, redis_session) -> Settings:
    """Agent a1: a channel c1 -> a file_roll sink k1 whose batch (40) gathers several channel messages."""
    home = tmp_path_factory.mktemp("inprocess")
    conf = home / "a1.conf"
    conf.write_text(flow({"type": "seq"}, {"type": "memory", "capacity": 1000},
                         {"type": "file_roll", "sink.directory": home / "out", "sink.batchSize": 40}))
    return Settings(conf_file=str(conf), agent="a1", broker_url=redis_session.url, data_dir=str(home),
                    visibility_timeout_s=5)


def keep_the_tests_logging(**_) -> None:
    """A setup_logging receiver: with one, Celery leaves logging alone.  Without it the in-process worker sets the
    root logger to its own level (ERROR) for the rest of the run, and later tests' caplog sees nothing."""


@pytest.fixture(scope="session")
def celery_session_app(inprocess_settings):
    """pytest-celery's session app, replaced by Flumery's (its transport, task and delivery settings)."""
    signals.setup_logging.connect(keep_the_tests_logging, weak=False, dispatch_uid="tests.keep_logging")
    yield create_app(inprocess_settings)
    signals.setup_logging.disconnect(dispatch_uid="tests.keep_logging")


@pytest.fixture(scope="session")
def celery_worker_parameters():
    # No ping check: it needs celery's test ping task and a result backend, which Flumery's app has not.
    return {"perform_ping_check": False, "shutdown_timeout": 30}


@pytest.fixture
def flow_under_test(celery_session_app, celery_session_worker, inprocess_settings, redis_session):
    out = Path(inprocess_settings.data_dir) / "out"
    writer = ChannelWriter(celery_session_app, load_agent(inprocess_settings.conf_file, "a1"), redis_session.url,
                           inprocess_settings.transport_options())
    writer.channel._purge(deadletter.dead_queue("a1"))       # (nothing takes dead letters: they would stay)
    wait_until(lambda: drained(redis_session), 30, what="the channels of the test before to be empty")
    for part in (sorted(out.iterdir()) if out.is_dir() else []):
        part.write_bytes(b"")                 # the sink appends (O_APPEND): it goes on from the new end
    yield celery_session_app, writer, out
    writer.close()


def test_task_writes_batches_and_gathers_small_messages(flow_under_test, redis_session):
    app, writer, out = flow_under_test
    for start in range(0, 100, 10):                          # ten messages of 10 events; the sink takes 40
        writer.put({"c1": Batch([f"e{i}".encode() for i in range(start, start + 10)])})
    wait_until(lambda: len(read_lines(out)) >= 100, 30, what="100 events")
    assert sorted(read_lines(out), key=lambda b: int(b[1:])) == [f"e{i}".encode() for i in range(100)]
    wait_until(lambda: read_sizes(redis_session.client(), "flumery.a1").get("c1") == 0, 10, what="empty channel")


@pytest.mark.parametrize("layout", ["compact", "whole (before compact messages)"])
def test_undecodable_message_goes_to_the_dead_letter_channel(flow_under_test, redis_session, layout):
    app, writer, out = flow_under_test
    if layout == "compact":
        data = b"".join(msgpack.packb(v) for v in ("not a list of bodies", None, None))
        task_id = codec.new_tag()
        writer.channel.put_transaction("flumery.a1", [PutTarget("c1", "flumery.a1.c1", 1000, 1, writer.template("c1"),
                                                                [codec.ChannelMessage(task_id, 1, data)])])
    else:
        task_id = put_whole(redis_session.client(), writer, "c1", ("c1", "not a list of bodies", None, None), 1)
    writer.put({"c1": Batch([b"fine"])})                      # the events behind it are not blocked
    wait_until(lambda: read_lines(out) == [b"fine"], 30, what="the event behind the bad message")
    sizes = wait_until(lambda: (lambda s: s if s.get(deadletter.DEAD_CHANNEL) == 1 else None)(
        read_sizes(redis_session.client(), "flumery.a1")), 10, what="one dead letter")
    assert sizes["c1"] == 0
    [message] = writer.channel.peek(deadletter.dead_queue("a1"), 10)
    [dead] = list(codec.decode_stored(message)[1])
    assert dead.id == task_id and b"not a list of bodies" in dead.body
    assert "undecodable channel message" in dead.headers[deadletter.REASON]


def test_a_backlog_stored_before_compact_messages_is_served_after_the_upgrade(flow_under_test, redis_session):
    """Messages in the earlier layout (the whole envelope in each) and compact ones in the same channel: the worker
    serves both, in order, and releases their events and bytes."""
    app, writer, out = flow_under_test
    client = redis_session.client()
    put_whole(client, writer, "c1", ("c1", [b"old1", b"old2"], None, ["o-1", "o-2"]), 2, 8)
    writer.put({"c1": Batch([b"new1"])})
    put_whole(client, writer, "c1", ("c1", [b"old3"], [{"h": "v"}], None), 1, 4)
    wait_until(lambda: len(read_lines(out)) >= 4, 30, what="4 events")
    assert read_lines(out) == [b"old1", b"old2", b"new1", b"old3"]
    wait_until(lambda: read_sizes(client, "flumery.a1").get("c1") == 0, 10, what="empty channel")
    assert int(client.hget("flumery.a1:bytes", "c1")) == 0
    assert client.keys("flumery.msg:*") == []
