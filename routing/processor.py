"""The channel processor: interceptors, then the selector, then one put transaction (Flume's ChannelProcessor).

Contract of :meth:`ChannelProcessor.process` (given a :class:`~core.event.Batch`): when it returns, every event of
the batch that the interceptors
kept is in every **required** channel chosen for it, durably as the broker's persistence allows; only then may a
source acknowledge upstream.  If it raises, no required channel received anything from this call (the put is
one Redis transaction over all of them), so the source can retry the same batch without creating duplicates.
Optional channels are written after the required ones; their failures are logged and counted, never raised.
"""
from __future__ import annotations

import logging
from collections import defaultdict

from core import counters as names
from core.errors import BatchTooLarge, ChannelFullError, NotReplicated
from core.event import Batch
from core.keys import exchange_name, queue_name
from routing import codec
from routing.deadletter import DEAD_CAPACITY, DEAD_CHANNEL
from routing.groupcommit import GroupCommit
from routing.selectors import SelectorContext
from routing.transport import PutTarget, Transaction, connect

log = logging.getLogger(__name__)

DEAD_TRANSACTION_CAPACITY = 1000
GROUP_MAX_PUTS = 64                 # puts committed in one script call at most
GROUP_MAX_BYTES = 4 * 2 ** 20       # ... and their data's bytes (a single larger put goes alone)



