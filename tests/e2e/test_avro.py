"""The avro hop over real sockets: Flumery's avro source and sink against the Java reference peer (Avro 1.8.2's
own NettyServer/NettyTransceiver on Flume's protocol, tests/avro_peer.py), against each other, and against hostile
clients.  The source runs in-process with a recording channel processor; whole agents are in test_avro_hop.py."""
from __future__ import annotations

import hashlib
import io
import socket
import struct
import subprocess
import threading
import zlib
from pathlib import Path

import avro_peer
import pytest
from agents import wait_until
from test_compliance import Recorder

from core.config import build_config
from core.errors import ChannelFullError
from core.event import Batch
from workers.rpc import avro_ipc
from workers.rpc.avro_client import AvroClient
from workers.rpc.ip_filter import allowed, parse_rules
from workers.rpc.netty_frames import FrameDecoder, FrameEncoder, FrameError
from workers.sinks.avro import AvroSink, DeliveryFailed
from workers.sinks.base import SinkContext
from workers.sources.avro import AvroSource
from workers.sources.base import SourceContext

DEFLATE = {"none": 0, "deflate": 6}


def make_source(props: dict, recorder=None) -> tuple[AvroSource, Recorder]:
    recorder = recorder or Recorder()
    config, errors, _ = build_config(AvroSource, {"bind": "127.0.0.1", "port": "0", **props}, "a1.sources.r1.",
                                     ("c1",))
    assert errors == []
    source = AvroSource("r1", config, SourceContext("a1", recorder, recorder, None))
    source.start()
    return source, recorder


def make_sink(port: int, props: dict | None = None, tmp: Path = Path("/tmp")) -> AvroSink:
    config, errors, _ = build_config(AvroSink, {"hostname": "127.0.0.1", "port": str(port), **(props or {})},
                                     "a1.sinks.k1.", ("c1",))
    assert errors == []
    sink = AvroSink("k1", config, SinkContext("a1", tmp))
    sink.start()
    return sink


def received(recorder: Recorder) -> list[tuple[bytes, dict, str]]:
    return [(e.body, dict(e.headers), e.id) for batch in recorder.batches for e in batch]


@pytest.fixture
def source_factory():
    started = []

    def factory(props=None, recorder=None):
        source, rec = make_source(props or {}, recorder)
        started.append(source)
        return source, rec
    yield factory
    for source in started:
        source.stop()


# --- the protocol against Avro's Java implementation -----------------------------------------------------------

