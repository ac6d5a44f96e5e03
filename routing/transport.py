"""Flumery's kombu transport: kombu's Redis transport with transactional channel queues.

Used by Celery as ``broker_transport`` (see :mod:`app.celery_app`); the broker URL stays ``redis://...``.
Flumery's channel queues (``flumery.<agent>.<channel>``) are stored as described in :mod:`routing.scripts` and
every operation on them is one Lua script; every other queue (Celery's remote-control replies, say) behaves
exactly as in kombu.

What changes for channel queues, and why:

1. **Taking is atomic** (FETCH): a message is popped and recorded as in flight in one step, so ``kill -9`` of a
   worker at any instant leaves it queued or in flight, and RECLAIM gives in-flight messages back once their
   lease (the visibility timeout) expires.  Idle consumers block on the channels' bells, not on the queues.
2. **Acknowledging releases capacity** (ACK), only for the consumer that holds the message.
3. **Putting is one capacity-checked transaction over all target channels** (:meth:`Channel.put_transaction`).
4. **Leases can be renewed** (:meth:`Channel.touch`), so a slow store does not cause a second delivery.
5. The message is stored once and never copied between Redis keys (kombu copies it into its ``unacked`` hash
   on every delivery, which with ``appendfsync always`` doubles the bytes written and fsynced), and its body is
   stored as raw bytes beside the JSON envelope, not base64 inside it (a third fewer bytes, and no base64 or
   JSON pass over the events on either side).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from time import monotonic, time

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base as virtual
from kombu.utils.json import dumps, loads

from core.errors import BrokerFull, ChannelFullError
from routing import scripts

log = logging.getLogger(__name__)

QUEUE_PREFIX = "flumery."
EVENTS_HEADER = "flumery_events"
BELL_SUFFIX = ":bell"
RECLAIM_LIMIT = 1000
# Puts stop when the broker's memory reaches this fraction of its maxmemory: the rest is for what drains it (a
# worker's start, bindings, locks, leases, metrics), since Redis refuses those writes too once maxmemory is reached.
PUT_MEMORY_FRACTION = 0.9
MEMORY_CHECK_INTERVAL_S = 1.0
MESSAGE_OVERHEAD_BYTES = 200      # a stored message's keys and hash fields, beyond its envelope and body



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


def is_out_of_memory(exc: Exception) -> bool:
    """A write refused because Redis reached its ``maxmemory`` (``noeviction``).  Redis 7 answers ``-OOM`` (redis-py's
    OutOfMemoryError); Redis 6.2 wraps it in the error of the script whose first write it refused."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM command not allowed" in str(exc)


class MemoryGauge:
    """Whether the broker is too full for puts, from ``INFO memory``.  Read again once the puts since the last reading
    may have used half the room that was left (or after :data:`MEMORY_CHECK_INTERVAL_S`): so the readings come
    closer together as the broker fills, and puts overshoot the mark by one batch at most."""

    def __init__(self):
        self.supported = True             # a managed Redis may refuse INFO: then only maxmemory itself refuses
        self.checked_at = float("-inf")
        self.budget = 0.0                 # bytes that may be put before the next reading
        self.refusal: str | None = None

    def check(self, client, nbytes: int) -> str | None:
        """Why a put of about ``nbytes`` must not happen now (the broker's memory is nearly used up), or None."""
        self.budget -= nbytes
        if self.supported and (self.budget <= 0 or monotonic() - self.checked_at >= MEMORY_CHECK_INTERVAL_S):
            try:
                info = client.info("memory")
            except redis.exceptions.ResponseError:
                self.supported = False
                return None
            used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
            room = limit * PUT_MEMORY_FRACTION - used if limit else float("inf")
            self.budget = room / 2 - nbytes
            self.checked_at = monotonic()
            self.refusal = (None if room >= nbytes else
                            f"{used / 2 ** 20:.1f} of {limit / 2 ** 20:.1f} MiB used; puts stop at "
                            f"{PUT_MEMORY_FRACTION:.0%}")
        return self.refusal


