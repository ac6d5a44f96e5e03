"""``flumery dlq list|replay|purge``: inspect and replay an agent's dead-letter channel.

    flumery dlq list   -f FILE -n NAME [--limit 20] [--json]
    flumery dlq replay -f FILE -n NAME [--channel C] [--limit N]
    flumery dlq purge  -f FILE -n NAME --yes

``replay`` puts each event back into the channel it came from (or ``--channel``), in put transactions that wait
while the channel is full, and deletes it from the dead-letter channel only after that put was confirmed (a crash
in between replays it twice; its id makes that an overwrite for keyed stores).  It shows a progress bar.
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict

from kombu import Connection

from core.errors import ChannelFullError
from core.event import Batch
from app.broker import broker_for_tool
from app.celery_app import create_app
from routing import codec, deadletter
from routing.processor import ChannelWriter
from routing.transport import Transport

REPLAY_BATCH = 1000


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal or ``force``)."""

    def __init__(self, total: int, stream=None, force: bool = False, width: int = 30):
        self.total, self.width = max(total, 1), width
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.done = 0

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled:
            filled = int(self.width * min(self.done, self.total) / self.total)
            self.stream.write(f"\r[{'#' * filled}{' ' * (self.width - filled)}] {self.done}/{self.total} events")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


class DeadLetters:
    def __init__(self, celery_app, config, url: str, transport_options: dict):
        self.config = config
        self.queue = deadletter.dead_queue(config.name)
        self.connection = Connection(url, transport=Transport, transport_options=transport_options)
        self.channel = self.connection.default_channel
        self.writer = ChannelWriter(celery_app, config, url, transport_options)

    def count(self) -> int:
        return self.channel.channel_sizes(self.writer.exchange).get(deadletter.DEAD_CHANNEL, 0)

    def entries(self, limit: int) -> list[deadletter.DeadLetter]:
        out = []
        for message in self.channel.peek(self.queue, limit):
            out += [deadletter.DeadLetter.of(e) for e in codec.decode_stored(message)[1]]
        return out[:limit]

    def replay(self, channel: str | None, limit: int | None, progress: Progress) -> int:
        """Move up to ``limit`` events back to their channels; the number moved."""
        moved = 0
        while limit is None or moved < limit:
            taken = self.channel.fetch(self.queue, REPLAY_BATCH)
            if not taken:
                break
            batches: dict[str, list] = defaultdict(list)
            for message in taken:
                for event in codec.decode_stored(message)[1]:
                    original, source_channel = deadletter.unmark(event)
                    batches[channel or source_channel].append(original)
            unknown = [c for c in batches if c not in self.config.channels]
            if unknown:
                for message in taken:
                    self.channel.give_back(message["properties"]["delivery_tag"])
                raise RuntimeError(f"dead letters come from channel(s) {', '.join(unknown)}, which agent "
                                   f"'{self.config.name}' no longer has; give --channel")
            self._put_waiting({c: Batch.from_events(events) for c, events in batches.items()})
            self.channel.ack_tag(*[m["properties"]["delivery_tag"] for m in taken])
            n = sum(len(events) for events in batches.values())
            moved += n
            progress.advance(n)
        return moved

    def _put_waiting(self, batches: dict[str, Batch]) -> None:
        delay = 0.05
        while True:
            try:
                self.writer.put(batches)
                return
            except ChannelFullError:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def purge(self) -> int:
        return self.channel._purge(self.queue)

    def close(self) -> None:
        self.writer.close()
        self.connection.release()


def describe(entry: deadletter.DeadLetter) -> dict:
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(entry.time_ms / 1000)) + "Z"
    body = entry.event.body[:80].decode("utf-8", errors="replace")
    return {"time": when, "sink": entry.sink, "channel": entry.channel, "attempts": entry.attempts,
            "id": entry.event.id, "reason": entry.reason, "body": body}


def run(args, config, settings) -> int:
    durable = any(c.cls.durable for c in config.channels.values())
    with broker_for_tool(settings, durable) as url:
        settings = settings.with_(broker_url=url)
        letters = DeadLetters(create_app(settings), config, url, settings.transport_options())
        try:
            return _command(args, letters)
        finally:
            letters.close()


def _command(args, letters: DeadLetters) -> int:
    if args.action == "list":
        entries = letters.entries(args.limit)
        if args.json:
            for entry in entries:
                print(json.dumps(describe(entry)))
            return 0
        print(f"{letters.count()} events in the dead-letter channel of agent '{letters.config.name}'"
              + (f"; the oldest {len(entries)}:" if entries else ""))
        for entry in entries:
            d = describe(entry)
            print(f"  {d['time']}  sink={d['sink']}  channel={d['channel']}  attempts={d['attempts']}  id={d['id']}")
            print(f"      reason: {d['reason']}")
            print(f"      body:   {d['body']!r}")
        return 0
    if args.action == "replay":
        total = letters.count() if args.limit is None else min(args.limit, letters.count())
        progress = Progress(total)
        try:
            moved = letters.replay(args.channel, args.limit, progress)
        finally:
            progress.close()
        print(f"replayed {moved} events")
        return 0
    if not args.yes:
        print("flumery: purge deletes every dead letter for good; add --yes", file=sys.stderr)
        return 2
    print(f"purged {letters.purge()} dead-letter messages")
    return 0
