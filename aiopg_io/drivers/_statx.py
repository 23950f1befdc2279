"""``struct statx`` <-> ``os.stat_result``: what a STATX op leaves in its buffer, read back
as ``os.stat`` gives it.

Facts relied on:

- The layout is the kernel's ABI (Linux include/uapi/linux/stat.h): ``stx_mask``,
  ``stx_blksize``, ``stx_attributes``, ``stx_nlink``, ``stx_uid``, ``stx_gid``,
  ``stx_mode`` (16 bits, then 16 spare), ``stx_ino``, ``stx_size``, ``stx_blocks``,
  ``stx_attributes_mask``, four ``statx_timestamp`` (``tv_sec`` signed 64, ``tv_nsec``
  unsigned 32, 32 reserved) in the order atime, btime, ctime, mtime, then ``stx_rdev_*``
  and ``stx_dev_*`` as major/minor pairs, ``stx_mnt_id``, the direct-I/O alignments, and
  spare words up to 256 bytes, in the machine's byte order.
- stat(2) and statx(2) read the same kernel record (``vfs_getattr``); stat copies its
  fields whatever the file system reported, and so does statx, which only *says* in
  ``stx_mask`` which ones the file system filled. So every field of Linux's ``struct
  stat`` is here with stat's value; a field missing from the mask (some network file
  systems leave out ``STATX_INO`` or the times) is the same value stat(2) would give, and
  is used as it is. What statx adds (birth time, attributes, mount id) is not in Linux's
  ``os.stat_result`` and is dropped.
- CPython builds ``os.stat_result`` (``_pystat_fromstructstat``, Modules/posixmodule.c)
  with the integer seconds in the first ten fields, ``st_atime`` etc. as
  ``sec + nsec * 1e-9`` (one double multiply and add: the same expression here gives the
  same float), ``st_atime_ns`` as ``sec * 10**9 + nsec``, ``st_dev`` and ``st_rdev`` as
  glibc's ``makedev`` of the major and minor (``os.makedev``).
- A platform whose ``os.stat_result`` has fields a ``struct statx`` cannot carry (BSD's
  ``st_flags``, ``st_gen``, ``st_birthtime``) gets them from ``os.stat`` in a thread
  instead: :data:`CARRIES_STAT` is False there, and :mod:`aiopg_io.os` asks it.
"""

from __future__ import annotations

import os
import struct

from .base import STATX_BASIC_STATS, STATX_SIZE

__all__ = ["CARRIES_STAT", "new_buffer", "pack", "to_stat_result"]

# The fields up to stx_dio_offset_align; the rest of the 256 bytes is spare.
_LAYOUT = struct.Struct("=IIQIIIH2xQQQQ" + "qIi" * 4 + "IIIIQII")
# The ``os.stat_result`` fields a struct statx fills: Linux's ``struct stat``, all of them.
_FILLED = frozenset({
    "st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
    "st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
    "st_blksize", "st_blocks", "st_rdev",
})  # fmt: skip
#: Whether a struct statx gives every field of this platform's ``os.stat_result``.
CARRIES_STAT = {n for n in dir(os.stat_result) if n.startswith("st_")} <= _FILLED
_BILLION = 10**9


def new_buffer() -> memoryview:
    """A zeroed buffer for one STATX op's result."""
    return memoryview(bytearray(STATX_SIZE))


def to_stat_result(buf: memoryview) -> os.stat_result:
    """The ``os.stat_result`` ``os.stat`` gives for the file a STATX op described in ``buf``."""
    (
        _mask, blksize, _attributes, nlink, uid, gid, mode, ino, size, blocks, _attributes_mask,
        a_sec, a_nsec, _r0, _b_sec, _b_nsec, _r1, c_sec, c_nsec, _r2, m_sec, m_nsec, _r3,
        rdev_major, rdev_minor, dev_major, dev_minor, _mnt_id, _dio_mem, _dio_offset,
    ) = _LAYOUT.unpack_from(buf)  # fmt: skip
    return os.stat_result(
        (mode, ino, os.makedev(dev_major, dev_minor), nlink, uid, gid, size, a_sec, m_sec, c_sec),
        {
            "st_atime": a_sec + a_nsec * 1e-9,
            "st_mtime": m_sec + m_nsec * 1e-9,
            "st_ctime": c_sec + c_nsec * 1e-9,
            "st_atime_ns": a_sec * _BILLION + a_nsec,
            "st_mtime_ns": m_sec * _BILLION + m_nsec,
            "st_ctime_ns": c_sec * _BILLION + c_nsec,
            "st_blksize": blksize,
            "st_blocks": blocks,
            "st_rdev": os.makedev(rdev_major, rdev_minor),
        },
    )


def pack(st: os.stat_result, buf: memoryview) -> None:
    """Write ``st`` (from ``os.stat``) into ``buf`` as statx(2) would describe the file: what
    the blocking drivers do for a STATX op, so every driver hands back the same record."""
    a_sec, a_nsec = divmod(st.st_atime_ns, _BILLION)
    c_sec, c_nsec = divmod(st.st_ctime_ns, _BILLION)
    m_sec, m_nsec = divmod(st.st_mtime_ns, _BILLION)
    rdev = getattr(st, "st_rdev", 0)
    _LAYOUT.pack_into(
        buf, 0,
        STATX_BASIC_STATS, getattr(st, "st_blksize", 0), 0, st.st_nlink, st.st_uid, st.st_gid,
        st.st_mode, st.st_ino, st.st_size, getattr(st, "st_blocks", 0), 0,
        a_sec, a_nsec, 0, 0, 0, 0, c_sec, c_nsec, 0, m_sec, m_nsec, 0,
        os.major(rdev), os.minor(rdev), os.major(st.st_dev), os.minor(st.st_dev), 0, 0, 0,
    )  # fmt: skip
