"""Flumery's kombu transport: kombu's Redis transport with transactional channel operations.

Used by Celery as ``broker_transport`` (see :mod:`app.celery_app`); the broker URL stays ``redis://...``.
It changes four things, and only for Flumery channel queues (``flumery.*``); every other queue (Celery's
remote-control replies, say) behaves exactly as in kombu:

1. **Taking a message is atomic** (:data:`routing.scripts.FETCH`): pop and "record as unacknowledged" happen
   in one Redis script, so ``kill -9`` of a worker at any instant leaves each message either in its queue or in
   the unacknowledged set, from where kombu's visibility-timeout sweep puts it back.  Idle consumers block on
   the channels' bells, not on the queues.
2. **Acknowledging releases capacity** (:data:`routing.scripts.ACK`), only for the consumer that owns the
   message.
3. **Putting is a capacity-checked transaction over all target channels** (:meth:`Channel.put_transaction`).
4. Held messages can renew their visibility lease (:meth:`Channel.touch`), so a slow store does not cause
   a second delivery.
"""
from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass
from time import monotonic, time

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base as virtual
from kombu.utils.json import dumps, loads

from routing import scripts

QUEUE_PREFIX = "flumery."
EVENTS_HEADER = "flumery_events"
OWNER_KEY = "flumery.owner"
BELL_SUFFIX = ":bell"


class ChannelFullError(Exception):
    """A put did not fit: nothing was written to any channel.  The source must push back and retry."""

    def __init__(self, channel: str, size: int, capacity: int, needed: int):
        self.channel, self.size, self.capacity, self.needed = channel, size, capacity, needed
        super().__init__(f"channel '{channel}' is full ({size} of {capacity} events held, "
                         f"{needed} more offered)")


def is_channel_queue(queue: str) -> bool:
    return queue.startswith(QUEUE_PREFIX)


def sizes_key(exchange: str) -> str:
    """The hash holding, per channel, the events it holds (queued or taken and not yet committed)."""
    return f"{exchange}:sizes"


def read_sizes(client, exchange: str) -> dict[str, int]:
    """Events held per channel of the agent whose exchange is ``exchange``."""
    raw = client.hgetall(sizes_key(exchange))
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


def bell_key(queue: str) -> str:
    return queue + BELL_SUFFIX


@dataclass(frozen=True)
class PutTarget:
    """Messages bound for one channel queue within a put transaction."""

    channel: str          # channel name (the routing key)
    queue: str
    capacity: int
    events: int
    messages: list        # kombu message dicts, already augmented (see Channel.make_message)


