"""The channel-message codec: the only place that encodes and decodes what travels through a channel.

A channel message is a Celery task message (protocol 2) for the task ``flumery.take``, so that ``celery -A app
worker`` consumes channels like any task queue and Flower shows the work:

* task arguments: ``(channel, bodies, headers, ids)``, the columnar batch of :meth:`core.event.Batch.to_wire`
  (``bodies`` a list of bytes, ``headers`` a parallel list of ``str -> str`` maps or None, ``ids`` a list of
  strings, an ``[prefix, start, count]`` id range, or None);
* serialized with msgpack (bodies stay bytes; pickle is never accepted);
* the envelope carries ``flumery_events``, the message's event count, which the channel's capacity counts;
* stored compactly (see :mod:`routing.scripts`): what is the same for every message of a channel (the whole kombu
  envelope, and the msgpack bytes of the body around the batch's columns) is a :class:`Template`, stored once per
  channel; a message stores only its tag, its event count and its **data**, the msgpack of ``bodies``, ``headers``
  and ``ids`` one after the other.  The task body is ``template.head + data + template.tail`` (msgpack values
  concatenate), and the envelope the template's with the tag and the event count put in (:func:`expand`).  A
  consumer gets the full Celery message: ``celery -A app worker`` and Flower see no difference.

:func:`template` builds a channel's template, :func:`encode` a message from a batch; :func:`decode_args` validates
the task's arguments into a batch (raising :class:`~core.errors.UndecodableMessage`); :func:`decode_stored` does
the same for a message taken straight from Redis, not through Celery (a sink gathering more of its channel,
``flumery dlq``).
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
from typing import NamedTuple

import msgpack
from kombu.serialization import dumps as serialize
from kombu.serialization import loads as deserialize
from kombu.utils.json import dumps

from core.errors import UndecodableMessage
from core.event import Batch, Event

TASK_NAME = "flumery.take"
EVENTS_HEADER = "flumery_events"
CONTENT_TYPE = "application/x-msgpack"


TAG_MARK = "\x00t"          # where a template's envelope takes the message's tag
EVENTS_MARK = "\x00n"       # ... and its event count (a whole JSON string "\u0000n" becomes the number)


class Template(NamedTuple):
    """What every message of one channel shares; content-addressed (``id``), so any process may store or cache it."""

    id: str
    envelope: str       # the kombu envelope (JSON, no body) with TAG_MARK and EVENTS_MARK where they go
    head: bytes         # the task body's msgpack before the batch's columns
    tail: bytes         # ... and after them


class ChannelMessage(NamedTuple):
    """One encoded channel message, ready for a put transaction."""

    tag: str            # the message's id: Celery task id and kombu delivery tag
    events: int
    data: bytes         # msgpack of bodies, headers, ids, one after the other (the body between head and tail)


def template(celery_app, kombu_channel, exchange: str, channel: str) -> Template:
    """The template of ``flumery.take`` messages into ``channel`` of the agent whose exchange is ``exchange``.

    The task's ``origin`` names the agent and host, not the process, so that the template (and its id) stays the
    same across restarts."""
    task = celery_app.amqp.as_task_v2(
        TAG_MARK, TASK_NAME, args=(channel, [], None, None),
        argsrepr=f"({channel!r}, <{EVENTS_MARK} events>)", kwargsrepr="{}",
        origin=f"{exchange}@{socket.gethostname()}",
    )
    headers = {**task.headers, EVENTS_HEADER: EVENTS_MARK}
    envelope = dumps(kombu_channel.make_message(headers, task.properties, exchange, channel, TAG_MARK),
                     sort_keys=True)
    args, kwargs, embed = task.body
    head = b"\x93\x94" + _pack(channel)          # [args, kwargs, embed], args = [channel, bodies, headers, ids]
    tail = _pack(kwargs) + _pack(embed)
    _, _, whole = serialize(task.body, serializer="msgpack")
    if head + _data(args[1:]) + tail != whole:
        raise RuntimeError("msgpack does not concatenate as the channel template expects")
    # 48 bits of SHA-1, URL-safe base64 (8 characters, stored with every message): a channel has one template per
    # Celery version and host, so a Redis holds a handful, and two of them colliding is out of reach.
    digest = base64.urlsafe_b64encode(hashlib.sha1(envelope.encode() + b"\0" + head + b"\0" + tail).digest()[:6])
    return Template(digest.decode(), envelope, head, tail)


def _pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _data(columns) -> bytes:
    bodies, headers, ids = columns
    return b"".join((_pack(bodies), _pack(headers), _pack(ids)))        # one copy of the bodies, not two


def new_tag() -> str:
    """A message tag: 96 random bits, URL-safe (16 characters; a uuid4 string takes 36)."""
    return secrets.token_urlsafe(12)


def encode_data(batch: Batch) -> bytes:
    """The data of the message carrying ``batch``: the same for every channel it is put into."""
    return _data(batch.to_wire())


def expand(template_envelope: str, tag: str, events: int) -> dict:
    """The kombu envelope of a stored compact message: its template's, with its tag and event count."""
    text = (template_envelope.replace('"\\u0000n"', str(events)).replace("\\u0000n", str(events))
            .replace("\\u0000t", json.dumps(tag)[1:-1]))
    return json.loads(text)


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
