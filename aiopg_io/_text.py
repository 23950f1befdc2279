"""Text mode: ``io.TextIOWrapper`` rebuilt as async code over the binary :class:`AsyncFile`.

What is taken from CPython (``Modules/_io/textio.c``; ``Lib/_pyio.py`` for the readable
version) so that a program sees what Python's ``open()`` would give it, byte for byte:

- **Decoding in chunks.** Reads pull ``read1(8192)`` from the binary file (more when a
  large ``read(n)`` asks for it: ``max(b2c ratio, 1) * n``) and decode each chunk with the
  codec's incremental decoder, wrapped in :class:`io.IncrementalNewlineDecoder` for
  universal newlines. 8192 is CPython's chunk size; keeping it keeps the *binary* position
  after a text read where CPython leaves it, which is where a write after a read lands in
  ``r+`` mode (CPython writes at the end of its read-ahead, not at the text position).
  The binary file's own buffer (64 KiB) absorbs the chunks, so one op serves eight.
- **tell() cookies.** A text position cannot be a byte offset in general (a multibyte
  character, a ``\\r`` waiting to see whether ``\\n`` follows, a UTF-16 decoder that already
  saw the BOM). At each chunk the decoder state is snapshotted as ``(dec_flags, bytes fed
  since)``; ``tell()`` replays the decoder from the snapshot to the nearest "safe start
  point" (decoder buffer empty) and returns an opaque integer packing ``(start_pos,
  dec_flags, bytes_to_feed, chars_to_skip, need_eof)`` in CPython's layout (64, 32, 32, 32
  and 8 bits), so the numbers equal CPython's for the same reads. ``seek(cookie)`` restores
  the decoder, feeds ``bytes_to_feed`` bytes and skips ``chars_to_skip`` characters.
- **Writes** translate ``\\n`` to the newline (``os.linesep`` when newline is None),
  encode, and go to the binary file at *its* position; they drop the decoded read-ahead
  and reset the decoder, as CPython does. A BOM (utf-16, utf-8-sig) is written only at
  position 0: the encoder is set to "not at start" when the file opens elsewhere (append)
  and on every seek to a non-zero position.
- ``truncate()`` with no size cuts at the *binary* position (CPython passes None to
  ``buffer.truncate``), which after a read is the end of the read-ahead.

Where it differs on purpose: ``tell()`` keeps working during ``async for`` and after a
``readlines(hint)`` that stopped early (CPython's ``next()`` disables it for speed, "telling
position disabled by next() call"; here every chunk is snapshotted anyway), a closed file raises
:class:`~aiopg_io.errors.ClosedError` naming the file, cookies for files larger than 8 KiB
may be numerically different from CPython's (the binary buffers are sized differently, so
chunk boundaries after a ``seek`` differ) while still restoring the same position.

Cursor calls from several tasks are serialised in arrival order, as on the binary file.
"""

from __future__ import annotations

import codecs
import io
import locale
import operator
import os
import re
import sys
import warnings
from collections.abc import AsyncIterator, Iterable
from typing import Any, NoReturn, Protocol, cast

import anyio

from ._checks import check_newline, check_text_arg_types, text_size
from ._file import AsyncFile
from ._handoff import FifoLock
from .errors import ClosedError

__all__ = ["AsyncTextFile"]

_CHUNK_SIZE = 8192  # CPython's TextIOWrapper._CHUNK_SIZE (textio.c)
_UNIVERSAL_EOL = re.compile(r"\r\n?|\n")


class _Detached:
    """What stands for the binary file after :meth:`AsyncTextFile.detach`: every use raises
    io's ValueError, so no text method pays for a check of its own."""

    def __getattr__(self, name: str) -> NoReturn:
        raise ValueError("underlying buffer has been detached")


_DETACHED = cast(AsyncFile, _Detached())


