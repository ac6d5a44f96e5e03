"""deploy/access-log-elasticsearch.conf end to end: TAILDIR -> timestamp + regex_extractor -> file channel ->
elasticsearch, against osmem-server (a stand-in for Elasticsearch/OpenSearch: an in-memory server of the
OpenSearch REST API).  The example runs as shipped, its relative ``var/`` paths pointed into the test's
directory and ES_HOSTS at the stand-in; the documents are then found by status and by virtual host."""
from __future__ import annotations

import json
import random
import urllib.request
from collections import Counter

from agents import REPO, AgentProcess, wait_until
from stores import osmem
from test_routing_example import access_lines

from app.broker import free_port
from core.config import load_agent

STAND_INS = (osmem,)        # session fixtures of tests/stores.py: the stand-in servers

EXAMPLE = REPO / "deploy" / "access-log-elasticsearch.conf"


def test_example_validates_as_shipped():
    config = load_agent(EXAMPLE, "web", environ={})
    assert config.sinks["es"].config.host_names == "localhost:9200"
    assert [i.type for i in config.sources["tail"].interceptors] == ["timestamp", "regex_extractor"]


def test_access_log_lines_are_searchable_by_status_and_vhost(osmem, tmp_path, redis_server):
    text = EXAMPLE.read_text()
    metrics_port = free_port()
    agent = AgentProcess(tmp_path, text.replace("var/", f"{tmp_path}/var/"), name="web",
                         broker_url=redis_server.url, env={"ES_HOSTS": f"127.0.0.1:{osmem.port}"},
                         extra=["--metrics-port", str(metrics_port)])
    log_path = tmp_path / "var" / "access-log" / "access.log"
    log_path.parent.mkdir(parents=True)
    written = access_lines(0, 2000, random.Random(11))
    log_path.write_bytes(b"".join(line + b"\n" for line, _ in written))
    client = osmem.client()

    def indexed() -> int:
        if not client.indices.exists(index="web-*"):
            return 0
        client.indices.refresh(index="web-*")
        return client.count(index="web-*")["count"]

    def sink_counters() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            return json.load(response).get("SINK.es", {})

    agent.start()
    try:
        wait_until(lambda: indexed() >= len(written), 120, 0.5, what="every line indexed")
        counters = wait_until(lambda: (lambda c: c if c.get("EventDrainSuccessCount") == str(len(written))
                                       else None)(sink_counters()), 30, 0.5, what="the sink's counters")
    finally:
        agent.stop()
    assert counters["ConnectionCreatedCount"] == "1" and counters.get("ConnectionFailedCount", "0") == "0"
    assert indexed() == len(written)
    statuses = Counter(status for _, status in written if status is not None)
    for status in (503, 404, 200):
        found = client.count(index="web-*", q=f"status:{status}")["count"]
        assert found == statuses[status], status
    vhost_lines = sum(1 for line, _ in written if line.startswith(b"site1.example.com:443 "))
    found = client.count(index="web-*", q="vhost.keyword:site1.example.com")["count"]
    assert found == vhost_lines > 0
    hit = client.search(index="web-*", body={"query": {"term": {"status": "503"}}, "size": 1})["hits"]["hits"][0]
    assert hit["_index"].startswith("web-20") and b" 503 " in hit["_source"]["body"].encode()
