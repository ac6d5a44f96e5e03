"""End to end: a real ``flumery agent`` with each syslog source type and netcatudp, its embedded Redis, its
Celery sink worker, into file_roll (``header_and_text``); the vectors go over real TCP and UDP sockets and the
headers are checked in what the sink wrote."""
from __future__ import annotations

import json
import socket
import urllib.request

from agents import AgentProcess, read_lines, wait_until
from conftest import VECTORS

from app.broker import free_port

ALL_VECTORS = json.loads(VECTORS.read_text())
UTILS = [c for c in ALL_VECTORS["SyslogUtils"]
         if c.get("input") and "(example" not in c["input"] and "expected_ms" not in c
         and c.get("keepFields", "none") == "none"]
MULTIPORT = [c for c in ALL_VECTORS["SyslogParser_multiport"] if "input" in c and "expected" in c]

CONF = """
a1.sources = tcp multi udp nc
a1.channels = c1
a1.sinks = k1
a1.sources.tcp.type = org.apache.flume.source.SyslogTcpSource
a1.sources.tcp.host = 127.0.0.1
a1.sources.tcp.port = {tcp}
a1.sources.tcp.clientIPHeader = client
a1.sources.multi.type = multiport_syslogtcp
a1.sources.multi.host = 127.0.0.1
a1.sources.multi.ports = {multi1} {multi2}
a1.sources.multi.portHeader = port
a1.sources.multi.keepFields = all
a1.sources.multi.charset.port.{multi2} = ISO-8859-1
a1.sources.udp.type = syslogudp
a1.sources.udp.host = 127.0.0.1
a1.sources.udp.port = {udp}
a1.sources.nc.type = netcatudp
a1.sources.nc.bind = 127.0.0.1
a1.sources.nc.port = {nc}
a1.sources.nc.remoteAddressHeader = from
"""
SOURCES = ("tcp", "multi", "udp", "nc")
CHANNEL = """
a1.sources.{name}.channels = c1
a1.sources.{name}.interceptors = i1
a1.sources.{name}.interceptors.i1.type = static
a1.sources.{name}.interceptors.i1.key = src
a1.sources.{name}.interceptors.i1.value = {name}
"""
SINK = """
a1.channels.c1.type = file
a1.sinks.k1.type = file_roll
a1.sinks.k1.sink.directory = {out}
a1.sinks.k1.sink.serializer = header_and_text
a1.sinks.k1.channel = c1
"""


def metrics(port: int) -> dict:
    try:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read())
    except OSError:
        return {}


def all_started(port: int) -> bool:
    """Every source has opened its socket (UDP ports cannot be probed from outside without losing a datagram)."""
    doc = metrics(port)
    return bool(doc) and all(doc[f"SOURCE.{name}"]["StartTime"] != "0" for name in SOURCES)


def parse(line: bytes) -> tuple[dict, bytes]:
    """A header_and_text line, ``{k=v, k2=v2} body`` (the vectors' header values hold no ', ' or '}')."""
    end = line.index(b"} ")
    inner = line[1:end].decode()
    headers = dict(item.split("=", 1) for item in inner.split(", ")) if inner else {}
    return headers, line[end + 2:]


def check(expected: dict, headers: dict, body: bytes) -> None:
    for key, value in expected.items():
        got = body.decode() if key == "body" else headers.get(key)
        assert got == value, f"{key}: {got!r} != {value!r} in {headers} {body!r}"


def test_each_syslog_source_type_end_to_end_into_file_roll(tmp_path):
    ports = {"tcp": free_port(), "multi1": free_port(), "multi2": free_port(), "udp": free_port(),
             "nc": free_port()}
    out, metrics_port = tmp_path / "out", free_port()
    conf = (CONF.format(**ports) + "".join(CHANNEL.format(name=n) for n in SOURCES) + SINK.format(out=out))
    with AgentProcess(tmp_path, conf, env={"TZ": "UTC"}, extra=["--metrics-port", str(metrics_port)]):
        wait_until(lambda: all_started(metrics_port), 60, what="every source started")
        with socket.create_connection(("127.0.0.1", ports["tcp"])) as sock:
            sock.sendall("".join(c["input"] for c in UTILS).encode())
        with socket.create_connection(("127.0.0.1", ports["multi1"])) as sock:
            sock.sendall("".join(c["input"] + "\n" for c in MULTIPORT).encode())
        with socket.create_connection(("127.0.0.1", ports["multi2"])) as sock:
            sock.sendall("<13>2003-08-24T05:14:15Z h café\n".encode("latin-1"))
        expected_tcp = [e for c in UTILS for e in (c.get("expected_events") or [c["expected"]])]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for i, case in enumerate(UTILS):          # one by one: UDP keeps no order between datagrams
                udp.sendto(case["input"].encode(), ("127.0.0.1", ports["udp"]))
                count = sum(len(c.get("expected_events") or [1]) for c in UTILS[:i + 1])
                wait_until(lambda count=count: sum(b"src=udp" in line for line in read_lines(out)) >= count, 60,
                           what=f"{count} syslogudp events")
            udp.sendto(b"netcat over udp\n", ("127.0.0.1", ports["nc"]))
            from_address = f"/127.0.0.1:{udp.getsockname()[1]}"
        total = 2 * len(expected_tcp) + len(MULTIPORT) + 1 + 1
        wait_until(lambda: len(read_lines(out)) >= total, 60, what=f"{total} events in file_roll")
        counts = metrics(metrics_port)
    by_source: dict[str, list] = {name: [] for name in SOURCES}
    for line in read_lines(out):
        headers, body = parse(line)
        by_source[headers["src"]].append((headers, body))
    assert len(by_source["tcp"]) == len(by_source["udp"]) == len(expected_tcp)
    for want, (headers, body), (udp_headers, udp_body) in zip(expected_tcp, by_source["tcp"], by_source["udp"]):
        check(want, headers, body)
        check(want, udp_headers, udp_body)
        assert headers["client"] == "127.0.0.1"
    multi = by_source["multi"]
    first = [b.decode() for h, b in multi if h["port"] == str(ports["multi1"])]       # one connection: in order
    second = [b.decode("latin-1") for h, b in multi if h["port"] == str(ports["multi2"])]
    assert first == [c["expected"]["keepFields_all_body"] for c in MULTIPORT]
    assert second == ["<13>2003-08-24T05:14:15Z h café"]
    assert all("Priority" in h and "Facility" in h and "flume.syslog.status" not in h for h, _ in multi)
    assert by_source["nc"] == [({"from": from_address, "src": "nc"}, b"netcat over udp")]
    for name, count in (("tcp", len(expected_tcp)), ("udp", len(expected_tcp)), ("multi", len(multi)), ("nc", 1)):
        assert counts[f"SOURCE.{name}"]["EventAcceptedCount"] == str(count), counts[f"SOURCE.{name}"]
