"""Events, batches and event ids."""
from __future__ import annotations

import pytest

from core.event import NO_HEADERS, Batch, Event, IdChain, IdRange
from workers.sources.http import json_handler


def test_id_range_is_a_lazy_sequence_of_stable_ids():
    ids = IdRange("abc", 5, 3)
    assert list(ids) == ["abc-5", "abc-6", "abc-7"]
    assert list(ids[1:]) == ["abc-6", "abc-7"] and isinstance(ids[1:], IdRange)
    assert ids[-1] == "abc-7"
    with pytest.raises(IndexError):
        ids[3]


def test_batch_round_trips_through_the_wire_with_ids():
    batch = Batch([b"a", b"b"], [{"k": "v"}, {}]).with_fresh_ids()
    again = Batch.from_wire(*batch.to_wire())
    assert list(again) == list(batch)
    assert all(e.id for e in again) and len({e.id for e in again}) == 2


@pytest.mark.parametrize("bodies,headers,ids", [
    ("x", None, None), ([b"a", "s"], None, None), ([b"a"], [{"k": 1}], None), ([b"a"], [{}, {}], None),
    ([b"a"], None, ["i", "j"]), ([b"a"], None, ["p", 0, 5]),
])
def test_malformed_batches_are_refused(bodies, headers, ids):
    with pytest.raises(ValueError):
        Batch.from_wire(bodies, headers, ids)


def test_ids_given_by_a_sender_are_kept_and_missing_ones_filled():
    events = json_handler(b'[{"headers": {"flumery.id": "client-1", "a": "b"}, "body": "x"}, {"body": "y"}]',
                          "application/json", "")
    assert events[0] == Event(b"x", {"a": "b"}, "client-1")
    batch = Batch.from_events(events)
    assert batch.ids[0] == "client-1" and batch.ids[1]


def test_extend_keeps_headers_and_ids_aligned():
    a = Batch([b"1"], None, IdRange("p", 0, 1))
    b = Batch([b"2"], [{"h": "v"}], ["q-0"])
    a.extend(b)
    assert list(a) == [Event(b"1", NO_HEADERS, "p-0"), Event(b"2", {"h": "v"}, "q-0")]


def test_gathered_ids_stay_parts_until_asked_for_and_go_on_the_wire_as_strings():
    batch = Batch([b"a", b"b"], None, IdRange("p", 0, 2))
    batch.extend(Batch([b"c"], None, ["x-9"]))
    batch.extend(Batch([b"d", b"e"], None, IdRange("q", 5, 2)))
    assert isinstance(batch.ids, IdChain) and len(batch.ids.parts) == 3       # no list of strings was built
    expected = ["p-0", "p-1", "x-9", "q-5", "q-6"]
    assert list(batch.ids) == expected and batch.ids == expected
    assert [batch.ids[i] for i in range(-5, 5)] == expected * 2
    with pytest.raises(IndexError):
        batch.ids[5]
    assert batch[1:4].ids == expected[1:4]
    assert batch.to_wire()[2] == expected
    assert Batch.from_wire(*batch.to_wire()).ids == expected
    assert [e.id for e in batch] == expected


def test_no_headers_is_immutable():
    with pytest.raises(TypeError):
        Event(b"x").headers["k"] = "v"
