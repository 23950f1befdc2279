"""``aiopg_io.sendfile``: the bytes that arrive are the file's, by the path it says it took;
a truncated file ends early, a cancellation leaves an exact count and a usable socket, a
closed peer raises with the count, and nothing is left open."""

from __future__ import annotations

import errno
import os
import socket
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import aiopg_io
from aiopg_io import InvalidOffsetError, SendfileError, SendfileResult
from tests.conftest import open_fds

pytestmark = pytest.mark.anyio

SIZE = 3 * 1024 * 1024 + 123


def socketpair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


def recv_all(sock: socket.socket, limit: int | None = None) -> bytes:
    """Blocking reads until EOF (or ``limit`` bytes), in a thread: loop-agnostic."""
    out = bytearray()
    while limit is None or len(out) < limit:
        chunk = sock.recv(1 << 20 if limit is None else min(1 << 20, limit - len(out)))
        if not chunk:
            break
        out += chunk
    return bytes(out)


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, bytes]:
    payload = os.urandom(SIZE)
    path = tmp_path / "f"
    path.write_bytes(payload)
    return path, payload


async def send_and_receive(
    sock: Any, peer: socket.socket, file: Any, **kw: Any
) -> tuple[SendfileResult, bytes]:
    got: list[bytes] = []

    async def receive() -> None:
        got.append(await anyio.to_thread.run_sync(recv_all, peer))

    async with anyio.create_task_group() as tg:
        tg.start_soon(receive)
        res = await aiopg_io.sendfile(sock, file, **kw)
        if hasattr(sock, "aclose"):
            await sock.aclose()
        else:
            sock.shutdown(socket.SHUT_WR)
    return res, got[0]


@pytest.mark.parametrize("method", ["auto", "copy"])
@pytest.mark.parametrize(("offset", "count"), [(0, None), (12345, 1_000_001), (SIZE, None), (7, 0)])
async def test_a_socket_gets_the_range(
    data: tuple[Path, bytes], method: str, offset: int, count: int | None, driver: str
) -> None:
    path, payload = data
    before = open_fds()
    a, b = socketpair()
    with a, b, open(path, "rb") as f:
        res, got = await send_and_receive(a, b, f, offset=offset, count=count, method=method)
        assert f.tell() == 0  # the file position is not used or moved
    end = SIZE if count is None else offset + count
    assert got == payload[offset:end]
    assert res.sent == len(got) and not res.truncated
    if res.sent:
        assert res.method == ("sendfile" if method == "auto" else "copy")
    assert open_fds() == before


async def test_an_async_file_and_an_fd_are_accepted(data: tuple[Path, bytes], driver: str) -> None:
    path, payload = data
    a, b = socketpair()
    async with await aiopg_io.open(path, "rb") as f:
        with a, b:
            res, got = await send_and_receive(a, b, f, offset=5, method="copy")
    assert got == payload[5:] and res.method == "copy" and res.reason == "method='copy' was asked for"
    fd = os.open(path, os.O_RDONLY)
    a, b = socketpair()
    try:
        with a, b:
            res, got = await send_and_receive(a, b, fd, count=1000)
    finally:
        os.close(fd)
    assert got == payload[:1000] and res.method == "sendfile"


async def test_a_file_shorter_than_count_ends_early(data: tuple[Path, bytes], driver: str) -> None:
    path, payload = data
    for method in ("auto", "copy"):
        a, b = socketpair()
        with a, b, open(path, "rb") as f:
            res, got = await send_and_receive(a, b, f, offset=SIZE - 10, count=1000, method=method)
        assert got == payload[-10:] and res.sent == 10 and res.truncated, method


