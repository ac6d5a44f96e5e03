"""Every Redis key Flumery uses, named in one place for the Python code and the Lua scripts (:mod:`routing.scripts`).

The keyspace, as Flumery names it (one Redis database may hold many agents):

| key | Redis type | holds | built by |
|---|---|---|---|
| ``flumery.<agent>`` | (none) | the agent's direct exchange (a kombu name, no key) | :func:`exchange_name` |
| ``flumery.<agent>.<channel>`` | list | a channel queue: the tags of its messages | :func:`queue_name` |
| ``flumery.<agent>.__dead__`` | list | the dead-letter channel's queue | :func:`dead_queue` |
| ``<queue>:bell`` | list | a wake-up for consumers blocked on the queue | :func:`bell_key` |
| ``flumery.<agent>:sizes`` | hash | events held per channel (queued plus in flight) | :func:`sizes_key` |
| ``flumery.<agent>:bytes`` | hash | event body bytes held per channel | :func:`bytes_key` |
| ``flumery.msg:<tag>`` | hash | one channel message (see :mod:`routing.scripts`) | :func:`message_key` |
| ``flumery.msg:<tag>.d`` | hash | the data several messages share (a batch replicated into channels) | :data:`SHARED_DATA_SUFFIX` |
| ``flumery.tpl:<id>`` | hash | what every message of a channel shares (see :mod:`routing.codec`) | :data:`TEMPLATE_PREFIX` |
| ``flumery.inflight`` | sorted set | taken, unacknowledged message tags by lease start | :data:`INFLIGHT` |
| ``flumery.<agent>:metrics:<KIND>.<name>`` | hash | one component's counters | :func:`metrics_prefix` |
| ``_kombu.binding.flumery.<agent>`` | set | the exchange's bindings (kombu's own key) | kombu |

kombu's ``global_keyprefix`` transport option (Flumery's ``FLUMERY_KEY_PREFIX``) goes in front of every one of
these in Redis: kombu adds it to its own commands, Flumery adds it with :func:`prefixed` to every key its scripts
and its Python code touch.  Without it the names above are the keys, as they always were, so data written by
earlier versions stays readable.  With a Redis Cluster hash tag as the prefix (``{a1}.``, the default on
``redis-cluster://``: see :meth:`core.settings.Settings.redis_key_prefix`) every key lands in one slot, which
multi-key scripts need there.

This module is the bottom layer: it imports nothing of Flumery.
"""
from __future__ import annotations

NAMESPACE = "flumery."              # agents' exchanges and queues: flumery.<agent>[.<channel>]
MESSAGE_PREFIX = "flumery.msg:"     # + tag: one message's hash
TEMPLATE_PREFIX = "flumery.tpl:"    # + template id: what a channel's messages share; the scripts derive it from
                                    # MESSAGE_PREFIX by replacing its last four characters
SHARED_DATA_SUFFIX = ".d"           # after a message's key: the data it shares with other messages (tags never
                                    # hold a '.', so no message key ends so)
INFLIGHT = "flumery.inflight"       # taken, unacknowledged tags
BELL_SUFFIX = ":bell"
SIZES_SUFFIX = ":sizes"
BYTES_SUFFIX = ":bytes"
METRICS_INFIX = ":metrics:"
DEAD_CHANNEL = "__dead__"           # the dead-letter channel of every agent


def exchange_name(agent: str) -> str:
    """The agent's direct exchange; also the stem of its sizes, bytes and metrics keys."""
    return f"{NAMESPACE}{agent}"


def queue_name(agent: str, channel: str) -> str:
    """The broker queue (and Redis list) that holds channel ``channel`` of agent ``agent``."""
    return f"{NAMESPACE}{agent}.{channel}"


def dead_queue(agent: str) -> str:
    """The queue of the agent's dead-letter channel."""
    return queue_name(agent, DEAD_CHANNEL)


def is_channel_queue(queue: str) -> bool:
    """Whether a kombu queue name is a Flumery channel (stored by Flumery's scripts, not kombu's lists)."""
    return queue.startswith(NAMESPACE)


def bell_key(queue: str) -> str:
    return queue + BELL_SUFFIX


def sizes_key(exchange: str) -> str:
    """The hash holding, per channel of the agent, the events it holds (queued or taken, not yet committed)."""
    return exchange + SIZES_SUFFIX


def bytes_key(exchange: str) -> str:
    """The hash holding, per channel of the agent, the bytes of the event bodies it holds."""
    return exchange + BYTES_SUFFIX


def message_key(tag: str) -> str:
    return MESSAGE_PREFIX + tag


def metrics_prefix(agent: str) -> str:
    """The stem of the agent's metrics hashes; ``<stem><KIND>.<name>`` is one component's."""
    return exchange_name(agent) + METRICS_INFIX


def prefixed(key_prefix: str, name: str) -> str:
    """The Redis key of a Flumery key ``name`` under kombu's ``global_keyprefix`` (``""``: the name itself)."""
    return key_prefix + name
