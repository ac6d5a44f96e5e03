"""Flumery's kombu transport: kombu's Redis transport with transactional channel queues.

Used by Celery as ``broker_transport`` (see :mod:`app.celery_app`); the broker URL stays ``redis://...``.
Flumery's channel queues (``flumery.<agent>.<channel>``) are stored as described in :mod:`routing.scripts` and
every operation on them is one Lua script; every other queue (Celery's remote-control replies, say) behaves
exactly as in kombu.  Key names come from :mod:`core.keys`; kombu's ``global_keyprefix`` transport option is put
in front of every key Flumery touches, as kombu puts it in front of its own.

What changes for channel queues, and why:

1. **Taking is atomic** (FETCH): a message is popped and recorded as in flight in one step, so ``kill -9`` of a
   worker at any instant leaves it queued or in flight, and RECLAIM gives in-flight messages back once their
   lease (the visibility timeout) expires.  Idle consumers block on the channels' bells, not on the queues.
2. **Acknowledging releases capacity** (ACK), only for the consumer that holds the message.
3. **Putting is one capacity-checked transaction over all target channels** (:meth:`Channel.put_transaction`).
4. **Leases can be renewed** (:meth:`Channel.touch`), so a slow store does not cause a second delivery.
5. **A channel's byte capacity** is checked and counted in the same put, beside its event capacity.
6. The message is stored once and never copied between Redis keys (kombu copies it into its ``unacked`` hash
   on every delivery, which with ``appendfsync always`` doubles the bytes written and fsynced), and compactly:
   only its events' data (raw msgpack, not base64 inside JSON), its tag and counts; the ~1 KB Celery envelope is
   a template stored once per channel (:mod:`routing.codec`), put back around the data when the message is taken.
   A one-event message costs Redis ~250 bytes instead of ~1.9 KB.
7. **Puts are committed in groups** (:meth:`Channel.put_transactions`): one script call carries the puts of
   several callers, each a transaction on its own.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from time import monotonic, time
from urllib.parse import urlsplit

import redis
import redis.sentinel
from kombu import Connection, transport
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base as virtual
from kombu.utils.json import loads

from core import keys
from core.errors import BrokerOutOfMemory, ChannelFullError, NotReplicated
from core.keys import bell_key, bytes_key, is_channel_queue, message_key, prefixed, sizes_key
from core.settings import CLUSTER_SCHEME
from routing import codec, scripts, shared_data

log = logging.getLogger(__name__)

RECLAIM_LIMIT = 1000
POOL_WAIT_S = 10.0       # a put waits this long for a pooled connection; longer means the broker is stuck
# Puts stop this far short of the broker's maxmemory (a fraction of it, at least a few MiB): the rest is for what
# drains it (a worker's start and connections, bindings, locks, leases, metrics), since Redis refuses those writes
# too once maxmemory is reached (a Celery worker does not even start then).
PUT_HEADROOM_FRACTION = 0.1
PUT_HEADROOM_MIN_BYTES = 2 * 1024 * 1024
MEMORY_CHECK_INTERVAL_S = 1.0
MESSAGE_OVERHEAD_BYTES = 400      # a stored message's keys, hash and list entry, beyond its event bodies (~250)
TEMPLATE_CACHE_SIZE = 1000
_TEMPLATES: dict[str, codec.Template] = {}     # id -> template, shared by the process's channels (see template())


def _read_counts(client, key: str) -> dict[str, int]:
    return {_text(k): int(v) for k, v in client.hgetall(key).items()}


def read_sizes(client, exchange: str, key_prefix: str = "") -> dict[str, int]:
    """Events held per channel of the agent whose exchange is ``exchange``.

    ``client`` is a plain redis-py client; ``key_prefix`` is kombu's ``global_keyprefix`` in use, if any.
    """
    return _read_counts(client, prefixed(key_prefix, sizes_key(exchange)))


def read_bytes(client, exchange: str, key_prefix: str = "") -> dict[str, int]:
    """Event body bytes held per channel of the agent whose exchange is ``exchange`` (as :func:`read_sizes`)."""
    return _read_counts(client, prefixed(key_prefix, bytes_key(exchange)))


def message_from_redis(envelope: bytes, body: bytes) -> dict:
    """The kombu message dict of a channel message stored whole (as before compact messages): its envelope with
    the raw body put back.

    The body carries no ``body_encoding``, so kombu hands it to Celery's msgpack deserializer unchanged.
    Such a dict is never JSON-dumped again: every path that moves a channel message moves only its tag.
    """
    payload = loads(envelope)
    payload["body"] = body
    return payload


def message_from_template(template: codec.Template, tag: str, events: int, data: bytes) -> dict:
    """The kombu message dict of a compact channel message (see :mod:`routing.codec`)."""
    payload = codec.expand(template.envelope, tag, events)
    payload["body"] = b"".join((template.head, data, template.tail))       # one copy of the data, not two
    return payload


@dataclass(frozen=True)
class PutTarget:
    """Messages bound for one channel within a put transaction."""

    channel: str                                # channel name (routing key, and field in the sizes hash)
    queue: str
    capacity: int
    events: int
    template: codec.Template                    # what the channel's messages share
    messages: list                              # codec.ChannelMessage: (tag, events, data)
    byte_capacity: int = 0                      # most event body bytes the channel may hold; 0: no bound
    message_bytes: tuple[int, ...] = ()         # the event body bytes of each message (none given: 0 each)

    @property
    def bytes(self) -> int:
        return sum(self.message_bytes)

    def args(self, templates_sent: set[str], shared: dict[int, int], argc: int) -> list:
        """This target's part of the PUT script's ARGV (see :mod:`routing.scripts`), to follow ``argc`` arguments
        already in it.  The template's strings only if not in ``templates_sent`` yet (the ids given earlier in the
        same call), which it is added to.  ``shared``: the data objects that several messages of the call carry
        (by ``id``), each mapped to its 1-based ARGV index once given (0 before): the first message gives the data,
        the others refer to it."""
        sizes = self.message_bytes or (0,) * len(self.messages)
        t = self.template
        out: list = [self.channel, self.capacity, self.byte_capacity, self.events, self.bytes, len(self.messages),
                     t.id, *(("", "", "") if t.id in templates_sent else (t.envelope, t.head, t.tail))]
        templates_sent.add(t.id)
        for (tag, events, data), size in zip(self.messages, sizes, strict=True):
            at = shared.get(id(data))
            if at is None:
                out += [tag, events, size, data, 0]
            elif at:
                out += [tag, events, size, "", at]
            else:
                at = shared[id(data)] = argc + len(out) + 4      # ARGV is 1-based: data is the 4th of the 5
                out += [tag, events, size, data, at]
        return out


@dataclass(frozen=True)
class Transaction:
    """One caller's put: its targets, all put or none, and how many Redis replicas must confirm it."""

    targets: list[PutTarget]
    replicas: int = 0