class _Decoder(Protocol):
    """What both a codec's incremental decoder and io.IncrementalNewlineDecoder offer."""

    def decode(self, input: bytes, final: bool = False) -> str: ...
    def getstate(self) -> tuple[bytes, int]: ...
    def setstate(self, state: tuple[bytes, int]) -> None: ...
    def reset(self) -> None: ...


def _resolve_encoding(encoding: str | None) -> str:
    """The encoding ``io.TextIOWrapper`` would choose (``io.text_encoding``, PEP 597)."""
    chosen = encoding
    if chosen is None:
        if sys.flags.utf8_mode:
            return "utf-8"
        if sys.flags.warn_default_encoding:
            warnings.warn("'encoding' argument not specified", EncodingWarning, stacklevel=4)
        chosen = "locale"
    if chosen == "locale":
        getencoding = getattr(locale, "getencoding", None)  # 3.11+; ignores UTF-8 mode, as io does
        chosen = getencoding() if getencoding is not None else locale.getpreferredencoding(False)
    return chosen


def _pack_cookie(
    start_pos: int, dec_flags: int = 0, bytes_to_feed: int = 0, need_eof: bool = False, chars_to_skip: int = 0
) -> int:
    return start_pos | dec_flags << 64 | bytes_to_feed << 96 | chars_to_skip << 128 | int(need_eof) << 160


def _unpack_cookie(cookie: int) -> tuple[int, int, int, bool, int]:
    if cookie >= 1 << 168:
        raise OverflowError(f"seek cookie {cookie} is too large to be a tell() result")
    start_pos = cookie & 0xFFFF_FFFF_FFFF_FFFF
    dec_flags = cookie >> 64 & 0xFFFF_FFFF
    bytes_to_feed = cookie >> 96 & 0xFFFF_FFFF
    chars_to_skip = cookie >> 128 & 0xFFFF_FFFF
    need_eof = bool(cookie >> 160)
    return start_pos, dec_flags, bytes_to_feed, need_eof, chars_to_skip


