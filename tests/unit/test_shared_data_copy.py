"""routing.shared_data.SharedData: a process's bounded copy of replicated batches' data, and when a take waits."""
from __future__ import annotations

import os
import threading

from routing import shared_data
from routing.shared_data import SharedData


def refuse(key):
    raise AssertionError(f"read {key!r} from Redis, but it should have been here")


def in_thread(function) -> tuple[threading.Thread, list]:
    """Run ``function`` in a thread: (the thread, the list its result goes into)."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(function()), daemon=True)
    thread.start()
    return thread, out


def finished(running: tuple[threading.Thread, list], timeout_s: float = 10) -> list:
    """The result, once the thread ended (an empty list if it did not within ``timeout_s``: it waited)."""
    thread, out = running
    thread.join(timeout_s)
    return out


def test_kept_data_is_returned_without_reading_redis():
    copy = SharedData()
    copy.keep(b"k1", b"data-1", 2)
    assert copy.get(b"k1", refuse) == b"data-1" and copy.loads == 0


def test_a_get_waits_for_an_earlier_take_of_another_thread_that_keeps_the_data():
    copy = SharedData(wait_s=60)            # a wait that is not released would hang the test, not pass it
    started, answered = threading.Event(), threading.Event()

    def earlier_take():
        with copy.taking():
            started.set()
            answered.wait(10)
            copy.keep(b"other", b"x", 1)     # a keep of another key wakes the get, which goes on waiting
            copy.keep(b"k", b"the data", 1)

    taker = threading.Thread(target=earlier_take)
    taker.start()
    started.wait(10)
    with copy.taking() as ticket:
        got = in_thread(lambda: copy.get(b"k", refuse, ticket))      # its own take is not waited for
        answered.set()
        assert finished(got) == [b"the data"]
    taker.join(10)
    assert copy.loads == 0


def test_data_no_earlier_take_can_bring_is_read_from_redis_without_waiting():
    """A channel lagging behind the others (its data dropped long ago), or data taken first by Celery's consumer."""
    copy = SharedData(wait_s=60)
    with copy.taking() as ticket:
        got = in_thread(lambda: copy.get(b"k", lambda key: b"from redis " + key, ticket))
        assert finished(got) == [b"from redis k"] and copy.loads == 1


def test_a_get_reads_redis_once_the_earlier_takes_ended_without_the_data():
    copy = SharedData(wait_s=60)
    started, release = threading.Event(), threading.Event()

    def failing_take():
        with copy.taking():
            started.set()
            release.wait(10)             # ends without keeping anything (its reply was lost, say)

    taker = threading.Thread(target=failing_take)
    taker.start()
    started.wait(10)
    got = in_thread(lambda: copy.get(b"k", lambda key: b"loaded"))
    release.set()
    assert finished(got) == [b"loaded"]
    taker.join(10)


def test_an_earlier_take_that_hangs_is_waited_for_at_most_wait_s():
    copy = SharedData(wait_s=0.01)
    with copy.taking():                  # another thread's take that does not end
        assert copy.get(b"k", lambda key: b"loaded") == b"loaded"


def test_data_gone_from_redis_too_is_none():
    assert SharedData().get(b"k", lambda key: None) is None


def test_the_copy_is_bounded_least_recently_used_first():
    copy = SharedData(max_bytes=10)
    copy.keep(b"a", b"aaaa", 5)
    copy.keep(b"b", b"bbbb", 5)
    assert copy.get(b"a", refuse) == b"aaaa"             # a is now the most recently used
    copy.keep(b"c", b"cccc", 5)                          # 12 bytes > 10: b goes
    assert copy.get(b"a", refuse) == b"aaaa" and copy.get(b"c", refuse) == b"cccc"
    assert copy.get(b"b", lambda key: b"loaded") == b"loaded" and copy.loads == 1


def test_data_larger_than_the_bound_is_kept_alone():
    copy = SharedData(max_bytes=4)
    copy.keep(b"a", b"aa", 5)
    copy.keep(b"big", b"x" * 100, 5)
    assert copy.get(b"big", refuse) == b"x" * 100
    assert copy.get(b"a", lambda key: b"loaded") == b"loaded"


def test_data_is_dropped_once_every_other_message_referring_to_it_was_taken():
    copy = SharedData()
    copy.keep(b"k", b"data", 2)          # two other channels of this process hold a message referring to it
    assert copy.get(b"k", refuse) == b"data" and copy.get(b"k", refuse) == b"data"
    assert copy._bytes == 0 and not copy._data
    # A third take (one of them given back and taken again) reads it from Redis.
    assert copy.get(b"k", lambda key: b"loaded") == b"loaded" and copy.loads == 1


def test_data_no_other_take_asks_for_is_not_kept():
    copy = SharedData()
    copy.keep(b"k", b"data", 0)          # the other messages are in channels other processes drain
    assert not copy._data and copy.get(b"k", lambda key: b"loaded") == b"loaded"


def test_the_share_token_is_per_process(monkeypatch):
    token = shared_data.share_token()
    assert token.startswith(shared_data.TOKEN_PREFIX) and shared_data.share_token() == token
    monkeypatch.setattr(shared_data, "_token", (os.getpid() + 1, "w:parent"))    # as a forked child sees it
    assert shared_data.share_token() not in (token, "w:parent")
