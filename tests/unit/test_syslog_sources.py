"""The syslog sources and netcatudp over real TCP and UDP sockets on 127.0.0.1.

In-process sources with a recording channel processor check every vector sent over the wire (the headers and
bodies of each event), back-pressure, bounded memory, UDP loss accounting and TLS; test_syslog_agent.py runs each
source type in a real agent into file_roll.
"""
from __future__ import annotations

import json
import os
import random
import socket
import ssl
import subprocess
import threading
import time

import pytest
from agents import wait_until
from conftest import VECTORS

from core import counters as names
from core.config import build_config
from core.errors import ChannelFullError
from core.registries import SOURCES
from workers.sources.base import SourceContext

ALL_VECTORS = json.loads(VECTORS.read_text())
UTILS = [c for c in ALL_VECTORS["SyslogUtils"]
         if c.get("input") and "(example" not in c["input"] and "expected_ms" not in c]
MULTIPORT_MESSAGES = [c for c in ALL_VECTORS["SyslogParser_multiport"] if "input" in c and "expected" in c]


class Channel:
    """A channel processor and counters in one: records each put; refuses puts (channel full) while ``full``."""

    def __init__(self):
        self.events: list[tuple[dict, bytes]] = []
        self.counts: dict[str, int] = {}
        self.full = threading.Event()
        self.refused = 0
        self.lock = threading.Lock()

    def process(self, batch) -> None:
        if self.full.is_set():
            with self.lock:
                self.refused += 1
            raise ChannelFullError("c1", 10, 10, len(batch))
        with self.lock:
            self.events += [(dict(e.headers), e.body) for e in batch]

    def add(self, counter: str, n: int = 1) -> None:
        with self.lock:
            self.counts[counter] = self.counts.get(counter, 0) + n

    def started(self) -> None:
        pass

    def stopped(self) -> None:
        pass

    def wait_for(self, count: int, timeout_s: float = 30) -> list[tuple[dict, bytes]]:
        wait_until(lambda: len(self.events) >= count, timeout_s, what=f"{count} events (have {len(self.events)})")
        return self.events


