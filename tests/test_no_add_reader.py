"""A loop that cannot watch an fd (asyncio's Proactor loop, the default on Windows, has no
``add_reader``): the worker and posix_aio drivers signal completions from their threads
through ``call_soon_threadsafe`` instead (issue 13, item 1). Tested with a selector loop
whose ``add_reader`` raises NotImplementedError, as the Proactor loop's does."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiopg_io
from aiopg_io._context import live_contexts
from aiopg_io.errors import DriverUnavailableError
from tests.conftest import open_fds

pytestmark = pytest.mark.anyio


class NoReaderLoop(asyncio.SelectorEventLoop):
    def add_reader(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("no add_reader here (as asyncio's ProactorEventLoop)")


@pytest.fixture
def anyio_backend() -> Any:
    return ("asyncio", {"loop_factory": NoReaderLoop})


async def test_the_loop_really_has_no_add_reader() -> None:
    with pytest.raises(NotImplementedError):
        asyncio.get_running_loop().add_reader(0, lambda: None)


async def test_completions_arrive_without_add_reader(driver: str, tmp_path: Path) -> None:
    if driver in ("io_uring", "io_uring_c"):
        pytest.skip(f"{driver}'s eventfd is raised by the kernel: see the test of its refusal below")
    p = tmp_path / "f.bin"
    data = os.urandom(1 << 20)
    p.write_bytes(data)
    before = open_fds()
    with anyio.fail_after(20):
        async with aiopg_io.open(p, "r+b", driver=driver) as f:
            got: dict[int, bytes] = {}

            async def read(i: int) -> None:
                got[i] = await f.pread(4096, i * 4096)

            async with anyio.create_task_group() as tg:
                for i in range(256):
                    tg.start_soon(read, i)
            assert b"".join(got[i] for i in range(256)) == data
            await f.pwrite(b"new", 10)
            await f.fdatasync()
            cancelled = 0
            for i in range(200):
                with anyio.move_on_after((0, 1e-5, 1e-4)[i % 3]) as scope:
                    await f.pread(4096, (i % 256) * 4096)
                cancelled += scope.cancelled_caught
    assert p.read_bytes()[:16] == data[:10] + b"new" + data[13:16]
    assert open_fds() == before and live_contexts() == []


async def test_io_uring_is_refused_with_what_to_do(driver: str, tmp_path: Path) -> None:
    if driver not in ("io_uring", "io_uring_c"):
        pytest.skip("only io_uring's completion fd cannot be signalled from a thread")
    p = tmp_path / "f.bin"
    p.write_bytes(b"x")
    before = open_fds()
    with pytest.raises(DriverUnavailableError, match=r"cannot watch one \(it has no add_reader.*use driver"):
        await aiopg_io.open(p, "rb", driver=driver)
    assert open_fds() == before and live_contexts() == []