def message_from_redis(envelope: bytes, body: bytes) -> dict:
    """The kombu message dict of a stored channel message: its envelope with the raw body put back.

    The body carries no ``body_encoding``, so kombu hands it to Celery's msgpack deserializer unchanged.
    Such a dict is never JSON-dumped again: every path that moves a channel message moves only its tag.
    """
    payload = loads(envelope)
    payload["body"] = body
    return payload


@dataclass(frozen=True)
class PutTarget:
    """Messages bound for one channel within a put transaction."""

    channel: str                                # channel name (routing key, and field in the sizes hash)
    queue: str
    capacity: int
    events: int
    messages: list[tuple[str, int, dict, bytes]]    # (tag, events, kombu envelope, body)


def _owner_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


class QoS(kombu_redis.QoS):
    """kombu's Redis ack emulation; channel-queue messages go through the Lua scripts instead."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._owned: set[str] = set()       # tags this channel took with FETCH and still holds

    def append(self, message, delivery_tag):
        if self.channel._fetched_tags.pop(delivery_tag, False):
            self._owned.add(delivery_tag)   # already recorded in Redis by FETCH
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag):
        if delivery_tag in self._owned:
            self._owned.discard(delivery_tag)
            if not self.channel.ack_tag(delivery_tag):
                log.warning("message %s was no longer held when acknowledged (its lease had expired); "
                            "it will be delivered again", delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
        else:
            super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        if delivery_tag not in self._owned:
            super().reject(delivery_tag, requeue=requeue)
            return
        self._owned.discard(delivery_tag)
        if requeue:
            self.channel.give_back(delivery_tag, front=True)
        else:
            # Dropped for good (Celery does this to a message it cannot decode): its events leave the channel.
            log.error("Flumery channel message %s was rejected without requeue and is deleted", delivery_tag)
            self.channel.ack_tag(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client=None):
        # Warm shutdown: messages delivered to this consumer but not acknowledged go back to their queues.
        for tag in list(self._delivered):
            if tag in self._owned and tag not in self._dirty:
                self._owned.discard(tag)
                self.channel.give_back(tag, front=True)
                self._delivered.pop(tag, None)
        super().restore_unacked(client)

    def restore_visible(self, start=0, num=10, interval=10):
        self.channel.reclaim()
        super().restore_visible(start, num, interval)


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
        self._memory = MemoryGauge()

    # -- consuming (the worker's event loop) -----------------------------------------------------------------
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
            conn.send_command("EVAL", scripts.FETCH, 0, repr(time()), self.owner, self._rotation, 0, *queues)

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
            queue, payload = _text(reply[0]), message_from_redis(reply[1], reply[2])
            self._fetched_tags[payload["properties"]["delivery_tag"]] = True
            self._queue_cycle.rotate(queue)
            self.connection._deliver(payload, queue)
            return True
        finally:
            self._in_poll = None

    def _purge(self, queue):
        if is_channel_queue(queue):
            return int(self._run("PURGE", [queue]))
        return super()._purge(queue)

    # -- the transactions used by sources and sink runners --------------------------------------------------
    def _run(self, name: str, args: list):
        """Run one of :mod:`routing.scripts` on a pooled connection (never the one a BRPOP may wait on)."""
        with self._script_lock:
            script = self._scripts.get(name)
            if script is None:
                script = self._scripts[name] = self._create_client().register_script(getattr(scripts, name))
        with self.conn_or_acquire() as client:
            return script(keys=[], args=args, client=client)

    def make_message(self, headers: dict, properties: dict, exchange: str, routing_key: str,
                     delivery_tag: str) -> dict:
        """The envelope of a kombu message as ``Producer.publish`` would build it, for a msgpack body kept
        outside it (see :func:`message_from_redis`).

        The delivery tag is given (Flumery uses the task id) so that the process running the task, which may
        not be the one that took the message, can name it to renew its lease.
        """
        message = self.prepare_message(None, 0, "application/x-msgpack", "binary", headers,
                                       {**properties, "delivery_mode": 2})
        message["properties"]["delivery_info"].update(exchange=exchange, routing_key=routing_key)
        message["properties"]["delivery_tag"] = delivery_tag
        return message

    def put_transaction(self, exchange: str, targets: list[PutTarget]) -> None:
        """Put every target's messages, or none if any target channel lacks room (:class:`ChannelFullError`) or
        the broker lacks memory (:class:`BrokerFull`): its memory is nearly used up (:class:`MemoryGauge`), or it
        reached maxmemory itself (Redis refuses the script's first write, so PUT writes nothing)."""
        args: list = [len(targets)]
        nbytes = 0
        for t in targets:
            args += [t.queue, sizes_key(exchange), t.channel, t.capacity, t.events, len(t.messages)]
            for tag, events, envelope, body in t.messages:
                args += [tag, events, dumps(envelope), body]
                nbytes += len(args[-2]) + len(body) + MESSAGE_OVERHEAD_BYTES
        with self.conn_or_acquire() as client:
            nearly_full = self._memory.check(client, nbytes)
        if nearly_full:
            raise BrokerFull(nearly_full)
        try:
            full = self._run("PUT", args)
        except redis.exceptions.ResponseError as exc:
            if is_out_of_memory(exc):
                raise BrokerFull(str(exc)) from None
            raise
        if full:
            name, size, capacity = _text(full[0]), int(full[1]), int(full[2])
            needed = next(t.events for t in targets if t.channel == name)
            raise ChannelFullError(name, size, capacity, needed)

    def fetch(self, queue: str, max_events: int = 0) -> list[dict]:
        """Take the next message of ``queue``, and more while their events fit in ``max_events``: one take
        transaction.  They are in flight, held by this channel.  An empty list if the queue is empty."""
        reply = self._run("FETCH", [repr(time()), self.owner, 0, max_events, queue])
        if not reply:
            return []
        return [message_from_redis(reply[i], reply[i + 1]) for i in range(1, len(reply), 2)]

    def ack_tag(self, *tags: str) -> int:
        """Commit takes: delete the messages and release their events.  Returns how many were still ours."""
        return int(self._run("ACK", [self.owner, *tags])) if tags else 0

    def give_back(self, tag: str, front: bool = True) -> bool:
        """Roll back a take: the message returns to the front (or back) of its queue."""
        return bool(self._run("GIVEBACK", [tag, self.owner, "front" if front else "back"]))

    def touch(self, tags: list[str]) -> int:
        """Renew the leases of messages still in flight (by any consumer)."""
        return int(self._run("TOUCH", [repr(time()), *tags])) if tags else 0

    def reclaim(self) -> int:
        """Give back messages whose lease expired (their consumer died); the number given back."""
        returned = int(self._run("RECLAIM", [repr(time() - self.visibility_timeout), RECLAIM_LIMIT]))
        if returned:
            log.warning("gave back %d channel messages whose consumer stopped renewing them for %.0fs",
                        returned, self.visibility_timeout)
        return returned

    def peek(self, queue: str, limit: int) -> list[dict]:
        """Up to ``limit`` queued messages of ``queue``, oldest first, without taking them."""
        with self.conn_or_acquire() as client:
            tags = client.lrange(queue, -limit, -1)[::-1]
            with client.pipeline(transaction=False) as pipe:
                for tag in tags:
                    pipe.hmget(scripts.MSG_PREFIX + _text(tag), "p", "b")
                stored = pipe.execute()
        return [message_from_redis(p, b) for p, b in stored if p is not None]

    def channel_sizes(self, exchange: str) -> dict[str, int]:
        with self.conn_or_acquire() as client:
            return read_sizes(client, exchange)


class Transport(kombu_redis.Transport):
    Channel = Channel
    driver_name = "flumery-redis"


def install() -> None:
    """Make ``redis://`` URLs use this transport in this process.

    Setting Celery's ``broker_transport`` to this class would do for the workers, but then the broker URL that
    Celery and Flower print and parse becomes ``routing.transport:Transport://...``, which Flower cannot inspect.
    Every queue that is not a Flumery channel behaves exactly as with kombu's Redis transport.
    """
    from kombu import transport

    path = f"{__name__}:Transport"
    for scheme in ("redis", "rediss"):
        if transport.TRANSPORT_ALIASES.get(scheme) != path:
            transport.TRANSPORT_ALIASES[scheme] = path
            transport._transport_cache.pop(scheme, None)