@pytest.fixture
def utc():
    """Stamps without an offset are read in the process's zone, as Flume reads them in the JVM's: UTC here."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.fixture
def start_source(tmp_path):
    """start_source(type, **properties) -> (source, channel); every source is stopped at the end."""
    started = []

    def start(kind: str, **props):
        cls = SOURCES.resolve(kind)
        props = {k.replace("_", "-") if k.startswith("keystore_") else k: str(v) for k, v in props.items()}
        config, errors, _ = build_config(cls, props, "a1.sources.r1.", ("c1",))
        assert errors == [], errors
        channel = Channel()
        source = cls("r1", config, SourceContext("a1", channel, channel, tmp_path))
        source.start()
        started.append(source)
        return source, channel

    yield start
    for source in started:
        source.stop()


def check(expected: dict, event: tuple[dict, bytes]) -> None:
    headers, body = event
    for key, value in expected.items():
        got = body.decode() if key == "body" else headers.get(key)
        assert got == value, f"{key}: {got!r} != {value!r} in {event}"


def send_tcp(port: int, data: bytes, chunk_sizes=(1, 7, 64, 1000)) -> None:
    """Send in chunks of random sizes, so events arrive split across reads."""
    rnd = random.Random(7)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        i = 0
        while i < len(data):
            n = rnd.choice(chunk_sizes)
            sock.sendall(data[i:i + n])
            i += n


def by_keep_fields(cases):
    groups: dict[str, list] = {}
    for case in cases:
        groups.setdefault(case.get("keepFields", "none"), []).append(case)
    return groups


def expected_events(case) -> list[dict]:
    return case.get("expected_events") or [case["expected"]]


# --- syslogtcp ----------------------------------------------------------------------------------------------

def test_syslogtcp_every_vector_over_tcp(start_source, utc):
    """Each keepFields value gets a source; all its vectors go down one connection, cut into random pieces."""
    for keep, cases in by_keep_fields(UTILS).items():
        source, channel = start_source("syslogtcp", host="127.0.0.1", port=0, keepFields=keep)
        send_tcp(source.port, "".join(c["input"] for c in cases).encode())
        wanted = [e for c in cases for e in expected_events(c)]
        events = channel.wait_for(len(wanted))
        assert len(events) == len(wanted)
        for want, got in zip(wanted, events):
            check(want, got)


def test_syslogtcp_cuts_long_lines_and_keeps_memory_bounded(start_source):
    """A client sending 20 MB without a newline: events of at most eventSize bytes, first Incomplete then
    Invalid; the source never holds more than one event of the connection."""
    source, channel = start_source("syslogtcp", host="127.0.0.1", port=0, eventSize=1000, batchSize=1000)
    total = 20 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", source.port)) as sock:
        sock.sendall(b"<13>" + b"x" * (total - 4))
        sock.sendall(b"\n<14>after\n")
    events = channel.wait_for(total // 1000 + 2, 60)
    assert max(len(b) for _, b in events) == 1000
    assert events[0][0]["flume.syslog.status"] == "Incomplete" and events[0][0]["Facility"] == "1"
    assert all(h["flume.syslog.status"] == "Invalid" for h, _ in events[1:-1])
    assert sum(len(b) for _, b in events[:-1]) == total and events[-1] == ({"Facility": "1", "Severity": "6"},
                                                                          b"<14>after")


def test_syslogtcp_stops_reading_while_the_channel_is_full(start_source):
    """Back-pressure: with the channel full the source reads nothing more, the sender blocks after the kernel
    buffers filled, and once there is room every line arrives, in order."""
    source, channel = start_source("syslogtcp", host="127.0.0.1", port=0, batchSize=500)
    channel.full.set()
    lines = [f"<13>1 2024-01-01T00:00:00Z web1 line {i:08d}\n".encode() for i in range(400_000)]
    data = b"".join(lines)                     # about 19 MB
    sent = 0
    with socket.create_connection(("127.0.0.1", source.port)) as sock:
        sock.settimeout(2.0)
        try:
            while sent < len(data):
                sent += sock.send(data[sent:sent + 65536])
        except socket.timeout:
            pass
        assert channel.refused > 0 and channel.events == []
        assert sent < len(data) // 2, f"the sender pushed {sent} bytes into a full source"
        channel.full.clear()
        sock.settimeout(30)
        sock.sendall(data[sent:])
    events = channel.wait_for(len(lines), 60)
    assert [b for _, b in events] == [f"line {i:08d}".encode() for i in range(len(lines))]
    assert channel.counts[names.CHANNEL_WRITE_FAIL] >= 1


def test_syslogtcp_client_headers_and_last_line_at_close(start_source):
    source, channel = start_source("syslogtcp", host="127.0.0.1", port=0, clientIPHeader="ip",
                                   clientHostnameHeader="name")
    with socket.create_connection(("127.0.0.1", source.port)) as sock:
        sock.sendall(b"<13>Jan  1 00:00:00 h1 first\n<13>Jan  1 00:00:00 h1 no newline")
    events = channel.wait_for(2)
    assert [b for _, b in events] == [b"first", b"no newline"]
    assert all(h["ip"] == "127.0.0.1" and h["name"] == socket.gethostbyaddr("127.0.0.1")[0] for h, _ in events)


def test_connections_beyond_max_connections_are_closed(start_source):
    source, channel = start_source("syslogtcp", host="127.0.0.1", port=0, maxConnections=2)
    kept = [socket.create_connection(("127.0.0.1", source.port)) for _ in range(2)]
    for sock in kept:
        sock.sendall(b"<13>hello\n")
    channel.wait_for(2)
    extra = socket.create_connection(("127.0.0.1", source.port))
    extra.settimeout(10)
    assert extra.recv(10) == b""                  # closed by the source
    wait_until(lambda: channel.counts.get(names.GENERIC_PROCESSING_FAIL) == 1, 10, what="the refusal counted")
    kept[0].sendall(b"<13>still served\n")
    assert channel.wait_for(3)[2][1] == b"<13>still served"
    for sock in kept + [extra]:
        sock.close()


# --- multiport_syslogtcp ----------------------------------------------------------------------------------------

def test_multiport_vectors_on_two_ports_with_charsets_and_headers(start_source):
    from app.broker import free_port
    latin, utf8 = free_port(), free_port()
    source, channel = start_source("multiport_syslogtcp", host="127.0.0.1", ports=f"{latin} {utf8}",
                                   portHeader="port", clientIPHeader="ip", keepFields="all",
                                   **{f"charset.port.{latin}": "ISO-8859-1"})
    messages = [c["input"] for c in MULTIPORT_MESSAGES]
    send_tcp(utf8, "".join(m + "\n" for m in messages).encode())
    events = channel.wait_for(len(messages))
    for case, (headers, body) in zip(MULTIPORT_MESSAGES, events):
        assert body.decode() == case["expected"]["keepFields_all_body"]
        assert "flume.syslog.status" not in headers and headers["port"] == str(utf8) and headers["ip"] == "127.0.0.1"
        assert headers["Priority"] == case["input"][1:case["input"].index(">")]
    send_tcp(latin, "<13>2003-08-24T05:14:15Z h café\n".encode("latin-1"))
    headers, body = channel.wait_for(len(messages) + 1)[-1]
    assert body == "<13>2003-08-24T05:14:15Z h café".encode("latin-1")
    assert headers["port"] == str(latin) and headers["timestamp"] == "1061702055000" and headers["host"] == "h"
    assert headers["Facility"] == "1" and headers["Severity"] == "5"


def test_multiport_invalid_and_incomplete(start_source):
    source, channel = start_source("multiport_syslogtcp", host="127.0.0.1", ports="0", eventSize=40)
    port = source.bound_ports[0]
    send_tcp(port, b"no priority\n\n<13>- h " + b"y" * 60 + b"\n<13>2003-08-24T05:14:15Z h \xff\xfe\n")
    events = channel.wait_for(4)
    assert events[0] == ({"flume.syslog.status": "Invalid"}, b"no priority")
    assert events[1][0]["flume.syslog.status"] == "Incomplete" and len(events[1][1]) == 40 - 8
    assert events[1][0]["host"] == "h"
    assert events[2] == ({"flume.syslog.status": "Invalid"}, b"y" * 28)
    assert events[3] == ({"flume.syslog.status": "Invalid"}, b"<13>2003-08-24T05:14:15Z h \xff\xfe")  # not UTF-8
    assert channel.counts[names.EVENT_READ_FAIL] == 3


# --- syslogudp and netcatudp -----------------------------------------------------------------------------------

def send_udp(port: int, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))


def test_syslogudp_every_vector_one_datagram_each(start_source, utc):
    for keep, cases in by_keep_fields(UTILS).items():
        source, channel = start_source("syslogudp", host="127.0.0.1", port=0, keepFields=keep,
                                       clientIPHeader="ip")
        wanted = [e for c in cases for e in expected_events(c)]
        for case in cases:                       # one at a time: UDP does not keep order across datagrams
            before = len(channel.events)
            send_udp(source.bound_port, [case["input"].encode()])
            channel.wait_for(before + len(expected_events(case)))
        assert len(channel.events) == len(wanted)
        for want, got in zip(wanted, channel.events):
            check({**want, "ip": "127.0.0.1"}, got)


def test_syslogudp_counts_what_the_kernel_drops_while_the_channel_is_full(start_source):
    """The channel is full, so the source stops reading; the kernel keeps what fits in the socket buffer and
    drops the rest.  Every datagram sent is either delivered or counted in EventReadFail."""
    source, channel = start_source("syslogudp", host="127.0.0.1", port=0)
    channel.full.set()
    send_udp(source.bound_port, [b"<13>first"])
    wait_until(lambda: channel.refused > 0, 10, what="a refused put")
    sent = 20_000 + 1
    send_udp(source.bound_port, [f"<13>Jan  1 00:00:00 h m{i}".encode() for i in range(sent - 1)])
    channel.full.clear()
    # The kernel reports its drop count with the next datagram queued after the drops: send markers until one
    # is read (the queue is then drained), then a final one, which carries the count of every drop before it.
    markers = 0

    def a_marker_was_read() -> bool:
        nonlocal sent, markers
        if any(b.startswith(b"<13>marker") for _, b in channel.events[-5:]):
            return True
        sent, markers = sent + 1, markers + 1
        send_udp(source.bound_port, [f"<13>marker{markers}".encode()])
        return False
    wait_until(a_marker_was_read, 60, what="a marker datagram read (the socket's queue drained)")
    sent += 1
    send_udp(source.bound_port, [b"<13>final"])
    wait_until(lambda: any(b == b"<13>final" for _, b in channel.events[-5:]), 30, what="the final datagram")
    wait_until(lambda: len(channel.events) + channel.counts.get(names.EVENT_READ_FAIL, 0) == sent, 10,
               what=f"delivered + dropped == {sent} sent")
    delivered = len(channel.events)
    dropped = channel.counts[names.EVENT_READ_FAIL]
    assert dropped > 0 and delivered > 2


def test_syslogudp_empty_datagram_is_counted(start_source):
    source, channel = start_source("syslogudp", host="127.0.0.1", port=0)
    send_udp(source.bound_port, [b"", b"<", b"<13>ok"])
    assert channel.wait_for(1) == [({"Facility": "1", "Severity": "5"}, b"<13>ok")]
    assert channel.counts[names.EVENT_READ_FAIL] == 2


def test_netcatudp_lines_and_remote_address(start_source):
    source, channel = start_source("netcatudp", bind="127.0.0.1", port=0, remoteAddressHeader="from")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for datagram in (b"hello\n", b"\x00\xff binary", b"", b"a\nb\n"):
            sock.sendto(datagram, ("127.0.0.1", source.bound_port))
            time.sleep(0)
        events = channel.wait_for(5)
        assert sorted(b for _, b in events) == sorted([b"hello", b"\x00\xff binary", b"", b"a", b"b"])
        assert {h["from"] for h, _ in events} == {f"/127.0.0.1:{sock.getsockname()[1]}"}


# --- TLS ------------------------------------------------------------------------------------------------------

def make_keystores(folder) -> dict[str, tuple[str, str]]:
    """A JKS and a PKCS12 keystore made by Java's keytool, and a PEM key+certificate made by openssl."""
    stores = {}
    for kind, name in (("JKS", "server.jks"), ("PKCS12", "server.p12")):
        path = folder / name
        subprocess.run(["keytool", "-genkeypair", "-alias", "server", "-keyalg", "RSA", "-keysize", "2048",
                        "-dname", "CN=localhost", "-validity", "2", "-storetype", kind, "-keystore", str(path),
                        "-storepass", "secret1", "-keypass", "secret1"], check=True, capture_output=True)
        stores[kind] = (str(path), "secret1")
    pem = folder / "server.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-days", "2", "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True)
    pem.write_bytes((folder / "key.pem").read_bytes() + (folder / "cert.pem").read_bytes())
    stores["PEM"] = (str(pem), "")
    return stores


