"""routing/transport.py's connection pool under concurrent puts from many source threads (issue 8, item 5)."""
from __future__ import annotations

import threading

from helpers import ReportingThread

from app.celery_app import create_app
from core.config import parse_agent
from core.event import Batch
from core.settings import Settings
from routing.processor import ChannelWriter
from routing.transport import read_sizes

CONF = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.channels.c1.capacity = 100000
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
"""


def test_threads_beyond_the_pool_size_wait_for_a_connection(redis_server):
    # kombu's pool raised "Too many connections" to the 3rd concurrent put of a pool of 2 (10 by default).
    settings = Settings(broker_url=redis_server.url)
    writer = ChannelWriter(create_app(settings), parse_agent(CONF, "a1"), redis_server.url,
                           {"max_connections": 2})
    errors: list[Exception] = []
    start = threading.Barrier(16)

    def put_many() -> None:
        start.wait()
        for _ in range(50):
            try:
                writer.put({"c1": Batch([b"x" * 100] * 10)})
            except Exception as exc:
                errors.append(exc)
    threads = [ReportingThread(put_many, name=f"putter-{n}") for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    writer.close()
    assert errors == []
    assert read_sizes(redis_server.client(), "flumery.a1") == {"c1": 16 * 50 * 10}
