"""``aiopg_io.asgi``: the same requests to our FileResponse and to Starlette's, compared
(status, headers, body) on every loop x driver; the documented differences checked on
their own; StaticFiles refusing paths out of its directory; a client that goes away and a
file that shrinks ending the response with the fd freed."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
import pytest

starlette_responses = pytest.importorskip("starlette.responses")

from aiopg_io._context import live_contexts  # noqa: E402
from aiopg_io._openat2 import available as openat2_available  # noqa: E402
from aiopg_io.asgi import FileResponse, StaticFiles  # noqa: E402

# Starlette before 1.10 (the newest on Python 3.10 is 1.7) answers a Range on POST with 206;
# RFC 9110, 14.2: a server MUST ignore Range for a method whose range handling is not defined
# (only GET's is). There the reply is checked against the RFC rather than against Starlette.
_STARLETTE = tuple(int(x) for x in __import__("starlette").__version__.split(".")[:2])
RANGE_ON_POST_IGNORED = _STARLETTE >= (1, 10)
from tests.conftest import open_fds  # noqa: E402

pytestmark = pytest.mark.anyio

Headers = list[tuple[bytes, bytes]]


class Reply:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> Headers:
        return sorted((bytes(k), bytes(v)) for k, v in self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(bytes(m.get("body", b"")) for m in self.messages[1:])


async def call(
    app: Any,
    method: str = "GET",
    headers: Headers = (),  # type: ignore[assignment]
    *,
    path: str = "/",
    extensions: dict[str, Any] | None = None,
    spec: str = "2.3",
    on_send: Callable[[Reply], Any] | None = None,
    disconnect: anyio.Event | None = None,
) -> Reply:
    """One ASGI request, as a server would make it; the reply's messages."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": list(headers),
        "asgi": {"version": "3.0", "spec_version": spec},
        "extensions": extensions or {},
    }
    reply = Reply()

    async def receive() -> dict[str, Any]:
        if disconnect is None:
            await anyio.sleep_forever()
        else:
            await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        reply.messages.append(message)
        if on_send is not None:
            on_send(reply)
        await anyio.lowlevel.checkpoint()

    await app(scope, receive, send)
    return reply


async def fds_after_one_response(path: Path) -> list[str]:
    """The fd table after one response from ``path``: FileResponse holds the loop's
    IOContext (its driver's fds) until the loop ends, so that is the table to come back to."""
    await call(FileResponse(path), "HEAD")
    return open_fds()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "data.bin").write_bytes(os.urandom(300_001))
    (tmp_path / "page.html").write_text("<p>hello</p>\n")
    (tmp_path / "notes.txt").write_text("some text\n" * 100)
    (tmp_path / "empty").write_bytes(b"")
    return tmp_path


RANGES = [
    "bytes=0-99",
    "bytes=100-",
    "bytes=-50",
    "bytes=5-5",
    "bytes=0-999999999",
    "bytes= 7 - 9",
    "bytes=299999-",
    "bytes=300001-",
    "bytes=999999-",
    "bytes=abc",
    "items=0-1",
    "bytes=5-2",
    "bytes=",
    "nonsense",
    "bytes=-",
    "bytes=0-1" + ",0-1" * 100,
]


def cases(path: Path) -> list[tuple[dict[str, Any], str, Headers]]:
    """(FileResponse kwargs, method, request headers)."""
    st = path.stat()
    last_modified = formatdate(st.st_mtime, usegmt=True).encode()
    out: list[tuple[dict[str, Any], str, Headers]] = [
        ({}, "GET", []),
        ({}, "HEAD", []),
        ({}, "POST", [(b"range", b"bytes=0-9")]),
        ({"status_code": 404}, "GET", [(b"range", b"bytes=0-9")]),
        ({"media_type": "text/csv", "headers": {"X-Thing": "1", "Cache-Control": "no-cache"}}, "GET", []),
        ({"headers": {"content-type": "image/png", "content-length": "5"}}, "HEAD", []),
        ({"filename": "report.pdf"}, "GET", []),
        ({"filename": "résumé €.txt", "content_disposition_type": "inline"}, "HEAD", []),
        ({"stat_result": st}, "GET", []),
        ({}, "HEAD", [(b"range", b"bytes=0-9")]),
        ({}, "GET", [(b"range", b"bytes=0-9"), (b"if-range", last_modified)]),
        ({}, "GET", [(b"range", b"bytes=0-9"), (b"if-range", b'"stale"')]),
        ({}, "GET", [(b"range", b"bytes=0-9"), (b"if-range", b'W/"weak"')]),
    ]
    out += [({}, "GET", [(b"range", r.encode())]) for r in RANGES]
    return out


