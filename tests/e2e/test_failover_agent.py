"""A failover sink group end to end: a real agent, a real Redis, a primary store that fails and comes back."""
from __future__ import annotations

import json
import urllib.request

from agents import AgentProcess, drained, port_open, read_lines, wait_until

from app.broker import free_port

# --- end to end ---------------------------------------------------------------------------------------------------

def post(port: int, bodies: list[str]) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", method="POST",
                                     data=json.dumps([{"body": b} for b in bodies]).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def test_failover_group_end_to_end_with_a_blocked_primary_directory(tmp_path, redis_server):
    """k1's sink.directory is an existing regular file, so creating the directory fails (even as root): events go
    to k2.  Once the file is gone and k1's penalty (maxpenalty 2 s) is over, the next events go to k1 again."""
    port, primary, backup = free_port(), tmp_path / "primary", tmp_path / "backup"
    primary.write_text("I am a file, not a directory\n")
    with AgentProcess(tmp_path, f"""
a1.sources = r1
a1.channels = c1
a1.sinks = k1 k2
a1.sources.r1.type = http
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = {port}
a1.sources.r1.channels = c1
a1.channels.c1.type = file
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {primary}
a1.sinks.k1.sink.rollInterval = 0
a1.sinks.k1.channel = c1
a1.sinks.k2.type = file_roll
a1.sinks.k2.sink.directory = {backup}
a1.sinks.k2.sink.rollInterval = 0
a1.sinks.k2.channel = c1
a1.sinkgroups = g1
a1.sinkgroups.g1.sinks = k1 k2
a1.sinkgroups.g1.processor.type = failover
a1.sinkgroups.g1.processor.priority.k1 = 10
a1.sinkgroups.g1.processor.priority.k2 = 5
a1.sinkgroups.g1.processor.maxpenalty = 2000
""", broker_url=redis_server.url) as agent:
        first = [f"a{i}" for i in range(30)]
        later = [f"b{i}" for i in range(30)]
        wait_until(lambda: port_open(port), 30, what="the http source")
        for i in range(0, 30, 10):
            assert post(port, first[i:i + 10]) == 200
        wait_until(lambda: len(read_lines(backup)) >= 30, 60, what="the first events in the backup directory")
        assert primary.is_file()
        primary.unlink()
        probes: list[str] = []

        def k1_writes_again() -> bool:
            """One probe event: True once k1's penalty (at most maxpenalty = 2 s) is over and k1 wrote it."""
            probe = f"probe{len(probes)}"
            probes.append(probe)
            assert post(port, [probe]) == 200
            wait_until(lambda: probe.encode() in read_lines(primary) + read_lines(backup), 30, what=f"{probe}")
            return probe.encode() in read_lines(primary)
        wait_until(k1_writes_again, 30, interval_s=0.2, what="k1 to write again once its penalty is over")
        for i in range(0, 30, 10):
            assert post(port, later[i:i + 10]) == 200
        wait_until(lambda: len(read_lines(primary)) + len(read_lines(backup)) >= 60 + len(probes), 60,
                   what="all 60 events and the probes")
        wait_until(lambda: drained(redis_server), 30, what="an empty channel (no duplicate still to come)")
    probed_backup = [p.encode() for p in probes if p.encode() in read_lines(backup)]
    assert sorted(read_lines(backup)) == sorted([b.encode() for b in first] + probed_backup)
    assert sorted(read_lines(primary)) == sorted([b.encode() for b in later] + [probes[-1].encode()])
    assert "sink k1 failed and is penalised" in agent.output()