def _owner_token() -> str:
    return f"{owner_prefix(os.getpid())}{uuid.uuid4().hex[:8]}"


def owner_prefix(pid: int) -> str:
    """The start of the holder token of every message taken by process ``pid`` on this host."""
    return f"{socket.gethostname()}:{pid}:"


class MemoryGauge:
    """Whether the broker is too full for puts, from ``INFO memory``.  Read again once the puts since the last reading
    may have used half the room that was left (or after :data:`MEMORY_CHECK_INTERVAL_S`): so the readings come
    closer together as the broker fills, and puts overshoot the mark by about one batch at most."""

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
            headroom = max(limit * PUT_HEADROOM_FRACTION, PUT_HEADROOM_MIN_BYTES)
            room = limit - headroom - used if limit else float("inf")
            self.budget = room / 2 - nbytes
            self.checked_at = monotonic()
            self.refusal = (None if room >= nbytes else
                            f"{used / 2 ** 20:.1f} of {limit / 2 ** 20:.1f} MiB used; puts stop "
                            f"{headroom / 2 ** 20:.1f} MiB short of maxmemory")
        return self.refusal


def _out_of_memory(exc: Exception) -> bool:
    """Redis refused a write at its maxmemory: OutOfMemoryError for a command, a script error wrapping the same
    '-OOM' reply for EVAL (a script is refused before its first write, so it wrote nothing)."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM command not allowed" in str(exc)


def _put_outcome(transaction: Transaction, full: list, confirmed: int, timeout_ms: int) -> Exception | None:
    """What one transaction of a PUT call comes to: the script's answer for it and the replicas' confirmation."""
    if full:
        name, unit, held, capacity = _text(full[0]), _text(full[1]), int(full[2]), int(full[3])
        target = next(t for t in transaction.targets if t.channel == name)
        return ChannelFullError(name, held, capacity, target.events if unit == "events" else target.bytes, unit=unit)
    if confirmed < transaction.replicas:
        return NotReplicated(f"the put reached the Redis master but {confirmed} of the {transaction.replicas} "
                             f"replica(s) required confirmed it within {timeout_ms} ms")
    return None


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
        self._fetching: list[str] = []      # the queues of the FETCH in progress, in the order sent
        self._script_lock = threading.Lock()
        self._scripts: dict[str, object] = {}
        self._memory = MemoryGauge()
        self._plain: redis.Redis | None = None      # see _plain_client
        # Take with this process's share token (fetch, ack_and_fetch): set by a process that drains several
        # channels, so that a batch replicated into them crosses from Redis once (routing.shared_data).
        self.shares_data = False

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
        # Sent on the raw connection, so kombu's prefixing client does not see these: the keys are prefixed here.
        if self._waiting:
            wait_s = self.brpop_timeout if timeout is None else timeout
            conn.send_command("BRPOP", *[self._key(bell_key(q)) for q in queues], wait_s or 0)
        else:
            self._rotation = (self._rotation + 1) % len(queues)
            self._fetching = list(queues)       # FETCH answers with a position in this list
            fetch_keys = self._fetch_keys(self._fetching)
            conn.send_command("EVAL", scripts.FETCH, len(fetch_keys), *fetch_keys,
                              repr(time()), self.owner, self._rotation, 0)

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
            queue, payload = self._fetching[int(reply[0]) - 1], self.stored_message(reply[1], reply[2])
            self._fetched_tags[payload["properties"]["delivery_tag"]] = True
            self._queue_cycle.rotate(queue)
            self.connection._deliver(payload, queue)
            return True
        finally:
            self._in_poll = None

    def _purge(self, queue):
        if is_channel_queue(queue):
            return int(self._run("PURGE", [self._namespace, self._key(queue)], []))
        return super()._purge(queue)

    def _get_pool(self, asynchronous=False):
        """kombu's pool raises 'Too many connections' once ``max_connections`` (10) are in use, and the sources'
        threads share this channel: a put waits for a free connection instead (up to POOL_WAIT_S, then a
        ConnectionError as for a broker that is down).  The asynchronous pool is the consumer's own."""
        if asynchronous:
            return super()._get_pool(asynchronous)
        params = self._connparams()
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        return redis.BlockingConnectionPool(timeout=POOL_WAIT_S, **params)

    # -- keys ------------------------------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        """The Redis key of a Flumery key name: kombu's ``global_keyprefix`` (if any) in front."""
        return prefixed(self.global_keyprefix, name)

    @property
    def _namespace(self) -> str:
        """The messages' key namespace, KEYS[1] of every script that derives message keys from tags."""
        return self._key(keys.MESSAGE_PREFIX)

    @property
    def _inflight(self) -> str:
        return self._key(keys.INFLIGHT)

    def _fetch_keys(self, queues: list[str]) -> list[str]:
        out = [self._namespace, self._inflight]
        for queue in queues:
            out += [self._key(queue), self._key(bell_key(queue))]
        return out

    def _plain_client(self) -> redis.Redis:
        """A client on this channel's pool that sends keys as given.  Flumery prefixes its keys itself: kombu's
        prefixing client would prefix the first key of a script a second time, and not HGETALL, LRANGE or HMGET.
        Kept while the pool stays the same: building a redis-py client costs ~0.2 ms of CPU (its table of reply
        callbacks), as much as a whole put's Python work; a client over a pool is safe to share between threads."""
        pool = self.pool
        client = self._plain
        if client is None or client.connection_pool is not pool:
            client = self._plain = redis.Redis(connection_pool=pool)
        return client

    # -- the transactions used by sources and sink runners --------------------------------------------------
    def _script(self, name: str, client: redis.Redis):
        with self._script_lock:
            script = self._scripts.get(name)
            if script is None:
                script = self._scripts[name] = client.register_script(getattr(scripts, name))
        return script

    def _run(self, name: str, script_keys: list[str], args: list):
        """Run one of :mod:`routing.scripts` on a pooled connection (never the one a BRPOP may wait on)."""
        client = self._plain_client()
        return self._script(name, client)(keys=script_keys, args=args, client=client)

    def _run_replicated(self, name: str, script_keys: list[str], args: list, replicas: int, timeout_ms: int):
        """Run a script, then Redis ``WAIT`` on the same connection (a pipeline holds one): returns the script's
        reply and how many replicas confirmed every write made so far on that connection."""
        client = self._plain_client()
        script = self._script(name, client)
        with client.pipeline(transaction=False) as pipe:
            script(keys=script_keys, args=args, client=pipe)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            reply, confirmed = pipe.execute()
        return reply, int(confirmed)

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

    def put_transaction(self, exchange: str, targets: list[PutTarget], replicas: int = 0,
                        replica_timeout_ms: int = 1000) -> None:
        """Put every target's messages, or none (one transaction of :meth:`put_transactions`); raises its error."""
        [error] = self.put_transactions(exchange, [Transaction(targets, replicas)], replica_timeout_ms)
        if error is not None:
            raise error

    def put_transactions(self, exchange: str, transactions: list[Transaction],
                         replica_timeout_ms: int = 1000) -> list[Exception | None]:
        """Put several callers' transactions in one script call (group commit): each is put whole or not at all,
        independently of the others.  Returns, per transaction, None if it was put, or why not:
        :class:`ChannelFullError` if one of its channels lacks room in events or in body bytes (nothing of it was
        written), :class:`NotReplicated` if it was put but fewer than its ``replicas`` Redis replicas confirmed it
        within ``replica_timeout_ms`` (it may be on the master only: a failover could lose it, so it must not be
        acknowledged).  Raises, for all of them at once, :class:`BrokerOutOfMemory` when the broker's memory is
        nearly used up (:class:`MemoryGauge`) or Redis reached maxmemory (it refuses the script before its first
        write), and Redis errors (a broker that is down)."""
        targets = [t for x in transactions for t in x.targets]
        nearly_full = self._memory.check(self._plain_client(), sum(
            t.bytes + len(t.messages) * MESSAGE_OVERHEAD_BYTES for t in targets))
        if nearly_full:
            raise BrokerOutOfMemory(nearly_full)
        script_keys = [self._namespace, self._key(sizes_key(exchange)), self._key(bytes_key(exchange))]
        args: list = [len(transactions)]
        sent: set[str] = set()
        # The same data object in several messages: a batch replicated into several channels (the objects stay
        # alive in ``transactions`` all along, so their ids do not change meaning).
        carried = Counter(id(m.data) for t in targets for m in t.messages)
        shared = {key: 0 for key, n in carried.items() if n > 1}
        for x in transactions:
            args.append(len(x.targets))
            for t in x.targets:
                script_keys += [self._key(t.queue), self._key(bell_key(t.queue))]
                args += t.args(sent, shared, len(args))
        replicas = max(x.replicas for x in transactions)
        try:
            if replicas > 0:
                results, confirmed = self._run_replicated("PUT", script_keys, args, replicas, replica_timeout_ms)
            else:
                results, confirmed = self._run("PUT", script_keys, args), 0
        except redis.exceptions.ResponseError as exc:
            if _out_of_memory(exc):
                raise BrokerOutOfMemory() from None
            raise
        return [_put_outcome(x, full, confirmed, replica_timeout_ms) for x, full in zip(transactions, results,
                                                                                         strict=True)]

    def fetch(self, queue: str, max_events: int = 0) -> list[dict]:
        """Take the next message of ``queue``, and more while their events fit in ``max_events``: one take
        transaction.  They are in flight, held by this channel.  An empty list if the queue is empty."""
        _, taken = self._take("FETCH", queue, [repr(time()), self.owner, 0, max_events, self._share_token()])
        return taken

    def _share_token(self) -> str:
        return shared_data.share_token() if self.shares_data else ""

    def _take(self, script: str, queue: str, args: list) -> tuple[list | None, list[dict]]:
        """Run FETCH or ACKFETCH on ``queue``: (its reply, the messages it took).  A message whose shared data is
        gone (it was acknowledged by another holder since: this take lost its lease) is left out."""
        # Only a take with the share token can bring data that another take of this process waits for.
        with shared_data.PROCESS.taking() if self.shares_data else nullcontext() as ticket:
            reply = self._run(script, self._fetch_keys([queue]), args)
            taken = (self.stored_message(reply[i], reply[i + 1], ticket) for i in range(1, len(reply or ()), 2))
            return reply, [message for message in taken if message is not None]

    def ack_and_fetch(self, queue: str, tags: list[str], max_events: int) -> tuple[int, list[dict]]:
        """:meth:`ack_tag` of ``tags``, then :meth:`fetch` from ``queue``, in one transaction: (how many were
        still ours and are acknowledged, the messages taken)."""
        reply, taken = self._take("ACKFETCH", queue, [repr(time()), self.owner, max_events, self._share_token(),
                                                      *tags])
        return int(reply[0]), taken

    def ack_tag(self, *tags: str) -> int:
        """Commit takes: delete the messages and release their events.  Returns how many were still ours."""
        return int(self._run("ACK", [self._namespace, self._inflight], [self.owner, *tags])) if tags else 0

    def give_back(self, tag: str, front: bool = True) -> bool:
        """Roll back a take: the message returns to the front (or back) of its queue."""
        return bool(self._run("GIVEBACK", [self._namespace, self._inflight],
                              [tag, self.owner, "front" if front else "back", keys.BELL_SUFFIX]))

    def give_back_held_by(self, prefix: str) -> int:
        """Give back, to the front of their queues, every message held by a holder whose token starts with
        ``prefix`` (see :func:`owner_prefix`): the messages of a consumer known to be dead, without waiting for
        their leases to expire.  Returns how many were given back."""
        client = self._plain_client()
        tags = [_text(t) for t in client.zrange(self._inflight, 0, -1)]
        with client.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.hget(self._key(message_key(tag)), "o")
            owners = [_text(o) if o is not None else None for o in pipe.execute()]
        # GIVEBACK checks the holder again inside Redis: a message acknowledged or reclaimed meanwhile is left alone.
        return sum(int(self._run("GIVEBACK", [self._namespace, self._inflight],
                                 [tag, owner, "front", keys.BELL_SUFFIX]))
                   for tag, owner in zip(tags, owners) if owner is not None and owner.startswith(prefix))

    def touch(self, tags: list[str]) -> int:
        """Renew the leases of messages still in flight (by any consumer)."""
        return int(self._run("TOUCH", [self._inflight], [repr(time()), *tags])) if tags else 0

    def reclaim(self) -> int:
        """Give back messages whose lease expired (their consumer died); the number given back."""
        returned = int(self._run("RECLAIM", [self._namespace, self._inflight],
                                 [repr(time() - self.visibility_timeout), RECLAIM_LIMIT, keys.BELL_SUFFIX]))
        if returned:
            log.warning("gave back %d channel messages whose consumer stopped renewing them for %.0fs",
                        returned, self.visibility_timeout)
        return returned

    def peek(self, queue: str, limit: int) -> list[dict]:
        """Up to ``limit`` queued messages of ``queue``, oldest first, without taking them."""
        client = self._plain_client()
        items = client.lrange(self._key(queue), -limit, -1)[::-1]
        with client.pipeline(transaction=False) as pipe:
            for item in items:
                if item[:1] != b"\0":          # a small message is queued whole (see routing.scripts)
                    pipe.hmget(self._key(message_key(_text(item))), "p", "b", "t", "n", "a", "d")
            stored = iter(pipe.execute())
        out = []
        for item in items:
            if item[:1] == b"\0":
                _, tag, template, events, _, data = item.split(b"\0", 5)
                out.append(message_from_template(self.template(_text(template)), _text(tag), int(events), data))
                continue
            p, b, t, n, a, d = next(stored)
            if a is None and d is not None:     # data shared with other messages (its key is stored whole)
                a = client.hget(d, "a")
            if p is not None:
                out.append(message_from_redis(p, b))
            elif t is not None and a is not None:         # None: purged since
                out.append(message_from_template(self.template(_text(t)), _text(item), int(n), a))
        return out

    def stored_message(self, envelope: bytes, body: bytes, ticket: int | None = None) -> dict | None:
        """The kombu message dict of a message FETCH returned (compact, or stored whole by an earlier version).
        None if its data was sent only as a key (a take with a share token, ``ticket`` its ticket) and is gone from
        this process and from Redis (see :meth:`_take`)."""
        if envelope[:1] != b"\0":
            return message_from_redis(envelope, body)
        _, template, tag, events, *shared = envelope.split(b"\0")
        if shared:
            if body:
                # The other messages referring to the data: the takes of this process that may still ask for it.
                shared_data.PROCESS.keep(shared[0], body, int(shared[1]) - 1)
            else:
                body = shared_data.PROCESS.get(shared[0], lambda key: self._plain_client().hget(key, "a"), ticket)
                if body is None:
                    log.warning("message %s: its shared data is gone (acknowledged by another holder after this "
                                "take's lease ran out); leaving it", tag.decode())
                    return None
        return message_from_template(self.template(template.decode()), tag.decode(), int(events), body)

    def template(self, template_id: str) -> codec.Template:
        """A channel template stored by PUT (read once per process: templates are content-addressed, never change)."""
        found = _TEMPLATES.get(template_id)
        if found is None:
            envelope, head, tail = self._plain_client().hmget(self._key(keys.TEMPLATE_PREFIX + template_id),
                                                              "e", "h", "t")
            if envelope is None:
                raise LookupError(f"channel message template {template_id} is missing from Redis")
            if len(_TEMPLATES) >= TEMPLATE_CACHE_SIZE:
                _TEMPLATES.clear()
            found = _TEMPLATES[template_id] = codec.Template(template_id, envelope.decode(), head, tail)
        return found

    def channel_sizes(self, exchange: str) -> dict[str, int]:
        """Events held per channel of the agent whose exchange is ``exchange``."""
        return read_sizes(self._plain_client(), exchange, self.global_keyprefix)

    def channel_bytes(self, exchange: str) -> dict[str, int]:
        """Event body bytes held per channel of the agent whose exchange is ``exchange``."""
        return read_bytes(self._plain_client(), exchange, self.global_keyprefix)


