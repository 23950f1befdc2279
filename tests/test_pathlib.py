"""aiopg_io.Path against anyio.Path and pathlib (issue 16, item 4).

The calls routed through aiopg_io (open, read_*/write_*, stat, lstat, exists, is_file,
is_dir, rename, replace, unlink, rmdir, mkdir) are made beside their pathlib twins: data
read back, the disk checked, errors compared by type and message (a missing path, a
directory where a file is expected and the reverse, a NUL byte, a wrong type). Paths that
come back are aiopg_io.Paths, and anyio's own methods are still there. Every loop x driver;
the fd table is the same after as before.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Awaitable, Callable

import anyio
import pytest

import aiopg_io

from .conftest import check_limiter_wait, open_fds, raises_like, stdlib_error

pytestmark = pytest.mark.anyio


async def test_data_goes_through_aiopg_io_files(tmp_path: pathlib.Path, driver: str) -> None:
    p = aiopg_io.Path(tmp_path) / "f.txt"
    assert type(p) is aiopg_io.Path and isinstance(p, anyio.Path)
    await p.write_text("é line\n")  # opens the loop's context on first use
    await aiopg_io.os.mkdir(tmp_path / "ctx", driver=driver)
    before = open_fds()
    assert await p.read_text(encoding="utf-8") == "é line\n"
    assert await p.write_bytes(bytearray(b"\x00\x01")) == 2
    assert await p.read_bytes() == b"\x00\x01" == pathlib.Path(p).read_bytes()
    async with p.open("ab") as f:
        assert isinstance(f, aiopg_io.AsyncFile)
        await f.write(b"\x02")
    f2 = await p.open("rb")
    assert await f2.read() == b"\x00\x01\x02"
    await f2.aclose()
    assert await p.write_text("a\nb", newline="\r\n") == 3
    assert pathlib.Path(p).read_bytes() == b"a\r\nb"
    assert await p.read_text(newline="") == "a\r\nb" and await p.read_text() == "a\nb"
    assert open_fds() == before


async def test_entry_calls_change_the_disk_as_pathlib_does(tmp_path: pathlib.Path, driver: str) -> None:
    base = aiopg_io.Path(tmp_path)
    d = base / "a" / "b"
    await d.mkdir(parents=True)
    await d.mkdir(exist_ok=True)
    assert await d.is_dir() and not await d.is_file() and await d.exists()
    f = d / "f"
    await f.write_bytes(b"x")
    assert (await f.stat()).st_size == 1 == (await f.lstat()).st_size
    moved = await f.rename(base / "g")
    assert type(moved) is aiopg_io.Path and moved == base / "g"
    assert not await f.exists() and await moved.is_file()
    replaced = await moved.replace(str(base / "h"))
    assert type(replaced) is aiopg_io.Path and (tmp_path / "h").read_bytes() == b"x"
    link = base / "link"
    await link.symlink_to(base / "missing")
    assert os.readlink(tmp_path / "link") == str(tmp_path / "missing")
    assert await link.is_symlink() and not await (base / "h").is_symlink() and not await f.is_symlink()
    assert not await link.exists() and await link.exists(follow_symlinks=False)
    hard = base / "hard"
    await hard.hardlink_to(base / "h")
    assert (tmp_path / "hard").stat().st_ino == (tmp_path / "h").stat().st_ino
    await hard.unlink()
    assert not await link.is_file(follow_symlinks=False) and not await link.is_dir(follow_symlinks=False)
    await link.unlink()
    await (base / "h").unlink()
    await (base / "h").unlink(missing_ok=True)
    await d.rmdir()
    listed = [p async for p in base.iterdir()] + [p async for p in base.glob("*")]
    assert sorted({p.name for p in listed}) == sorted(os.listdir(tmp_path))
    assert {type(p) for p in listed} == {aiopg_io.Path}
    assert type(d.parent) is aiopg_io.Path and type(await base.resolve()) is aiopg_io.Path


# (method, the names it fails on): each call on pathlib.Path and on aiopg_io.Path.
CALLS: list[tuple[str, Callable[[pathlib.Path], object], str]] = [
    ("read_bytes", lambda p: p.read_bytes(), "missing d nul"),
    ("read_text", lambda p: p.read_text(), "missing d nul"),
    ("open r+b", lambda p: p.open("r+b"), "missing d nul"),
    ("write_text", lambda p: p.write_text("x"), "missing/x d nul"),
    ("write_bytes", lambda p: p.write_bytes(b"x"), "missing/x d nul"),
    ("stat", lambda p: p.stat(), "missing nul"),
    ("lstat", lambda p: p.lstat(), "missing nul"),
    ("rmdir", lambda p: p.rmdir(), "missing f nul"),
    ("unlink", lambda p: p.unlink(), "missing d nul"),
    ("rename", lambda p: p.rename(p.parent / "z"), "missing nul"),
    ("replace", lambda p: p.replace(p.parent / "z"), "missing nul"),
    ("mkdir", lambda p: p.mkdir(), "d f nul missing/x f/x"),
    ("mkdir parents", lambda p: p.mkdir(parents=True), "d f/x/y nul"),
    ("symlink_to", lambda p: p.symlink_to("t"), "d f nul missing/x"),
    ("hardlink_to", lambda p: p.hardlink_to(p.parent / "f"), "d f nul missing/x"),
    ("hardlink_to a missing target", lambda p: p.hardlink_to(p.parent / "missing"), "x nul"),
]


@pytest.mark.parametrize(("call", "names"), [(c, n) for _, c, n in CALLS], ids=[i for i, _, _ in CALLS])
async def test_errors_are_pathlib_s(
    tmp_path: pathlib.Path, driver: str, call: Callable[[pathlib.Path], object], names: str
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"")
    await aiopg_io.Path(tmp_path / "w").mkdir()
    await aiopg_io.Path(tmp_path / "w").rmdir()
    before = open_fds()  # with the loop's context open (held until the loop ends)
    for name in names.replace("nul", "nul\0").split():
        sp, ap = tmp_path / name, aiopg_io.Path(tmp_path) / name
        want = stdlib_error(lambda: call(sp))  # noqa: B023
        await raises_like(want, lambda: call(ap))  # type: ignore[arg-type,return-value]  # noqa: B023
    assert sorted(os.listdir(tmp_path)) == ["d", "f"]
    assert open_fds() == before


async def test_predicates_and_type_errors_are_pathlib_s(tmp_path: pathlib.Path, driver: str) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"")
    for name in ("missing", "d", "f", "nul\0", "f/x"):
        sp, ap = tmp_path / name, aiopg_io.Path(tmp_path) / name
        assert await ap.exists() == sp.exists() and await ap.is_file() == sp.is_file()
        assert await ap.is_dir() == sp.is_dir()
    sp, ap = tmp_path / "f", aiopg_io.Path(tmp_path) / "f"
    await raises_like(stdlib_error(lambda: sp.write_bytes("str")), lambda: ap.write_bytes("str"))  # type: ignore[arg-type]
    await raises_like(stdlib_error(lambda: sp.write_text(b"b")), lambda: ap.write_text(b"b"))  # type: ignore[arg-type]
    await raises_like(stdlib_error(lambda: sp.rename(3)), lambda: ap.rename(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="open\\(\\) argument 'mode' must be str, not int"):
        await ap.open(3)  # type: ignore[arg-type]  # pathlib's TypeError is an accident of its code
    await raises_like(
        stdlib_error(lambda: pathlib.Path(3)), lambda: anyio.to_thread.run_sync(aiopg_io.Path, 3)
    )
    assert (tmp_path / "f").read_bytes() == b""


async def test_the_path_s_limiter_bounds_its_os_calls(tmp_path: pathlib.Path, driver: str) -> None:
    """A path's limiter reaches its aiopg_io.os calls: where STATX / SYMLINKAT run on a thread
    of this process, a call waits for the token held elsewhere; where the driver runs them
    without one, it does not."""
    from aiopg_io._context import get_context

    (tmp_path / "f").write_bytes(b"")
    limiter = anyio.CapacityLimiter(1)
    p = aiopg_io.Path(tmp_path / "f", limiter=limiter)
    await aiopg_io.os.stat(tmp_path)  # the loop's context, for its driver's capabilities
    threaded = {k.value for k in get_context().driver.capabilities.threaded_kinds}
    calls: list[tuple[Callable[[], Awaitable[object]], bool]] = [
        (p.stat, "statx" in threaded),
        (p.is_symlink, "statx" in threaded),
        (lambda: (p.parent / "s").symlink_to("f"), "symlinkat" in threaded),
    ]
    for call, waits in calls:
        await check_limiter_wait(limiter, call, waits)
    assert os.readlink(tmp_path / "s") == "f"