@pytest.mark.skipif(not all(map(lambda t: subprocess.run(["which", t], capture_output=True).returncode == 0,
                                ("keytool", "openssl"))), reason="keytool and openssl make the keystores")
def test_tls_with_jks_pkcs12_and_pem_keystores(start_source, tmp_path):
    stores = make_keystores(tmp_path)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    for kind, (path, password) in stores.items():
        props = ({"ssl": "true", "sslCertFile": path} if kind == "PEM" else
                 {"ssl": "true", "keystore": path, "keystore-type": kind, "keystore-password": password})
        for source_type, port_props in (("syslogtcp", {"port": 0}), ("multiport_syslogtcp", {"ports": "0"})):
            source, channel = start_source(source_type, host="127.0.0.1", **port_props, **props)
            port = source.bound_ports[0]
            def send_tls(text: str, port: int = port) -> None:
                with socket.create_connection(("127.0.0.1", port)) as raw, \
                        client.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(text.encode())

            send_tls(f"<13>2003-08-24T05:14:15Z h over {kind}\n" * 3)
            assert [e[1] for e in channel.wait_for(3)] == [f"over {kind}".encode()] * 3, (source_type, kind)
            with socket.create_connection(("127.0.0.1", port)) as plain:    # not TLS: closed, no event
                plain.sendall(b"<13>plain text\n")
                plain.settimeout(10)
                try:
                    assert plain.recv(100) == b""
                except ConnectionResetError:
                    pass
            send_tls("<13>2003-08-24T05:14:15Z h after\n")
            events = channel.wait_for(4)
            assert [e[1] for e in events] == [f"over {kind}".encode()] * 3 + [b"after"]


