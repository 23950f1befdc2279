"""The control file (aiopg_io/wal/_control.py) on every loop x driver: two slots, each with
its CRC, so one torn write is survived and two are not; a WAL without one is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiopg_io.wal import WALCorruptError

from ._util import append_records, open_wal, patch_file, read_all

pytestmark = pytest.mark.anyio

CONTROL = "wal.control"


async def test_lost_control_file_is_refused(tmp_path: Path, driver: str) -> None:
    await append_records(tmp_path, driver, 10)
    os.unlink(tmp_path / CONTROL)
    with pytest.raises(
        WALCorruptError, match=r"holds segments of a WAL \(system id 0x[0-9a-f]+\) but no wal\.control"
    ):
        await open_wal(tmp_path, driver)


async def test_control_file_survives_one_torn_slot_and_not_two(tmp_path: Path, driver: str) -> None:
    recs = await append_records(tmp_path, driver, 10)
    control = tmp_path / CONTROL
    assert control.stat().st_size == 1024
    patch_file(control, 0, b"\xff" * 512)  # slot 0 holds nothing yet: a torn write there changes nothing
    assert await read_all(tmp_path, driver) == recs
    patch_file(control, 512 + 30, b"\xff")
    with pytest.raises(
        WALCorruptError, match=r"the control file .* is damaged \(1024 bytes, no slot with a valid CRC\)"
    ):
        await open_wal(tmp_path, driver)
