"""Serving files over ASGI: :class:`FileResponse` (Starlette's, read through aiopg_io) and
:class:`StaticFiles` (a directory of them). Install with ``pip install 'aiopg_io[asgi]'``.

Only the ASGI protocol is used here (dicts in, dicts out): no web framework is imported, so
the response works under any ASGI server, and from a Starlette route (Starlette awaits
``response(scope, receive, send)`` without asking its type). FastAPI passes through only
instances of its own ``Response``: there, call it from a Starlette ``Route`` or mount a
:class:`StaticFiles`.

Facts relied on (the ASGI HTTP spec and its extensions; RFC 9110):

- The server says what it offers in ``scope["extensions"]``. ``http.response.pathsend``
  takes an absolute path and sends the whole file itself (granian 2.x offers it, with
  spec_version "2.3"); ``http.response.zerocopysend`` takes an open fd, an offset and a
  count (no server here offers it). uvicorn and hypercorn offer neither, nor expose their
  socket: under them the body goes out in ``http.response.body`` messages read through
  aiopg_io.
- Servers of ASGI spec_version < 2.4 (uvicorn 0.3x-0.5x: "2.3"; hypercorn: "2.1") drop the body
  of a client that went away without telling the sender: a response longer than one
  message listens on ``receive()`` for ``http.disconnect`` and stops (Starlette does the
  same); the file is then closed at once.
- A Range request (RFC 9110 section 14) may be answered with the whole file; a conditional
  request with a matching ``If-None-Match`` (weak comparison, ``*`` matches) or, only when
  there is no ``If-None-Match``, an ``If-Modified-Since`` not earlier than the file's
  modification time, is answered 304 (RFC 9110 section 13.1).

What differs from Starlette's ``FileResponse`` (1.x), on purpose:

- 304 for ``If-None-Match`` / ``If-Modified-Since`` on GET and HEAD (Starlette leaves this to
  ``StaticFiles``; the 304 carries the same headers as Starlette's ``NotModifiedResponse``).
- A request for several ranges is answered 200 with the whole file, not
  ``multipart/byteranges``.
- The file is opened, then ``fstat``-ed (Starlette stats, then opens: the headers could
  describe another file than the one read). Where the kernel has the path in its lookup
  cache, the open is made on the loop's thread (openat2 with ``RESOLVE_CACHED``: it fails
  rather than wait for a disk; :mod:`aiopg_io._openat2`) and so is the fstat (an open fd's
  inode is in memory): no thread hop; otherwise open, checks and fstat share one. The
  file is then read through aiopg_io in one piece up to ``whole_body_max``, else in
  ``chunk_size`` pieces (Starlette: a thread hop per 64 KiB), straight into the
  ``bytearray`` that is sent (bytes-like, as every server here accepts), which saves a copy.
- Body chunks are reused (:class:`_ChunkPool`), but only when nothing else holds them. The
  ASGI spec types ``body`` as a byte string, i.e. immutable: a server may keep the object
  after ``await send()`` returns, and they do (uvloop's transport keeps a memoryview of
  whatever it could not write at once; h11-based servers queue the object). So a chunk
  goes back to the pool only when its reference count, measured the same way, is what it
  was when the chunk was taken (nothing but this frame holds it: every holder, a
  memoryview or a buffer export included, owns a reference); otherwise it is dropped and a
  new one is allocated. Interpreters without ``sys.getrefcount`` never reuse.
- Under ``pathsend`` the file is only ``stat``-ed (one thread hop, :class:`StaticFiles`'
  checks included; Starlette stats too), not opened: the server opens it by its path, so an
  fd would vouch for nothing. ``pathsend`` gets the absolute path that was checked, as the
  extension asks (under :class:`StaticFiles`, with symlinks resolved).
- A file that shrinks while it is sent ends the response early (the server then closes the
  connection) and a warning on the ``aiopg_io.asgi`` logger says how many bytes went out;
  Starlette's reads would just stop short too, without saying so.
- Only ``http`` scopes (no websocket denial responses).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat as stat_mod
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from email.utils import formatdate, parsedate_to_datetime
from mimetypes import guess_type
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread

from ._checks import has_nul
from ._context import get_context
from ._file import AsyncFile
from ._open import open as aio_open
from ._openat2 import RESOLVE_NO_SYMLINKS, available, open_cached
from .drivers.base import AT_FDCWD

__all__ = ["FileResponse", "StaticFiles"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("aiopg_io.asgi")

_NOT_MODIFIED_HEADERS = (b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary")
_TEXT = "text/plain; charset=utf-8"
# Under StaticFiles these mean "not a file this directory serves": 404, not 500.
_UNSERVABLE = frozenset({errno.EACCES, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR})


_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


# The reference count of a chunk, from the frame that holds it (None: reuse nothing).
_refs: Callable[[object], int] | None = getattr(sys, "getrefcount", None)


class _ChunkPool:
    """Spare body chunks, up to ``max_bytes`` in all, shared by the responses of one
    :class:`StaticFiles` (or the chunks of one :class:`FileResponse`).

    ``take(n)`` hands out a spare chunk of exactly ``n`` bytes, or a new ``bytearray``; the
    caller records ``_refs(chunk)`` at once and hands it back with ``give`` only when
    ``_refs(chunk)`` is that figure again (see the module docstring). Spares are plain
    memory: whatever is not kept is freed by the garbage collector like any other object.
    """

    __slots__ = ("_free", "held", "max_bytes", "reused")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0  # bytes in spares
        self.reused = 0  # chunks handed out again
        self._free: dict[int, list[bytearray]] = {}

    def take(self, n: int) -> bytearray:
        spares = self._free.get(n) if _refs is not None else None
        if spares:
            chunk = spares.pop()
            if not spares:
                del self._free[n]
            self.held -= n
            self.reused += 1
            return chunk
        return bytearray(n)

    def give(self, chunk: bytearray) -> None:
        n = len(chunk)
        if self.held + n <= self.max_bytes:
            self._free.setdefault(n, []).append(chunk)
            self.held += n


class _NotFound(RuntimeError):
    """The file is missing, not a regular file, or (under :class:`StaticFiles`) not one the
    directory may serve; raised before anything was sent."""


def _not_found(e: OSError, path: str, guarded: bool) -> Exception:
    """What to raise for ``e`` from opening or statting ``path``: :class:`_NotFound` where
    Starlette says the file is missing or no file (and, guarded, where the directory may
    not serve it), else ``e`` itself."""
    if isinstance(e, FileNotFoundError):
        return _NotFound(f"File at path {path} does not exist.")
    if isinstance(e, IsADirectoryError):
        return _NotFound(f"File at path {path} is not a file.")
    if guarded and e.errno in _UNSERVABLE:
        return _NotFound(f"File at path {path} cannot be served: {e.strerror}")
    return e


def _stat_for_pathsend(path: str, guard: Callable[[str], str] | None) -> tuple[str, os.stat_result]:
    """The path the server is to send and its stat (no open: the server opens it by path),
    refused as :class:`_Opener` refuses; runs in a thread."""
    full = guard(path) if guard else path
    try:
        st = os.stat(full)
    except OSError as e:
        raise _not_found(e, path, guard is not None) from None
    if not stat_mod.S_ISREG(st.st_mode):
        raise _NotFound(f"File at path {path} is not a file.")
    return os.path.abspath(full), st


def _regular(fd: int, path: str) -> os.stat_result:
    """The stat of ``fd`` (just opened for ``path``) once it is found to be a regular file,
    else :class:`_NotFound`. An open fd's inode is in memory: the fstat waits for no disk."""
    st = os.fstat(fd)
    if not stat_mod.S_ISREG(st.st_mode):
        raise _NotFound(f"File at path {path} is not a file.")
    return st