async def test_same_replies_as_starlette(files: Path, driver: str) -> None:
    before = await fds_after_one_response(files / "page.html")
    for name in ("data.bin", "page.html", "notes.txt"):
        path = files / name
        for kwargs, method, headers in cases(path):
            if path.stat().st_size < 300_000 and any(b"300001" in v or b"299999" in v for _, v in headers):
                continue
            ours = await call(FileResponse(path, **kwargs), method, headers)
            what = (name, kwargs, method, headers)
            if method == "POST" and headers and not RANGE_ON_POST_IGNORED:
                assert ours.status == 200 and ours.body == path.read_bytes(), what
                continue
            theirs = await call(starlette_responses.FileResponse(path, **kwargs), method, headers)
            assert ours.status == theirs.status, what
            assert ours.headers == theirs.headers, what
            assert ours.body == theirs.body, what
            assert ours.messages[-1].get("more_body", False) is False
    for extensions in ({"http.response.pathsend": {}}, {}):
        ours = await call(FileResponse(files / "data.bin"), extensions=extensions)
        theirs = await call(starlette_responses.FileResponse(files / "data.bin"), extensions=extensions)
        if extensions:  # the same messages; without it, ours are fewer and larger (chunk_size)
            assert ours.messages[1:] == theirs.messages[1:]
        assert ours.body == theirs.body and ours.headers == theirs.headers
    assert open_fds() == before


async def test_what_starlette_does_not(files: Path, monkeypatch: pytest.MonkeyPatch, driver: str) -> None:
    path = files / "data.bin"
    payload = path.read_bytes()
    etag = dict((await call(FileResponse(path), "HEAD")).headers)[b"etag"]
    last_modified = formatdate(path.stat().st_mtime, usegmt=True).encode()
    later = formatdate(path.stat().st_mtime + 3600, usegmt=True).encode()
    earlier = formatdate(path.stat().st_mtime - 3600, usegmt=True).encode()
    not_modified = [
        [(b"if-none-match", etag)],
        [(b"if-none-match", b'"x", W/' + etag)],
        [(b"if-none-match", b"*")],
        [(b"if-modified-since", last_modified)],
        [(b"if-modified-since", later)],
    ]
    for method in ("GET", "HEAD"):
        for headers in not_modified:
            r = await call(FileResponse(path, headers={"Cache-Control": "max-age=60"}), method, headers)
            assert (r.status, r.body) == (304, b""), headers
            assert r.headers == [(b"cache-control", b"max-age=60"), (b"etag", etag)]
    modified = [
        [(b"if-none-match", b'"other"')],
        [(b"if-modified-since", earlier)],
        [(b"if-modified-since", b"junk")],
        [(b"if-none-match", b'"other"'), (b"if-modified-since", later)],  # INM wins (RFC 9110)
    ]
    for headers in modified:
        r = await call(FileResponse(path), "GET", headers)
        assert (r.status, r.body) == (200, payload), headers
    r = await call(FileResponse(path, status_code=203), "GET", not_modified[0])
    assert r.status == 203  # only a 200 response becomes 304
    # Several ranges: the whole file (Starlette: multipart/byteranges).
    r = await call(FileResponse(path), "GET", [(b"range", b"bytes=0-9,20-29")])
    assert (r.status, r.body) == (200, payload)
    # The server's zero-copy extension gets the open fd and the range.
    seen: list[bytes] = []

    def read_fd(reply: Reply) -> None:
        m = reply.messages[-1]
        if m["type"] == "http.response.zerocopysend":
            seen.append(os.pread(m["file"], m["count"], m["offset"]))

    ext = {"http.response.zerocopysend": {}}
    r = await call(FileResponse(path), "GET", [(b"range", b"bytes=10-")], extensions=ext, on_send=read_fd)
    assert r.status == 206 and seen == [payload[10:]]
    # pathsend gets an absolute path.
    monkeypatch.chdir(files)
    r = await call(FileResponse("data.bin"), extensions={"http.response.pathsend": {}})
    assert r.messages[1] == {"type": "http.response.pathsend", "path": str(path)}
    # The empty file: one empty body message.
    r = await call(FileResponse(files / "empty"))
    assert (r.status, r.body, dict(r.headers)[b"content-length"]) == (200, b"", b"0")


