"""The channel-message codec: the only place that encodes and decodes what travels through a channel.

A channel message is a Celery task message (protocol 2) for the task ``flumery.take``, so that ``celery -A app
worker`` consumes channels like any task queue and Flower shows the work:

* task arguments: ``(channel, bodies, headers, ids)``, the columnar batch of :meth:`core.event.Batch.to_wire`
  (``bodies`` a list of bytes, ``headers`` a parallel list of ``str -> str`` maps or None, ``ids`` a list of
  strings, an ``[prefix, start, count]`` id range, or None);
* serialized with msgpack (bodies stay bytes; pickle is never accepted);
* the envelope carries ``flumery_events``, the message's event count, which the channel's capacity counts;
* the stored body is raw msgpack beside a JSON envelope (see :mod:`routing.transport`).

:func:`encode` builds a message from a batch; :func:`decode_args` validates the task's arguments into a batch
(raising :class:`~core.errors.UndecodableMessage`); :func:`decode_stored` does the same for a message taken
straight from Redis, not through Celery (a sink gathering more of its channel, ``flumery dlq``).
"""
from __future__ import annotations

import uuid
from typing import NamedTuple

import msgpack
from kombu.serialization import dumps as serialize
from kombu.serialization import loads as deserialize

from core.errors import UndecodableMessage
from core.event import Batch, Event

TASK_NAME = "flumery.take"
EVENTS_HEADER = "flumery_events"
CONTENT_TYPE = "application/x-msgpack"


class ChannelMessage(NamedTuple):
    """One encoded channel message, ready for a put transaction."""

    tag: str            # the message's id: Celery task id and kombu delivery tag
    events: int
    envelope: dict      # the kombu message without its body
    body: bytes         # the msgpack-serialized task arguments


def encode(celery_app, kombu_channel, exchange: str, channel: str, batch: Batch) -> ChannelMessage:
    """The ``flumery.take(channel, bodies, headers, ids)`` message carrying ``batch`` into ``channel``."""
    task_id = str(uuid.uuid4())
    task = celery_app.amqp.as_task_v2(
        task_id, TASK_NAME, args=(channel, *batch.to_wire()),
        argsrepr=f"({channel!r}, <{len(batch)} events>)", kwargsrepr="{}",
    )
    _, _, body = serialize(task.body, serializer="msgpack")
    headers = {**task.headers, EVENTS_HEADER: len(batch)}
    envelope = kombu_channel.make_message(headers, task.properties, exchange, channel, task_id)
    return ChannelMessage(task_id, len(batch), envelope, body)


def decode_args(bodies, headers=None, ids=None) -> Batch:
    """The batch carried by a ``flumery.take`` task's arguments; raises UndecodableMessage if malformed."""
    try:
        return Batch.from_wire(bodies, headers, ids)
    except ValueError as exc:
        raise UndecodableMessage(str(exc)) from exc


def decode_stored(payload: dict) -> tuple[str, Batch]:
    """(channel, batch) of a channel message taken straight from Redis; raises UndecodableMessage."""
    if payload.get("headers", {}).get("task") != TASK_NAME:
        raise UndecodableMessage(f"not a {TASK_NAME} message")
    try:
        args, _kwargs, _embed = deserialize(payload["body"], payload["content-type"],
                                            payload["content-encoding"], accept={CONTENT_TYPE})
        channel, *columns = args
    except Exception as exc:      # any shape of garbage: kombu, msgpack and unpacking errors alike
        raise UndecodableMessage(f"cannot decode: {exc}") from exc
    return channel, decode_args(*columns)


def raw_event(channel: str, bodies, headers, ids, tag: str) -> Event:
    """An undecodable message's arguments kept as one event (msgpack, ``repr`` for the unencodable), so that
    its content survives in the dead-letter channel."""
    return Event(msgpack.packb([channel, bodies, headers, ids], use_bin_type=True, default=repr), id=tag)