def test_protocol_text_and_md5_are_javas():
    """The handshake's hash is the MD5 of Java's Protocol.toString(): Flumery's must be byte for byte the same."""
    out = subprocess.run(avro_peer.java_command("md5"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    md5, text = out.stdout.split("\n", 1)
    assert md5 == avro_ipc.PROTOCOL_MD5.hex()
    assert text.strip() == avro_ipc.PROTOCOL_JSON


@pytest.mark.parametrize("compression", list(DEFLATE))
def test_java_client_to_flumery_source(compression, source_factory):
    """Avro's NettyTransceiver + GenericRequestor (append, then appendBatch) into Flumery's avro source."""
    props = {"compression-type": compression}
    source, recorder = source_factory(props)
    result = avro_peer.run_client("127.0.0.1", source.port, 2501, 250, deflate=DEFLATE[compression],
                                  body_bytes=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("SENT 2501 ")
    events = received(recorder)
    assert len(events) == 2501
    for n, (body, headers, event_id) in enumerate(events):
        assert body.startswith(f"java-{n}x".encode()) and len(body) == 300
        assert headers == {"seq": str(n), "peer": "java"}
        assert event_id                                 # given by the source
    assert len({e[2] for e in events}) == 2501
    counts = recorder.counts
    assert counts["AppendReceivedCount"] == counts["AppendAcceptedCount"] == 1
    assert counts["AppendBatchReceivedCount"] == counts["AppendBatchAcceptedCount"] == 10
    assert counts["EventAcceptedCount"] == 2501


@pytest.mark.parametrize("compression", list(DEFLATE))
def test_flumery_sink_to_java_server(compression, tmp_path):
    """Flumery's avro sink into Avro's NettyServer + GenericResponder; ids travel as the flumery.id header."""
    server = avro_peer.JavaServer(tmp_path / "java.out", deflate=DEFLATE[compression]).start()
    try:
        sink = make_sink(server.port, {"compression-type": compression, "batch-size": "7"})
        try:
            bodies = [b"\x00\xff binary %d" % i for i in range(50)] + [b"x" * 100_000]
            sink.write(Batch(bodies, [{"host": "web1", "n": str(i)} for i in range(51)],
                             [f"id-{i}" for i in range(51)]))
            sink.write(Batch([b"no headers"], None, ["id-last"]))
        finally:
            sink.stop()
    finally:
        server.stop()
    events = server.events()
    assert [body for body, _ in events] == bodies + [b"no headers"]
    assert events[3][1] == {"host": "web1", "n": "3", "flumery.id": "id-3"}
    assert events[-1][1] == {"flumery.id": "id-last"}


def test_sink_raises_on_failed_and_sends_again(tmp_path):
    """FAILED from the next hop fails the write (the batch stays unacknowledged); the retry delivers it."""
    server = avro_peer.JavaServer(tmp_path / "java.out", fail_first=1).start()
    try:
        sink = make_sink(server.port)
        batch = Batch([b"a", b"b"], None, ["id-a", "id-b"])
        with pytest.raises(DeliveryFailed, match="answered FAILED"):
            sink.write(batch)
        assert server.events() == []
        sink.write(batch)
        sink.stop()
    finally:
        server.stop()
    assert [body for body, _ in server.events()] == [b"a", b"b"]


# --- Flumery to Flumery ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compression", list(DEFLATE))
def test_flumery_sink_to_flumery_source_keeps_ids(compression, source_factory):
    source, recorder = source_factory({"compression-type": compression})
    sink = make_sink(source.port, {"compression-type": compression, "compression-level": "9", "batch-size": "2"})
    sink.write(Batch([b"a", b"b", b"c"], [{"k": "v"}, {}, {}], ["id-1", "id-2", "id-3"]))
    sink.stop()
    assert received(recorder) == [(b"a", {"k": "v"}, "id-1"), (b"b", {}, "id-2"), (b"c", {}, "id-3")]


class Refusing(Recorder):
    """A channel processor whose channel is full, or whose broker is down."""

    def __init__(self, error: Exception):
        super().__init__()
        self.error = error

    def process(self, batch):
        raise self.error


@pytest.mark.parametrize("error", [ChannelFullError("c1", 10, 10, 2), ConnectionError("broker down")],
                         ids=["channel-full", "broker-down"])
def test_source_answers_failed_when_the_put_fails(error, source_factory):
    source, recorder = source_factory(recorder=Refusing(error))
    sink = make_sink(source.port)
    with pytest.raises(DeliveryFailed, match="answered FAILED"):
        sink.write(Batch([b"a", b"b"], None, ["id-1", "id-2"]))
    sink.stop()
    assert recorder.counts.get("AppendBatchAcceptedCount", 0) == 0
    failure = "ChannelWriteFail" if isinstance(error, ChannelFullError) else "GenericProcessingFail"
    assert recorder.counts[failure] == 1


def test_java_client_sees_failed(source_factory):
    source, _ = source_factory(recorder=Refusing(ChannelFullError("c1", 10, 10, 2)))
    result = avro_peer.run_client("127.0.0.1", source.port, 1, 1)
    assert result.returncode == 2 and "STATUS FAILED" in result.stdout


def test_sink_times_out_and_reconnects(source_factory):
    """No answer within request-timeout: the write raises; the connection is replaced for the next write."""
    gate = threading.Event()

    class Slow(Recorder):
        def process(self, batch):
            if not gate.is_set():
                gate.wait(5)
            super().process(batch)

    source, recorder = source_factory(recorder=Slow())
    sink = make_sink(source.port, {"request-timeout": "300"})
    with pytest.raises(TimeoutError):
        sink.write(Batch([b"slow"], None, ["id-1"]))
    gate.set()
    sink.write(Batch([b"fast"], None, ["id-2"]))
    sink.stop()
    # At least once: the call that timed out was still put, late (in another thread than the second call's).
    wait_until(lambda: sorted(e[0] for e in received(recorder)) == [b"fast", b"slow"], 10, what="both events")


def test_sink_connection_refused_raises(tmp_path):
    from app.broker import free_port
    sink = make_sink(free_port(), {"connect-timeout": "1000"})
    with pytest.raises(OSError):
        sink.write(Batch([b"a"], None, ["id-1"]))
    sink.stop()


def test_reset_connection_interval_replaces_the_connection(source_factory):
    source, recorder = source_factory()
    sink = make_sink(source.port, {"reset-connection-interval": "1"})
    sink.write(Batch([b"a"], None, ["id-1"]))
    first = sink.client.sock
    sink.write(Batch([b"b"], None, ["id-2"]))
    assert sink.client.sock is first
    sink.client.connected_at -= 2
    sink.write(Batch([b"c"], None, ["id-3"]))
    assert sink.client.sock is not first
    sink.stop()
    assert [e[0] for e in received(recorder)] == [b"a", b"b", b"c"]


# --- hostile clients: bounded memory -----------------------------------------------------------------------------

def closed_by_peer(sock: socket.socket, timeout_s: float = 10) -> bool:
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True


def test_source_refuses_a_frame_over_the_limit_before_reading_it(source_factory):
    source, recorder = source_factory({"maxFrameBytes": "4096"})
    with socket.create_connection(("127.0.0.1", source.port)) as sock:
        sock.sendall(struct.pack(">iii", 1, 1, 1_000_000_000))     # a 1 GB buffer announced, never sent
        assert closed_by_peer(sock)
    wait_until(lambda: recorder.counts.get("EventReadFail") == 1, 10, what="the read failure counted")
    with socket.create_connection(("127.0.0.1", source.port)) as sock:
        sock.sendall(struct.pack(">ii", 1, 100_000) + struct.pack(">i", 0) * 2000)   # many empty buffers
        assert closed_by_peer(sock)
    sink = make_sink(source.port)                                   # the source still serves others
    sink.write(Batch([b"ok"], None, ["id-1"]))
    sink.stop()
    assert received(recorder) == [(b"ok", {}, "id-1")]


def test_source_closes_a_connection_sending_garbage(source_factory):
    source, recorder = source_factory()
    with socket.create_connection(("127.0.0.1", source.port)) as sock:
        payload = b"\xff" * 64
        sock.sendall(struct.pack(">iii", 7, 1, len(payload)) + payload)
        assert closed_by_peer(sock)
    wait_until(lambda: recorder.counts.get("EventReadFail") == 1, 10, what="the read failure counted")


def test_deflate_bomb_is_not_inflated_past_the_frame_limit():
    """100 MB of zeros compress to ~100 KB; the decoder inflates only what the frame it cuts needs."""
    limit = 1 << 20
    bomb = zlib.compressobj()
    stream = bomb.compress(struct.pack(">iii", 1, 1, 100 * 1024 * 1024)) + bomb.compress(bytes(100 * 1024 * 1024))
    stream += bomb.flush(zlib.Z_SYNC_FLUSH)
    decoder = FrameDecoder(limit, deflate=True)
    decoder.feed(stream[:4096])
    with pytest.raises(FrameError, match="larger than"):
        decoder.next_frame()
    assert len(decoder.plain) <= 128 * 1024

    decoder = FrameDecoder(limit, deflate=True)
    encoder = zlib.compressobj()
    decoder.feed(encoder.compress(struct.pack(">ii", 1, 1100)) + encoder.compress(
        b"".join(struct.pack(">i", 1000) + bytes(1000) for _ in range(1100))) + encoder.flush(zlib.Z_SYNC_FLUSH))
    with pytest.raises(FrameError):
        decoder.next_frame()
    assert len(decoder.plain) <= limit + 128 * 1024


def test_frames_split_anywhere_and_many_per_read():
    """Frames come whole however the stream is cut (Java writes 8 KiB buffers; TCP splits as it likes)."""
    for level in (None, 1, 6):
        encoder = FrameEncoder(level)
        frames = [(i, bytes([i]) * (i * 997)) for i in range(1, 20)]
        stream = b"".join(encoder.encode(serial, payload) for serial, payload in frames)
        for step in (1, 7, 8192, len(stream)):
            decoder, out = FrameDecoder(1 << 20, deflate=level is not None), []
            for start in range(0, len(stream), step):
                decoder.feed(stream[start:start + step])
                while (frame := decoder.next_frame()) is not None:
                    out.append(frame)
            assert out == frames, (level, step)
    multi = struct.pack(">ii", 5, 3) + b"".join(struct.pack(">i", len(p)) + p for p in (b"ab", b"", b"cde"))
    decoder = FrameDecoder(1024)
    decoder.feed(multi)
    assert decoder.next_frame() == (5, b"abcde")


def test_source_serves_a_handshake_that_needs_a_second_round_trip(source_factory):
    """A client that knows the server's hash but sent only its own unknown hash gets NONE, then sends its text."""
    source, recorder = source_factory()
    text = avro_ipc.PROTOCOL_JSON.replace('"protocol":"AvroSourceProtocol",',
                                          '"protocol":"AvroSourceProtocol","doc":"Flume with a doc",')
    digest = hashlib.md5(text.encode()).digest()
    client = AvroClient("127.0.0.1", source.port, 5, 5)
    client.connect()

    def handshake(with_text: bool) -> bytes:
        return avro_ipc._write(avro_ipc.HANDSHAKE_REQUEST, {"clientHash": digest, "clientProtocol": text if with_text
                                                            else None, "serverHash": digest, "meta": None})
    call = avro_ipc._write(avro_ipc.CALL_META, {}) + avro_ipc._write(avro_ipc.STRING, "appendBatch") + \
        avro_ipc._write(avro_ipc.EVENTS, [{"headers": {}, "body": b"x"}])
    client.sock.sendall(FrameEncoder().encode(1, handshake(False) + call))
    frame = _read_frame(client.sock)
    response = avro_ipc._read(io.BytesIO(frame[1]), avro_ipc.HANDSHAKE_RESPONSE)
    assert response["match"] == "NONE" and response["serverHash"] == avro_ipc.PROTOCOL_MD5
    assert recorder.batches == []
    client.sock.sendall(FrameEncoder().encode(2, handshake(True) + call))
    stream = io.BytesIO(_read_frame(client.sock)[1])
    assert avro_ipc._read(stream, avro_ipc.HANDSHAKE_RESPONSE)["match"] == "CLIENT"
    avro_ipc._read(stream, avro_ipc.CALL_META)
    assert avro_ipc._read(stream, avro_ipc.BOOLEAN) is False
    assert avro_ipc._read(stream, avro_ipc.STATUS) == "OK"
    client.close()
    assert [e[0] for e in received(recorder)] == [b"x"]


def _read_frame(sock):
    decoder = FrameDecoder(1 << 20)
    sock.settimeout(10)
    while (frame := decoder.next_frame()) is None:
        data = sock.recv(65536)
        assert data, "the source closed the connection"
        decoder.feed(data)
    return frame


def test_max_connections(source_factory):
    source, recorder = source_factory({"maxConnections": "2"})
    held = [socket.create_connection(("127.0.0.1", source.port)) for _ in range(2)]
    wait_until(lambda: len(source.server.connections) == 2, 10, what="two connections served")
    with socket.create_connection(("127.0.0.1", source.port)) as third:
        assert closed_by_peer(third)
    for sock in held:
        sock.close()
    wait_until(lambda: not source.server.connections, 10, what="the connections closed")
    sink = make_sink(source.port)
    sink.write(Batch([b"after"], None, ["id-1"]))
    sink.stop()


# --- ipFilter ----------------------------------------------------------------------------------------------------

def test_ip_filter_rules_first_match_wins():
    rules = parse_rules("allow:ip:127.*,allow:name:localhost,deny:ip:*")
    assert allowed(rules, "127.0.0.1") and not allowed(rules, "10.1.2.3")
    assert allowed(parse_rules("deny:ip:10.*"), "192.168.0.1")            # no rule matches: allowed (netty)
    assert allowed(parse_rules("deny:ip:10.*,allow:name:localhost,deny:ip:*"), "::1")
    assert not allowed(parse_rules("deny:ip:127.0.0.?"), "127.0.0.1")
    for bad in ("allow:127.*", "permit:ip:*", "allow:host:x", ""):
        with pytest.raises(ValueError):
            parse_rules(bad)


def test_ip_filter_denies_a_client(source_factory):
    source, recorder = source_factory({"ipFilter": "true", "ipFilterRules": "deny:ip:127.*"})
    sink = make_sink(source.port, {"request-timeout": "2000"})
    with pytest.raises(OSError):
        sink.write(Batch([b"a"], None, ["id-1"]))
    sink.stop()
    assert recorder.batches == []
    other, rec = source_factory({"ipFilter": "true", "ipFilterRules": "allow:name:localhost,deny:ip:*"})
    sink = make_sink(other.port)
    sink.write(Batch([b"a"], None, ["id-1"]))
    sink.stop()
    assert len(rec.batches) == 1


# --- TLS with Java keystores and PEM files -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def keystores(tmp_path_factory):
    """A key pair in a JKS keystore made by Java's keytool, its certificate in a JKS truststore, and a PEM pair made
    by openssl; plus an unrelated certificate for the wrong-CA case."""
    d = tmp_path_factory.mktemp("tls")

    def run(*args):
        subprocess.run(args, check=True, capture_output=True, timeout=120)
    run("keytool", "-genkeypair", "-alias", "flumery", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=localhost",
        "-validity", "3", "-keystore", d / "keystore.jks", "-storepass", "secret1", "-keypass", "secret1",
        "-storetype", "JKS")
    run("keytool", "-exportcert", "-rfc", "-alias", "flumery", "-keystore", d / "keystore.jks", "-storepass",
        "secret1", "-file", d / "jks-cert.pem")
    run("keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", d / "jks-cert.pem", "-keystore",
        d / "truststore.jks", "-storepass", "secret2", "-storetype", "JKS")
    for name in ("server", "other"):
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / f"{name}-key.pem", "-out",
            d / f"{name}-cert.pem", "-subj", "/CN=localhost", "-days", "3")
    (d / "server.pem").write_text((d / "server-key.pem").read_text() + (d / "server-cert.pem").read_text())
    return d


@pytest.mark.parametrize("server,client", [("jks", "jks"), ("pem", "pem"), ("jks", "pem")])
def test_tls_hop_with_jks_and_pem_stores(server, client, keystores, source_factory):
    d = keystores
    server_props = ({"keystore": str(d / "keystore.jks"), "keystore-password": "secret1"} if server == "jks"
                    else {"sslCertFile": str(d / "server.pem")})
    trusted = d / ("jks-cert.pem" if server == "jks" else "server-cert.pem")
    client_props = ({"truststore": str(d / "truststore.jks"), "truststore-password": "secret2"}
                    if client == "jks" else {"truststore": str(trusted), "truststore-type": "PEM"})
    source, recorder = source_factory({"ssl": "true", "compression-type": "deflate", **server_props})
    sink = make_sink(source.port, {"ssl": "true", "compression-type": "deflate", **client_props})
    sink.write(Batch([b"secret"], None, ["id-1"]))
    sink.stop()
    assert received(recorder) == [(b"secret", {}, "id-1")]
    # A client that does not trust the server's certificate cannot send; trust-all-certs can.
    wrong = make_sink(source.port, {"ssl": "true", "compression-type": "deflate", "truststore-type": "PEM",
                                    "truststore": str(d / "other-cert.pem")})
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        wrong.write(Batch([b"x"], None, ["id-2"]))
    wrong.stop()
    anyone = make_sink(source.port, {"ssl": "true", "compression-type": "deflate", "trust-all-certs": "true"})
    anyone.write(Batch([b"y"], None, ["id-3"]))
    anyone.stop()
    assert [e[0] for e in received(recorder)] == [b"secret", b"y"]


def test_wrong_keystore_password_is_a_config_error(keystores):
    _, errors, _ = build_config(AvroSource, {"bind": "127.0.0.1", "port": "0", "ssl": "true",
                                             "keystore": str(keystores / "keystore.jks"), "keystore-password": "nope"},
                                "a1.sources.r1.", ("c1",))
    assert [e.key for e in errors] == ["a1.sources.r1.keystore"] and "wrong" in errors[0].message


def test_truststore_types_and_a_wrong_truststore_password(keystores):
    from core.errors import KeystoreError
    from workers.rpc.tls import trusted_pem
    jks = trusted_pem(str(keystores / "truststore.jks"), "secret2", "JKS")
    assert jks == trusted_pem(str(keystores / "truststore.jks"), "", "JKS")      # no password: digest unchecked
    assert jks.count("BEGIN CERTIFICATE") == 1
    assert trusted_pem(str(keystores / "keystore.jks"), "secret1", "JKS").count("BEGIN CERTIFICATE") == 1
    with pytest.raises(KeystoreError, match="wrong truststore-password"):
        trusted_pem(str(keystores / "truststore.jks"), "nope", "JKS")
    with pytest.raises(KeystoreError, match="not a JKS"):
        trusted_pem(str(keystores / "jks-cert.pem"), "", "JKS")


# --- configuration -----------------------------------------------------------------------------------------------

def test_config_errors_name_the_full_key():
    _, errors, _ = build_config(AvroSource, {"bind": "0.0.0.0", "port": "4141", "ssl": "true", "ipFilter": "true",
                                             "compression-type": "gzip", "exclude-protocols": "SSLv3 TLSv9"},
                                "a1.sources.r1.", ("c1",))
    text = "\n".join(map(str, errors))
    assert "a1.sources.r1.compression-type: must be one of none, deflate" in text
    assert "a1.sources.r1.exclude-protocols: unknown protocol 'TLSv9'" in text
    _, errors, _ = build_config(AvroSource, {"bind": "0.0.0.0", "port": "4141", "ssl": "true", "ipFilter": "true"},
                                "a1.sources.r1.", ("c1",))
    assert sorted(map(str, errors)) == ["a1.sources.r1.ipFilterRules: required when ipFilter = true",
                                        "a1.sources.r1.ssl: true needs keystore (or sslCertFile)"]
    _, errors, _ = build_config(AvroSource, {"bind": "0.0.0.0", "port": "4141", "ipFilterRules": "allow:x"},
                                "a1.sources.r1.", ("c1",))
    assert [e.key for e in errors] == ["a1.sources.r1.ipFilterRules"]
    _, errors, notices = build_config(AvroSink, {"hostname": "h", "port": "1", "compression-level": "11",
                                                 "maxIoWorkers": "4"}, "a1.sinks.k1.", ("c1",))
    assert [str(e) for e in errors] == ["a1.sinks.k1.compression-level: must be 1 to 9 (got '11')"]


def test_a_retried_write_does_not_send_again_what_was_confirmed(source_factory):
    """A write of 5 events in calls of 2: the third call is refused (FAILED); the retry sends only that call's
    event, the next hop has every event once."""
    class FullOnThirdCall(Recorder):
        calls = 0

        def process(self, batch):
            self.calls += 1
            if self.calls == 3:
                raise ChannelFullError("c1", 10, 10, 1)
            super().process(batch)

    source, recorder = source_factory(recorder=FullOnThirdCall())
    sink = make_sink(source.port, {"batch-size": "2"})
    batch = Batch([b"1", b"2", b"3", b"4", b"5"], None, [f"id-{n}" for n in range(1, 6)])
    with pytest.raises(DeliveryFailed):
        sink.write(batch)
    sink.write(batch)
    sink.stop()
    assert [e[0] for e in received(recorder)] == [b"1", b"2", b"3", b"4", b"5"]
    assert [len(b) for b in recorder.batches] == [2, 2, 1]
    assert sink.confirmed == set()
