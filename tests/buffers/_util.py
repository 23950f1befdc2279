"""Helpers shared by the buffer-pool tests: relations whose pages say which block they are,
and the fault rule that holds or fails their reads."""

from __future__ import annotations

from pathlib import Path

from aiopg_io.buffers import BufferPool, Relation
from aiopg_io.testing import Fault, FaultInjector

PS = 4096


def page_bytes(blockno: int, ps: int = PS) -> bytes:
    """A page that says which block it is, in every byte (never zero)."""
    return bytes([blockno % 251 + 1]) * ps


def make_relation(path: Path, nblocks: int, ps: int = PS) -> Path:
    path.write_bytes(b"".join(page_bytes(b, ps) for b in range(nblocks)))
    return path


def faulty_relation(
    data_dir: Path,
    nblocks: int,
    driver: str,
    *,
    nth: int = 1,
    times: int | None = 1,
    delay: float = 0.0,
    errno: int | None = None,
) -> tuple[Path, FaultInjector]:
    """A relation of ``nblocks`` pages at ``data_dir/rel``, and an injector over ``driver``
    with one rule on its reads: from the ``nth``, ``times`` of them held ``delay`` seconds,
    then failed with ``errno`` where one is given (the fields of ``Fault``)."""
    path = make_relation(data_dir / "rel", nblocks)
    rule = Fault(kind="reads", path="rel", nth=nth, times=times, delay=delay, errno=errno)
    return path, FaultInjector(rule, driver=driver)


async def read_into(got: list[bytes], pool: BufferPool, rel: Relation, blockno: int) -> None:
    """``read_page`` of ``blockno``; the page's bytes appended to ``got`` while it is pinned."""
    with await pool.read_page(rel, blockno) as page:
        got.append(bytes(page.data))