def _owner_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class QoS(kombu_redis.QoS):
    """kombu's Redis ack emulation, with atomic registration done at fetch time and capacity release on ack."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._owned: set[str] = set()       # tags recorded in Redis by FETCH, owned by this channel

    def append(self, message, delivery_tag):
        if self.channel._fetched_tags.pop(delivery_tag, False):
            # FETCH already recorded it in Redis; only the in-memory bookkeeping is left.
            self._owned.add(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag):
        if self._release(delivery_tag):
            virtual.QoS.ack(self, delivery_tag)
        else:
            super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        if requeue:
            self._owned.discard(delivery_tag)
            super().reject(delivery_tag, requeue=True)
        elif self._release(delivery_tag):
            # Dropped for good (Celery does this to a message it cannot decode): its events leave the channel.
            kombu_redis.logger.error("Flumery channel message %s was rejected without requeue", delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
        else:
            super().reject(delivery_tag, requeue=False)

    def _release(self, delivery_tag) -> bool:
        """Ack a message taken by FETCH through the ACK script; False if FETCH did not take it."""
        if delivery_tag not in self._owned:
            return False
        self._owned.discard(delivery_tag)
        message = self._delivered[delivery_tag]
        info = message.delivery_info
        self.channel.ack_tag(delivery_tag, info["exchange"], info["routing_key"],
                             int(message.headers.get(EVENTS_HEADER, 0)))
        return True


class Channel(kombu_redis.Channel):
    QoS = QoS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = _owner_token()
        self._fetched_tags: dict[str, bool] = {}
        self._waiting = False           # True while blocked on the bells
        self._rotation = 0
        self._script_lock = threading.Lock()
        self._scripts: dict[str, object] = {}

    # -- consuming ---------------------------------------------------------------------------------------------
    def _flumery_queues(self) -> list[str] | None:
        queues = self.active_queues
        if queues and all(is_channel_queue(q) for q in queues):
            return queues
        return None

    def _brpop_start(self, timeout=None):
        queues = self._flumery_queues()
        if queues is None:
            return super()._brpop_start(timeout)
        conn = self.client.connection
        self._in_poll = conn
        self._brpop_sent_at = monotonic()
        if self._waiting:
            wait_s = self.brpop_timeout if timeout is None else timeout
            conn.send_command("BRPOP", *[bell_key(q) for q in queues], wait_s or 0)
        else:
            self._rotation = (self._rotation + 1) % len(queues)
            keys = [self.unacked_key, self.unacked_index_key, OWNER_KEY]
            for q in queues:
                keys += [q, bell_key(q)]
            conn.send_command("EVAL", scripts.FETCH, len(keys), *keys, repr(time()), self.owner,
                              self._rotation)

    def _brpop_read(self, **options):
        if self._flumery_queues() is None:
            return super()._brpop_read(**options)
        try:
            try:
                reply = self.client.parse_response(self.client.connection,
                                                   "BRPOP" if self._waiting else "EVAL", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if self._waiting:
                # A bell rang (or the wait timed out): go and fetch.  Nothing was taken from any queue.
                self._waiting = False
                raise virtual.Empty()
            if not reply:
                self._waiting = True
                raise virtual.Empty()
            queue, item = reply
            payload = loads(item)
            self._fetched_tags[payload["properties"]["delivery_tag"]] = True
            queue = queue.decode() if isinstance(queue, bytes) else queue
            self._queue_cycle.rotate(queue)
            self.connection._deliver(payload, queue)
            return True
        finally:
            self._in_poll = None

    # -- the transactions used by sources and sink runners --------------------------------------------------
    def _run(self, name: str, keys: list, args: list):
        """Run one of :mod:`routing.scripts` on a pooled connection (never the one a BRPOP may be waiting on)."""
        with self._script_lock:
            script = self._scripts.get(name)
            if script is None:
                script = self._scripts[name] = self._create_client().register_script(getattr(scripts, name))
        with self.conn_or_acquire() as client:
            return script(keys=keys, args=args, client=client)

    def _lookup(self, exchange, routing_key, default=None):
        # A Flumery exchange routes each routing key to exactly one queue.  Deriving it rather than reading
        # the binding table means a message being given back can never be routed nowhere (and lost).
        if exchange and exchange.startswith(QUEUE_PREFIX):
            return [f"{exchange}.{routing_key}"]
        return super()._lookup(exchange, routing_key, default)

    def make_message(self, body: bytes, headers: dict, properties: dict, exchange: str,
                     routing_key: str, delivery_tag: str) -> dict:
        """A kombu message dict as ``Producer.publish`` would put it on this transport.

        The delivery tag is given (Flumery uses the task id) so that the process running the task, which may
        not be the one that took the message, can name it to renew its lease.
        """
        message = self.prepare_message(body, 0, "application/x-msgpack", "binary", headers,
                                       {**properties, "delivery_mode": 2})
        self._inplace_augment_message(message, exchange, routing_key)
        message["properties"]["delivery_tag"] = delivery_tag
        return message

    def put_transaction(self, exchange: str, targets: list[PutTarget]) -> None:
        """Put every target's messages, or none if any target channel lacks room (:class:`ChannelFullError`)."""
        keys = [sizes_key(exchange)]
        args: list = [len(targets)]
        for t in targets:
            keys += [t.queue, bell_key(t.queue)]
            args += [t.channel, t.capacity, t.events, len(t.messages)]
            args += [dumps(m) for m in t.messages]
        full = self._run("PUT", keys, args)
        if full:
            name, size, capacity = full
            name = name.decode() if isinstance(name, bytes) else name
            needed = next(t.events for t in targets if t.channel == name)
            raise ChannelFullError(name, int(size), int(capacity), needed)

    def fetch(self, queue: str) -> dict | None:
        """Take one message from ``queue`` (registered as unacknowledged, owned by this channel), or None."""
        keys = [self.unacked_key, self.unacked_index_key, OWNER_KEY, queue, bell_key(queue)]
        reply = self._run("FETCH", keys, [repr(time()), self.owner, 0])
        return loads(reply[1]) if reply else None

    def ack_tag(self, tag: str, exchange: str, channel: str, n_events: int) -> bool:
        keys = [self.unacked_key, self.unacked_index_key, OWNER_KEY, sizes_key(exchange)]
        return bool(self._run("ACK", keys, [tag, self.owner, channel, n_events]))

    def give_back(self, tag: str) -> None:
        """Return a fetched, unacknowledged message to the front of its queue (a take rollback)."""
        self.qos.restore_by_tag(tag, leftmost=False)

    def touch(self, tags: list[str]) -> int:
        """Renew the visibility lease of messages still recorded as unacknowledged (by any consumer)."""
        if not tags:
            return 0
        return int(self._run("TOUCH", [self.unacked_index_key], [repr(time()), *tags]))

    def channel_sizes(self, exchange: str) -> dict[str, int]:
        with self.conn_or_acquire() as client:
            return read_sizes(client, exchange)


class Transport(kombu_redis.Transport):
    Channel = Channel
    driver_name = "flumery-redis"