class AsyncTextFile:
    """A file opened in text mode by :func:`aiopg_io.open`: ``io.TextIOWrapper``'s
    behaviour, every I/O method awaitable (what aiofiles and ``anyio.open_file`` give)."""

    def __init__(
        self,
        buffer: AsyncFile,
        mode: str,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        line_buffering: bool = False,
        write_through: bool = False,
    ) -> None:
        check_text_arg_types(encoding, errors, newline)
        check_newline(newline)
        encoding = _resolve_encoding(encoding)
        if not codecs.lookup(encoding)._is_text_encoding:
            raise LookupError(
                f"{encoding!r} is not a text encoding; use codecs.open() to handle arbitrary codecs"
            )
        self._buffer = buffer
        self._mode = mode
        self._encoding = encoding
        self._errors = "strict" if errors is None else errors
        self._line_buffering = line_buffering
        self._write_through = write_through
        self._readuniversal = not newline
        self._readtranslate = newline is None
        self._readnl = newline
        self._writetranslate = newline != ""
        self._writenl = newline or os.linesep
        self._decoded_chars = ""  # text decoded and not yet returned
        self._decoded_chars_used = 0
        # (dec_flags, next_input): the decoder state at a point where its buffer was empty,
        # and every byte fed to it since; tell() replays from there.
        self._snapshot: tuple[int, bytes] | None = None
        self._b2cratio = 0.0
        self._lock = FifoLock()
        self._decoder: _Decoder | None = None
        self._encoder: codecs.IncrementalEncoder | None = None
        if buffer.readable():
            codec_decoder = codecs.getincrementaldecoder(encoding)(self._errors)
            self._decoder = (
                io.IncrementalNewlineDecoder(codec_decoder, self._readtranslate)
                if self._readuniversal
                else codec_decoder
            )
        if buffer.writable():
            self._encoder = codecs.getincrementalencoder(encoding)(self._errors)
            # No BOM in the middle of a file (append mode). The cursor is read directly:
            # tell() is a coroutine and nothing is buffered yet.
            if buffer._pos != 0:
                self._encoder.setstate(0)

    # -- properties ---------------------------------------------------------------------------

    @property
    def buffer(self) -> AsyncFile | None:
        """The binary file underneath (None after :meth:`detach`, as in io)."""
        return None if self._buffer is _DETACHED else self._buffer

    @property
    def limiter(self) -> anyio.CapacityLimiter | None:
        """The ``limiter=`` given to :func:`aiopg_io.open` (see :attr:`AsyncFile.limiter`)."""
        return self._buffer.limiter

    @property
    def name(self) -> str | int:
        return self._buffer.name

    @property
    def mode(self) -> str:
        """The mode string as given to :func:`aiopg_io.open`."""
        return self._mode

    @property
    def closed(self) -> bool:
        return self._buffer.closed

    @property
    def encoding(self) -> str:
        return self._encoding

    @property
    def errors(self) -> str:
        return self._errors

    @property
    def line_buffering(self) -> bool:
        return self._line_buffering

    @property
    def write_through(self) -> bool:
        return self._write_through

    @property
    def newlines(self) -> str | tuple[str, ...] | None:
        """The newline kinds seen so far (universal newline modes only), as io reports them."""
        self._buffer.closed  # noqa: B018 - raises after detach(), as io does
        return getattr(self._decoder, "newlines", None)

    @property
    def driver(self) -> str:
        return self._buffer.driver

    def fileno(self) -> int:
        return self._buffer.fileno()

    def readable(self) -> bool:
        return self._buffer.readable()

    def writable(self) -> bool:
        return self._buffer.writable()

    def seekable(self) -> bool:
        return self._buffer.seekable()

    def isatty(self) -> bool:
        return self._buffer.isatty()

    def __repr__(self) -> str:
        if self._buffer is _DETACHED:
            return f"<aiopg_io.AsyncTextFile mode={self._mode!r} encoding={self._encoding!r} detached>"
        state = " closed" if self.closed else ""
        return (
            f"<aiopg_io.AsyncTextFile name={self.name!r} mode={self._mode!r} "
            f"encoding={self._encoding!r}{state}>"
        )

    # -- checks -------------------------------------------------------------------------------

    def _check_closed(self) -> None:
        if self._buffer.closed:
            raise ClosedError(f"I/O operation on closed file {self._buffer.path!r}")

    def _check_readable(self) -> _Decoder:
        self._check_closed()
        if self._decoder is None:
            raise io.UnsupportedOperation(
                f"not readable: {self._buffer.path!r} is open in mode {self._mode!r}"
            )
        return self._decoder

    def _check_writable(self) -> codecs.IncrementalEncoder:
        self._check_closed()
        if self._encoder is None:
            raise io.UnsupportedOperation(
                f"not writable: {self._buffer.path!r} is open in mode {self._mode!r}"
            )
        return self._encoder

    # -- decoded text -------------------------------------------------------------------------

    def _set_decoded_chars(self, chars: str) -> None:
        self._decoded_chars = chars
        self._decoded_chars_used = 0

    def _get_decoded_chars(self, n: int = -1) -> str:
        offset = self._decoded_chars_used
        chars = self._decoded_chars[offset:] if n < 0 else self._decoded_chars[offset : offset + n]
        self._decoded_chars_used += len(chars)
        return chars

    def _forget_read_ahead(self) -> None:
        self._set_decoded_chars("")
        self._snapshot = None

    async def _read_chunk(self, decoder: _Decoder, size_hint: int) -> bool:
        """Decode the next chunk into the decoded text; False at end of file."""
        dec_buffer, dec_flags = decoder.getstate()
        if size_hint > 0:
            size_hint = int(max(self._b2cratio, 1.0) * size_hint)
        input_chunk = await self._buffer.read1(max(_CHUNK_SIZE, size_hint))
        eof = not input_chunk
        decoded = decoder.decode(input_chunk, eof)
        self._set_decoded_chars(decoded)
        self._b2cratio = len(input_chunk) / len(decoded) if decoded else 0.0
        self._snapshot = (dec_flags, dec_buffer + input_chunk)
        return not eof or bool(decoded)

    def _decoder_setstate(self, decoder: _Decoder, start_pos: int, dec_flags: int) -> None:
        # At the very start reset() rather than setstate(): a fresh utf-16 decoder's flags
        # are not 0 (it still expects a BOM), and a cookie of 0 must mean "the start".
        if start_pos == 0 and dec_flags == 0:
            decoder.reset()
        else:
            decoder.setstate((b"", dec_flags))

    # -- reads --------------------------------------------------------------------------------

    async def read(self, size: int | None = -1) -> str:
        """Up to ``size`` characters (everything left when ``size`` is negative or None)."""
        n = text_size(size)
        decoder = self._check_readable()
        async with self._lock:
            if n < 0:
                data = await self._buffer.read()
                decoded = decoder.decode(data, True)
                result = self._get_decoded_chars() + decoded
                self._forget_read_ahead()
                return result
            result = self._get_decoded_chars(n)
            if len(result) == n:
                return result
            parts = [result]
            remaining = n - len(result)
            while remaining > 0:
                if not await self._read_chunk(decoder, remaining):
                    break
                part = self._get_decoded_chars(remaining)
                parts.append(part)
                remaining -= len(part)
            return "".join(parts)

    def _find_line_ending(self, line: str, start: int) -> tuple[int, int]:
        """(end of the first line ending at or after ``start``, or -1; how far the text
        can be set aside as not holding one)."""
        if self._readtranslate:
            i = line.find("\n", start)
            return (i + 1, 0) if i >= 0 else (-1, len(line))
        if self._readuniversal:
            # The newline decoder never ends a chunk with a \r that a \n may follow.
            m = _UNIVERSAL_EOL.search(line, start)
            return (m.end(), 0) if m is not None else (-1, len(line))
        nl = self._readnl
        assert nl is not None
        i = line.find(nl, start)
        if i >= 0:
            return i + len(nl), 0
        if len(nl) > 1 and len(line) > start and line.endswith(nl[0]):
            return -1, len(line) - 1  # a "\r" that may begin a "\r\n" in the next chunk
        return -1, len(line)

    async def readline(self, size: int = -1) -> str:
        """One line with its line ending (at most ``size`` characters); "" at end of file."""
        limit = operator.index(size)  # None is a TypeError here, as in io.TextIOWrapper
        decoder = self._check_readable()
        async with self._lock:
            return await self._readline(decoder, limit)

    async def _readline(self, decoder: _Decoder, limit: int) -> str:
        # textio.c's _textiowrapper_readline: search the decoded text in place, set aside
        # what holds no line ending, keep a partial "\r\n" for the next chunk.
        chunks: list[str] = []
        chunked = 0
        remaining = ""
        while True:
            got = True
            while not self._decoded_chars:
                got = await self._read_chunk(decoder, 0)
                if not got:
                    break
            if not got:
                self._forget_read_ahead()
                chunks.append(remaining)
                return "".join(chunks)
            if remaining:
                line = remaining + self._decoded_chars
                start, offset_to_buffer = 0, len(remaining)
                remaining = ""
            else:
                line = self._decoded_chars
                start, offset_to_buffer = self._decoded_chars_used, 0
            endpos, consumed = self._find_line_ending(line, start)
            if endpos >= 0:
                if limit >= 0 and endpos - start + chunked >= limit:
                    endpos = start + limit - chunked
                break
            endpos = consumed
            if limit >= 0 and endpos - start + chunked >= limit:
                endpos = start + limit - chunked
                break
            if endpos > start:
                chunks.append(line[start:endpos])
                chunked += endpos - start
            if endpos < len(line):
                remaining = line[endpos:]
            self._set_decoded_chars("")
        self._decoded_chars_used = endpos - offset_to_buffer
        if not chunks:
            return line[start:endpos]
        chunks.append(line[start:endpos])
        return "".join(chunks)

    async def readlines(self, hint: int | None = -1) -> list[str]:
        """The remaining lines; stops after the line that brings the total past ``hint``."""
        limit = text_size(hint)
        decoder = self._check_readable()
        lines: list[str] = []
        total = 0
        async with self._lock:
            while True:
                line = await self._readline(decoder, -1)
                if not line:
                    return lines
                lines.append(line)
                total += len(line)
                if 0 < limit < total:  # io: stop once the total *exceeds* hint
                    return lines

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    # -- writes -------------------------------------------------------------------------------

    async def write(self, s: str) -> int:
        """Write ``s``; returns its length in characters (before newline translation)."""
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        encoder = self._check_writable()
        length = len(s)
        haslf = (self._writetranslate or self._line_buffering) and "\n" in s
        if haslf and self._writetranslate and self._writenl != "\n":
            s = s.replace("\n", self._writenl)
        needflush = self._write_through or (self._line_buffering and (haslf or "\r" in s))
        async with self._lock:
            data = encoder.encode(s)
            await self._buffer.write(data)
            if needflush:
                await self._buffer.flush()
            # The read-ahead no longer describes the file (CPython drops it too).
            self._forget_read_ahead()
            if self._decoder is not None:
                self._decoder.reset()
        return length

    async def writelines(self, lines: Iterable[str]) -> None:
        """Write each string of ``lines`` (no separators added, as in Python)."""
        self._check_closed()
        for line in lines:
            await self.write(line)

    async def flush(self) -> None:
        self._check_closed()
        await self._buffer.flush()

    async def truncate(self, size: int | None = None) -> int:
        """Resize the file to ``size`` bytes (default: the binary position, as CPython)."""
        self._check_closed()
        async with self._lock:
            await self._buffer.flush()
            return await self._buffer.truncate(size)

    # -- positioning --------------------------------------------------------------------------

    async def tell(self) -> int:
        """An opaque cookie for the current text position (see the module docstring)."""
        self._check_closed()
        async with self._lock:
            return await self._tell()

    async def _tell(self) -> int:
        await self._buffer.flush()
        position = await self._buffer.tell()
        decoder = self._decoder
        if decoder is None or self._snapshot is None:
            return position
        dec_flags, next_input = self._snapshot
        position -= len(next_input)
        chars_to_skip = self._decoded_chars_used
        if chars_to_skip == 0:
            return _pack_cookie(position, dec_flags)
        saved_state = decoder.getstate()
        try:
            return self._reconstruct(decoder, position, dec_flags, next_input, chars_to_skip)
        finally:
            decoder.setstate(saved_state)

    def _reconstruct(
        self, decoder: _Decoder, position: int, dec_flags: int, next_input: bytes, chars_to_skip: int
    ) -> int:
        # Guess a start point from the bytes/char ratio (one decode call for fixed-width
        # codecs), back off until the decoder holds nothing there, then walk byte by byte.
        skip_bytes = int(self._b2cratio * chars_to_skip)
        skip_back = 1
        while skip_bytes > 0:
            self._decoder_setstate(decoder, position, dec_flags)
            n = len(decoder.decode(next_input[:skip_bytes]))
            if n <= chars_to_skip:
                b, d = decoder.getstate()
                if not b:
                    dec_flags = d
                    chars_to_skip -= n
                    break
                skip_bytes -= len(b)
                skip_back = 1
            else:
                skip_bytes -= skip_back
                skip_back *= 2
        if skip_bytes <= 0:
            skip_bytes = 0
            self._decoder_setstate(decoder, position, dec_flags)
        start_pos = position + skip_bytes
        if chars_to_skip == 0:
            return _pack_cookie(start_pos, dec_flags)
        bytes_fed = 0
        chars_decoded = 0
        need_eof = False
        i = skip_bytes
        while i < len(next_input):
            chars_decoded += len(decoder.decode(next_input[i : i + 1]))
            bytes_fed += 1
            dec_buffer, flags = decoder.getstate()
            if not dec_buffer and chars_decoded <= chars_to_skip:
                start_pos += bytes_fed
                chars_to_skip -= chars_decoded
                dec_flags, bytes_fed, chars_decoded = flags, 0, 0
            if chars_decoded >= chars_to_skip:
                break
            i += 1
        else:
            chars_decoded += len(decoder.decode(b"", True))
            need_eof = True
            if chars_decoded < chars_to_skip:
                raise OSError("can't reconstruct logical file position")
        return _pack_cookie(start_pos, dec_flags, bytes_fed, need_eof, chars_to_skip)

    async def seek(self, cookie: int, whence: int = os.SEEK_SET) -> int:
        """Go to a position from :meth:`tell` (``whence`` 0), or stay (``seek(0, 1)``), or go
        to the end (``seek(0, 2)``); other offsets are refused, as in Python's text files."""
        self._check_closed()
        cookie = operator.index(cookie)
        whence = operator.index(whence)
        async with self._lock:
            if whence == os.SEEK_CUR:
                if cookie != 0:
                    raise io.UnsupportedOperation("can't do nonzero cur-relative seeks")
                cookie = await self._tell()
            elif whence == os.SEEK_END:
                if cookie != 0:
                    raise io.UnsupportedOperation("can't do nonzero end-relative seeks")
                await self._buffer.flush()
                self._forget_read_ahead()
                if self._decoder is not None:
                    self._decoder.reset()
                position = await self._buffer.seek(0, os.SEEK_END)
                self._reset_encoder(position == 0)
                return position
            elif whence != os.SEEK_SET:
                raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
            if cookie < 0:
                raise ValueError(f"negative seek position {cookie}")
            await self._buffer.flush()
            start_pos, dec_flags, bytes_to_feed, need_eof, chars_to_skip = _unpack_cookie(cookie)
            await self._buffer.seek(start_pos)
            self._forget_read_ahead()
            decoder = self._decoder
            if decoder is not None:
                self._decoder_setstate(decoder, start_pos, dec_flags)
            if chars_to_skip:
                input_chunk = await self._buffer.read(bytes_to_feed)
                assert decoder is not None  # read() above raised on a write-only file
                self._snapshot = (dec_flags, input_chunk)
                self._set_decoded_chars(decoder.decode(input_chunk, need_eof))
                if len(self._decoded_chars) < chars_to_skip:
                    raise OSError("can't restore logical file position")
                self._decoded_chars_used = chars_to_skip
            else:
                self._snapshot = (dec_flags, b"")
            self._reset_encoder(start_pos == 0 and dec_flags == 0)
            return cookie

    def _reset_encoder(self, start_of_stream: bool) -> None:
        # A BOM belongs at position 0 only.
        if self._encoder is not None:
            if start_of_stream:
                self._encoder.reset()
            else:
                self._encoder.setstate(0)

    # -- closing ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Flush and close the binary file (see :meth:`AsyncFile.aclose`)."""
        await self._buffer.aclose()

    async def close(self) -> None:
        """Same as :meth:`aclose` (aiofiles spells it ``close``)."""
        await self._buffer.aclose()

    def detach(self) -> AsyncFile:
        """Separate the binary file from this text layer and return it, as
        ``io.TextIOWrapper.detach``; this object then raises ValueError for every call,
        ``aclose()`` included. Synchronous, as in io and aiofiles; it does no I/O (text
        writes are already in the binary file's buffer, which goes with it). Decoded text
        not yet returned is dropped, so the binary cursor is where the text layer's reads
        reached, as in io. Refused (RuntimeError) while a call of another task is still
        running on this file."""
        self._check_closed()
        if self._lock.contended:
            raise RuntimeError(
                f"detach() of {self._buffer.path!r} while another task's call on it is still "
                "running; await it first"
            )
        buffer, self._buffer = self._buffer, _DETACHED
        self._forget_read_ahead()
        return buffer

    async def __aenter__(self) -> AsyncTextFile:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
