"""``aiopg_io.sendfile``: a file's bytes to a connected socket, zero-copy where it can be.

Facts relied on:

- ``sendfile(out_fd, in_fd, &offset, count)`` moves bytes from ``in_fd`` to ``out_fd`` inside
  the kernel, without a copy through user space. ``in_fd`` must support mmap-like access (a
  regular file or a block device: not a pipe, socket or most /proc files); ``out_fd`` may be
  any file since Linux 2.6.33. Given an offset, it leaves ``in_fd``'s file position alone,
  so many sends can share one fd. At most 0x7ffff000 bytes move per call. (sendfile(2))
- On a non-blocking socket it returns the bytes queued (short when the send buffer fills)
  or fails with EAGAIN; it returns 0 when the offset is at or past the end of the file, so
  a file truncated during a send ends it early rather than blocking. (sendfile(2),
  socket(7); CPython's ``socket.sendfile`` and asyncio's ``_sock_sendfile_native`` rely on
  the same.)
- When ``in_fd`` cannot be used it fails at once, before any byte moves, with EINVAL or
  ENOSYS (EOPNOTSUPP on some filesystems): asyncio then falls back to a copy
  (``SendfileNotAvailableError``), and so does this module, only while nothing was sent.
- TLS is encrypted in user space (``ssl.SSLSocket``, trio's ``SSLStream``, anyio's
  ``TLSStream``), so a TLS socket cannot take sendfile (kTLS aside, which Python does not
  expose). A non-blocking ``SSLSocket.send`` raises ``SSLWantWriteError`` or, during a
  renegotiation, ``SSLWantReadError``, and must be retried with the same bytes.
- io_uring can splice file -> pipe -> socket (``IORING_OP_SPLICE``, two linked SQEs per
  chunk and a pipe per transfer) or ``IORING_OP_SEND`` from a buffer that was read first.
  Neither was measured to beat ``sendfile`` driven by the loop, which is one system call
  per socket-buffer's worth and no pipe; they are not used.

How the bytes go (``SendfileResult.method`` says which ran, ``reason`` why a copy):

- ``"sendfile"``: a plain connected stream socket this process may write to directly (a
  non-blocking ``socket.socket``, a trio socket, the socket of a ``trio.SocketStream``, an
  anyio socket stream's raw socket on trio), from a regular file: ``os.sendfile`` until the
  socket would block, then the loop's writability wait (from :mod:`aiopg_io._glue`).
- ``"copy"``: everything else (TLS, anyio streams on asyncio, which write through an
  asyncio transport, asyncio transports, other byte streams, files sendfile refuses): the
  file is read through aiopg_io in chunks and each chunk sent.

Every byte counted in ``sent`` went out (to the socket, or into a transport's or a
stream's send call that returned). A cancellation or a socket error ends the call between
two sends, never inside one on a raw socket, so the count is exact there; the caller reads
it from the ``progress`` it passed (cancellation) or from :class:`SendfileError`.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat as stat_mod
from dataclasses import dataclass
from typing import Any

import anyio

from ._checks import as_int, check_end, fd_arg
from ._file import AsyncFile
from ._glue import Glue, current_glue
from .errors import InvalidOffsetError, SendfileError

__all__ = ["SendfileResult", "sendfile"]

_SENDFILE_MAX = 0x7FFFF000  # Linux moves at most this much per call
# A sender that never sees EAGAIN (a fast reader) still yields to the loop this often.
_YIELD_EVERY = 16 * 1024 * 1024
COPY_CHUNK = 256 * 1024
# sendfile(2) refusing the file or the socket (nothing moved): a copy can still do it.
# What anyio's streams raise when the peer is gone (the loop's own streams: the glue says).
_BROKEN: tuple[type[Exception], ...] = (anyio.BrokenResourceError, anyio.ClosedResourceError)
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ESPIPE})


@dataclass
class SendfileResult:
    """What :func:`sendfile` did: ``sent`` bytes went out by ``method`` (``"sendfile"``,
    ``"copy"``, or ``""`` before the first byte); ``reason`` says why a copy ran; and
    ``truncated`` is True when the file ended before ``count`` bytes (it shrank while it was
    being sent, or ``count`` passed its end). Pass one as ``progress`` to read the count
    after a cancellation."""

    sent: int = 0
    method: str = ""
    reason: str = ""
    truncated: bool = False


class _Unsupported(Exception):
    """sendfile(2) refused before any byte moved."""


async def sendfile(
    sock: Any,
    file: Any,
    offset: int = 0,
    count: int | None = None,
    *,
    method: str = "auto",
    progress: SendfileResult | None = None,
) -> SendfileResult:
    """Send ``count`` bytes of ``file`` from ``offset`` (to its end when ``count`` is None)
    to the connected ``sock``; return a :class:`SendfileResult`.

    The order of the arguments is that of ``loop.sock_sendfile(sock, file, offset, count)``
    and ``os.sendfile(out, in, ...)``: where the bytes go, then where they come from.

    ``sock`` is one of: a non-blocking connected stream ``socket.socket`` (or
    ``ssl.SSLSocket``), a ``trio.socket`` socket, a trio ``Stream`` (``SocketStream``,
    ``SSLStream``, any other), an anyio ``ByteSendStream`` (socket, TLS or any other), or an
    asyncio ``Transport``. ``file`` is an :class:`AsyncFile`, an int fd, or an object with
    ``fileno()``, open for reading; its position is neither used nor moved.

    Zero-copy (``os.sendfile`` driven by the loop's writability) runs where the socket can be
    written directly and the file is a regular file; otherwise the file is read through
    aiopg_io and copied (``method="copy"`` asks for that). The result says which ran.

    Nothing else may send on ``sock`` meanwhile. A file that shrinks during the send ends
    it early (``truncated``). A socket error raises :class:`SendfileError` with the count
    sent; a cancellation is raised as it came, with the count in ``progress``: on a raw
    socket it is exact and the socket is usable (the next byte the peer gets is byte
    ``offset + sent``); on a stream or transport it counts the sends that returned, and a
    stream whose send was cancelled is broken (trio's rule): close it.
    """
    if method not in ("auto", "copy"):
        raise ValueError(f"sendfile method must be 'auto' or 'copy', not {method!r}")
    res = progress if progress is not None else SendfileResult()
    offset = as_int(offset, "offset")
    in_fd = file.fileno() if not isinstance(file, int) else fd_arg(file, "file")
    if offset < 0:
        raise InvalidOffsetError(errno.EINVAL, f"sendfile offset {offset} is negative")
    check_end(offset, 0, None)  # past off_t: sendfile(2)'s offset is one (os would overflow)
    if count is None:
        count = max(0, os.fstat(in_fd).st_size - offset)
    count = as_int(count, "count")
    if count < 0:
        raise InvalidOffsetError(errno.EINVAL, f"sendfile count {count} is negative")
    check_end(offset, count, None)
    glue = current_glue()
    await glue.checkpoint()  # a checkpoint even when there is nothing to send (trio's rule)
    target = _Target.of(sock, glue)
    reason = target.copy_reason
    if reason is None and method == "copy":
        reason = "method='copy' was asked for"
    if reason is None and not stat_mod.S_ISREG(os.fstat(in_fd).st_mode):
        reason = "the file is not a regular file"
    if reason is None:
        try:
            await _send_native(glue, target, in_fd, offset, count, res)
            return res
        except _Unsupported as e:
            reason = str(e)
    res.method, res.reason = "copy", reason
    await _send_copy(glue, target, file, in_fd, offset + res.sent, count - res.sent, res)
    return res


class _Target:
    """Where the bytes go: a raw socket, or a stream/transport to copy into."""

    __slots__ = ("copy_reason", "fd", "kind", "obj")

    def __init__(self, kind: str, obj: Any, copy_reason: str | None) -> None:
        self.kind, self.obj, self.copy_reason = kind, obj, copy_reason
        self.fd = -1
        if kind in ("socket", "ssl"):
            self.fd = obj.fileno()
            if obj.type != socket.SOCK_STREAM:
                raise ValueError(f"sendfile needs a stream socket, not {obj.type!r}")
            if os.get_blocking(self.fd):
                raise ValueError(
                    f"sendfile needs a non-blocking socket (fd {self.fd} blocks): call "
                    "sock.setblocking(False), as asyncio's sock_* calls require"
                )

    @classmethod
    def of(cls, sock: Any, glue: Glue) -> _Target:
        if hasattr(sock, "get_extra_info") and hasattr(sock, "write"):
            return cls("transport", sock, "an asyncio transport owns its socket and its buffer")
        if hasattr(sock, "send_all"):  # a trio stream
            raw = getattr(sock, "socket", None)
            if raw is not None and hasattr(raw, "fileno"):
                return cls("socket", raw, None)
            return cls("send_all", sock, f"{type(sock).__name__} is not a plain socket stream")
        if hasattr(sock, "extra") and hasattr(sock, "send"):  # an anyio byte stream
            from anyio.abc import SocketAttribute
            from anyio.streams.tls import TLSAttribute

            if sock.extra(TLSAttribute.ssl_object, None) is not None:
                return cls("send", sock, "TLS is encrypted in user space")
            raw = sock.extra(SocketAttribute.raw_socket, None)
            if raw is None:
                return cls("send", sock, f"{type(sock).__name__} has no socket")
            if not glue.raw_stream_sockets:
                return cls("send", sock, "an anyio stream on asyncio writes through a transport")
            return cls("socket", raw, None)
        if isinstance(sock, ssl.SSLSocket):
            return cls("ssl", sock, "TLS is encrypted in user space")
        if hasattr(sock, "fileno") and hasattr(sock, "send"):
            return cls("socket", sock, None)
        raise TypeError(
            "sendfile sends to a socket, a trio or anyio byte stream, or an asyncio transport; "
            f"got {type(sock).__name__}"
        )


async def _send_native(
    glue: Glue, target: _Target, in_fd: int, offset: int, count: int, res: SendfileResult
) -> None:
    out_fd = target.fd
    since_yield = 0
    while res.sent < count:
        try:
            n = os.sendfile(out_fd, in_fd, offset + res.sent, min(count - res.sent, _SENDFILE_MAX))
        except BlockingIOError:
            since_yield = 0
            await glue.wait_writable(out_fd)
            continue
        except InterruptedError:
            continue
        except OSError as e:
            if res.sent == 0 and e.errno in _UNSUPPORTED:
                raise _Unsupported(f"sendfile(2) refused: {e.strerror}") from e
            raise SendfileError(
                e.errno or errno.EIO,
                f"sendfile failed after {res.sent} of {count} bytes: {e.strerror}",
                res.sent,
                "sendfile",
            ) from e
        res.method = "sendfile"
        if n == 0:  # end of file before count: the file shrank
            res.truncated = True
            return
        res.sent += n
        since_yield += n
        if since_yield >= _YIELD_EVERY:
            since_yield = 0
            await glue.checkpoint()


async def _send_copy(
    glue: Glue, target: _Target, file: Any, in_fd: int, offset: int, count: int, res: SendfileResult
) -> None:
    from ._open import open as aio_open

    own = not isinstance(file, AsyncFile)
    f: AsyncFile = await aio_open(in_fd, "rb", buffering=0, closefd=False) if own else file
    try:
        buf = bytearray(min(COPY_CHUNK, count))
        view = memoryview(buf)
        done = 0
        while done < count:
            n = await f.preadinto(view[: min(len(buf), count - done)], offset + done)
            if n == 0:
                res.truncated = True
                return
            await _send_chunk(glue, target, view[:n], res)
            done += n
    finally:
        if own:
            await f.aclose()


async def _send_chunk(glue: Glue, target: _Target, chunk: memoryview, res: SendfileResult) -> None:
    kind, obj = target.kind, target.obj
    try:
        if kind == "send_all":
            await obj.send_all(bytes(chunk))  # a stream may keep what it is given
            res.sent += len(chunk)
        elif kind == "send":
            await obj.send(bytes(chunk))
            res.sent += len(chunk)
        elif kind == "transport":
            await _write_transport(obj, chunk, res)
        else:
            await _send_socket(glue, target, chunk, res)
    except (OSError, ssl.SSLError) as e:
        raise SendfileError(
            e.errno or errno.EPIPE, f"sending failed after {res.sent} bytes: {e}", res.sent, "copy"
        ) from e
    except (*_BROKEN, *glue.broken_stream_errors) as e:
        raise SendfileError(
            errno.EPIPE, f"sending failed after {res.sent} bytes: {type(e).__name__}", res.sent, "copy"
        ) from e


async def _send_socket(glue: Glue, target: _Target, chunk: memoryview, res: SendfileResult) -> None:
    sock, fd = target.obj, target.fd
    pos = 0
    while pos < len(chunk):
        try:
            n = sock.send(chunk[pos:])
        except (BlockingIOError, ssl.SSLWantWriteError):
            await glue.wait_writable(fd)
            continue
        except ssl.SSLWantReadError:
            await glue.wait_readable(fd)
            continue
        except InterruptedError:
            continue
        pos += n
        res.sent += n


async def _write_transport(transport: Any, chunk: memoryview, res: SendfileResult) -> None:
    # asyncio offers no public wait for a transport's buffer to drain (its protocol gets
    # pause_writing/resume_writing, which belong to whoever made the transport), so wait
    # by looking, in short sleeps, while it holds more than its high-water mark.
    if transport.is_closing():
        raise ConnectionResetError(errno.EPIPE, "the transport is closing")
    transport.write(bytes(chunk))
    res.sent += len(chunk)
    high = transport.get_write_buffer_limits()[1]
    while transport.get_write_buffer_size() > high:
        if transport.is_closing():
            raise ConnectionResetError(errno.EPIPE, "the transport closed")
        await anyio.sleep(0.001)
