"""Channel types: ``memory`` and ``file``, each a durable queue on the broker.

A Flume channel becomes one broker queue per channel (``flumery.<agent>.<channel>``) bound to the agent's
direct exchange (``flumery.<agent>``), never a fanout exchange (on Redis that is PUB/SUB and loses messages
while a consumer is down).  ``capacity`` bounds the events held in the channel (queued plus taken but not yet
committed by a sink); ``transactionCapacity`` bounds the events of one channel message, i.e. of one put or take
transaction.

Both are bounded in event body bytes too (Flume's ``byteCapacity``): a put that would take a channel over its
bound is refused like a put into a full channel (:class:`~core.errors.ChannelFullError`: HTTP 503, netcat stops
reading), and a batch whose bodies alone exceed it is refused for good (:class:`~core.errors.BatchTooLarge`).
Bytes are counted exactly, per event body (Flume rounds each body up to 100-byte slots); headers are not counted,
which is what Flume's ``byteCapacityBufferPercentage`` leaves room for.  Flume's default ``byteCapacity`` is 80 %
of the JVM heap; Flumery's channels live in Redis, so the defaults are fixed numbers: 128 MiB for ``memory``
(of which 80 % for bodies, by the default buffer of 20 %), 1 GiB for ``file``.  ``byteCapacity = 0`` means no
byte bound (Flume: about 200 GB).

``file`` means durable: on the embedded broker its writes are fsynced before the source acknowledges
(Redis ``appendfsync always``).  ``memory`` may trade that for speed (``appendfsync everysec``).  Flume's
file-channel storage settings (``checkpointDir``, ``dataDirs``, ...) are accepted so that existing files
load, and have no effect: the broker holds the data.

A channel is built as ``Channel(name, config, ChannelContext(agent))``; it names its queue and states its limits.
Its ``check`` hook checks that ``transactionCapacity`` fits in ``capacity``.
"""
from __future__ import annotations

from dataclasses import dataclass

from kombu import Exchange, Queue

from core.component import Component
from core.keys import exchange_name, queue_name
from core.options import non_negative, opt, positive

_BROKER_HOLDS_DATA = "the broker's persistence holds channel data"
MEMORY_BYTE_CAPACITY = 128 * 1024 * 1024
FILE_BYTE_CAPACITY = 1024 * 1024 * 1024


def _percentage(value: int) -> str | None:
    return None if 0 <= value < 100 else "must be from 0 to 99"


@dataclass(frozen=True)
class MemoryChannelConfig:
    capacity: int = opt("capacity", 100, check=positive, doc="most events held in the channel")
    transaction_capacity: int = opt("transactionCapacity", 100, check=positive,
                                    doc="most events in one put or take (one channel message)")
    keep_alive: str = opt("keep-alive", "3", inert="a full channel answers the source at once")
    byte_capacity: int = opt("byteCapacity", MEMORY_BYTE_CAPACITY, check=non_negative,
                             doc="most bytes held in the channel, event bodies plus the buffer below; 0: no bound "
                                 "(Flume: 80% of the JVM heap)")
    byte_capacity_buffer_percentage: int = opt("byteCapacityBufferPercentage", 20, check=_percentage,
                                               doc="percent of byteCapacity kept for headers: bodies may use "
                                                   "the rest")

    def body_byte_limit(self) -> int:
        """The most event body bytes the channel may hold (Flume's arithmetic, without its 100-byte slots);
        0: no bound."""
        if not self.byte_capacity:
            return 0
        return max(1, self.byte_capacity * (100 - self.byte_capacity_buffer_percentage) // 100)


@dataclass(frozen=True)
class FileChannelConfig:
    capacity: int = opt("capacity", 1_000_000, check=positive, doc="most events held in the channel")
    transaction_capacity: int = opt("transactionCapacity", 10_000, check=positive,
                                    doc="most events in one put or take (one channel message)")
    byte_capacity: int = opt("byteCapacity", FILE_BYTE_CAPACITY, check=non_negative,
                             doc="most event body bytes held in the channel; 0: no bound (Flumery; Flume's file "
                                 "channel is bounded by disk space)")
    checkpoint_dir: str = opt("checkpointDir", "", inert=_BROKER_HOLDS_DATA)
    data_dirs: str = opt("dataDirs", "", inert=_BROKER_HOLDS_DATA)
    use_dual_checkpoints: str = opt("useDualCheckpoints", "false", inert=_BROKER_HOLDS_DATA)
    backup_checkpoint_dir: str = opt("backupCheckpointDir", "", inert=_BROKER_HOLDS_DATA)
    checkpoint_interval: str = opt("checkpointInterval", "30000", inert=_BROKER_HOLDS_DATA)
    max_file_size: str = opt("maxFileSize", "2146435071", inert=_BROKER_HOLDS_DATA)
    minimum_required_space: str = opt("minimumRequiredSpace", "524288000", inert=_BROKER_HOLDS_DATA)
    keep_alive: str = opt("keep-alive", "3", inert="a full channel answers the source at once")
    use_log_replay_v1: str = opt("use-log-replay-v1", "false", inert=_BROKER_HOLDS_DATA)
    use_fast_replay: str = opt("use-fast-replay", "false", inert=_BROKER_HOLDS_DATA)
    checkpoint_on_close: str = opt("checkpointOnClose", "true", inert=_BROKER_HOLDS_DATA)

    def body_byte_limit(self) -> int:
        """The most event body bytes the channel may hold; 0: no bound."""
        return self.byte_capacity


@dataclass(frozen=True)
class ChannelContext:
    """What a channel gets: the agent it belongs to (its queue is named after it)."""

    agent: str


class Channel(Component):
    """Base of channel types: a durable broker queue with Flume's limits."""

    #: True when a put must be on disk before the source is acknowledged (``appendfsync always``).
    durable: bool = True

    @classmethod
    def check(cls, config, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        if config.transaction_capacity > config.capacity:
            return [("transactionCapacity",
                     f"must not exceed capacity ({config.transaction_capacity} > {config.capacity})")]
        return []

    @property
    def queue(self) -> str:
        return queue_name(self.context.agent, self.name)

    @property
    def capacity(self) -> int:
        return self.config.capacity

    @property
    def transaction_capacity(self) -> int:
        return self.config.transaction_capacity

    @property
    def byte_limit(self) -> int:
        """The most event body bytes the channel may hold; 0: no bound."""
        return self.config.body_byte_limit()


class MemoryChannel(Channel):
    """Fast channel: the embedded broker fsyncs its log once a second."""

    Config = MemoryChannelConfig
    durable = False


class FileChannel(Channel):
    """Durable channel: the embedded broker fsyncs every write before the source is acknowledged."""

    Config = FileChannelConfig
    durable = True



def channel_queues(agent: str, channels) -> list[Queue]:
    """One durable queue per channel, bound by the channel name on the agent's direct exchange."""
    exchange = Exchange(exchange_name(agent), type="direct", durable=True)
    return [Queue(queue_name(agent, c), exchange, routing_key=c, durable=True) for c in channels]