class ChannelWriter:
    """Builds channel messages (Celery task messages carrying a batch) and puts them transactionally.

    Thread-safe: sources running in several threads share one writer, and their puts are committed in groups
    (:mod:`routing.groupcommit`): puts that arrive while one is in flight go to Redis together in one script call,
    each still a transaction of its own (put whole or not at all, its own ChannelFullError or NotReplicated).
    ``replicas``: how many Redis replicas must confirm a put into a durable (``file``) channel before :meth:`put`
    returns (Redis ``WAIT``, at most ``replica_timeout_ms``); 0 waits for none.
    """

    def __init__(self, celery_app, agent, broker_url: str, transport_options: dict, replicas: int = 0,
                 replica_timeout_ms: int = 1000):
        self.app = celery_app
        self.agent = agent
        self.replicas, self.replica_timeout_ms = replicas, replica_timeout_ms
        self.exchange = exchange_name(agent.name)
        self.connection = connect(broker_url, transport_options)
        self.channel = self.connection.default_channel
        self._templates: dict[str, codec.Template] = {}
        self._group = GroupCommit(self._commit, max_items=GROUP_MAX_PUTS, max_weight=GROUP_MAX_BYTES)

    def template(self, channel: str) -> codec.Template:
        """The template of the messages into ``channel`` (built once; a race builds the same one twice)."""
        found = self._templates.get(channel)
        if found is None:
            found = self._templates[channel] = codec.template(self.app, self.channel, self.exchange, channel)
        return found

    def limits(self, channel: str) -> tuple[int, int, int]:
        """(capacity, transactionCapacity, body byte limit or 0) of a channel of the agent, or of its dead-letter
        channel (no byte limit: a store rejecting everything must not block the channel it drains)."""
        if channel == DEAD_CHANNEL:
            return DEAD_CAPACITY, DEAD_TRANSACTION_CAPACITY, 0
        config = self.agent.channels[channel].config
        return config.capacity, config.transaction_capacity, config.body_byte_limit()

    def targets(self, batches: dict[str, Batch], message_events: int = 0) -> list[PutTarget]:
        out = []
        # A replicating selector hands every channel the same batch: split it, size its parts and encode them once;
        # the messages still get a tag each, and the PUT call carries the shared data once (see PutTarget.args).
        # Keyed by id(): every batch stays referenced by ``batches`` meanwhile, so no id is reused.
        split: dict[tuple[int, int], tuple[list[Batch], tuple[int, ...], list[bytes]]] = {}
        for name, batch in batches.items():
            capacity, step, byte_limit = self.limits(name)
            step = min(step, message_events) if message_events else step
            if len(batch) > capacity:
                raise BatchTooLarge(f"{len(batch)} events for channel '{name}' exceed its capacity ({capacity})")
            if (id(batch), step) not in split:
                split[id(batch), step] = self._split(batch, step)
            parts, sizes, data = split[id(batch), step]
            if byte_limit and sum(sizes) > byte_limit:
                raise BatchTooLarge(f"{sum(sizes)} bytes of event bodies for channel '{name}' exceed its byte "
                                    f"capacity ({byte_limit})")
            if len(data) < len(parts):          # encoded once the first channel found the batch within its limits
                data.extend(codec.encode_data(part) for part in parts)
            messages = [codec.ChannelMessage(codec.new_tag(), len(part), d) for part, d in zip(parts, data)]
            out.append(PutTarget(name, queue_name(self.agent.name, name), capacity, len(batch), self.template(name),
                                 messages, byte_limit, sizes))
        return out

    @staticmethod
    def _split(batch: Batch, step: int) -> tuple[list[Batch], tuple[int, ...], list[bytes]]:
        """``batch`` in parts of ``step`` events, their body bytes, and an empty list for their encoded data."""
        parts = [batch[i:i + step] for i in range(0, len(batch), step)]
        return parts, tuple(sum(map(len, part.bodies)) for part in parts), []

    def put(self, batches: dict[str, Batch], message_events: int = 0) -> None:
        """All of ``batches`` (channel -> batch) or nothing; raises ChannelFullError or BatchTooLarge, or
        NotReplicated when a durable channel's put is not confirmed by enough replicas.  A batch goes as channel
        messages of at most the channel's transactionCapacity events, and at most ``message_events`` if given.
        Returns once the put is committed (with other callers' puts, maybe: see the class docstring)."""
        transaction = self._transaction(batches, message_events)
        if transaction is not None:
            self._group.submit(*transaction)

    def put_many(self, puts: list[dict[str, Batch]], message_events: int = 0) -> list[Exception | None]:
        """:meth:`put` of each of ``puts``, each its own transaction, committed together (one round trip when they
        fit in one group): returns, per put, None once it is committed, or the exception :meth:`put` would raise.

        Puts bound for the same channels go as one transaction, their batches joined: one channel message where
        there would be one per put (less for Redis to hold, and for the sink to take).  If that transaction is
        refused for room, each of its puts is tried again on its own, so that the puts that fit are put and only
        the others refused, as if each had come alone."""
        outcomes: list[Exception | None] = [None] * len(puts)
        units: list[tuple[list[int], tuple[Transaction, int]]] = []
        for indexes in _same_channels(puts).values():
            self._plan(puts, indexes, message_events, units, outcomes)
        again = self._commit_units(units, outcomes)
        if again:
            units = []
            for i in again:
                self._plan(puts, [i], message_events, units, outcomes)
            self._commit_units(units, outcomes)
        return outcomes

    def _plan(self, puts: list[dict[str, Batch]], indexes: list[int], message_events: int,
              units: list, outcomes: list) -> None:
        """Add to ``units`` the transaction of the puts at ``indexes``: one joined transaction if there are several
        and they fit in their channels together, else one each; a put's own error (BatchTooLarge) goes to
        ``outcomes``."""
        if len(indexes) > 1:
            try:
                units.append((indexes, self._transaction(_joined([puts[i] for i in indexes]), message_events)))
                return
            except BatchTooLarge:             # too large together: each may still fit alone
                pass
        for i in indexes:
            try:
                transaction = self._transaction(puts[i], message_events)
            except Exception as exc:          # BatchTooLarge (or a bug): this put's own outcome
                outcomes[i] = exc
                continue
            if transaction is not None:
                units.append(([i], transaction))

    def _commit_units(self, units: list, outcomes: list) -> list[int]:
        """Commit ``units`` together; set each put's outcome; return the puts of joined transactions refused for
        room (nothing of them was put), to be tried again one by one."""
        again: list[int] = []
        results = self._group.submit_many([transaction for _, transaction in units]) if units else []
        for (indexes, _), result in zip(units, results, strict=True):
            if isinstance(result, ChannelFullError) and len(indexes) > 1:
                again += indexes
            elif isinstance(result, BaseException):
                for i in indexes:
                    outcomes[i] = result
        return sorted(again)

    def _transaction(self, batches: dict[str, Batch], message_events: int) -> tuple[Transaction, int] | None:
        """The put transaction of ``batches`` and its weight in bytes, None if they hold no event; raises
        BatchTooLarge."""
        batches = {name: batch for name, batch in batches.items() if len(batch)}
        if not batches:
            return None
        durable = any(self.agent.channels[name].cls.durable for name in batches if name in self.agent.channels)
        targets = self.targets(batches, message_events)
        weight = sum(len(m.data) for t in targets for m in t.messages)
        return Transaction(targets, self.replicas if durable else 0), weight

    def _commit(self, transactions: list[Transaction]) -> list[Exception | None]:
        return self.channel.put_transactions(self.exchange, transactions, replica_timeout_ms=self.replica_timeout_ms)

    def close(self) -> None:
        self.connection.release()


def _same_channels(puts: list[dict[str, Batch]]) -> dict[tuple[str, ...], list[int]]:
    """The indexes of ``puts``, by the channels their non-empty batches go to; puts with no event, or with an
    event without an id (a joined batch would lose the ids), alone under their own key."""
    out: dict[tuple, list[int]] = {}
    for i, batches in enumerate(puts):
        names = tuple(sorted(name for name, batch in batches.items() if len(batch)))
        if not names or any(batch.ids is None for batch in batches.values() if len(batch)):
            names = ("", i)
        out.setdefault(names, []).append(i)
    return out


