"""``aiopg_io.open`` takes ``open()``'s arguments in ``open()``'s positions (issue 18, item 4),
and what it returns is a coroutine as well as an async context manager."""

from __future__ import annotations

import asyncio
import builtins
import inspect
import os
from pathlib import Path

import anyio
import pytest
import trio

import aiopg_io
from aiopg_io._context import live_contexts
from tests.conftest import open_fds

anyio_mark = pytest.mark.anyio


def test_the_signature_is_opens_then_keyword_only_arguments() -> None:
    ours = list(inspect.signature(aiopg_io.open).parameters.values())
    theirs = list(inspect.signature(builtins.open).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours[: len(theirs)]] == [
        (p.name, p.kind, p.default) for p in theirs
    ]
    assert [(p.name, p.kind) for p in ours[len(theirs) :]] == [
        ("direct", inspect.Parameter.KEYWORD_ONLY),
        ("driver", inspect.Parameter.KEYWORD_ONLY),
        ("limiter", inspect.Parameter.KEYWORD_ONLY),  # anyio.open_file's
    ]


@anyio_mark
async def test_each_argument_by_position_means_what_it_means_to_open(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    p.write_bytes(b"one\r\ntwo\n")
    # buffering, positional: 0 is unbuffered, as open(p, "rb", 0).
    with builtins.open(p, "rb", 0) as raw:
        expected = raw.read(4)
    async with aiopg_io.open(p, "rb", 0, driver=driver) as f:
        assert await f.read(4) == expected and f._buffer_size == 0
    # encoding, errors, newline, positional.
    with builtins.open(p, "r", -1, "ascii", "strict", "") as t:  # noqa: UP015 (the position is the point)
        expected_lines = t.readlines()
    async with aiopg_io.open(p, "r", -1, "ascii", "strict", "", driver=driver) as f:
        assert await f.readlines() == expected_lines == ["one\r\n", "two\n"]
    # closefd=False: the fd stays open after close; closefd with a name is refused as open() does.
    fd = os.open(p, os.O_RDONLY)
    try:
        async with aiopg_io.open(fd, "rb", -1, None, None, None, False, driver=driver) as f:
            assert await f.read() == p.read_bytes()
        os.fstat(fd)  # still open
    finally:
        os.close(fd)
    with pytest.raises(ValueError) as ours:
        await aiopg_io.open(p, "rb", closefd=False, driver=driver)
    with pytest.raises(ValueError) as theirs:
        builtins.open(p, "rb", closefd=False)  # noqa: SIM115 (it raises)
    assert str(ours.value) == str(theirs.value)
    # opener, positional (the eighth).
    seen: list[int] = []

    def opener(path: str, flags: int) -> int:
        seen.append(flags)
        return os.open(path, flags)

    async with aiopg_io.open(p, "rb", -1, None, None, None, True, opener, driver=driver) as f:
        assert await f.read(3) == b"one"
    assert seen and seen[0] & os.O_ACCMODE == os.O_RDONLY


def test_open_is_a_coroutine_for_asyncio_run_and_trio_run(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"data")
    before = open_fds()
    f = asyncio.run(aiopg_io.open(p, "rb", driver=driver))
    assert isinstance(f, aiopg_io.AsyncFile)
    asyncio.run(f.aclose())  # from another loop: closes all the same
    g = trio.run(aiopg_io.open, p, "rb")  # the driver: AIOPG_IO_DRIVER, set by the fixture
    assert isinstance(g, aiopg_io.AsyncFile)
    trio.run(g.aclose)
    assert open_fds() == before and live_contexts() == []


@anyio_mark
async def test_a_nul_byte_in_the_path_is_refused_as_open_refuses_it(driver: str, tmp_path: Path) -> None:
    # io.open's words on every Python; os.open's changed in 3.13 ("open: embedded null
    # character in path"), so the check is made before the path reaches os.open.
    before = open_fds()
    for path in (str(tmp_path / "a\0b"), os.fsencode(tmp_path / "a\0b"), tmp_path / "a\0b"):
        with pytest.raises(ValueError) as python, builtins.open(path, "rb"):
            pass
        with pytest.raises(ValueError, match=f"^{python.value}$"):
            await aiopg_io.open(path, "rb", driver=driver)
    assert open_fds() == before and os.listdir(tmp_path) == []


@anyio_mark
async def test_an_open_call_runs_once(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"x")
    call = aiopg_io.open(p, "rb")
    f = await call
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        await call
    await f.aclose()


@anyio_mark
async def test_limiter_of_the_wrong_type_is_refused_as_anyio_refuses_it(driver: str, tmp_path: Path) -> None:
    before = open_fds()
    for bad in (3, "limiter", anyio.Semaphore(1)):
        message = f"^limiter must be a CapacityLimiter or None, not {type(bad).__name__}$"
        with pytest.raises(TypeError, match=message):
            await aiopg_io.open(tmp_path / "f", "wb", driver=driver, limiter=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "f").exists() and open_fds() == before


@anyio_mark
async def test_limiter_bounds_the_thread_that_runs_open(driver: str, tmp_path: Path) -> None:
    """As anyio.open_file: open(2) runs in a thread only once the limiter gives a token."""
    p = tmp_path / "f.bin"
    p.write_bytes(b"data")
    limiter = anyio.CapacityLimiter(1)
    opened: list[aiopg_io.AsyncFile] = []
    holder = object()
    await limiter.acquire_on_behalf_of(holder)

    async def open_it() -> None:
        opened.append(await aiopg_io.open(p, "rb", driver=driver, limiter=limiter))

    async with anyio.create_task_group() as tg:
        tg.start_soon(open_it)
        while limiter.statistics().tasks_waiting == 0:  # the open waits for the token
            await anyio.sleep(0)
        assert not opened
        limiter.release_on_behalf_of(holder)
    async with opened[0] as f:
        assert f.limiter is limiter and await f.read() == b"data"
    assert limiter.borrowed_tokens == 0
