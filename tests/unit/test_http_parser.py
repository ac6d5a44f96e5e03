"""workers/sources/http_parser.py: the pull interface over llhttp, and the bounds it adds (head size, chunk
framing and trailers, versions, Host, upgrades).  No sockets: bytes in, events out."""
from __future__ import annotations

import random

import pytest

from workers.sources.http_parser import (
    CLOSED,
    END,
    FEED_SLICE,
    MAX_HEAD_BYTES,
    NEED_DATA,
    Data,
    ParseError,
    Request,
    RequestParser,
)


def post(body: bytes = b"[]", extra: bytes = b"") -> bytes:
    return b"POST /p?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def events(parser: RequestParser) -> list:
    """Every event up to NEED_DATA or CLOSED; a ParseError is returned as the last one."""
    out = []
    while True:
        try:
            event = parser.next_event()
        except ParseError as exc:
            return out + [exc]
        out.append(event)
        if event is NEED_DATA or event is CLOSED:
            return out


def fed(*chunks: bytes) -> RequestParser:
    parser = RequestParser()
    for chunk in chunks:
        parser.receive_data(chunk)
    return parser


def test_a_request_is_a_head_its_body_and_its_end():
    got = events(fed(post(b"[1]", b"X-A: 1\r\nx-a: 2\r\n")))
    assert got[0] == Request("POST", "/p?q=1", {"host": "x", "content-length": "3", "x-a": "1, 2"}, True)
    assert got[1:] == [Data(b"[1]"), END, NEED_DATA]


def test_pipelined_requests_come_in_order_and_an_error_only_after_them():
    got = events(fed(post(b"[1]") + post(b"[2]") + b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n"))
    assert [type(e).__name__ for e in got] == ["Request", "Data", "_Marker", "Request", "Data", "_Marker",
                                                "ParseError"]
    assert got[-1].status == 400 and "Content-Length" in got[-1].reason


def test_nothing_after_an_error_is_parsed():
    parser = fed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
    parser.receive_data(post())
    got = events(parser)
    assert len(got) == 1 and got[0].status == 400
    assert got[0].reason == "both Transfer-Encoding and Content-Length given"
    assert parser.next_event() is NEED_DATA and not parser.started


def test_a_head_in_many_pieces_is_one_head():
    raw = post(b"[1]")
    parser = RequestParser()
    for i in range(len(raw)):
        parser.receive_data(raw[i:i + 1])
    assert events(parser)[0].target == "/p?q=1"


@pytest.mark.parametrize("size, status", [(MAX_HEAD_BYTES - 200, None), (MAX_HEAD_BYTES + 10, 431)])
def test_a_complete_head_is_measured_exactly(size, status):
    got = events(fed(post(extra=b"X-Big: " + b"a" * size + b"\r\n")))
    assert (got[0].status if isinstance(got[0], ParseError) else None) == status


def test_an_endless_head_is_refused_within_a_slice_of_the_limit():
    parser = fed(b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    with pytest.raises(ParseError) as raised:
        while parser.next_event() is NEED_DATA:
            assert sent <= MAX_HEAD_BYTES + FEED_SLICE
            parser.receive_data(b"a" * 1000)
            sent += 1000
    assert raised.value.status == 431 and sent > MAX_HEAD_BYTES - 1000


def test_many_small_pipelined_requests_in_one_read_are_not_taken_for_a_large_head():
    raw = post() * (64 * 1024 // len(post()))
    got = events(fed(raw))
    assert got[-1] is NEED_DATA and sum(e is END for e in got) == 64 * 1024 // len(post())


def test_a_body_of_one_byte_chunks_or_an_endless_trailer_is_refused():
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    got = events(fed(head + b"1\r\nx\r\n" * 20_000))
    assert isinstance(got[-1], ParseError) and "framing" in got[-1].reason
    assert sum(len(e.data) for e in got if isinstance(e, Data)) < 20_000
    got = events(fed(head + b"2\r\nab\r\n0\r\nX-T: " + b"t" * (MAX_HEAD_BYTES + 3 * FEED_SLICE)))
    assert isinstance(got[-1], ParseError) and got[-1].status == 400


def test_ordinary_chunks_and_a_small_trailer_pass():
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    got = events(fed(head + b"400\r\n" + b"x" * 1024 + b"\r\n" + b"2\r\nab\r\n0\r\nX-T: v\r\n\r\n" + post()))
    assert b"".join(e.data for e in got if isinstance(e, Data)) == b"x" * 1024 + b"ab" + b"[]"
    assert got[0].headers.get("x-t") is None and sum(e is END for e in got) == 2


@pytest.mark.parametrize("raw, status, words", [
    (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400, "Host"),
    (b"POST / HTTP/2.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 505, "HTTP/2.0"),
    (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 501, "CONNECT"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n[]", 400,
     "upgrade"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "not an HTTP request"),
    (b"POST / HTTP/1.1\nHost: x\n\n", 400, "malformed"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n", 400, "malformed"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n[]", 400, "Duplicate"),
])
def test_what_is_refused(raw, status, words):
    got = events(fed(raw))
    assert isinstance(got[0], ParseError), got
    assert got[0].status == status and words in got[0].reason


def test_keep_alive_only_for_http_1_1_without_close():
    assert events(fed(post(extra=b"Connection: close\r\n")))[0].keep_alive is False
    one_oh = b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    assert events(fed(one_oh))[0].keep_alive is False


def test_100_continue_is_expected_until_the_body_starts():
    parser = fed(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert isinstance(parser.next_event(), Request) and parser.expects_continue
    parser.receive_data(b"[")
    assert not parser.expects_continue


def test_end_of_input_between_requests_is_closed_and_inside_one_is_an_error():
    parser = fed(post(), b"")
    assert events(parser)[-1] is CLOSED
    parser = fed(post()[:10])
    assert parser.started
    parser.receive_data(b"")
    assert events(parser)[-1].status == 400


def test_any_split_of_a_pipelined_stream_gives_the_same_events():
    """Reads end anywhere: in a method, a header, a chunk size, between CR and LF.  Every way of cutting the same
    bytes (here 300 random ones, seeded) must give the same requests, bodies and ends as one read."""
    chunked = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n" + b"d" * 16 \
        + b"\r\n0\r\nT: 1\r\n\r\n"
    stream = post(b"[1]") + chunked + post(b"x" * 9000) + post(b"", b"Connection: close\r\n")

    def summary(parser: RequestParser) -> list:
        out, body = [], b""
        for event in events(parser):
            if isinstance(event, Data):
                body += event.data
            elif event is END:
                out.append(body)
                body = b""
            else:
                out.append(event)
        return out

    whole = summary(fed(stream))
    assert [e for e in whole if isinstance(e, bytes)] == [b"[1]", b"abc" + b"d" * 16, b"x" * 9000, b""]
    rng = random.Random(14)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 40)))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        assert summary(fed(*pieces)) == whole, cuts