async def test_missing_and_non_regular_files_raise_as_starlettes(files: Path, driver: str) -> None:
    for path, message in ((files / "nope", "does not exist"), (files, "is not a file")):
        with pytest.raises(RuntimeError, match=f"File at path {path} {message}"):
            await call(FileResponse(path))
    os.mkfifo(files / "fifo")
    with pytest.raises(RuntimeError, match="is not a file"):
        await call(FileResponse(files / "fifo"))  # refused without blocking on the FIFO's open
    missing = ((files / "nope", "does not exist"), (files, "is not a file"), (files / "fifo", "is not"))
    for path, message in missing:  # the same under pathsend, where the file is only statted
        with pytest.raises(RuntimeError, match=f"File at path {path} {message}"):
            await call(FileResponse(path), extensions={"http.response.pathsend": {}})


@pytest.mark.parametrize("opens_here", [True, False], ids=["cached-open-first", "thread-only"])
async def test_static_files_serve_only_their_directory(tmp_path: Path, driver: str, opens_here: bool) -> None:
    """The same answers whether a cached path is opened on the loop's thread first or
    every path is resolved, checked and opened in a thread. Each path is asked twice, so
    the second time finds the kernel's lookup cache warm."""
    root, outside = tmp_path / "www", tmp_path / "secret"
    (root / "sub").mkdir(parents=True)
    outside.write_bytes(b"secret")
    os.mkfifo(tmp_path / "pipe")
    os.mkfifo(root / "fifo")
    (root / "a.txt").write_bytes(b"hello")
    (root / "sub" / "b.bin").write_bytes(b"\x00" * 10)
    (root / "out").symlink_to(outside)
    (root / "pipe").symlink_to(tmp_path / "pipe")  # opening it without O_NONBLOCK would hang
    (root / "sub" / "up").symlink_to(tmp_path)
    (root / "in").symlink_to(root / "a.txt")
    (root / "sub" / "rel").symlink_to("../a.txt")
    app = StaticFiles(root)
    app._opens_here = app._opens_here and opens_here
    before = await fds_after_one_response(root / "a.txt")
    served = [
        ("/a.txt", b"hello"),
        ("/sub/b.bin", b"\x00" * 10),
        ("/in", b"hello"),
        ("//a.txt", b"hello"),
        ("/sub/rel", b"hello"),
    ]
    for path, body in served * 2:
        r = await call(app, path=path)
        assert (r.status, r.body) == (200, body), path
    refused = [
        "/../secret",
        "/sub/../../secret",
        "/sub/../a.txt",
        "/out",
        "/sub/up/secret",
        "/a.txt\x00.png",
        "/" + str(outside),
        "/",
        "/sub",
        "/missing",
        "/a.txt/x",
        "/" + "x" * 5000,
        "/pipe",
        "/fifo",
    ]
    for path in refused * 2:
        r = await call(app, path=path)
        assert (r.status, r.body) == (404, b"Not Found"), path
    # Under a server offering pathsend: stat only (no open), the same refusals, and the
    # path handed over is the one checked (a symlink in the directory: its target).
    pathsend = {"http.response.pathsend": {}}
    for path in refused:
        r = await call(app, path=path, extensions=pathsend)
        assert (r.status, r.body) == (404, b"Not Found"), path
    for path, target in [("/a.txt", "a.txt"), ("/in", "a.txt"), ("/sub/b.bin", "sub/b.bin")]:
        r = await call(app, path=path, extensions=pathsend)
        assert r.messages[1] == {"type": "http.response.pathsend", "path": str(root / target)}, path
        assert dict(r.headers)[b"content-length"] == str((root / target).stat().st_size).encode()
    r = await call(app, path="/a.txt", headers=[(b"range", b"bytes=1-2")], extensions=pathsend)
    assert (r.status, r.body) == (206, b"el")  # a range is read through aiopg_io
    r = await call(app, "POST", path="/a.txt")
    assert (r.status, dict(r.headers)[b"allow"]) == (405, b"GET, HEAD")
    assert open_fds() == before
    with pytest.raises(RuntimeError, match="does not exist"):
        StaticFiles(tmp_path / "nowhere")