def _joined(puts: list[dict[str, Batch]]) -> dict[str, Batch]:
    """One put of the events of ``puts`` (all to the same channels), in order."""
    out: dict[str, Batch] = {}
    for batches in puts:
        for name, batch in batches.items():
            if not len(batch):
                continue
            if name in out:
                out[name].extend(batch)
            else:
                out[name] = Batch(batch.bodies, batch.headers, batch.ids)
    return out


class ChannelProcessor:
    """Routes a source's batches into its channels; one per source."""

    def __init__(self, source_spec, writer: ChannelWriter, interceptors: list, metrics=None):
        self.source = source_spec
        selector = source_spec.selector
        self.selector = selector.cls(selector.name, selector.config, SelectorContext(tuple(source_spec.channels)))
        self.writer = writer
        self.interceptors = interceptors
        self.metrics = metrics

    def intercept(self, events: list) -> list:
        for interceptor in self.interceptors:
            events = interceptor.intercept_batch(events)
            if not events:
                break
        return events

    def route(self, batch: Batch) -> tuple[dict[str, Batch], dict[str, Batch]]:
        """Interceptors and selector: (required, optional) batches per channel."""
        if not self.interceptors and self.selector.uniform:
            # The fast path for raw lines: no event objects are built at all.
            required, optional = self.selector.select({})
            return {c: batch for c in required}, {c: batch for c in optional}
        events = self.intercept(batch.events())
        req: dict[str, list] = defaultdict(list)
        opt: dict[str, list] = defaultdict(list)
        for event in events:
            required, optional = self.selector.select(event.headers)
            for c in required:
                req[c].append(event)
            for c in optional:
                opt[c].append(event)
        return ({c: Batch.from_events(e) for c, e in req.items()},
                {c: Batch.from_events(e) for c, e in opt.items()})

    def put_limits(self) -> tuple[int, int]:
        """(events, body bytes; 0: no bound) that one put of this source may always carry: the smallest
        transactionCapacity and byte limit of its channels.  A source that has several batches ready at once may
        put them together within these (see :meth:`process`)."""
        limits = [self.writer.limits(name) for name in self.source.channels]
        byte_limits = [b for _, _, b in limits if b]
        return min(t for _, t, _ in limits), min(byte_limits, default=0)

    def process(self, batch: Batch, message_events: int = 0) -> None:
        """Intercept, route and put ``batch``; see the module docstring for the contract.  ``message_events``:
        the batch is several of the source's batches put together (one transaction, one round trip to the
        broker), each still its own channel message of at most that many events."""
        required, optional = self.route(batch.with_fresh_ids())
        self._count_put(names.EVENT_PUT_ATTEMPT, required)
        try:
            self.writer.put(required, message_events)
        except NotReplicated:
            self._count_put(names.REPLICA_WAIT_FAIL, required)
            raise
        self._count_put(names.EVENT_PUT_SUCCESS, required)
        self._put_optional(optional, message_events)

    def process_many(self, batches: list[Batch], message_events: int = 0) -> list[Exception | None]:
        """:meth:`process` of each of ``batches`` (e.g. HTTP requests that arrived together), each its own
        transaction with its own outcome, their puts committed together: returns, per batch, None once it is in
        every required channel, or the exception :meth:`process` would raise (nothing of that batch was put)."""
        outcomes: list[Exception | None] = [None] * len(batches)
        routed = {}
        for i, batch in enumerate(batches):
            try:
                routed[i] = self.route(batch.with_fresh_ids())
            except Exception as exc:          # an interceptor's failure is its own batch's
                outcomes[i] = exc
        for required, _ in routed.values():
            self._count_put(names.EVENT_PUT_ATTEMPT, required)
        errors = self.writer.put_many([required for required, _ in routed.values()], message_events)
        for (i, (required, optional)), error in zip(routed.items(), errors):
            if error is not None:
                if isinstance(error, NotReplicated):
                    self._count_put(names.REPLICA_WAIT_FAIL, required)
                outcomes[i] = error
                continue
            self._count_put(names.EVENT_PUT_SUCCESS, required)
            self._put_optional(optional, message_events)
        return outcomes

    def _put_optional(self, optional: dict[str, Batch], message_events: int) -> None:
        for name, part in optional.items():
            self._count_put(names.EVENT_PUT_ATTEMPT, {name: part})
            try:
                self.writer.put({name: part}, message_events)
            except (ChannelFullError, BatchTooLarge) as exc:
                log.warning("optional channel %s of source %s did not take %d events: %s",
                            name, self.source.name, len(part), exc)
            except Exception:   # optional channels never fail a put (Flume's ChannelProcessor)
                log.exception("optional channel %s of source %s failed", name, self.source.name)
            else:
                self._count_put(names.EVENT_PUT_SUCCESS, {name: part})

    def _count_put(self, counter: str, batches: dict[str, Batch]) -> None:
        if self.metrics is None:
            return
        for name, part in batches.items():
            self.metrics.group("CHANNEL", name).add(counter, len(part))