class Transport(kombu_redis.Transport):
    Channel = Channel
    driver_name = "flumery-redis"


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """Flumery's channel transactions on the master that Redis Sentinel names (``sentinel://`` URLs): kombu's
    SentinelChannel finds the master (and follows a failover) through a Sentinel-managed connection pool."""

    from_transport_options = Channel.from_transport_options + (
        "master_name", "min_other_sentinels", "sentinel_kwargs", "sentinel_fanout_compat")

    def _get_pool(self, asynchronous=False):
        # The master's pool comes from Sentinel (and follows a failover).  redis-py has no blocking variant of it,
        # so Settings gives Sentinel deployments a larger max_connections instead of Channel's blocking pool.
        return kombu_redis.SentinelChannel._get_pool(self, asynchronous)


class SentinelTransport(Transport):
    Channel = SentinelChannel
    default_port = 26379
    driver_name = "flumery-redis-sentinel"


# -- Redis Cluster -----------------------------------------------------------------------------------------------
# Replies that mean "this node no longer serves the agent's slot" (a replica was promoted, the slot moved) or "the
# cluster is failing over": the connection is dropped and the next one asks the cluster again where the slot is.
CLUSTER_REDIRECTS = (redis.exceptions.MovedError, redis.exceptions.AskError, redis.exceptions.TryAgainError,
                     redis.exceptions.ClusterDownError, redis.exceptions.MasterDownError,
                     redis.exceptions.ReadOnlyError)