async def test_a_directory_swapped_for_a_symlink_as_the_file_opens_is_refused(
    tmp_path: Path, driver: str
) -> None:
    """A directory on the request's path swapped for a symlink out of the served directory
    between the thread's look (realpath, checked) and its open: the fd opened is found to be
    outside (the kernel's name for it), closed, and the answer is 404. The file outside
    used to be served. (The open on the loop's thread takes no symlink at all: it is left
    out here, so that the look runs.)"""
    root, outside = tmp_path / "www", tmp_path / "secret"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "b.txt").write_bytes(b"public")
    (outside / "b.txt").write_bytes(b"secret")
    app = StaticFiles(root)
    app._opens_here = False
    looked = app._guard

    def swapped(path: str) -> str:
        full = looked(path)  # checked: under the directory
        (root / "sub").rename(tmp_path / "old-sub")
        (root / "sub").symlink_to(outside)
        return full

    before = await fds_after_one_response(root / "sub" / "b.txt")
    app._guard = swapped  # type: ignore[method-assign]
    r = await call(app, path="/sub/b.txt")
    assert (r.status, r.body) == (404, b"Not Found")
    assert open_fds() == before


@pytest.mark.skipif(not openat2_available(), reason="no openat2 here: every open takes a thread")
async def test_a_cached_file_is_opened_without_a_thread(
    tmp_path: Path, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file the kernel has in its lookup cache is opened on the loop's thread: no thread
    hop, on every driver; one reached through a symlink, or missing, takes one."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_bytes(b"hello")
    (tmp_path / "link").symlink_to(tmp_path / "sub" / "a.txt")
    app = StaticFiles(tmp_path)
    for path in ("/sub/a.txt", "/link", "/missing"):
        await call(app, "HEAD", path=path)  # the loop's context made, the lookup cache warm
    hops: list[object] = []
    real = anyio.to_thread.run_sync

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    before = open_fds()
    r = await call(app, path="/sub/a.txt")
    assert (r.status, r.body, hops) == (200, b"hello", [])
    assert open_fds() == before
    for path, status, body in [("/link", 200, b"hello"), ("/missing", 404, b"Not Found")]:
        hops.clear()
        r = await call(app, path=path)
        assert (r.status, r.body, len(hops)) == (status, body, 1), path


class Small(FileResponse):
    chunk_size = whole_body_max = 64 * 1024


async def test_a_client_that_goes_away_frees_the_fd(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(4 << 20))
    before = await fds_after_one_response(path)
    gone = anyio.Event()

    def after_three(reply: Reply) -> None:
        if len(reply.messages) == 4:
            gone.set()

    r = await call(Small(path), on_send=after_three, disconnect=gone)
    assert r.status == 200 and 3 * 65536 <= len(r.body) < 4 << 20
    assert open_fds() == before
    # A spec 2.4 server raises OSError from send once the client is gone: it propagates.

    def raise_after_two(reply: Reply) -> None:
        if len(reply.messages) == 3:
            raise OSError("client gone")

    with pytest.raises(OSError, match="client gone"):
        await call(Small(path), spec="2.4", on_send=raise_after_two)
    assert open_fds() == before


async def test_a_file_that_shrinks_ends_the_response(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, driver: str
) -> None:
    path = tmp_path / "big"
    payload = os.urandom(1 << 20)
    path.write_bytes(payload)
    before = await fds_after_one_response(path)

    def shrink(reply: Reply) -> None:
        if len(reply.messages) == 3:
            os.truncate(path, 200_000)

    with caplog.at_level(logging.WARNING, logger="aiopg_io.asgi"):
        r = await call(Small(path), on_send=shrink)
    assert r.body == payload[:200_000] and r.messages[-1]["more_body"] is False
    assert f"{path}: the file ended after 200000 of {1 << 20} bytes" in caplog.text
    assert open_fds() == before


def test_static_files_share_one_context_closed_when_the_loop_ends(
    tmp_path: Path, anyio_backend: Any, driver: str, contexts_made: list[object]
) -> None:
    """Requests one after another (no file open between them) share the loop's context,
    which is closed when the loop ends: no fd is left."""
    (tmp_path / "a.txt").write_bytes(b"hello")
    app = StaticFiles(tmp_path)

    async def main() -> None:
        for _ in range(20):
            r = await call(app, path="/a.txt")
            assert (r.status, r.body) == (200, b"hello")

    backend, options = anyio_backend
    before = open_fds()
    anyio.run(main, backend=backend, backend_options=options)
    assert len(contexts_made) == 1
    assert live_contexts() == []
    assert open_fds() == before


async def _serve_concurrently(app: StaticFiles, names: list[str], send_body: Callable[[Any], None]) -> None:
    """Each name requested by its own task, all at once; ``send_body`` sees each body
    message (it may keep the body, as a server may), whose reference is then dropped."""

    async def one(name: str) -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/" + name,
            "root_path": "",
            "headers": [],
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "extensions": {},
        }

        async def receive() -> dict[str, Any]:
            await anyio.sleep_forever()
            return {}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                send_body((name, message["body"]))
            await anyio.lowlevel.checkpoint()

        await app(scope, receive, send)

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(one, name)


