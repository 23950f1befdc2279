"""``aiopg_io.wrap``: an open Python file object made awaitable (``anyio.wrap_file`` /
``aiofiles.wrap``), its methods run in threads, the object kept coherent."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import pytest

import aiopg_io
from tests.conftest import open_fds

pytestmark = pytest.mark.anyio


async def test_binary_file_object(tmp_path: Path) -> None:
    p = tmp_path / "b.bin"
    p.write_bytes(b"line one\nline two\nrest")
    before = open_fds()
    raw = open(p, "r+b")  # noqa: SIM115 - wrap takes it over; aclose closes it
    async with aiopg_io.wrap(raw) as f:
        assert f.wrapped is raw and f.limiter is None and f.name == str(p) and f.mode == "rb+"
        assert await f.peek(1) == raw.peek(1)  # peek goes to the object's own buffer
        assert await f.readline() == b"line one\n"
        assert raw.tell() == 9  # the object's own position moved: one source of truth
        assert raw.read(4) == b"line"  # used directly between awaits, still coherent
        assert await f.read1(4) == b" two"
        assert [line async for line in f] == [b"\n", b"rest"]
        assert await f.seek(0) == 0
        assert await f.write(b"LINE") == 4
        await f.flush()
        assert p.read_bytes().startswith(b"LINE one")
        buf = bytearray(3)
        assert await f.readinto(buf) == 3 and bytes(buf) == b" on"
        assert await f.truncate(8) == 8
        assert await f.tell() == 7
    assert raw.closed and open_fds() == before
    assert p.read_bytes() == b"LINE one"


async def test_text_file_object_and_limiter(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text("a\nb\n", encoding="utf-8")
    limiter = anyio.CapacityLimiter(1)
    f = aiopg_io.wrap(open(p, encoding="utf-8"), limiter=limiter)  # noqa: SIM115
    try:
        assert f.limiter is limiter and f.encoding == "utf-8"
        assert await f.readlines() == ["a\n", "b\n"]
        with pytest.raises(AttributeError, match="peek"):  # io.TextIOWrapper has none
            await f.peek(1)
    finally:
        await f.close()
    assert f.closed and limiter.borrowed_tokens == 0
    with pytest.raises(ValueError, match="I/O operation on closed file"):  # the object's own error
        await f.read()


async def test_objects_without_an_fd() -> None:
    f = aiopg_io.wrap(io.BytesIO(b"in memory"))
    assert await f.read(2) == b"in" and await f.read() == b" memory"
    await f.aclose()


async def test_wrong_arguments() -> None:
    for bad in (3, "path", None):
        message = rf"^wrap\(\) needs an open file object .*, not {type(bad).__name__}$"
        with pytest.raises(TypeError, match=message):
            aiopg_io.wrap(bad)
    for cls in (io.FileIO, io.BytesIO):  # classes have read and write too, as functions
        message = rf"^wrap\(\) needs an open file object .*, not the class {cls.__name__}$"
        with pytest.raises(TypeError, match=message):
            aiopg_io.wrap(cls)
    with pytest.raises(TypeError, match=r"^limiter must be a CapacityLimiter or None, not int$"):
        aiopg_io.wrap(io.BytesIO(), limiter=1)  # type: ignore[arg-type]
