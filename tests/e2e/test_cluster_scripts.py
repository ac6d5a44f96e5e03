"""The channel scripts on a real three-node Redis Cluster: with a hash tag as the key prefix, every key a script
takes through KEYS or derives from them lies in one slot, so each transaction runs on one node.

The scripts are called here through redis-py's cluster client, with the keys Flumery's transport would give them;
tests/e2e/test_redis_cluster.py runs whole agents on a cluster through ``redis-cluster://`` URLs.
"""
from __future__ import annotations

import time

import pytest
import redis
from cluster_deployment import ClusterDeployment
from redis.cluster import RedisCluster

from core import keys
from routing import scripts


@pytest.fixture
def cluster(tmp_path):
    """Three cluster-enabled redis-servers, each owning a third of the slots (no replicas)."""
    deployment = ClusterDeployment(tmp_path, replicas=0, node_timeout_ms=5000).start()
    try:
        client = RedisCluster(host="127.0.0.1", port=deployment.servers[0].port)
        yield client
        client.close()
    finally:
        deployment.stop()


class ClusterChannel:
    """The scripts called with the keys :class:`routing.transport.Channel` gives them, under ``prefix``."""

    def __init__(self, client: RedisCluster, prefix: str, exchange: str = "flumery.a1"):
        self.client, self.prefix, self.exchange = client, prefix, exchange
        self.ns = prefix + keys.MESSAGE_PREFIX
        self.inflight = prefix + keys.INFLIGHT

    def run(self, name: str, script_keys: list[str], args: list):
        return self.client.register_script(getattr(scripts, name))(keys=script_keys, args=args)

    def queue_keys(self, queue: str) -> list[str]:
        return [self.prefix + queue, self.prefix + keys.bell_key(queue)]

    def put(self, queue: str, field: str, tag: str, body: bytes):
        script_keys = [self.ns, self.prefix + keys.sizes_key(self.exchange),
                       self.prefix + keys.bytes_key(self.exchange), *self.queue_keys(queue)]
        return self.run("PUT", script_keys, [1, 1, field, 100, 0, 1, len(body), 1, "tpl1", "{}", "h", "t",
                                             tag, 1, len(body), body, 0])

    def fetch(self, queue: str):
        return self.run("FETCH", [self.ns, self.inflight, *self.queue_keys(queue)], [repr(time.time()), "me", 0, 0])


def test_every_script_runs_on_a_cluster_under_a_hash_tag_prefix(cluster):
    channel = ClusterChannel(cluster, "{flumery}.")
    queue = keys.queue_name("a1", "c1")
    assert channel.put(queue, "c1", "t1", b"abc") == [[]]
    assert channel.put(queue, "c1", "t2", b"de") == [[]]
    assert cluster.hget("{flumery}.flumery.tpl:tpl1", "q") == b"{flumery}.flumery.a1.c1"     # derived key, same slot
    t1 = [1, b"\0tpl1\0t1\0" + b"1", b"abc"]
    assert channel.fetch(queue) == t1
    assert channel.run("GIVEBACK", [channel.ns, channel.inflight], ["t1", "me", "front", keys.BELL_SUFFIX]) == 1
    assert channel.fetch(queue) == t1
    assert channel.run("TOUCH", [channel.inflight], [repr(time.time()), "t1"]) == 1
    assert channel.run("RECLAIM", [channel.ns, channel.inflight], [repr(time.time() + 1), 10, keys.BELL_SUFFIX]) == 1
    assert channel.fetch(queue) == t1
    assert channel.run("ACK", [channel.ns, channel.inflight], ["me", "t1"]) == 1
    assert channel.run("PURGE", [channel.ns, channel.prefix + queue], []) == 1
    assert cluster.hgetall("{flumery}.flumery.a1:sizes") == {b"c1": b"0"}
    assert cluster.hgetall("{flumery}.flumery.a1:bytes") == {b"c1": b"0"}


def test_without_a_hash_tag_the_keys_span_slots_and_the_cluster_refuses(cluster):
    """Why the prefix must be a hash tag on a cluster: Flumery's own key names hash to different slots."""
    channel = ClusterChannel(cluster, "")
    with pytest.raises(redis.exceptions.RedisClusterException, match="same key slot"):
        channel.put(keys.queue_name("a1", "c1"), "c1", "t1", b"abc")
