"""The WAL's control file, ``wal.control``: who the WAL is and where its log starts.

PostgreSQL keeps, in ``global/pg_control`` (src/include/catalog/pg_control.h), the system
identifier drawn at ``initdb`` and the checkpoint's redo pointer: the WAL before it may be
removed. This file keeps the same two facts for one WAL directory:

- ``sysid``: drawn when the WAL is created. Every segment's first page carries it
  (``xlp_sysid``); recovery and reading refuse a segment whose id differs from this one, so
  a segment of another WAL is named as such, even when it is the first one.
- ``oldest``: the number of the oldest segment of the log. ``truncate_before`` moves it
  forward, durably, *before* it renames or unlinks a segment (PostgreSQL updates
  ``pg_control`` at a checkpoint before ``RemoveOldXlogFiles``). A segment below it found at
  open is a leftover of a truncation cut short, never part of the log.
- ``seg_size``, ``blcksz``, ``version``: the shape of the segments and the format version
  (:data:`~aiopg_io.wal._format.FORMAT_VERSION`).

How it is written, and why:

- PostgreSQL writes ``pg_control`` in place, one 512-byte sector with a CRC
  (``PG_CONTROL_MAX_SAFE_SIZE``), and relies on a sector write being atomic. Here the file
  has two 512-byte slots, written alternately (slot ``seq % 2``), each with a sequence number
  and a CRC-32 over the slot's bytes before it; a write is followed by an fdatasync. A torn
  write can only damage the slot being written, whose previous content was already
  superseded: the other slot holds the state before the write. The reader takes the valid
  slot with the higher sequence number. Nothing relies on sector atomicity.
- It is created as a segment is (:mod:`aiopg_io.wal._segments`): written under a temporary
  name, fsynced, renamed into place, the directory fsynced; and before the first segment,
  so a format-2 WAL directory with segments and no control file has lost it.

Slot layout (little-endian): ``magic 4s ("WALC"), version u32, seq u64, sysid u64,
seg_size u32, blcksz u32, oldest u64, crc u32``, then zeros to 512 bytes.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, replace

import anyio
import anyio.to_thread

import aiopg_io
from aiopg_io import _paths
from aiopg_io._direct import aligned_buffer
from aiopg_io.drivers import DriverFactory

from ._format import CONTROL_NAME, FORMAT_VERSION, TEMP_PREFIX
from .errors import WALCorruptError, WALFormatError

__all__ = ["ControlData", "create_control", "read_control", "write_control"]

_MAGIC = b"WALC"
_SLOT = 512
_BODY = struct.Struct("<4sIQQIIQ")
_CRC = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class ControlData:
    sysid: int
    segment_size: int
    blcksz: int
    oldest: int  # the oldest segment of the log
    seq: int = 0
    version: int = FORMAT_VERSION


def _pack(data: ControlData) -> bytes:
    body = _BODY.pack(_MAGIC, data.version, data.seq, data.sysid, data.segment_size, data.blcksz, data.oldest)
    slot = body + _CRC.pack(zlib.crc32(body))
    return slot + bytes(_SLOT - len(slot))


def _unpack(slot: bytes) -> ControlData | None:
    if len(slot) < _BODY.size + _CRC.size:
        return None
    body = slot[: _BODY.size]
    (crc,) = _CRC.unpack_from(slot, _BODY.size)
    if zlib.crc32(body) != crc:
        return None
    magic, version, seq, sysid, seg_size, blcksz, oldest = _BODY.unpack(body)
    if magic != _MAGIC:
        return None
    return ControlData(sysid, seg_size, blcksz, oldest, seq, version)


async def read_control(directory: str, driver: str | DriverFactory | None) -> ControlData | None:
    """The control data of the WAL in ``directory``; None when there is no control file."""
    path = os.path.join(directory, CONTROL_NAME)
    buf = aligned_buffer(2 * _SLOT)
    try:
        async with aiopg_io.open(path, "rb", driver=driver) as f:
            got = await f.preadinto(buf, 0)
    except FileNotFoundError:
        return None
    raw = bytes(buf[:got])
    slots = [s for s in (_unpack(raw[:_SLOT]), _unpack(raw[_SLOT:])) if s is not None]
    if not slots:
        raise WALCorruptError(
            f"the control file {path!r} is damaged ({got} bytes, no slot with a valid CRC): the WAL's "
            "system identifier and start are unknown; restore the control file from a copy of this WAL"
        )
    data = max(slots, key=lambda s: s.seq)
    if data.version != FORMAT_VERSION:
        raise WALFormatError(
            f"the WAL in {directory!r} is in format {data.version}; this version of aiopg_io reads format "
            f"{FORMAT_VERSION} only: open it with the aiopg_io that wrote it"
        )
    return data


async def create_control(
    directory: str, data: ControlData, driver: str | DriverFactory | None
) -> ControlData:
    """Write the first control file (seq 1) under a temporary name and rename it into place,
    durably. Returns the data as written."""
    data = replace(data, seq=1)
    final = os.path.join(directory, CONTROL_NAME)
    tmp = os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}.control")
    image = bytearray(2 * _SLOT)
    off = (data.seq % 2) * _SLOT
    image[off : off + _SLOT] = _pack(data)
    try:
        await _paths.create(tmp, driver, exclusive=False)
        async with aiopg_io.open(tmp, "w+b", driver=driver) as f:
            await f.pwrite(image, 0)
            await f.fsync()
        await _paths.rename(tmp, final, driver)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _paths.unlink(tmp, driver, missing_ok=True)
        raise
    await _paths.fsync_directory(directory, driver)
    return data


async def write_control(directory: str, data: ControlData, driver: str | DriverFactory | None) -> ControlData:
    """Write ``data`` as the next state (seq + 1, into the other slot) and make it durable.
    Returns the data as written."""
    data = replace(data, seq=data.seq + 1)
    path = os.path.join(directory, CONTROL_NAME)
    async with aiopg_io.open(path, "r+b", driver=driver) as f:
        await f.pwrite(_pack(data), (data.seq % 2) * _SLOT)
        await f.fdatasync()
    return data