class SlotLocator:
    """Finds the master that owns one hash slot of a Redis Cluster (CLUSTER SLOTS), asking the seed nodes and
    every node the last answer named, the last node that answered first."""

    def __init__(self, seeds: list[tuple[str, int]], slot: int, password: str | None = None,
                 username: str | None = None, timeout_s: float = 2.0):
        self.nodes = list(dict.fromkeys(seeds))
        self.slot = slot
        self.auth = {"password": password, "username": username}
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    def master(self) -> tuple[str, int]:
        """The (host, port) of the slot's master now; ConnectionError if no node answers or names one."""
        with self._lock:
            nodes = list(self.nodes)
        problems = []
        for host, port in nodes:
            try:
                found, known = self._ask(host, port)
            except redis.exceptions.AuthenticationError:
                raise                             # a wrong password: for good (app.broker.reachable says so)
            except redis.exceptions.RedisError as exc:
                problems.append(f"{host}:{port}: {exc}")
                continue
            with self._lock:                  # the node that answered first next time; learn the rest
                self.nodes = [(host, port)] + [n for n in dict.fromkeys(self.nodes + known) if n != (host, port)]
            if found:
                return found
            problems.append(f"{host}:{port}: no master serves slot {self.slot}")
        raise redis.exceptions.ConnectionError(
            f"no Redis Cluster node named the master of hash slot {self.slot} ({'; '.join(problems)})")

    def _ask(self, host: str, port: int) -> tuple[tuple[str, int] | None, list[tuple[str, int]]]:
        client = redis.Redis(host=host, port=port, socket_timeout=self.timeout_s,
                             socket_connect_timeout=self.timeout_s, **self.auth)
        try:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        finally:
            client.close()
        found, known = None, []
        for start, end, *nodes in ranges:
            addresses = [(_text(n[0]) or host, int(n[1])) for n in nodes]
            known += addresses
            if int(start) <= self.slot <= int(end):
                found = addresses[0]             # the first node of a range is its master
        return found, known


