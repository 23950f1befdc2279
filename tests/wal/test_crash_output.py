"""Regression test for the crash test's own bookkeeping (tests/wal/test_crash.py).

The crash test failed about one run in three on a loaded machine with "acknowledged
records lost or changed: [(8096, '2-6.4.40')]", and once with a ValueError. The WAL had
lost nothing: the parent read the child's first line with ``readline()`` (which pulls up
to 8 KiB of the pipe into the BufferedReader) and the rest with ``communicate()`` (which
reads the fd directly), so the buffered lines were dropped and the line cut at the
buffer's edge was parsed from its middle: a wrong LSN for a real tag, or no tag at all.

Here the parent is made late on purpose: it waits until the child has more than a buffer's
worth of acknowledgements in the pipe before its ``readline()``, then kills and collects
with the crash test's own helpers, on every loop x driver. Every line the child sent must
come back whole (per-task sequence numbers without a gap, as many bytes as were pending),
and every acknowledged record must be in the recovered WAL, byte for byte.
"""

from __future__ import annotations

import fcntl
import io
import struct
import termios
from pathlib import Path
from typing import Any

import anyio
import pytest

from ._util import check_payload, read_all
from .test_crash import kill_and_collect, spawn_child

pytestmark = pytest.mark.anyio

# More than BufferedReader's buffer, so readline() leaves whole lines and a cut one in it.
_PENDING = io.DEFAULT_BUFFER_SIZE + 1024
_PATIENCE = 120.0  # seconds for the child to get that far: a bound on a hang, not a timing


def _pending(fd: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def _loop_name(anyio_backend: Any) -> str:
    name, options = anyio_backend
    return "uvloop" if options.get("use_uvloop") else str(name)


async def test_late_parent_keeps_every_acknowledgement(
    tmp_path: Path, driver: str, anyio_backend: Any
) -> None:
    directory = tmp_path / "wal"
    directory.mkdir()
    child = spawn_child(directory, driver, _loop_name(anyio_backend), "0-0")
    assert child.stdout is not None
    log: list[str] = []
    head = b""
    pending = 0
    try:
        with anyio.move_on_after(_PATIENCE):
            while pending < _PENDING and child.poll() is None:
                await anyio.sleep(0.01)
                pending = _pending(child.stdout.fileno())
        if pending >= _PENDING:
            head = child.stdout.readline()
    finally:
        acked = kill_and_collect(child, head, "late parent", log)
    assert pending >= _PENDING, f"the child sent only {pending} bytes in {_PATIENCE} s:\n{log[-1]}"
    assert head == b"open\n"

    sent = len(head) + sum(len(f"{lsn} {tag}\n") for lsn, tag in acked.items())
    assert sent >= pending, f"{pending} bytes were in the pipe but only {sent} came back as lines"

    records = await read_all(directory, driver)
    tags = {lsn: check_payload(data) for lsn, data in records}
    missing = sorted((lsn, tag) for lsn, tag in acked.items() if tags.get(lsn) != tag)
    assert not missing, f"acknowledged records lost or changed: {missing[:5]}"
