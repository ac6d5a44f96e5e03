"""Flumery on Redis Sentinel (a real master, replica and three sentinels; see tests/sentinel.py): ``sentinel://``
URLs reach the master, and a put into a durable channel returns only once the replica holds it."""
from __future__ import annotations

import pytest
from sentinel import MASTER_NAME, SentinelDeployment

from app.celery_app import create_app
from core.config import parse_agent
from core.errors import NotReplicated, SettingsError
from core.event import Batch
from core.settings import Settings
from routing.processor import ChannelWriter
from routing.transport import read_sizes, redis_client

CONF = """
a1.channels = c1 m1
a1.sinks = k1 k2
a1.channels.c1.type = file
a1.channels.m1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
a1.sinks.k2.type = null
a1.sinks.k2.channel = m1
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    deployment = SentinelDeployment(tmp_path_factory.mktemp("sentinel")).start()
    yield deployment
    deployment.stop()


def writer(url: str, timeout_ms: int = 1000) -> ChannelWriter:
    settings = Settings(broker_url=url, replica_timeout_ms=timeout_ms)
    assert settings.replicas_for_durable_puts() == 1          # the default under Sentinel
    return ChannelWriter(create_app(settings), parse_agent(CONF, "a1"), url, settings.transport_options(),
                         settings.replicas_for_durable_puts(), settings.replica_timeout_ms)


def test_the_master_name_comes_from_the_url_or_the_environment():
    assert Settings(broker_url="sentinel://h:1;sentinel://h:2/0?master_name=m").master_name() == "m"
    assert Settings(broker_url="sentinel://h:1", sentinel_master="n").master_name() == "n"
    with pytest.raises(SettingsError, match="names no master"):
        Settings(broker_url="sentinel://:secret@h:1").transport_options()
    assert Settings(broker_url="redis://h:1/0").replicas_for_durable_puts() == 0


def test_a_durable_put_is_on_the_replica_when_it_returns(deployment):
    w = writer(deployment.url())
    try:
        w.put({"c1": Batch([b"one", b"two"])})
        # WAIT returned: the replica already applied the put (no polling needed).
        assert read_sizes(deployment.client("replica0"), "flumery.a1")["c1"] == 2
        client = redis_client(deployment.url(), {"master_name": MASTER_NAME})
        assert client.connection_pool.get_master_address()[1] == deployment.master_port()
        assert read_sizes(client, "flumery.a1")["c1"] == 2
    finally:
        w.close()


def test_without_a_replica_a_durable_put_is_not_acknowledged_but_a_memory_put_is(tmp_path):
    deployment = SentinelDeployment(tmp_path).start()
    try:
        w = writer(deployment.url(), timeout_ms=300)
        deployment.kill("replica0")
        with pytest.raises(NotReplicated, match="0 of the 1 replica"):
            w.put({"c1": Batch([b"not confirmed"])})
        w.put({"m1": Batch([b"memory channels do not wait"])})
        w.close()
    finally:
        deployment.stop()
