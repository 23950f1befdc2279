"""Helpers shared by the WAL tests (and the crash-test child)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from aiopg_io.wal import WAL

SEG = 64 * 1024  # small segments: records cross them, and tests stay cheap


def payload(tag: str, length: int) -> bytes:
    """A record that names itself and whose bytes follow from its name (checkable anywhere)."""
    head = f"{tag}:{length}:".encode()
    block = hashlib.sha256(head).digest()
    body = (block * (length // len(block) + 1))[:length]
    return head + body


def check_payload(data: bytes) -> str:
    """The tag of a record made by :func:`payload`; AssertionError when its bytes are wrong."""
    tag, length, _ = data.split(b":", 2)
    expect = payload(tag.decode(), int(length))
    assert data == expect, f"record {tag!r} is corrupt"
    return tag.decode()


def open_wal(directory: str | os.PathLike[str], driver: Any, **kw: Any) -> Any:
    kw.setdefault("segment_size", SEG)
    kw.setdefault("segments_ahead", 1)
    return WAL.open(directory, driver=driver, **kw)


async def read_all(directory: str | os.PathLike[str], driver: Any, **kw: Any) -> list[tuple[int, bytes]]:
    kw.setdefault("segments_ahead", 0)
    kw.setdefault("segment_size", SEG)
    async with WAL.open(directory, driver=driver, **kw) as wal:
        return [r async for r in wal.read()]


async def commit_records(directory: Path, driver: str, n: int, size: int = 700) -> list[tuple[int, bytes]]:
    """``n`` records committed one by one; their (LSN, bytes)."""
    async with open_wal(directory, driver) as wal:
        return [(await wal.commit(payload(f"t{i}", size)), payload(f"t{i}", size)) for i in range(n)]


async def append_records(directory: Path, driver: str, n: int, size: int = 700) -> list[tuple[int, bytes]]:
    """``n`` records appended, then flushed once; their (LSN, bytes)."""
    records = [payload(f"t{i}", size) for i in range(n)]
    async with open_wal(directory, driver) as wal:
        lsns = [await wal.append(r) for r in records]
        await wal.flush()
    return list(zip(lsns, records, strict=True))


def patch_file(path: Path, offset: int, data: bytes) -> None:
    """Overwrite ``data`` at ``offset`` of ``path`` in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