class _Opener:
    """An ``opener`` for :func:`aiopg_io.open` that also checks and fstats the file, all in
    the thread that opens it. O_NONBLOCK keeps a FIFO from blocking the open; it is cleared
    before any read (io_uring answers EAGAIN, rather than waiting, on a file that has it).
    ``guard`` maps the path to the one to open, or raises :class:`_NotFound`."""

    __slots__ = ("confine", "guard", "stat")

    def __init__(
        self, guard: Callable[[str], str] | None = None, confine: Callable[[int, str], None] | None = None
    ) -> None:
        self.guard = guard
        self.confine = confine  # checks the fd opened is still where guard looked
        self.stat: os.stat_result | None = None

    def __call__(self, path: str, flags: int) -> int:
        try:
            fd = os.open(self.guard(path) if self.guard else path, flags | os.O_NONBLOCK)
        except OSError as e:
            raise _not_found(e, path, self.guard is not None) from None
        try:
            if self.confine is not None:
                self.confine(fd, path)
            self.stat = _regular(fd, path)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd


def _open_here(path: str, static: StaticFiles | None) -> int | None:
    """``path`` opened on this (the loop's) thread where the kernel finds it without waiting
    for a disk (:func:`aiopg_io._openat2.open_cached`), O_NONBLOCK (cleared before any
    read: a FIFO does not block the open); under ``static``, only where no symlink is on
    the way (with no ``..``, refused by :meth:`StaticFiles._joined`, the file is then under
    the directory). None: not opened here (a path not cached, a symlink, an error, no
    openat2), for the thread path to look again and answer."""
    if static is not None and not static._opens_here:
        return None
    full = static._joined(path) if static is not None else path
    if has_nul(full):
        return None  # aiopg_io.open's ValueError, from the thread path
    try:
        return open_cached(AT_FDCWD, full, _READ | _O_NONBLOCK, RESOLVE_NO_SYMLINKS if static else 0)
    except OSError:
        return None