def test_tls_configuration_errors_name_the_key(tmp_path):
    cls = SOURCES.resolve("syslogtcp")
    stores = make_keystores(tmp_path)
    _, errors, _ = build_config(cls, {"port": "1", "ssl": "true"}, "a1.sources.r1.", ("c1",))
    assert [str(e) for e in errors] == ["a1.sources.r1.ssl: true needs keystore (or sslCertFile)"]
    _, errors, _ = build_config(cls, {"port": "1", "ssl": "true", "keystore": stores["JKS"][0],
                                      "keystore-password": "hunter2x"}, "a1.sources.r1.", ("c1",))
    assert len(errors) == 1 and errors[0].key == "a1.sources.r1.keystore" and stores["JKS"][0] in str(errors[0])
    assert "hunter2x" not in str(errors[0])                # the password is never echoed
    _, errors, _ = build_config(cls, {"port": "1", "ssl": "true", "keystore": stores["JKS"][0],
                                      "keystore-password": "secret1", "include-protocols": "TLSv1.2 TLSv1.4"},
                                "a1.sources.r1.", ("c1",))
    assert len(errors) == 1 and errors[0].key == "a1.sources.r1.include-protocols" and "TLSv1.4" in str(errors[0])
    _, errors, _ = build_config(cls, {"port": "1", "include-cipher-suites": "TLS_AES_128_GCM_SHA256"},
                                "a1.sources.r1.", ("c1",))
    assert "not available yet" in str(errors[0]) and errors[0].key == "a1.sources.r1.include-cipher-suites"


