"""WAL segments (aiopg_io/wal/_segments.py) on every loop x driver: preallocation runs ahead
of the insert position, and truncate_before recycles or removes whole segments."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from aiopg_io.wal._format import segment_name

from ._util import SEG, commit_records, open_wal, payload, read_all

pytestmark = pytest.mark.anyio


async def test_truncate_before_recycles_segments(tmp_path: Path, driver: str) -> None:
    recs = await commit_records(tmp_path, driver, 400)
    async with open_wal(tmp_path, driver, segments_ahead=2) as wal:
        cut = next(lsn for lsn, _ in recs if lsn >= 3 * SEG)
        gone = await wal.truncate_before(cut)
        stats = wal.statistics()
        assert gone == 3 == stats.segments_recycled + stats.segments_removed
        assert stats.segments_recycled >= 1
        assert wal.oldest_lsn == 3 * SEG
        names = sorted(os.listdir(tmp_path))
        assert not {segment_name(0), segment_name(1), segment_name(2)} & set(names)
        kept = [r for r in recs if r[0] >= 3 * SEG]
        assert [r async for r in wal.read()] == kept  # resynchronised past the continuation
        with pytest.raises(ValueError, match="removed by truncate_before"):
            wal.read(start=recs[0][0])
        assert await wal.truncate_before(cut) == 0
        # Write through the recycled segments (they hold stale pages of old positions).
        more = [(await wal.commit(payload(f"n{i}", 900)), payload(f"n{i}", 900)) for i in range(200)]
    assert await read_all(tmp_path, driver) == kept + more


async def test_preallocation_runs_ahead(tmp_path: Path, driver: str) -> None:
    async with open_wal(tmp_path, driver, segments_ahead=2) as wal:
        await wal.commit(b"x")
        for _ in range(100):
            if {segment_name(1), segment_name(2)} <= set(os.listdir(tmp_path)):
                break
            await anyio.sleep(0.01)
        assert {segment_name(1), segment_name(2)} <= set(os.listdir(tmp_path))
        assert os.path.getsize(tmp_path / segment_name(2)) == SEG
        assert not [n for n in os.listdir(tmp_path) if n.startswith("xlogtemp")]
