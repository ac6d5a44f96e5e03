"""The deserializers of the ``spooldir`` source: a file's bytes to event bodies, each with its byte offset.

A deserializer reads one file from a byte offset (0, or where a restart resumes) up to the size the file had
when it was picked up, and hands out events in batches (:meth:`read`), each batch with the byte offset of every
event's start and the offset just after its last event (:attr:`Piece.end`, where reading resumes once the batch
is committed).  Memory stays bounded: a file is read in blocks of :data:`READ_SIZE` bytes.

``LINE`` is Flume's LineDeserializer, byte for byte where it matters:

* an event is a line without its ``\\n``; a ``\\r`` before it is *kept* (Flume: "FIXME: support \\r\\n"); a last
  line without ``\\n`` is an event; an empty line is an empty event.
* ``maxLineLength`` counts characters, as Java does (UTF-16 code units: a character outside the BMP counts 2),
  after decoding with ``inputCharset``.  A longer line is **split**, not cut: Flume stops reading the line when it
  holds ``maxLineLength`` characters and the next read starts a new line where it stopped, so a line of 25
  characters with ``maxLineLength = 10`` gives 3 events (10, 10 and 5 characters).  A consequence kept on purpose:
  a line whose length is an exact multiple of ``maxLineLength`` is followed by one empty event (the ``\\n`` is
  read as a line of its own).  Flume logs a warning for every cut; this reader logs nothing.
  One difference: Flume may cut a character outside the BMP in two halves (each then written as ``?``); here a
  chunk ends before such a character instead (that chunk is one unit short).
* bytes that do not decode in ``inputCharset`` follow ``decodeErrorPolicy``: ``FAIL`` stops the file at the
  event that holds them (:class:`Undecodable`; the events before it are handed out first), ``REPLACE`` reads
  them as U+FFFD, ``IGNORE`` drops them.  Bodies are then encoded in ``outputCharset`` (characters it cannot
  encode become ``?``, as Java's ``String.getBytes`` does).  When both charsets are UTF-8 and the input is valid,
  bodies are the file's bytes, never decoded and re-encoded (a block is checked at once, in C).
* ``inputCharset`` must encode ``\\n`` as the byte 0x0A (UTF-8, ISO-8859-*, windows-125*, GBK, Shift_JIS, ...);
  UTF-16 and UTF-32 files are refused by the configuration check.

``BLOB`` is Flume's BlobDeserializer (morphline module): the whole file is one event.  Flume cuts a file longer
than ``maxBlobLength`` into several events of that size (with a warning); here such a file is an error for that
file (:class:`ReadProblem`) and is not delivered.
"""
from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from itertools import accumulate
from operator import add

READ_SIZE = 256 * 1024
IGNORE_CAP = 64 * 1024 * 1024       # bytes of one line that may decode to (almost) nothing under IGNORE

POLICIES = {"FAIL": "strict", "REPLACE": "replace", "IGNORE": "ignore"}


class ReadProblem(Exception):
    """The file cannot be read further.  ``offset`` is where the first event not handed out starts."""

    def __init__(self, offset: int, message: str):
        super().__init__(message)
        self.offset = offset


class Undecodable(ReadProblem):
    """``decodeErrorPolicy = FAIL`` met bytes that do not decode; ``bad_offset`` is the first of them."""

    def __init__(self, offset: int, bad_offset: int, charset: str, reason: str):
        super().__init__(offset, f"bytes at offset {bad_offset} are not valid {charset} ({reason}); "
                                 f"decodeErrorPolicy is FAIL")
        self.bad_offset = bad_offset


@dataclass
class Piece:
    """Events read from a file: bodies, the offset where each starts, and the offset after the last one."""

    bodies: list[bytes]
    starts: list[int]
    end: int


def charset_name(name: str) -> str:
    """Python's codec name for a Java charset name; raises LookupError."""
    return codecs.lookup(name.strip()).name


