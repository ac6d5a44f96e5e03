"""What every kind of test uses: waiting on a condition, and helper threads whose failures reach the test.

A test never sleeps for a fixed time hoping something happened: it waits on the condition with :func:`wait_until`,
which fails the test, saying what it waited for, if the condition does not come.  A test that starts a thread of
its own (a load generator, a writer, a watcher, a client) starts a :class:`ReportingThread`, whose ``join()``
re-raises what the thread raised and fails if the thread is still running: a helper that died or hung makes its
test fail instead of letting it pass on no load.
"""
from __future__ import annotations

import threading
import time

import msgpack


def wait_until(predicate, timeout_s: float = 30.0, interval_s: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy, and return that; fail the test after ``timeout_s``.

    ``predicate`` may raise to fail at once (a :meth:`ReportingThread.check` inside it, say).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


class ThreadFailed(AssertionError):
    """A test's helper thread raised, or did not finish in time."""


class ReportingThread(threading.Thread):
    """A test's helper thread: what it raises is kept and raised again in the test by :meth:`join`.

    Give it a ``target`` as to :class:`threading.Thread` (subclasses pass a method of theirs).  :meth:`join` fails
    with :class:`ThreadFailed` (the thread's exception chained as its cause) if the thread raised, or if it is
    still running after ``timeout``; :meth:`check` fails at once if it raised, without waiting.  Daemon by default,
    so that a hung helper cannot keep the interpreter alive once its test has failed.
    """

    def __init__(self, target=None, *, name: str | None = None, args=(), kwargs=None, daemon: bool = True):
        super().__init__(target=target, name=name, args=args, kwargs=kwargs, daemon=daemon)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            super().run()
        except BaseException as exc:          # kept for the test: this thread has nobody else to tell
            self.error = exc

    def check(self) -> None:
        """Fail now if the thread raised."""
        if self.error is not None:
            raise ThreadFailed(f"helper thread {self.name!r} failed: {self.error!r}") from self.error

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        self.check()
        if self.is_alive():
            raise ThreadFailed(f"helper thread {self.name!r} still running after {timeout}s")


def record_waits(event: threading.Event) -> list:
    """Make ``event.wait`` (on this one event) record the timeout of every call before it waits as usual; returns
    the list of timeouts.  A test then waits until the code under test is asleep on ``event`` (a backoff, a poll
    delay) instead of sleeping a while and hoping it got there."""
    calls: list = []
    original = event.wait

    def wait(timeout=None):
        calls.append(timeout)
        return original(timeout)

    event.wait = wait
    return calls


def msgpack_columns(data: bytes) -> list:
    """The bodies, headers and ids packed one after the other in a channel message's data."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    return list(unpacker)
