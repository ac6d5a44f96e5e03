"""The flumery.take task in an in-process Celery worker (celery.contrib.testing), against a real Redis."""
from __future__ import annotations

import uuid

import pytest
from celery.contrib.testing.worker import start_worker
from kombu.serialization import dumps as serialize

from agents import read_lines, wait_until
from app.celery_app import create_app
from core.config import load_agent
from core.event import Batch
from core.settings import Settings
from routing import codec
from routing import deadletter
from routing.codec import EVENTS_HEADER, TASK_NAME
from routing.processor import ChannelWriter
from routing.transport import PutTarget, read_sizes

CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.channels.c1.capacity = 1000
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.batchSize = 40
a1.sinks.k1.channel = c1
"""


@pytest.fixture
def flow(tmp_path, redis_server):
    out = tmp_path / "out"
    conf = tmp_path / "a1.conf"
    conf.write_text(CONF.format(out=out))
    settings = Settings(conf_file=str(conf), agent="a1", broker_url=redis_server.url, data_dir=str(tmp_path),
                        visibility_timeout_s=5)
    app = create_app(settings)
    writer = ChannelWriter(app, load_agent(conf, "a1"), redis_server.url, settings.transport_options())
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield app, writer, out, redis_server
    writer.close()


def test_task_writes_batches_and_gathers_small_messages(flow):
    app, writer, out, redis_server = flow
    for start in range(0, 100, 10):                          # ten messages of 10 events; the sink takes 40
        writer.put({"c1": Batch([f"e{i}".encode() for i in range(start, start + 10)])})
    wait_until(lambda: len(read_lines(out)) >= 100, 30, what="100 events")
    assert sorted(read_lines(out), key=lambda b: int(b[1:])) == [f"e{i}".encode() for i in range(100)]
    wait_until(lambda: read_sizes(redis_server.client(), "flumery.a1").get("c1") == 0, 10, what="empty channel")


def test_undecodable_message_goes_to_the_dead_letter_channel(flow):
    app, writer, out, redis_server = flow
    task_id = str(uuid.uuid4())
    task = app.amqp.as_task_v2(task_id, TASK_NAME, args=("c1", "not a list of bodies", None, None))
    _, _, body = serialize(task.body, serializer="msgpack")
    envelope = writer.channel.make_message({**task.headers, EVENTS_HEADER: 1}, task.properties,
                                           "flumery.a1", "c1", task_id)
    writer.channel.put_transaction("flumery.a1", [PutTarget("c1", "flumery.a1.c1", 1000, 1,
                                                            [(task_id, 1, envelope, body)])])
    writer.put({"c1": Batch([b"fine"])})                      # the events behind it are not blocked
    wait_until(lambda: read_lines(out) == [b"fine"], 30, what="the event behind the bad message")
    sizes = wait_until(lambda: (lambda s: s if s.get(deadletter.DEAD_CHANNEL) == 1 else None)(
        read_sizes(redis_server.client(), "flumery.a1")), 10, what="one dead letter")
    assert sizes["c1"] == 0
    [message] = writer.channel.peek(deadletter.dead_queue("a1"), 10)
    [dead] = list(codec.decode_stored(message)[1])
    assert dead.id == task_id and b"not a list of bodies" in dead.body
    assert "undecodable channel message" in dead.headers[deadletter.REASON]