CHUNK = 64 * 1024


@pytest.fixture
def pooled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[StaticFiles, dict[str, bytes]]:
    """A StaticFiles over eight files of 3.5 chunks each, with 64 KiB chunks and room
    for four spares."""
    monkeypatch.setattr(FileResponse, "chunk_size", CHUNK)
    monkeypatch.setattr(FileResponse, "whole_body_max", CHUNK)
    monkeypatch.setattr(FileResponse, "pool_bytes", 4 * CHUNK)
    payloads = {f"f{i}": os.urandom(CHUNK * 7 // 2) for i in range(8)}
    for name, data in payloads.items():
        (tmp_path / name).write_bytes(data)
    return StaticFiles(tmp_path), payloads


@pytest.mark.skipif(not hasattr(__import__("sys"), "getrefcount"), reason="no reference counts: no reuse")
async def test_chunks_are_reused_when_the_server_lets_go(
    pooled: tuple[StaticFiles, dict[str, bytes]], driver: str
) -> None:
    """A server that copies each body and drops it: chunks come back to the pool and go out
    again, and every response under concurrency still carries its own file's bytes."""
    app, payloads = pooled
    got: dict[str, bytearray] = {name: bytearray() for name in payloads}

    def copy(item: tuple[str, Any]) -> None:
        got[item[0]] += item[1]

    for _ in range(3):
        for part in got.values():
            part.clear()
        await _serve_concurrently(app, list(payloads), copy)
        assert {name: bytes(body) for name, body in got.items()} == payloads
    assert app._pool.reused > 0
    assert 0 < app._pool.held <= 4 * CHUNK


async def test_no_chunk_is_reused_while_the_server_holds_it(
    pooled: tuple[StaticFiles, dict[str, bytes]], driver: str
) -> None:
    """A server that keeps bodies after send returns (the object itself, as h11 queues it,
    or a memoryview of it, as uvloop's transport does): what it holds never changes,
    while the chunks it does not hold are reused."""
    app, payloads = pooled
    held: list[tuple[Any, bytes]] = []
    count = 0

    def keep_some(item: tuple[str, Any]) -> None:
        nonlocal count
        count += 1
        body = item[1]
        if count % 3 == 0:
            held.append((body, bytes(body)))
        elif count % 3 == 1:
            held.append((memoryview(body), bytes(body)))

    for _ in range(3):
        await _serve_concurrently(app, list(payloads), keep_some)
    assert len(held) >= 2 * 3 * 8 * 4 // 3 - 1
    assert all(bytes(body) == seen for body, seen in held)
    if hasattr(__import__("sys"), "getrefcount"):
        assert app._pool.reused > 0