async def test_a_file_truncated_while_sending_ends_early(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "f"
    payload = os.urandom(8 << 20)
    path.write_bytes(payload)
    for method in ("auto", "copy"):
        path.write_bytes(payload)
        a, b = socketpair()

        def receive_then_truncate(peer: socket.socket) -> bytes:
            head = recv_all(peer, 256 << 10)
            os.truncate(path, 512 << 10)
            return head + recv_all(peer)

        with a, b, open(path, "rb") as f:
            got: list[bytes] = []

            async def receive(peer: socket.socket = b, got: list[bytes] = got) -> None:
                got.append(await anyio.to_thread.run_sync(receive_then_truncate, peer))

            async with anyio.create_task_group() as tg:
                tg.start_soon(receive)
                res = await aiopg_io.sendfile(a, f, count=len(payload), method=method)
                a.shutdown(socket.SHUT_WR)
        assert res.truncated and (256 << 10) <= res.sent < len(payload), (method, res)
        assert len(got[0]) == res.sent
        assert got[0][: 512 << 10] == payload[: min(res.sent, 512 << 10)]


async def test_a_cancelled_send_says_how_much_went_and_the_socket_goes_on(
    data: tuple[Path, bytes], driver: str
) -> None:
    path, payload = data
    for method in ("auto", "copy"):
        a, b = socketpair()
        with a, b, open(path, "rb") as f:
            progress = SendfileResult()
            with anyio.move_on_after(0.3):  # nobody reads: the send blocks, then is cancelled
                await aiopg_io.sendfile(a, f, method=method, progress=progress)
                pytest.fail("the send finished with nobody reading")
            assert 0 < progress.sent < SIZE
            # The socket is usable: the rest, from where the count says, completes the file.
            res, got = await send_and_receive(a, b, f, offset=progress.sent, method=method)
        assert got == payload and progress.sent + res.sent == SIZE, method


async def test_a_closed_peer_raises_with_the_count(data: tuple[Path, bytes], driver: str) -> None:
    path, _ = data
    for method in ("auto", "copy"):
        a, b = socketpair()
        with a, open(path, "rb") as f:
            b.close()
            with pytest.raises(SendfileError) as info:
                await aiopg_io.sendfile(a, f, method=method)
        assert info.value.errno in (errno.EPIPE, errno.ECONNRESET) and info.value.sent == 0
        assert info.value.method == ("sendfile" if method == "auto" else "copy")


async def test_a_non_socket_stream_gets_a_copy(data: tuple[Path, bytes], driver: str) -> None:
    path, payload = data
    send, receive = anyio.create_memory_object_stream[bytes](100)
    async with send, receive:
        with open(path, "rb") as f:
            res = await aiopg_io.sendfile(send, f, offset=3, count=700_000)
        got = b"".join([receive.receive_nowait() for _ in range(receive.statistics().current_buffer_used)])
    assert got == payload[3:700_003]
    assert (res.method, res.reason) == ("copy", "MemoryObjectSendStream has no socket")


async def test_an_anyio_socket_stream(data: tuple[Path, bytes], anyio_backend: Any, driver: str) -> None:
    """Zero-copy on trio, where the stream's socket is a plain trio socket; a copy on
    asyncio, where anyio's stream writes through a transport that owns the socket."""
    path, payload = data
    got: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as server:

        async def peer() -> None:
            conn, _ = await anyio.to_thread.run_sync(server.accept)
            with conn:
                got.append(await anyio.to_thread.run_sync(recv_all, conn))

        async with anyio.create_task_group() as tg:
            tg.start_soon(peer)
            async with await anyio.connect_tcp("127.0.0.1", server.getsockname()[1]) as stream:
                with path.open("rb") as f:
                    res = await aiopg_io.sendfile(stream, f, offset=100)
    assert got[0] == payload[100:] and res.sent == SIZE - 100
    if anyio_backend[0] == "trio":
        assert res.method == "sendfile"
    else:
        assert (res.method, res.reason) == ("copy", "an anyio stream on asyncio writes through a transport")


async def test_bad_arguments_are_refused_before_sending(data: tuple[Path, bytes]) -> None:
    path, _ = data
    a, b = socket.socketpair()
    with a, b, open(path, "rb") as f:
        with pytest.raises(ValueError, match=r"non-blocking socket \(fd \d+ blocks\)"):
            await aiopg_io.sendfile(a, f)
        a.setblocking(False)
        with pytest.raises(InvalidOffsetError, match="sendfile offset -1 is negative"):
            await aiopg_io.sendfile(a, f, offset=-1)
        with pytest.raises(InvalidOffsetError, match="sendfile count -2 is negative"):
            await aiopg_io.sendfile(a, f, count=-2)
        # Past off_t: sendfile(2)'s offset is one (os.sendfile used to raise OverflowError).
        for offset, count in ((2**63, 10), (2**64, None), (2**63 - 10, 100)):
            with pytest.raises(
                InvalidOffsetError, match=r"past the largest file offset, 9223372036854775807"
            ):
                await aiopg_io.sendfile(a, f, offset=offset, count=count)
        # An fd is an int from 0 to 2**31 - 1, never a bool (True would send from stdout).
        with pytest.raises(TypeError, match=r"^file must be a file descriptor \(an int\), not bool$"):
            await aiopg_io.sendfile(a, True, count=10)
        with pytest.raises(ValueError, match=f"^file descriptor {2**31} is past the largest"):
            await aiopg_io.sendfile(a, 2**31, count=10)
        with pytest.raises(ValueError, match="method must be 'auto' or 'copy', not 'fast'"):
            await aiopg_io.sendfile(a, f, method="fast")
        with pytest.raises(TypeError, match="got bytearray"):
            await aiopg_io.sendfile(bytearray(), f)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, open(path, "rb") as f:
        u.setblocking(False)
        with pytest.raises(ValueError, match="needs a stream socket"):
            await aiopg_io.sendfile(u, f)
    assert threading.active_count() >= 1