def newline_is_0x0a(name: str) -> bool:
    """True when lines of this charset can be found by the byte 0x0A (an ASCII-compatible charset)."""
    try:
        return "\n".encode(name) == b"\n" and "az09".encode(name) == b"az09"
    except (LookupError, UnicodeError):
        return False


def units16(text: str) -> int:
    """The length of ``text`` in Java chars (UTF-16 code units)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) >> 1


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_plus_one = (1).__add__


class LineDeserializer:
    """Flume's LINE deserializer over the open file ``fd`` from byte ``start`` to byte ``end``."""

    def __init__(self, fd: int, start: int, end: int, *, max_line_length: int = 2048,
                 input_charset: str = "UTF-8", output_charset: str = "UTF-8", decode_error_policy: str = "FAIL",
                 read_size: int = READ_SIZE):
        if max_line_length < 1:
            raise ValueError("max_line_length must be positive")
        self.fd, self.pos, self.end = fd, start, end
        self.max_len = max_line_length
        self.in_cs = charset_name(input_charset)
        self.out_cs = charset_name(output_charset)
        self.errors = POLICIES[decode_error_policy.upper()]
        self.passthrough = self.in_cs == "utf-8" and self.out_cs == "utf-8"
        self.read_size = max(1, read_size)
        self.tail_limit = max(self.read_size, 4 * self.max_len + 16)
        self.hard_cap = max(IGNORE_CAP, 2 * self.tail_limit)
        self.buf = b""                  # bytes read, not yet turned into events; buf[0] is at offset buf_start
        self.buf_start = start
        self.bodies: list[bytes] = []   # events ready to hand out (from index qi on)
        self.starts: list[int] = []
        self.qi = 0
        self.consumed = start           # offset of the first byte not part of an event made so far
        self.failure: ReadProblem | None = None
        self.new_decoder = codecs.getincrementaldecoder(self.in_cs)

    # -- public ----------------------------------------------------------------------------------------------
    def read(self, n: int) -> Piece | None:
        """Up to ``n`` events; None at the end of the file.  Raises :class:`ReadProblem` once the events before
        the problem were handed out."""
        while len(self.bodies) - self.qi < n and self.failure is None and not self._converted_all():
            self._fill()
        available = len(self.bodies) - self.qi
        if available == 0:
            if self.failure is not None:
                raise self.failure
            return None
        k = min(n, available)
        first = self.qi
        self.qi += k
        bodies, starts = self.bodies[first:self.qi], self.starts[first:self.qi]
        end = self.starts[self.qi] if self.qi < len(self.starts) else self.consumed
        if self.qi == len(self.bodies):
            self.bodies, self.starts, self.qi = [], [], 0
        return Piece(bodies, starts, end)

    # -- reading ---------------------------------------------------------------------------------------------
    def _converted_all(self) -> bool:
        return self.pos >= self.end and not self.buf

    def _fill(self) -> None:
        if self.pos < self.end:
            data = os.pread(self.fd, min(self.read_size, self.end - self.pos), self.pos)
            if not data:
                self.failure = ReadProblem(self.consumed, f"the file ended at offset {self.pos}, before the "
                                                          f"{self.end} bytes it had when it was picked up")
                return
            self.pos += len(data)
            self.buf = self.buf + data if self.buf else data
        buf = self.buf
        cut = buf.rfind(b"\n") + 1
        if cut:
            self.buf, base = buf[cut:], self.buf_start
            self.buf_start += cut
            if not self._lines(buf[:cut] if cut < len(buf) else buf, base):
                return
        if self.pos >= self.end:
            if self.buf and self._line(self.buf, self.buf_start, terminated=False):
                self.consumed = self.end
            self.buf = b""
        elif len(self.buf) > self.tail_limit:
            used = self._chunks(self.buf, self.buf_start, terminated=False, final=False)
            if used < 0:
                return
            self.buf = self.buf[used:]
            self.buf_start += used
            self.consumed = self.buf_start
            if len(self.buf) > self.hard_cap:
                self.failure = ReadProblem(self.buf_start, f"the line at offset {self.buf_start} has more than "
                                           f"{self.hard_cap} bytes that decode to fewer than {self.max_len} "
                                           f"characters (decodeErrorPolicy IGNORE drops them)")

    def _emit(self, body: bytes, start: int) -> None:
        self.bodies.append(body)
        self.starts.append(start)

    def _lines(self, data: bytes, base: int) -> bool:
        """Turn ``data`` (whole lines, ending with a newline) into events; False if a problem stopped it."""
        lines = data.split(b"\n")
        lines.pop()
        if self.passthrough and (data.isascii() or _valid_utf8(data)):
            if max(map(len, lines)) < self.max_len:          # the common case: no conversion, no cut
                self.bodies += lines
                self.starts += accumulate(map(_plus_one, map(len, lines[:-1])), add, initial=base)
                self.consumed = base + len(data)
                return True
        pos = base
        for line in lines:
            if not self._line(line, pos, terminated=True):
                return False
            pos += len(line) + 1
        self.consumed = pos
        return True

    def _line(self, seg: bytes, start: int, terminated: bool) -> bool:
        """One whole line (``terminated``: a newline follows; else the end of the file follows)."""
        if len(seg) < self.max_len:                 # fewer bytes than the limit: fewer characters, no cut
            if self.passthrough and (seg.isascii() or _valid_utf8(seg)):
                if seg or terminated:
                    self._emit(seg, start)
                return True
            try:
                text = seg.decode(self.in_cs, self.errors)
            except UnicodeDecodeError as exc:
                self._undecodable(start, start + exc.start, exc.reason)
                return False
            if text or terminated:
                self._emit(self._encode(text), start)
            return True
        return self._chunks(seg, start, terminated, final=True) >= 0

    def _encode(self, text: str) -> bytes:
        return text.encode(self.out_cs, "replace") if text else b""

    def _undecodable(self, start: int, bad: int, reason: str) -> None:
        self.failure = Undecodable(start, bad, self.in_cs, reason)
        self.consumed = start

    # -- long lines ------------------------------------------------------------------------------------------
    def _chunks(self, seg: bytes, start: int, terminated: bool, final: bool) -> int:
        """Cut ``seg`` into events of ``maxLineLength`` characters.  ``final``: the line ends after ``seg``
        (with a newline if ``terminated``); else more of it may follow, and the bytes after the last whole chunk
        are left for later.  Returns how many bytes of ``seg`` became events, or -1 after a decode failure."""
        limit, n = self.max_len, len(seg)
        if self.passthrough and seg.isascii():      # one byte, one character
            whole = n - n % limit
            for i in range(0, whole, limit):
                self._emit(seg[i:i + limit], start + i)
            if not final:
                return whole
            if whole < n:
                self._emit(seg[whole:], start + whole)
            elif terminated:
                self._emit(b"", start + n)
            return n
        pos = 0
        while pos < n:
            chunk = self._next_chunk(seg, start, pos, final)
            if chunk is None:
                return -1
            cut, text, full = chunk
            if not full:                            # the rest of seg, shorter than a chunk
                if not final:
                    return pos
                if text or terminated:
                    self._emit(self._encode(text), start + pos)
                return n
            self._emit(self._encode(text), start + pos)
            pos = cut
        if final and terminated:                    # the line ended right at a cut: the newline is a line
            self._emit(b"", start + n)
        return n

    def _next_chunk(self, seg: bytes, start: int, pos: int, final: bool) -> tuple[int, str, bool] | None:
        """Decode from ``seg[pos]`` up to ``maxLineLength`` characters: (end byte, text, reached the limit)."""
        limit, n = self.max_len, len(seg)
        decoder = self.new_decoder(self.errors)
        units, parts, p = 0, [], pos
        while units < limit and p < n:
            take = min(limit - units, n - p)        # a byte gives at most one unit: this cannot overshoot...
            last = p + take >= n
            try:
                text = decoder.decode(seg[p:p + take], last and final)
            except UnicodeDecodeError as exc:
                self._decode_failed(seg, start, pos, p + take, exc)
                return None
            got = units16(text)
            if units + got > limit:                 # ...except for bytes left from the previous piece
                return self._next_chunk_slowly(seg, start, pos, final)
            units += got
            parts.append(text)
            p += take
        pending = len(decoder.getstate()[0])
        return p - pending, "".join(parts), units >= limit

    def _next_chunk_slowly(self, seg: bytes, start: int, pos: int, final: bool) -> tuple[int, str, bool] | None:
        """As :meth:`_next_chunk`, a byte at a time.  When one byte completes more text than the limit leaves room
        for, the chunk ends inside the bytes the decoder held before it if their replacement characters fit (as
        Flume reads them, one at a time), else before the character that would cross the limit (a character
        outside the BMP, which Flume would cut in two)."""
        limit, n = self.max_len, len(seg)
        decoder = self.new_decoder(self.errors)
        units, parts, p = 0, [], pos
        boundary = (pos, 0, 0)                      # (byte, units, parts) where no byte is pending
        while p < n:
            held = decoder.getstate()[0]
            try:
                text = decoder.decode(seg[p:p + 1], p + 1 >= n and final)
            except UnicodeDecodeError as exc:
                self._decode_failed(seg, start, pos, p + 1, exc)
                return None
            p += 1
            if text:
                got = units16(text)
                if units + got > limit:
                    for k in range(len(held), 0, -1):        # end within the bytes held before this one?
                        try:
                            flushed = self.new_decoder(self.errors).decode(held[:k], True)
                        except UnicodeDecodeError:
                            continue
                        if flushed and units + units16(flushed) <= limit and text.startswith(flushed):
                            return p - 1 - len(held) + k, "".join(parts) + flushed, True
                    if boundary[1] > 0:
                        cut, units, count = boundary
                        return cut, "".join(parts[:count]), True
                units += got
                parts.append(text)
            held = decoder.getstate()[0]
            if units >= limit:
                return p - len(held), "".join(parts), True
            if not held:
                boundary = (p, units, len(parts))
        return p, "".join(parts), units >= limit

    def _decode_failed(self, seg: bytes, start: int, pos: int, upto: int, exc: UnicodeDecodeError) -> None:
        """Record the failure of the chunk at ``seg[pos]``, locating the first bad byte before ``upto``."""
        try:
            seg[pos:upto].decode(self.in_cs)
            bad, reason = upto, exc.reason
        except UnicodeDecodeError as located:
            bad, reason = pos + located.start, located.reason
        self._undecodable(start + pos, start + bad, reason)


class BlobDeserializer:
    """The BlobDeserializer: the bytes from ``start`` to ``end`` as one event, if no longer than ``max_length``."""

    def __init__(self, fd: int, start: int, end: int, *, max_blob_length: int = 100_000_000):
        self.fd, self.start, self.end = fd, start, end
        self.max_length = max_blob_length
        self.done = False

    def read(self, n: int) -> Piece | None:
        if self.done or self.start >= self.end:
            return None
        self.done = True
        size = self.end - self.start
        if size > self.max_length:
            raise ReadProblem(self.start, f"the file has {size} bytes, more than deserializer.maxBlobLength "
                                          f"({self.max_length}); it is not delivered")
        parts, pos = [], self.start
        while pos < self.end:
            data = os.pread(self.fd, min(self.end - pos, 1 << 24), pos)
            if not data:
                raise ReadProblem(self.start, f"the file ended at offset {pos}, before the {self.end} bytes it "
                                              f"had when it was picked up")
            parts.append(data)
            pos += len(data)
        return Piece([b"".join(parts) if len(parts) > 1 else parts[0]], [self.start], self.end)
