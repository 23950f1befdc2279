"""One relation, two buffer pools in one process: the second is refused (issue 12, row 13).

Each pool would cache its own copy of the file's pages and serve a stale one after the
other's checkpoint, so a pool refuses a file another pool of the process has open, by file
identity (st_dev, st_ino), whatever path names it. Closing the relation or the pool releases it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiopg_io.buffers import BufferPool, RelationInUseError
from aiopg_io.errors import AiopgIOError
from tests.conftest import open_fds

from ._util import PS, make_relation, page_bytes

pytestmark = pytest.mark.anyio


async def test_a_second_pool_is_refused_a_relation_open_in_another(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "table.dat", 4)
    async with BufferPool(4, PS, driver=driver) as a, BufferPool(4, PS, driver=driver) as b:
        rel = await a.open(path)
        with await a.read_page(rel, 1) as page:
            page.data[:4] = b"new!"
            page.mark_dirty()
        await a.flush()
        before = path.read_bytes()
        fds = open_fds()
        with pytest.raises(RelationInUseError) as info:
            await b.open(path, create=True)
        message = str(info.value)
        assert f"{str(path)!r} is already open as a relation in another buffer pool" in message
        assert f"<BufferPool nbuffers=4 page_size={PS} open> at 0x{id(a):x}" in message
        assert "share that pool, or close the relation there first" in message
        assert isinstance(info.value, AiopgIOError) and isinstance(info.value, RuntimeError)
        assert open_fds() == fds  # the refused open closed its file
        assert path.read_bytes() == before  # and changed nothing in it
        with await a.read_page(rel, 1) as page:  # pool A is unaffected
            assert bytes(page.data) == b"new!" + page_bytes(1)[4:]


async def test_another_path_to_the_file_is_refused_too(
    data_dir: Path, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_relation(data_dir / "table.dat", 2)
    link = data_dir / "link.dat"
    os.symlink(path, link)
    os.link(path, data_dir / "hard.dat")
    monkeypatch.chdir(data_dir)
    async with BufferPool(2, PS, driver=driver) as a, BufferPool(2, PS, driver=driver) as b:
        rel = await a.open("table.dat")  # relative
        assert await a.open(link) is rel  # within one pool: the same relation
        for other in (link, path, "./table.dat", "hard.dat"):
            with pytest.raises(RelationInUseError, match=rf"'{other}' is already open as a relation"):
                await b.open(other)
    assert path.read_bytes() == b"".join(page_bytes(blk) for blk in range(2))


async def test_closing_the_relation_or_the_pool_releases_it(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "table.dat", 2)
    async with BufferPool(2, PS, driver=driver) as b:
        async with BufferPool(2, PS, driver=driver) as a:
            rel = await a.open(path)
            with await a.read_page(rel, 0) as page:
                page.data[:3] = b"one"
                page.mark_dirty()
            await a.close_relation(rel)  # checkpoints it
            theirs = await b.open(path)
            with await b.read_page(theirs, 0) as page:
                assert bytes(page.data[:3]) == b"one"
                page.data[:3] = b"two"
                page.mark_dirty()
            with pytest.raises(RelationInUseError):
                await a.open(path)  # now B has it
            await theirs.aclose()
            rel = await a.open(path)  # reopened after close: allowed
            with await a.read_page(rel, 0) as page:
                assert bytes(page.data[:3]) == b"two"
                page.data[:5] = b"three"
                page.mark_dirty()
        # Pool A closed (checkpointing): B can open the file again and sees A's last change.
        rel = await b.open(path)
        with await b.read_page(rel, 0) as page:
            assert bytes(page.data[:5]) == b"three"
