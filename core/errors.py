"""Flumery's one error hierarchy.

Library code raises these; only the CLI (:mod:`app.cli`) and the worker bootstrap (:mod:`app.celery_app`) turn
them into exit codes or log lines.  Each class says what the caller may do about it:

* :class:`ConfigInvalid` (:class:`ConfigFileUnreadable`), :class:`SettingsError`, :class:`UnknownType`: the operator must fix a file, a flag or
  an environment variable; nothing was started.
* :class:`KeystoreError`: a source's TLS keystore or certificate cannot be used; the source does not start.
* :class:`BrokerRefused`: the broker turned us away (password, certificate); retrying cannot help, the operator
  must fix the URL or the certificate.
* :class:`PutRefused` (:class:`ChannelFullError` and its :class:`BrokerOutOfMemory`, :class:`BatchTooLarge`):
  nothing of the batch is in any required channel; the source pushes back (HTTP 503 / 413, netcat stops
  reading) and may retry.
* :class:`NotReplicated`: a put is on the Redis master but not confirmed by enough replicas; not acknowledged.
* :class:`RejectedEvents`: the store wrote a batch except some events it will never accept; those go to the
  dead-letter channel.
* :class:`Requeue`: a taken batch was not written and goes back to its channel, unacknowledged.
* :class:`UndecodableMessage`: a channel message that can never be decoded; its raw content is dead-lettered.
* :class:`AllSinksFailed`: no sink of a sink group could write the batch; it is retried.
"""
from __future__ import annotations


class FlumeryError(Exception):
    """Base of every error Flumery raises on purpose; ``str()`` is a complete user-facing message."""


# --- configuration ---------------------------------------------------------------------------------------------

class ConfigInvalid(FlumeryError):
    """The agent cannot start; ``errors`` lists every problem found, ``notices`` what is accepted but inert."""

    def __init__(self, errors: list, notices: list[str] | None = None):
        self.errors = sorted(set(errors), key=lambda e: (e.key, e.message))
        self.notices = notices or []
        super().__init__("\n".join(str(e) for e in self.errors))


class ConfigFileUnreadable(ConfigInvalid):
    """The configuration file cannot be read at all (missing, unreadable, not UTF-8): one problem, no agent."""


class UnknownType(FlumeryError, LookupError):
    """A type name names no component of its kind (with a did-you-mean where one is close)."""


class SettingsError(FlumeryError):
    """A process setting (environment variable or flag) is missing or wrong."""


class BrokerRefused(FlumeryError):
    """The broker refused the connection for good: a wrong password or user, or a certificate not accepted."""


class KeystoreError(FlumeryError, OSError):
    """A keystore, certificate or private key cannot be read or does not fit its password.  An OSError too: to an
    agent it is a resource the source could not open, as a port in use."""


# --- putting into channels ------------------------------------------------------------------------------------

class PutRefused(FlumeryError):
    """A put did not happen: nothing of the batch is in any required channel."""


class ChannelFullError(PutRefused):
    """A put did not fit: nothing was written to any channel.  The source must push back and retry.

    ``unit`` says which bound refused it: ``"events"`` (``capacity``) or ``"bytes"`` of event bodies
    (``byteCapacity``); ``size``, ``capacity`` and ``needed`` are in that unit.
    """

    def __init__(self, channel: str, size: int, capacity: int, needed: int, unit: str = "events"):
        self.channel, self.size, self.capacity, self.needed, self.unit = channel, size, capacity, needed, unit
        what = "events" if unit == "events" else "bytes of event bodies"
        super().__init__(f"channel '{channel}' is full ({size} of {capacity} {what} held, "
                         f"{needed} more offered)")


class BrokerOutOfMemory(ChannelFullError):
    """The broker refused a put for lack of memory (its ``maxmemory``, with writes refused rather than data
    evicted): nothing was written, and to a source it is as if every channel were full."""

    def __init__(self, detail: str = "maxmemory reached"):
        self.channel, self.size, self.capacity, self.needed, self.unit = "", 0, 0, 0, "bytes"
        PutRefused.__init__(self, f"the broker is out of memory ({detail}); nothing was put")


class NotReplicated(FlumeryError):
    """A put reached the Redis master but fewer replicas than required confirmed it in time (Redis ``WAIT``).

    Unlike :class:`PutRefused`, the events may be in the channel: they are not acknowledged upstream, so a retry
    may put them twice (with the same event ids, which keyed stores turn into overwrites), but a failover to a
    replica that never received them loses nothing the source acknowledged."""


class BatchTooLarge(PutRefused):
    """A batch holds more events for one channel than that channel can ever hold: retrying cannot help."""


# --- taking from channels and writing to stores ---------------------------------------------------------------

class RejectedEvents(FlumeryError):
    """Raised by a sink's ``write`` after it durably wrote every event of the batch except those in
    ``reasons`` (batch index -> the store's reason), which the store will never accept."""

    def __init__(self, reasons: dict[int, str]):
        self.reasons = reasons
        super().__init__(f"{len(reasons)} events rejected by the store: "
                         + "; ".join(f"#{i}: {r}" for i, r in list(reasons.items())[:3]))


class AllSinksFailed(FlumeryError):
    """No sink of a group could write the batch (the last error is chained as ``__cause__``)."""


class Requeue(FlumeryError):
    """The batch was not written and must go back to its channel."""


class SinkBusy(Requeue):
    """Every sink of the channel is busy with another task's batch (Celery's threads pool): the message goes back
    untouched.  Routine under that pool, so logged at DEBUG only."""


class UndecodableMessage(FlumeryError):
    """A channel message that can never be written: it cannot even be decoded."""