async def _open(path: str | os.PathLike[str], static: StaticFiles | None) -> tuple[AsyncFile, os.stat_result]:
    """The file at ``path`` open for reading through the loop's context, and its stat; under
    ``static``, only a file its directory may serve (else :class:`_NotFound`)."""
    # A server answers request after request on one loop: hold the loop's context until the
    # loop ends, or every moment with no file open would close the driver (a ring, threads)
    # and the next request make it again.
    ctx = get_context()
    ctx.hold_for_loop()
    name = os.fspath(path)
    fd = _open_here(name, static)
    if fd is None:  # one thread hop: resolve (and check), open and fstat
        opener = _Opener(static._guard, static._confine) if static is not None else _Opener()
        f = await aio_open(path, "rb", buffering=0, opener=opener)
        assert opener.stat is not None
        return f, opener.stat
    try:
        st = _regular(fd, name)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    ctx.acquire()  # the file's hold, released by its aclose
    f = AsyncFile(
        fd,
        name,
        "rb",
        ctx,
        readable=True,
        writable=False,
        appending=False,
        direct=False,
        alignment=None,
        buffer_size=0,
    )
    return f, st


def _etag_values(header: str) -> list[str]:
    return [tag.strip().removeprefix("W/") for tag in header.split(",")]


def _not_before(if_modified_since: str, mtime: float) -> bool:
    try:
        since = parsedate_to_datetime(if_modified_since).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False  # an unparseable date is ignored (RFC 9110 section 13.1.3)
    return since >= int(mtime)


class _BadRange(Exception):
    def __init__(self, status: int, body: str = "", size: int = 0) -> None:
        self.status, self.body, self.size = status, body, size


def _parse_range(header: str, size: int) -> list[tuple[int, int]]:
    """Starlette's reading of a Range header: [(start, end)], [] to ignore it, or _BadRange."""
    units, sep, spec = header.partition("=")
    if not sep:
        raise _BadRange(400, "Malformed range header.")
    if units.strip().lower() != "bytes":
        raise _BadRange(400, "Only support bytes range")
    if spec.count(",") + 1 > FileResponse.max_ranges:
        return []
    ranges = []
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        if not dash:
            continue
        first, last = first.strip(), last.strip()
        try:
            start = int(first) if first else max(size - int(last), 0)
            end = int(last) + 1 if first and last and int(last) < size else size
        except ValueError:
            continue
        ranges.append((start, end))
    if not ranges:
        raise _BadRange(400, "Range header: range must be requested")
    if any(not 0 <= start < size for start, _ in ranges):
        raise _BadRange(416, size=size)
    if any(start >= end for start, end in ranges):
        raise _BadRange(400, "Range header: start must be less than end")
    return ranges


