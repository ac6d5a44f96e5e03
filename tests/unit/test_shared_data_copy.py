"""routing.shared_data.SharedData: a process's bounded copy of replicated batches' data, and its waits."""
from __future__ import annotations

import os
import threading

from routing import shared_data
from routing.shared_data import SharedData


def refuse(key):
    raise AssertionError(f"read {key!r} from Redis, but it should have been here")


def test_kept_data_is_returned_without_reading_redis():
    copy = SharedData()
    copy.keep(b"k1", b"data-1", 2)
    assert copy.get(b"k1", refuse) == b"data-1" and copy.loads == 0


def test_a_get_waits_for_the_take_that_receives_the_data_in_another_thread():
    copy = SharedData(wait_s=60)
    got = []
    getter = threading.Thread(target=lambda: got.append(copy.get(b"k", refuse)))
    getter.start()
    copy.keep(b"other", b"x", 1)            # a keep of another key wakes it, and it goes on waiting
    copy.keep(b"k", b"the data", 1)
    getter.join(10)
    assert not getter.is_alive() and got == [b"the data"] and copy.loads == 0


def test_data_that_does_not_come_is_read_from_redis_after_the_wait():
    copy = SharedData(wait_s=0.01)
    assert copy.get(b"k", lambda key: b"from redis " + key) == b"from redis k" and copy.loads == 1


def test_data_gone_from_redis_too_is_none():
    assert SharedData(wait_s=0).get(b"k", lambda key: None) is None


def test_the_copy_is_bounded_least_recently_used_first_and_a_dropped_key_is_read_at_once():
    copy = SharedData(max_bytes=10, wait_s=60)          # a wait here would hang the test: it must not wait
    copy.keep(b"a", b"aaaa", 5)
    copy.keep(b"b", b"bbbb", 5)
    assert copy.get(b"a", refuse) == b"aaaa"             # a is now the most recently used
    copy.keep(b"c", b"cccc", 5)                             # 12 bytes > 10: b goes
    assert copy.get(b"a", refuse) == b"aaaa" and copy.get(b"c", refuse) == b"cccc"
    done = []
    getter = threading.Thread(target=lambda: done.append(copy.get(b"b", lambda key: b"loaded")))
    getter.start()
    getter.join(10)
    assert done == [b"loaded"] and copy.loads == 1


def test_data_larger_than_the_bound_is_kept_alone():
    copy = SharedData(max_bytes=4)
    copy.keep(b"a", b"aa", 5)
    copy.keep(b"big", b"x" * 100, 5)
    assert copy.get(b"big", refuse) == b"x" * 100
    assert copy.get(b"a", lambda key: b"loaded") == b"loaded"


def test_data_is_dropped_once_every_other_message_referring_to_it_was_taken():
    copy = SharedData(wait_s=60)
    copy.keep(b"k", b"data", 2)          # two other channels of this process hold a message referring to it
    assert copy.get(b"k", refuse) == b"data" and copy.get(b"k", refuse) == b"data"
    assert copy._bytes == 0 and copy._data == {}
    # A third take (one of them given back and taken again) reads it from Redis, without waiting.
    assert copy.get(b"k", lambda key: b"loaded") == b"loaded" and copy.loads == 1


def test_data_no_other_take_asks_for_is_not_kept():
    copy = SharedData(wait_s=60)
    copy.keep(b"k", b"data", 0)          # the other messages are in channels other processes drain
    assert copy._data == {} and copy.get(b"k", lambda key: b"loaded") == b"loaded"


def test_the_keys_remembered_as_dropped_are_bounded():
    copy = SharedData(max_bytes=1, max_dropped=2, wait_s=0.01)
    for key in (b"1", b"2", b"3", b"4"):
        copy.keep(key, b"x", 5)
    # 1, 2 and 3 were dropped; only the last two are remembered: 1 is waited for (briefly), then read.
    assert copy._dropped == {b"2", b"3"}
    assert copy.get(b"1", lambda key: b"loaded") == b"loaded"


def test_the_share_token_is_per_process(monkeypatch):
    token = shared_data.share_token()
    assert token.startswith(shared_data.TOKEN_PREFIX) and shared_data.share_token() == token
    monkeypatch.setattr(shared_data, "_token", (os.getpid() + 1, "w:parent"))    # as a forked child sees it
    assert shared_data.share_token() not in (token, "w:parent")
