"""workers/sources/http_server.py under attack: each test reproduces, on a raw socket, a request that the
``http.server``-based source mishandled (issue 8: smuggling, chunked bodies, unbounded connections, bad input).
The source runs in this process on a real listening socket; its channel processor is a fake (no broker)."""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

import pytest
from test_http_handler import make_source

HIDDEN = b'[{"body": "smuggled"}]'
HIDDEN_REQUEST = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(HIDDEN)).encode() + b"\r\n\r\n" + HIDDEN)
EVENT = b'[{"headers": {"a": "b"}, "body": "ok"}]'


@pytest.fixture
def serve():
    """serve(**props) -> (source, processor, counters), started; every source is stopped after the test."""
    started = []

    def start(**props):
        source, processor, counters = make_source(**props)
        source.start()
        started.append(source)
        return source, processor, counters
    yield start
    for source in started:
        source.stop()


class Client:
    """A raw HTTP/1.1 client: bytes out, parsed responses in."""

    def __init__(self, port: int, timeout_s: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> "Client":
        self.sock.sendall(data)
        return self

    def response(self) -> tuple[int, dict[str, str], bytes] | None:
        """The next response, or None if the server closed the connection instead."""
        try:
            line = self.file.readline()
        except ConnectionResetError:
            return None
        if not line:
            return None
        status = int(line.split()[1])
        headers = {}
        while (header := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, self.file.read(int(headers.get("content-length", "0")))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def post_head(length: str | int, extra: str = "") -> bytes:
    return (f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
            f"{extra}\r\n").encode()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


# --- request smuggling: a body that was not read must never be parsed as a request -----------------------------

def test_oversized_body_hiding_a_request_is_not_put(serve):
    source, processor, _ = serve(maxRequestBytes="200")
    body = HIDDEN_REQUEST + b" " * (300 - len(HIDDEN_REQUEST))
    client = Client(source.port).send(post_head(len(body)))
    status, headers, _ = client.response()
    assert status == 413
    client.send(body)                                     # the body arrives after the answer, as a smuggler sends it
    second = client.response()
    client.close()
    assert processor.batches == []                        # the old source answered 413, then 200 and put it
    assert headers.get("connection") == "close" and second is None


def test_content_length_with_underscore_is_400(serve):
    # int("2_2") == 22: the old source read 22 bytes and put the event.
    source, processor, _ = serve()
    length = "_".join(str(len(HIDDEN)))
    client = Client(source.port).send(post_head(length) + HIDDEN)
    status, headers, _ = client.response()
    assert status == 400 and headers.get("connection") == "close"
    assert client.response() is None
    client.close()
    assert processor.batches == []


def test_conflicting_content_lengths_are_400(serve):
    # The old source took the first one: "[]" was one (empty) request and the rest a second one, put.
    source, processor, _ = serve()
    body = b"[]" + HIDDEN_REQUEST
    client = Client(source.port).send(post_head(2, f"Content-Length: {len(body)}\r\n") + body)
    status, headers, _ = client.response()
    assert status == 400 and headers.get("connection") == "close"
    assert client.response() is None
    client.close()
    assert processor.batches == []


def test_transfer_encoding_with_content_length_is_400_and_closes(serve):
    source, processor, _ = serve()
    # Content-Length covers the chunked body only: a server reading by it takes what follows as a request.
    framed = chunked(EVENT)
    client = Client(source.port).send(post_head(len(framed), "Transfer-Encoding: chunked\r\n") + framed
                                      + HIDDEN_REQUEST)
    first, second = client.response(), client.response()
    client.close()
    assert processor.batches == []
    status, headers, reason = first
    assert status == 400 and headers.get("connection") == "close"
    assert b"Transfer-Encoding and Content-Length" in reason
    assert second is None


def test_identical_duplicate_content_lengths_are_400_too(serve):
    # RFC 9112 6.3 lets a server either merge identical values or refuse: llhttp refuses, so no two parsers on the
    # way (a proxy in front, this server) can disagree about where the body ends.
    source, processor, _ = serve()
    client = Client(source.port).send(post_head(len(EVENT), f"Content-Length: {len(EVENT)}\r\n") + EVENT)
    status, headers, reason = client.response()
    assert status == 400 and headers.get("connection") == "close" and b"Duplicate Content-Length" in reason
    client.close()
    assert processor.batches == []


# --- chunked bodies ----------------------------------------------------------------------------------------------

CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_chunked_body_is_accepted(serve):
    source, processor, _ = serve()
    client = Client(source.port).send(CHUNKED_HEAD + chunked(EVENT[:10], EVENT[10:]))
    status, headers, _ = client.response()
    assert status == 200 and "connection" not in headers
    client.send(CHUNKED_HEAD + chunked(EVENT))             # and the connection carries the next request
    assert client.response()[0] == 200
    client.close()
    assert [[(e.headers, e.body) for e in b] for b in processor.batches] == [[({"a": "b"}, b"ok")]] * 2


def test_chunked_body_over_max_request_bytes_is_413_and_closes(serve):
    source, processor, _ = serve(maxRequestBytes="100")
    events = json.dumps([{"body": "x" * 20}] * 5).encode()          # 135 bytes, in chunks of 40
    client = Client(source.port).send(CHUNKED_HEAD + b"".join(b"%x\r\n%s\r\n" % (len(events[i:i + 40]),
                                                                              events[i:i + 40])
                                                              for i in range(0, len(events), 40)))
    status, headers, reason = client.response()
    assert status == 413 and b"maxRequestBytes" in reason
    assert headers.get("connection") == "close"
    client.send(b"0\r\n\r\n" + HIDDEN_REQUEST)
    assert client.response() is None
    client.close()
    assert processor.batches == []


def test_expect_100_continue(serve):
    source, processor, _ = serve()
    client = Client(source.port).send(post_head(len(EVENT), "Expect: 100-continue\r\n"))
    assert client.response()[0] == 100
    client.send(EVENT)
    assert client.response()[0] == 200
    client.close()
    assert len(processor.batches) == 1


def test_pipelined_requests_are_answered_in_order(serve):
    source, processor, counters = serve()
    client = Client(source.port).send((post_head(len(EVENT)) + EVENT) * 3 + post_head(3) + b"[}]")
    assert [client.response()[0] for _ in range(4)] == [200, 200, 200, 400]
    client.close()
    assert len(processor.batches) == 3
    # Flume counts one append batch per request that was read (AppendBatchReceived) and per 200 (Accepted).
    assert counters.counts["AppendBatchReceivedCount"] == 3
    assert counters.counts["AppendBatchAcceptedCount"] == 3
    assert counters.counts["EventReadFail"] == 1


def test_an_http_1_0_request_is_answered_and_its_connection_closed(serve):
    source, processor, _ = serve()
    client = Client(source.port).send(post_head(len(EVENT)).replace(b"HTTP/1.1", b"HTTP/1.0") + EVENT)
    status, headers, _ = client.response()
    assert status == 200 and headers.get("connection") == "close"
    assert client.response() is None
    client.close()
    assert len(processor.batches) == 1


# --- connections, threads and timeouts -------------------------------------------------------------------------

def test_half_sent_request_is_408_after_request_timeout(serve):
    source, processor, _ = serve(requestTimeoutSeconds="0.5")
    client = Client(source.port).send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le")
    status, headers, _ = client.response()
    assert status == 408 and headers.get("connection") == "close"
    assert client.response() is None
    client.close()


def test_half_sent_body_is_408_after_request_timeout(serve):
    source, processor, _ = serve(requestTimeoutSeconds="0.5")
    client = Client(source.port).send(post_head(len(EVENT)) + EVENT[:5])
    status, headers, _ = client.response()
    assert status == 408 and headers.get("connection") == "close"
    client.close()
    assert processor.batches == []


def test_idle_connection_is_closed_after_idle_timeout(serve):
    source, _, _ = serve(idleTimeoutSeconds="0.5")
    client = Client(source.port)
    assert client.response() is None                      # closed by the server, without an answer
    client.close()


def test_a_thousand_half_sent_requests_hold_no_threads(serve):
    # The old source held one thread per connection, forever: 1,000 of these held 1,004 threads.
    source, processor, _ = serve(maxConnections="2000", maxThreads="4")
    before = threading.active_count()
    clients = [Client(source.port).send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n[")
               for _ in range(1000)]
    try:
        probe = Client(source.port).send(post_head(len(EVENT)) + EVENT)
        assert probe.response()[0] == 200                 # accepted after the 1,000 (backlog order): all are in
        probe.close()
        assert threading.active_count() <= before + 4
    finally:
        for client in clients:
            client.close()
    assert len(processor.batches) == 1


def test_clients_beyond_max_connections_wait_in_the_backlog(serve):
    source, processor, _ = serve(maxConnections="1")
    holder = Client(source.port)                          # takes the only connection slot, sends nothing
    waiting = [Client(source.port) for _ in range(200)]  # connected by the kernel: the backlog holds them all
    for client in waiting:                                # each closed by the server after its answer
        client.send(post_head(len(EVENT), "Connection: close\r\n") + EVENT)
    holder.close()
    for client in waiting:                                # served one after the other as slots free up
        assert client.response()[0] == 200
        client.close()
    assert len(processor.batches) == 200


def test_stop_closes_idle_connections_and_returns(serve):
    source, _, _ = serve()
    idle = Client(source.port)
    busy = Client(source.port).send(post_head(len(EVENT)) + EVENT)
    assert busy.response()[0] == 200
    source.stop()
    assert idle.response() is None and busy.response() is None
    assert not [t for t in threading.enumerate() if t.name.startswith("source-r1")]
    idle.close()
    busy.close()


# --- bad input: 400 with a reason, no traceback ---------------------------------------------------------------

BAD_BODIES = {
    "lone surrogate in a body": b'[{"body": "\\ud800"}]',
    "lone surrogate in a header": b'[{"headers": {"h": "\\udfff"}, "body": "x"}]',
    "integer header of 5000 digits": b'[{"headers": {"n": ' + b"7" * 5000 + b'}, "body": "x"}]',
    "arrays nested 49000 deep": b"[" * 49000 + b"]" * 49000,
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_input_is_400_with_a_reason_and_no_traceback(serve, caplog, body):
    source, processor, counters = serve()
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    client = Client(source.port).send(post_head(len(body)) + body)
    status, headers, reason = client.response()
    assert status == 400 and reason.strip()
    assert "connection" not in headers                    # the body was read: the connection stays open
    client.send(post_head(len(EVENT)) + EVENT)
    assert client.response()[0] == 200
    client.close()
    assert len(processor.batches) == 1
    assert counters.counts["EventReadFail"] == 1
    mine = [r for r in caplog.records if r.name.startswith("workers.sources")]
    assert len([r for r in mine if r.levelno >= logging.INFO]) == 0
    assert not [r for r in mine if r.exc_info]


def test_head_larger_than_16_kib_is_431(serve):
    source, processor, _ = serve()
    client = Client(source.port).send(b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    status, headers, _ = client.response()
    assert status == 431 and headers.get("connection") == "close"
    client.close()


def test_unknown_method_is_501(serve):
    source, _, _ = serve()
    client = Client(source.port).send(b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert client.response()[0] == 501
    client.close()


# --- requests handed to the worker threads together -------------------------------------------------------------

def test_requests_completed_in_one_turn_are_handed_over_together_each_with_its_own_answer(serve, monkeypatch):
    """The event loop is held while eight clients send their requests (one of them bad, one larger than
    GROUP_BODY_BYTES): the seven small ones reach ``respond`` in one call, the large one alone, and each client
    gets its own answer."""
    from workers.sources import http_server
    monkeypatch.setattr(http_server, "GROUP_BODY_BYTES", 100)
    source, processor, _ = serve()
    calls: list[int] = []
    respond = source.server.pool.respond

    def recorded(requests):
        calls.append(len(requests))
        return respond(requests)

    source.server.pool.respond = recorded
    clients = [Client(source.port) for _ in range(8)]
    for client in clients:                                  # connections open, each past its first request
        assert client.send(post_head(len(EVENT)) + EVENT).response()[0] == 200
    calls.clear()
    held, release = threading.Event(), threading.Event()
    source.server.loop.call_soon_threadsafe(lambda: (held.set(), release.wait(10)))
    assert held.wait(10)
    large = b'[{"body": "' + b"x" * 200 + b'"}]'
    bodies = [EVENT] * 5 + [b"[}]", large, EVENT]
    for client, body in zip(clients, bodies):
        client.send(post_head(len(body)) + body)
    release.set()
    assert [c.response()[0] for c in clients] == [200] * 5 + [400, 200, 200]
    assert sorted(calls) == [1, 7]
    assert len(processor.batches) == 8 + 7
    for client in clients:
        client.close()


def test_a_respond_that_raises_is_500_for_each_request_of_its_group(serve):
    source, processor, _ = serve()

    def broken(requests):
        raise RuntimeError("respond bug")
    source.server.pool.respond = broken
    client = Client(source.port).send(post_head(len(EVENT)) + EVENT)
    status, headers, reason = client.response()
    assert status == 500 and headers.get("connection") == "close" and b"respond bug" not in reason
    client.close()
    assert processor.batches == []


def test_fifty_concurrent_clients_use_at_most_max_threads(serve):
    source, processor, _ = serve(maxThreads="2")
    respond = source.server.pool.respond

    def slow(requests):                                     # every thread stays busy: each hand-over wants one
        time.sleep(0.02)
        return respond(requests)
    source.server.pool.respond = slow
    before = threading.active_count()
    clients = [Client(source.port) for _ in range(50)]
    for client in clients:                                  # one by one: handed over in separate turns
        client.send(post_head(len(EVENT)) + EVENT)
        time.sleep(0.002)
    assert [c.response()[0] for c in clients] == [200] * 50
    assert threading.active_count() <= before + 2
    for client in clients:
        client.close()
    assert len(processor.batches) == 50


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policy")
def test_the_put_threads_do_not_preempt_the_event_loop_on_wakeup(serve):
    source, _, _ = serve()
    client = Client(source.port).send(post_head(len(EVENT)) + EVENT)
    assert client.response()[0] == 200
    client.close()
    threads = [t for t in threading.enumerate() if t.name.startswith("source-r1-http")]
    assert threads and all(os.sched_getscheduler(t.native_id) == os.SCHED_BATCH for t in threads)
    loop_thread = [t for t in threading.enumerate() if t.name == "source-r1-main"]
    assert os.sched_getscheduler(loop_thread[0].native_id) == os.SCHED_OTHER
