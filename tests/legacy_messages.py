"""Channel messages as Flumery stored them before compact messages (a hash per message holding the whole kombu
envelope ``p`` and task body ``b``, with ``n``, ``z``, ``q``, ``s``, ``y``, ``f``): what an upgrade finds in a
backlog.  :func:`put_whole` writes one exactly as the earlier PUT script did, with plain Redis commands."""
from __future__ import annotations

import uuid

from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps

from core.keys import bell_key, bytes_key, message_key, queue_name, sizes_key
from routing.codec import EVENTS_HEADER, TASK_NAME


def put_whole(client, writer, channel: str, args: tuple, events: int, body_bytes: int = 0) -> str:
    """Store a ``flumery.take`` message with task arguments ``args`` into ``channel`` of ``writer``'s agent in
    the earlier layout; returns its tag (a uuid4 string, as then)."""
    tag = str(uuid.uuid4())
    task = writer.app.amqp.as_task_v2(tag, TASK_NAME, args=args, argsrepr=f"({channel!r}, <{events} events>)",
                                      kwargsrepr="{}")
    _, _, body = serialize(task.body, serializer="msgpack")
    envelope = writer.channel.make_message({**task.headers, EVENTS_HEADER: events}, task.properties,
                                           writer.exchange, channel, tag)
    queue, sizes, sizes_bytes = queue_name(writer.agent.name, channel), sizes_key(writer.exchange), bytes_key(
        writer.exchange)
    client.hset(message_key(tag), mapping={"p": dumps(envelope), "b": body, "n": events, "z": body_bytes,
                                           "q": queue, "s": sizes, "y": sizes_bytes, "f": channel})
    client.lpush(queue, tag)
    client.hincrby(sizes, channel, events)
    client.hincrby(sizes_bytes, channel, body_bytes)
    client.lpush(bell_key(queue), "1")
    return tag