class ClusterConnection(redis.Connection):
    """A connection to whichever master owns the agent's hash slot: every (re)connect asks the cluster where that
    is, so a failover (replica promoted) is followed by reconnecting.  A redirection reply (MOVED, ASK, CLUSTERDOWN,
    TRYAGAIN, READONLY) drops the connection and is raised as a ConnectionError, which every caller already treats
    as "the broker is unreachable, try again" (sources answer 503 or stop reading, kombu reconnects)."""

    def __init__(self, *args, slot_locator: SlotLocator, **kwargs):
        super().__init__(*args, **kwargs)
        self.slot_locator = slot_locator

    def _connect(self):
        # The socket-level connect, under every path that (re)connects (and each of redis-py's retries of it).
        self.host, self.port = self.slot_locator.master()
        return super()._connect()

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except CLUSTER_REDIRECTS as exc:
            self.disconnect()
            raise redis.exceptions.ConnectionError(
                f"the Redis Cluster node {self.host}:{self.port} no longer serves hash slot "
                f"{self.slot_locator.slot}: {exc}") from exc


def cluster_seeds(urls: list[str]) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """The seed nodes of ``redis-cluster://[user:password@]h1:p1;redis-cluster://h2:p2`` and its credentials."""
    seeds = []
    for one in urls:
        split = urlsplit(one)
        seeds.append((split.hostname or "127.0.0.1", split.port or ClusterTransport.default_port))
    first = urlsplit(urls[0])
    return seeds, first.username or None, first.password