async def _plain(
    send: Send, status: int, body: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = body.encode()
    raw = [*(headers or []), (b"content-length", str(len(data)).encode()), (b"content-type", _TEXT.encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data, "more_body": False})


class FileResponse:
    """An ASGI response sending the file at ``path``, with Starlette's constructor.

    Headers: ``content-type`` (``media_type``, else guessed from ``filename`` or ``path``,
    else ``application/octet-stream``; ``text/*`` gets ``charset=utf-8``), ``accept-ranges``,
    ``content-disposition`` when ``filename`` is given, and from the file's stat (or
    ``stat_result``): ``content-length``, ``last-modified`` and Starlette's ``etag`` (MD5 of
    ``"{mtime}-{size}"``). HEAD sends the headers only; a single ``Range`` gets 206 (416
    when it starts past the end, 400 when malformed; ``If-Range`` honoured); a matching
    ``If-None-Match`` / ``If-Modified-Since`` gets 304. ``background`` (any awaitable
    callable) runs after the body. A missing path or one that is not a regular file raises
    RuntimeError (as Starlette's does; the server answers 500).

    The differences from Starlette's, and why, are in the module docstring.
    """

    #: A body up to this many bytes is read and sent in one ``http.response.body`` message.
    whole_body_max = 1024 * 1024
    #: Bytes per message (and per aiopg_io read) of a longer body: small enough that the
    #: server's transport takes it without pausing (docs/benchmarks.md, "chunk size").
    chunk_size = 256 * 1024
    #: Spare chunks kept for reuse, in bytes (per :class:`StaticFiles`, or per response).
    pool_bytes = 8 * 1024 * 1024
    #: A Range header naming more ranges than this is ignored (Starlette's limit).
    max_ranges = 100

    def __init__(
        self,
        path: str | os.PathLike[str],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: Callable[[], Awaitable[Any]] | None = None,
        filename: str | None = None,
        stat_result: os.stat_result | None = None,
        content_disposition_type: str = "attachment",
    ) -> None:
        self.path = path
        self.status_code = status_code
        self.filename = filename
        self.background = background
        self.stat_result = stat_result
        if media_type is None:
            media_type = guess_type(filename or os.fspath(path))[0] or "application/octet-stream"
        self.media_type = media_type
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        if not any(k == b"content-type" for k, _ in raw):
            if media_type.startswith("text/") and "charset=" not in media_type.lower():
                media_type += "; charset=utf-8"
            raw.append((b"content-type", media_type.encode("latin-1")))
        self.raw_headers: list[tuple[bytes, bytes]] = raw
        self._setdefault("accept-ranges", "bytes")
        if filename is not None:
            quoted = quote(filename)
            if quoted != filename:
                disposition = f"{content_disposition_type}; filename*=utf-8''{quoted}"
            else:
                disposition = f'{content_disposition_type}; filename="{filename}"'
            self._setdefault("content-disposition", disposition)
        if stat_result is not None:
            self._set_stat_headers(stat_result)
        self._static: StaticFiles | None = None  # the StaticFiles answering with it: its path checks
        self._pool: _ChunkPool | None = None  # StaticFiles' chunks, else one made per call

    def _get(self, name: bytes) -> str | None:
        for k, v in self.raw_headers:
            if k == name:
                return v.decode("latin-1")
        return None

    def _setdefault(self, name: str, value: str) -> None:
        key = name.encode("latin-1")
        if self._get(key) is None:
            self.raw_headers.append((key, value.encode("latin-1")))

    def _set_stat_headers(self, st: os.stat_result) -> None:
        etag_base = f"{st.st_mtime}-{st.st_size}"
        self._setdefault("content-length", str(st.st_size))
        self._setdefault("last-modified", formatdate(st.st_mtime, usegmt=True))
        self._setdefault("etag", f'"{hashlib.md5(etag_base.encode(), usedforsecurity=False).hexdigest()}"')

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"FileResponse serves http scopes, not {scope['type']!r}")
        method = scope["method"].upper()
        extensions = scope.get("extensions") or {}
        request = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        f = None
        path = os.path.abspath(self.path)
        if self.stat_result is not None:
            st = self.stat_result
        elif "http.response.pathsend" in extensions:
            # The server opens the file by its path: a stat is all the headers need (a range
            # is read from a file opened then).
            guard = self._static._guard if self._static is not None else None
            path, st = await anyio.to_thread.run_sync(_stat_for_pathsend, os.fspath(self.path), guard)
        else:
            f, st = await _open(self.path, self._static)
        try:
            self._set_stat_headers(st)
            await self._respond(scope, receive, send, method, extensions, request, st, f, path)
        finally:
            if f is not None:
                await f.aclose()
        if self.background is not None:
            await self.background()

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        extensions: Mapping[str, Any],
        request: Mapping[str, str],
        st: os.stat_result,
        f: AsyncFile | None,
        path: str,
    ) -> None:
        size = st.st_size
        plain = self.status_code != 200 or method not in ("GET", "HEAD")
        if not plain and self._not_modified(request, st):
            kept = [(k, v) for k, v in self.raw_headers if k in _NOT_MODIFIED_HEADERS]
            await send({"type": "http.response.start", "status": 304, "headers": kept})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        status, start, end, headers = self.status_code, 0, size, self.raw_headers
        http_range = request.get("range")
        if_range = request.get("if-range")
        if not plain and http_range is not None and (if_range is None or self._range_applies(if_range)):
            try:
                ranges = _parse_range(http_range, size)
            except _BadRange as e:
                extra = [(b"content-range", f"bytes */{e.size}".encode())] if e.status == 416 else []
                await _plain(send, e.status, e.body, extra)
                return
            if len(ranges) == 1:
                status, (start, end) = 206, ranges[0]
                headers = [(k, v) for k, v in headers if k != b"content-length"]
                headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
                headers.append((b"content-length", str(end - start).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if method == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif status != 206 and "http.response.pathsend" in extensions:
            await send({"type": "http.response.pathsend", "path": path})
        else:
            await self._send_body(scope, receive, send, extensions, f, start, end)

    def _not_modified(self, request: Mapping[str, str], st: os.stat_result) -> bool:
        if_none_match = request.get("if-none-match")
        if if_none_match is not None:
            tags = _etag_values(if_none_match)
            return "*" in tags or (self._get(b"etag") or "").removeprefix("W/") in tags
        if_modified_since = request.get("if-modified-since")
        return if_modified_since is not None and _not_before(if_modified_since, st.st_mtime)

    def _range_applies(self, if_range: str) -> bool:
        if if_range.startswith("W/"):
            return False
        return if_range in (self._get(b"last-modified"), self._get(b"etag"))

    async def _send_body(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        extensions: Mapping[str, Any],
        f: AsyncFile | None,
        start: int,
        end: int,
    ) -> None:
        if f is None:  # built with a stat_result: open now
            f, _ = await _open(self.path, self._static)
            try:
                await self._send_body(scope, receive, send, extensions, f, start, end)
            finally:
                await f.aclose()
            return
        if "http.response.zerocopysend" in extensions:
            message = {"file": f.fileno(), "offset": start, "count": end - start, "more_body": False}
            await send({"type": "http.response.zerocopysend", **message})
            return
        spec = scope.get("asgi", {}).get("spec_version", "2.0")
        if end - start <= self.whole_body_max or tuple(map(int, spec.split("."))) >= (2, 4):
            # One message (nothing to stop part-way), or a server that raises on send once
            # the client has gone.
            await self._stream(f, send, start, end)
            return
        async with anyio.create_task_group() as tg:

            async def stream() -> None:
                await self._stream(f, send, start, end)
                tg.cancel_scope.cancel()

            tg.start_soon(stream)
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

    async def _stream(self, f: AsyncFile, send: Send, start: int, end: int) -> None:
        if self._pool is None:
            self._pool = _ChunkPool(self.pool_bytes)
        pool = self._pool
        step = end - start if end - start <= self.whole_body_max else self.chunk_size
        pos = start
        while pos < end:
            want = min(step, end - pos)
            chunk = pool.take(want)
            alone = _refs(chunk) if _refs is not None else 0
            try:
                n = await f.preadinto(chunk, pos)
                pos += n
                if n < want:
                    logger.warning(
                        "%s: the file ended after %d of %d bytes (it shrank while being sent); "
                        "the response is cut short",
                        os.fspath(self.path),
                        pos - start,
                        end - start,
                    )
                    await send({"type": "http.response.body", "body": chunk[:n], "more_body": False})
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": pos < end})
            finally:
                # Back to the pool only if nothing else holds it: not the server (which may
                # keep the body after send returns), not an op a cancellation left running.
                if _refs is not None and _refs(chunk) == alone:
                    pool.give(chunk)
        if pos == start:  # an empty range: the body still has to end
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class StaticFiles:
    """An ASGI app serving the regular files under ``directory`` with :class:`FileResponse`.

    GET and HEAD only (405 otherwise). The request path is taken relative to the
    directory; a path with a NUL byte, a ``..`` segment, one that resolves (through
    symlinks) outside the directory, a directory, or a missing file gets 404 and is never
    read (a file outside is never opened; a directory or FIFO inside may be, O_NONBLOCK,
    and closed unread). A path with a NUL byte or a ``..`` segment is refused by its letters, before
    anything is looked up. Then, where Linux's openat2 is there, the file is opened on the
    loop's thread if the kernel finds it in its lookup cache with no symlink on the way
    (``RESOLVE_CACHED | RESOLVE_NO_SYMLINKS``: nothing waits for a disk, and the path's
    letters alone keep it under the directory): no thread hop, the common case of a
    server answering for files it has served before. Anything else (a path not cached, a
    symlink, a missing file) is resolved (``realpath``), checked and opened in one thread
    hop, as everywhere without openat2. A subset of Starlette's ``StaticFiles`` (no
    ``html`` mode, no packages).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.path.realpath(directory)
        if not os.path.isdir(self.directory):
            raise RuntimeError(f"Directory '{os.fspath(directory)}' does not exist")
        self._pool = _ChunkPool(FileResponse.pool_bytes)  # shared by its responses
        # Whether a file may be opened on the loop's thread when the kernel has its path
        # cached (openat2 with RESOLVE_CACHED | RESOLVE_NO_SYMLINKS); else always in a thread.
        self._opens_here = available()

    def _joined(self, path: str) -> str:
        """The directory joined with the request path (``path`` is the directory + "/" +
        the request's path), or _NotFound for a path that is no file under it by its
        letters alone (a NUL byte, a ``..`` segment, nothing): nothing is looked up."""
        rel = path[len(self.directory) :]
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if "\x00" in rel or ".." in parts or not parts:
            raise _NotFound(f"{rel!r} is not a file under {self.directory}")
        return os.path.join(self.directory, *parts)

    def _guard(self, path: str) -> str:
        """The file to open for ``path``, symlinks resolved, or _NotFound; for a thread
        (it looks the path up)."""
        full = os.path.realpath(self._joined(path))
        if os.path.commonpath([self.directory, full]) != self.directory:
            raise _NotFound(f"{path[len(self.directory) :]!r} leads out of {self.directory}")  # a symlink
        return full

    def _confine(self, fd: int, path: str) -> None:
        """_NotFound unless ``fd`` (opened for ``path`` after :meth:`_guard` looked) is a file
        under the directory: a directory on the way swapped for a symlink between the look
        and the open would lead the open out of it. The kernel's own name for the fd
        (``/proc/self/fd``) says where it is; where there is none, the look alone decides."""
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if os.path.commonpath([self.directory, where]) != self.directory:
            raise _NotFound(f"{path[len(self.directory) :]!r} led out of {self.directory} as it was opened")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"StaticFiles serves http scopes, not {scope['type']!r}")
        if scope["method"].upper() not in ("GET", "HEAD"):
            await _plain(send, 405, "Method Not Allowed", [(b"allow", b"GET, HEAD")])
            return
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if "\x00" in path:  # never a file's name (and aiopg_io.open refuses it with ValueError)
            await _plain(send, 404, "Not Found")
            return
        response = FileResponse(self.directory + "/" + path.lstrip("/"))
        response._static, response._pool = self, self._pool
        try:
            await response(scope, receive, send)
        except _NotFound:  # raised by the open, before anything was sent
            await _plain(send, 404, "Not Found")