def test_configuration_errors_name_the_key_and_value():
    cases = [("syslogtcp", {"port": "1", "keepFields": "host"}, "a1.sources.r1.keepFields", "'host'"),
             ("multiport_syslogtcp", {"ports": "1 x"}, "a1.sources.r1.ports", "'x'"),
             ("multiport_syslogtcp", {"ports": "1", "charset.port.2": "UTF-8"}, "a1.sources.r1.charset.port.2",
              "not among ports"),
             ("multiport_syslogtcp", {"ports": "1", "charset.default": "klingon"}, "a1.sources.r1.charset.default",
              "'klingon'"),
             ("syslogudp", {"port": "70000"}, "a1.sources.r1.port", "'70000'"),
             ("netcatudp", {"bind": "x", "port": "1", "remoteAdress": "h"}, "a1.sources.r1.remoteAdress",
              "did you mean")]
    for kind, props, key, text in cases:
        _, errors, _ = build_config(SOURCES.resolve(kind), props, "a1.sources.r1.", ("c1",))
        assert len(errors) == 1 and errors[0].key == key and text in str(errors[0]), (kind, errors)


def test_num_processors_is_accepted_with_a_notice():
    _, errors, notices = build_config(SOURCES.resolve("multiport_syslogtcp"), {"ports": "1", "numProcessors": "4"},
                                      "a1.sources.r1.", ("c1",))
    assert errors == [] and "numProcessors" in notices[0]


def test_a_port_in_use_stops_the_start_with_a_clear_error(tmp_path):
    """The agent turns this OSError into a one-line error naming the source (see app/agent.py)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        for kind, props in (("syslogudp", {"host": "127.0.0.1", "port": str(udp.getsockname()[1])}),
                            ("netcatudp", {"bind": "127.0.0.1", "port": str(udp.getsockname()[1])}),
                            ("syslogtcp", {"host": "127.0.0.1", "port": str(tcp.getsockname()[1])}),
                            ("multiport_syslogtcp", {"host": "127.0.0.1", "ports": f"0 {tcp.getsockname()[1]}"})):
            cls = SOURCES.resolve(kind)
            config, errors, _ = build_config(cls, props, "a1.sources.r1.", ("c1",))
            channel = Channel()
            source = cls("r1", config, SourceContext("a1", channel, channel, tmp_path))
            with pytest.raises(OSError, match="in use"):
                source.start()