def slot_of_prefix(key_prefix: str) -> int:
    """The hash slot of every key under ``key_prefix`` (which holds a hash tag: see core.settings)."""
    return redis.crc.key_slot(key_prefix.encode()) if key_prefix else 0


class ClusterChannel(Channel):
    """Flumery's channel transactions on a Redis Cluster (``redis-cluster://`` URLs).

    Every key this channel (and kombu under it) touches starts with ``global_keyprefix``, which holds a hash tag
    (``{a1}.``, see :meth:`core.settings.Settings.redis_key_prefix`): all of them lie in one hash slot, owned by
    one master.  So the channel talks to that master with ordinary connections (:class:`ClusterConnection`),
    every script stays one atomic transaction on it, ``WAIT`` counts that master's replicas, and kombu's own
    keys, bindings and pub/sub (Celery events, remote control; PUBLISH reaches every node of a cluster) work
    unchanged.  Different agents have different tags, so their slots spread over the masters.
    """

    connection_class = ClusterConnection

    def _connparams(self, asynchronous=False):
        params = super()._connparams(asynchronous)
        conninfo = self.connection.client
        seeds, _, _ = cluster_seeds(conninfo.alt or [conninfo.as_uri(include_password=True)])
        params["slot_locator"] = SlotLocator(seeds, slot_of_prefix(self.global_keyprefix),
                                             params.get("password"), params.get("username"))
        if params.get("db"):
            raise ValueError("a Redis Cluster has only database 0: drop the /N from the redis-cluster:// URL")
        return params


