"""deploy/access-log-routing.conf end to end: TAILDIR -> regex_extractor -> multiplexing -> two file_roll sinks.

The example runs as shipped, but with its relative ``var/`` paths pointed into the test's directory (in a copy
of the file), against an access log in the combined log format that a writer appends to while the agent runs.
"""
from __future__ import annotations

import random
import re

from agents import REPO, AgentProcess, drained, read_lines, taildir_caught_up, wait_until

from core.config import load_agent

EXAMPLE = REPO / "deploy" / "access-log-routing.conf"
STATUSES = [200] * 80 + [304] * 4 + [404] * 6 + [500] * 4 + [502] * 2 + [503] * 3 + [599]


def access_lines(start: int, count: int, rnd: random.Random) -> list[tuple[bytes, int | None]]:
    """(line, status) in the format of bench/make_access_log.py, with a few traps for the regex."""
    out = []
    for i in range(start, start + count):
        status = STATUSES[rnd.randrange(len(STATUSES))]
        path = f"/api/v1/items/{500 + i % 7}" if i % 5 == 0 else f"/api/v1/items/{i}"   # "500" in the URL
        vhost = f"site{i % 3}.example.com:443 " if i % 2 else ""          # vhost_combined and combined lines
        out.append((f'{vhost}10.{i % 256}.{(i // 256) % 256}.{i % 97} - - [01/Dec/2026:04:{(i // 60000) % 60:02d}:'
                    f'{(i // 1000) % 60:02d} +0000] "GET {path} HTTP/1.1" {status} {rnd.randint(100, 9000)} "-" '
                    f'"Mozilla/5.0 (X11; Linux x86_64) curl/8.0"'.encode(), status))
        if i % 997 == 0:
            out.append((f"malformed line {i} 500 without a request".encode(), None))
    return out


def test_example_validates_as_shipped():
    config = load_agent(EXAMPLE, "access", environ={})
    source = config.sources["tail"]
    assert source.type == "TAILDIR" and source.channels == ("errors", "rest")
    assert source.selector.type == "multiplexing"
    assert [i.type for i in source.interceptors] == ["regex_extractor"]
    assert config.sinks["errors"].config.directory == "var/access-routing/errors"
    assert config.sinks["all"].config.directory == "var/access-routing/all"


def test_server_errors_go_to_errors_and_the_rest_to_all_exactly_once(tmp_path, redis_server):
    text = EXAMPLE.read_text()
    assert text.count("var/") >= 4
    agent = AgentProcess(tmp_path, text.replace("var/", f"{tmp_path}/var/"), name="access",
                         broker_url=redis_server.url)
    log_path = tmp_path / "var" / "access-log" / "access.log"
    log_path.parent.mkdir(parents=True)
    rnd = random.Random(7)
    written = access_lines(0, 3000, rnd)
    log_path.write_bytes(b"".join(line + b"\n" for line, _ in written))
    with agent:
        routed = tmp_path / "var" / "access-routing"
        errors_dir, all_dir = routed / "errors", routed / "all"

        def delivered() -> int:
            return len(read_lines(errors_dir)) + len(read_lines(all_dir))

        wait_until(lambda: delivered() >= len(written), 60, what="the first 3000 lines")
        with open(log_path, "ab") as log:                 # more lines while the agent tails the file
            for chunk in range(5):
                more = access_lines(3000 + chunk * 1000, 1000, rnd)
                log.write(b"".join(line + b"\n" for line, _ in more))
                log.flush()
                written += more
                wait_until(lambda written=written: delivered() >= len(written), 60, what=f"{len(written)} lines")
        wait_until(lambda: taildir_caught_up(routed / "taildir_position.json") and drained(redis_server, "access"),
                   60, what="the source at the end of the log and the channels empty (no duplicate still to come)")

    expected_errors = [line for line, status in written if status is not None and status >= 500]
    expected_rest = [line for line, status in written if status is None or status < 500]
    assert len(expected_errors) > 100 and any(s is None for _, s in written)
    errors = read_lines(errors_dir)
    rest = read_lines(all_dir)
    assert len(errors) + len(rest) == len(written)           # each line exactly once, in exactly one sink
    headers_re = re.compile(rb"^\{(?:vhost=([a-z0-9.]+), )?client=([0-9.]+), status=(5\d\d), statusClass=5\} (.*)$")
    bodies = []
    vhosts = 0
    for line in errors:
        m = headers_re.match(line)
        assert m, line
        vhost, client, status, body = m.groups()
        bodies.append(body)
        prefix = (vhost + b":443 " if vhost else b"") + client + b" - - ["
        assert body.startswith(prefix)                                        # the vhost and client headers
        assert f'" {status.decode()} '.encode() in body                       # the status header
        vhosts += vhost is not None
    assert vhosts > 50
    assert sorted(bodies) == sorted(expected_errors)
    assert sorted(rest) == sorted(expected_rest)
