"""Avro's Netty transport framing (``NettyTransportCodec``), optionally inside a zlib stream, without any I/O.

A frame (Avro's ``NettyDataPack``) is::

    int32 BE serial      the call id; a response echoes its request's
    int32 BE count       number of buffers
    count x (int32 BE length, length bytes)

The buffers, concatenated, are one Avro IPC request or response.  Java's side writes buffers of up to 8 KiB
each; Flumery writes one buffer per frame.

``compression-type = deflate`` (Flume's AvroSource and NettyAvroRpcClient) puts netty 3's ``ZlibEncoder`` (zlib
wrapper, Flume's level 6 by default) and ``ZlibDecoder`` first in the pipeline: each direction of the connection
is **one** zlib stream, and every frame written is compressed and then flushed with ``Z_SYNC_FLUSH`` (so it can
be decoded at once); the stream is finished (``Z_FINISH``) only when the connection closes.  Frames therefore do
not line up with compressed chunks: the decoder below inflates the stream and cuts frames out of the inflated
bytes.

Memory is bounded on the receiving side: :class:`FrameDecoder` never holds more than one frame of inflated bytes
(at most ``max_frame_bytes``, counting the frame's headers) plus one read of input; it inflates only as much as
the frame being cut needs (``decompressobj.decompress(data, max_length)``), so a small "zip bomb" cannot make it
allocate more, and a declared length over the limit is refused before anything is read for it.
"""
from __future__ import annotations

import struct
import zlib

HEADER = struct.Struct(">ii")
LENGTH = struct.Struct(">i")
INFLATE_STEP = 64 * 1024


class FrameError(Exception):
    """The peer sent something that is not a valid frame (or one over the size limit): close the connection."""


class FrameDecoder:
    """Bytes in (as read from the socket), ``(serial, payload)`` frames out.

    Usage: :meth:`feed` what the socket gave, then call :meth:`next_frame` until it returns None, and only then
    read from the socket again (that is what bounds the input held).
    """

    def __init__(self, max_frame_bytes: int, deflate: bool = False):
        self.max_frame_bytes = max_frame_bytes
        self.inflater = zlib.decompressobj() if deflate else None
        self.pending = b""            # input not yet inflated (or not yet moved into plain)
        self.plain = bytearray()      # inflated bytes not yet cut into frames
        self.ended = False            # the peer finished its zlib stream (it closes the connection)

    def feed(self, data: bytes) -> None:
        if self.pending:
            self.pending += data
        else:
            self.pending = data

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next complete frame, or None if more input is needed.  Raises :class:`FrameError`."""
        while True:
            frame, needed = self._cut()
            if frame is not None:
                return frame
            if not self._refill(needed):
                return None

    def _cut(self) -> tuple[tuple[int, bytes] | None, int]:
        """(frame, 0) if ``plain`` starts with a whole frame, else (None, how many more bytes are needed at least)."""
        plain = self.plain
        if len(plain) < HEADER.size:
            return None, HEADER.size - len(plain)
        serial, count = HEADER.unpack_from(plain, 0)
        if count < 0:
            raise FrameError(f"negative buffer count {count}")
        offset, parts = HEADER.size, []
        for _ in range(count):
            if len(plain) < offset + LENGTH.size:
                return None, offset + LENGTH.size - len(plain)
            (length,) = LENGTH.unpack_from(plain, offset)
            if length < 0:
                raise FrameError(f"negative buffer length {length}")
            end = offset + LENGTH.size + length
            if end > self.max_frame_bytes:
                raise FrameError(f"frame larger than {self.max_frame_bytes} bytes (a buffer of {length} bytes at "
                                 f"offset {offset})")
            if len(plain) < end:
                return None, end - len(plain)
            parts.append(bytes(plain[offset + LENGTH.size:end]))
            offset = end
        if offset > self.max_frame_bytes:
            raise FrameError(f"frame larger than {self.max_frame_bytes} bytes")
        del plain[:offset]
        return (serial, b"".join(parts)), 0

    def _refill(self, needed: int) -> bool:
        """Move at least some input into ``plain``; False if there is none left to move."""
        if self.inflater is None:
            if not self.pending:
                return False
            self.plain += self.pending
            self.pending = b""
            return True
        data = self.inflater.unconsumed_tail or self.pending
        if not data or self.ended:
            return False
        if data is self.pending:
            self.pending = b""
        try:
            out = self.inflater.decompress(data, max(needed, INFLATE_STEP))
        except zlib.error as exc:
            raise FrameError(f"bad deflate stream: {exc}") from None
        if self.inflater.eof:
            self.ended = True
        self.plain += out
        return bool(out) or bool(self.inflater.unconsumed_tail) or bool(self.pending)


class FrameEncoder:
    """``(serial, payload)`` in, the bytes to write out (compressed and sync-flushed with deflate)."""

    def __init__(self, deflate_level: int | None = None):
        self.deflater = None if deflate_level is None else zlib.compressobj(deflate_level, zlib.DEFLATED, 15)

    def encode(self, serial: int, payload: bytes) -> bytes:
        frame = b"".join((HEADER.pack(serial, 1), LENGTH.pack(len(payload)), payload))
        if self.deflater is None:
            return frame
        return self.deflater.compress(frame) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