class ClusterTransport(Transport):
    Channel = ClusterChannel
    driver_name = "flumery-redis-cluster"


def connect(url: str, transport_options: dict) -> Connection:
    """A kombu connection to the broker at ``url`` through Flumery's transport (the Sentinel one for
    ``sentinel://`` URLs, the Cluster one for ``redis-cluster://``), whether or not :func:`install` ran in this
    process."""
    cls = (SentinelTransport if url.startswith("sentinel://") else
           ClusterTransport if url.startswith(CLUSTER_SCHEME + "://") else Transport)
    return Connection(url, transport=cls, transport_options=transport_options)


def redis_client(url: str, transport_options: dict) -> redis.Redis:
    """A plain redis-py client for ``url``: ``redis://``/``rediss://``, the current master behind
    ``sentinel://h1:p1;sentinel://h2:p2/db`` (``transport_options["master_name"]``), or the master owning the
    agent's hash slot behind ``redis-cluster://h1:p1;redis-cluster://h2:p2`` (the slot of
    ``transport_options["global_keyprefix"]``; without one, slot 0: enough to ping), following failovers."""
    if url.startswith(CLUSTER_SCHEME + "://"):
        seeds, username, password = cluster_seeds(url.split(";"))
        locator = SlotLocator(seeds, slot_of_prefix(transport_options.get("global_keyprefix", "")), password,
                              username)
        return redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=ClusterConnection, slot_locator=locator, username=username, password=password,
            socket_timeout=30, socket_connect_timeout=5))
    if not url.startswith("sentinel://"):
        return redis.Redis.from_url(url)
    hosts, db = [], 0
    for one in url.split(";"):
        split = urlsplit(one)
        hosts.append((split.hostname or "127.0.0.1", split.port or SentinelTransport.default_port))
        if split.path.strip("/").isdigit():
            db = int(split.path.strip("/"))
    password = urlsplit(url.split(";")[0]).password
    manager = redis.sentinel.Sentinel(hosts, socket_timeout=5, password=password)
    return manager.master_for(transport_options["master_name"], db=db, password=password, socket_timeout=30)


def install() -> None:
    """Make ``redis://`` (and ``sentinel://``, ``redis-cluster://``) URLs use this transport in this process.

    Setting Celery's ``broker_transport`` to this class would do for the workers, but then the broker URL that
    Celery and Flower print and parse becomes ``routing.transport:Transport://...``, which Flower cannot inspect.
    Every queue that is not a Flumery channel behaves exactly as with kombu's Redis transport.
    """
    for scheme, cls in (("redis", "Transport"), ("rediss", "Transport"), ("sentinel", "SentinelTransport"),
                        (CLUSTER_SCHEME, "ClusterTransport")):
        path = f"{__name__}:{cls}"
        if transport.TRANSPORT_ALIASES.get(scheme) != path:
            transport.TRANSPORT_ALIASES[scheme] = path
            transport._transport_cache.pop(scheme, None)
