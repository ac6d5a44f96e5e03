"""``flumery dlq list|replay|purge``: inspect and replay an agent's dead-letter channel.

    flumery dlq list   -f FILE -n NAME [--limit 20] [--json]
    flumery dlq replay -f FILE -n NAME [--channel C] [--limit N]
    flumery dlq purge  -f FILE -n NAME --yes

``replay`` puts each event back into the channel it came from (or ``--channel``), in put transactions that wait
while the channel is full, and deletes it from the dead-letter channel only after that put was confirmed (a crash
in between replays it twice; its id makes that an overwrite for keyed stores).  ``--limit N`` replays exactly N
events: the rest of a dead-letter message it splits goes back to the end of the dead-letter channel in the same
transaction.  It shows a progress bar.

Which broker (:func:`locate`), said on stderr every time: ``--broker-url`` (or ``FLUMERY_BROKER_URL``/``REDIS_URL``);
else the running agent of that name (see :mod:`app.running`), or the one using ``--data-dir``; else the agent's
stored data (``--data-dir``, default ``~/.flumery/<agent>``), read through its embedded broker started for the
command.  It never creates a data directory: no running agent and no data is an error.
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app import running
from app.broker import EmbeddedRedis, reachable
from app.celery_app import create_app
from core.errors import ChannelFullError
from core.event import Batch
from core.registry import did_you_mean
from core.settings import BROKER_URL_FILE
from routing import codec, deadletter
from routing.processor import ChannelWriter
from routing.transport import connect

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
        self.connection = connect(url, transport_options)
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
        """Move up to ``limit`` events (all without one) back to their channels; the number moved."""
        moved = 0
        while limit is None or moved < limit:
            wanted = REPLAY_BATCH if limit is None else min(REPLAY_BATCH, limit - moved)
            taken = self.channel.fetch(self.queue, wanted)
            if not taken:
                break
            dead = [event for message in taken for event in codec.decode_stored(message)[1]]
            batches: dict[str, list] = defaultdict(list)
            for event in dead[:wanted]:
                original, source_channel = deadletter.unmark(event)
                batches[channel or source_channel].append(original)
            unknown = [c for c in batches if c not in self.config.channels]
            if unknown:
                for message in taken:
                    self.channel.give_back(message["properties"]["delivery_tag"])
                raise RuntimeError(f"dead letters come from channel(s) {', '.join(unknown)}, which agent "
                                   f"'{self.config.name}' does not have (channels: {', '.join(self.config.channels)})"
                                   f"; give --channel")
            puts = {c: Batch.from_events(events) for c, events in batches.items()}
            if dead[wanted:]:              # a message holds more than the limit: the rest stays a dead letter
                puts[deadletter.DEAD_CHANNEL] = Batch.from_events(dead[wanted:])
            self._put_waiting(puts)
            self.channel.ack_tag(*[m["properties"]["delivery_tag"] for m in taken])
            n = min(len(dead), wanted)
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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass(frozen=True)
class Location:
    """Where the dead letters are read: a broker URL, or a data dir whose embedded broker must be started."""

    url: str | None
    data_dir: Path | None
    note: str                      # what was inspected, for the operator
    key_prefix: str | None = None  # the running agent's FLUMERY_KEY_PREFIX, when it was found that way


def locate(settings, agent: str) -> Location:
    """The broker holding ``agent``'s dead letters (see the module docstring); RuntimeError if there is none."""
    data_dir_given = settings.data_dir is not None
    live = running.running(agent)
    if settings.broker_url:
        note = f"dead letters of agent '{agent}' on the broker {running.mask_password(settings.broker_url)} (given)"
        elsewhere = [r for r in live if r.broker_url != running.mask_password(settings.broker_url)]
        if elsewhere and len(elsewhere) == len(live):
            note += "; not the broker of the running " + ", ".join(r.describe() for r in elsewhere)
        return Location(settings.broker_url, None, note)
    data = settings.data_path()
    if data_dir_given:
        live = [r for r in live if Path(r.data_dir) == data]
    embedded = [r for r in live if r.embedded]
    if len(embedded) > 1:
        raise RuntimeError(f"{len(embedded)} agents named '{agent}' are running: "
                           + "; ".join(r.describe() for r in embedded) + ". Give the --data-dir of one")
    if embedded:
        return Location(embedded[0].broker_url, None, f"dead letters of {embedded[0].describe()}",
                        embedded[0].key_prefix)
    if live:
        raise RuntimeError("; ".join(r.describe() for r in live) + ": give that broker's URL with --broker-url "
                           "(or set FLUMERY_BROKER_URL)")
    recorded = data / BROKER_URL_FILE
    url = recorded.read_text().strip() if recorded.exists() else ""
    if url and reachable(url):
        return Location(url, None, f"dead letters of agent '{agent}' on the embedded broker recorded in {data}")
    if not (data / "redis").is_dir():
        raise RuntimeError(f"agent '{agent}' is not running and has no data in {data}"
                           + ("" if data_dir_given else "; give the --data-dir it runs with, or --broker-url"))
    return Location(None, data, f"agent '{agent}' is not running: dead letters stored in {data} (its embedded "
                                f"broker, started for this command)")


@contextmanager
def broker(location: Location, durable: bool):
    """The URL of ``location``'s broker, started (and stopped afterwards) if it is an embedded one at rest."""
    if location.url:
        if not reachable(location.url):
            raise RuntimeError(f"cannot reach the broker at {running.mask_password(location.url)}")
        yield location.url
        return
    embedded = EmbeddedRedis(location.data_dir / "redis", fsync_always=durable)
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


def check_channel(config, channel: str | None) -> str | None:
    """Why ``--channel`` cannot be used, or None."""
    if channel is None or channel in config.channels:
        return None
    return (f"--channel {channel}: agent '{config.name}' has no channel '{channel}' (channels: "
            f"{', '.join(config.channels)})" + did_you_mean(channel, list(config.channels)))


def run(args, config, settings) -> int:
    problem = check_channel(config, args.channel)
    if problem:
        print(f"flumery: {problem}", file=sys.stderr)
        return 2
    location = locate(settings, config.name)
    print(f"flumery: {location.note}", file=sys.stderr)
    durable = any(c.cls.durable for c in config.channels.values())
    with broker(location, durable) as url:
        settings = settings.with_(broker_url=url, key_prefix=location.key_prefix)
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
        print(f"{plural(letters.count(), 'event')} in the dead-letter channel of agent '{letters.config.name}'"
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
        print(f"replayed {plural(moved, 'event')}")
        return 0
    if not args.yes:
        print("flumery: purge deletes every dead letter for good; add --yes", file=sys.stderr)
        return 2
    print(f"purged {plural(letters.purge(), 'dead-letter message')}")
    return 0
