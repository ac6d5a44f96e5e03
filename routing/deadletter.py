"""The dead-letter channel: events a sink can never write, kept with the reason, listable and replayable.

Every agent has one, the queue ``flumery.<agent>.__dead__`` (no sink drains it).  An event lands there when its
sink rejected it as malformed (:class:`RejectedEvents`), or when it failed ``maxAttempts`` times on its own (see
:mod:`workers.runner`).  It keeps its body, headers and id, plus these headers:

| header | value |
|---|---|
| ``flumery.dlq.reason`` | the store's error |
| ``flumery.dlq.sink`` | the sink (or sink group) that could not write it |
| ``flumery.dlq.channel`` | the channel it was taken from (where ``replay`` puts it back) |
| ``flumery.dlq.time`` | when, in epoch milliseconds |
| ``flumery.dlq.attempts`` | how many writes were tried |

Putting into the dead-letter channel is a put transaction like any other; it has no capacity limit, so a store
that rejects everything cannot block a channel (it fills Redis instead: watch ``CHANNEL.__dead__`` in /metrics).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from core.event import Batch, Event
from core.keys import DEAD_CHANNEL, dead_queue  # noqa: F401  (part of this module's interface)

DEAD_CAPACITY = 2**62
PREFIX = "flumery.dlq."
REASON, SINK, CHANNEL, TIME, ATTEMPTS = (PREFIX + k for k in ("reason", "sink", "channel", "time", "attempts"))



def mark(events: list[Event], reasons: list[str], sink: str, channel: str, attempts: int) -> Batch:
    """``events`` as dead letters: their own headers plus the ``flumery.dlq.*`` ones."""
    now = str(int(time.time() * 1000))
    dead = [e._replace(headers={**e.headers, REASON: reason[:2000], SINK: sink, CHANNEL: channel, TIME: now,
                                ATTEMPTS: str(attempts)})
            for e, reason in zip(events, reasons)]
    return Batch.from_events(dead)


def unmark(event: Event) -> tuple[Event, str]:
    """(the event as it was before it died, the channel it came from)."""
    headers = {k: v for k, v in event.headers.items() if not k.startswith(PREFIX)}
    return event._replace(headers=headers), event.headers.get(CHANNEL, "")


@dataclass(frozen=True)
class DeadLetter:
    event: Event
    reason: str
    sink: str
    channel: str
    time_ms: int
    attempts: int

    @classmethod
    def of(cls, event: Event) -> "DeadLetter":
        h = event.headers
        return cls(event, h.get(REASON, ""), h.get(SINK, ""), h.get(CHANNEL, ""), int(h.get(TIME, "0") or 0),
                   int(h.get(ATTEMPTS, "0") or 0))

