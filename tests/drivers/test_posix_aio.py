"""The posix_aio driver: its struct layouts against the C headers, then the driver protocol
(submit / fileno / reap / cancel / close) op by op, then a few runs through the file API.

Driver-level tests are synchronous: they wait on ``fileno()`` with select(), as the loop glue
does, so they need no event loop. The general suite (tests/test_file.py...) also runs with
``driver="posix_aio"`` through the ``driver`` fixture.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import random
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import aiopg_io
from aiopg_io.drivers import posix_aio
from aiopg_io.drivers.base import Op, OpKind, OpState
from aiopg_io.drivers.posix_aio import _layouts, _libc, _notifiers, _platforms
from tests.conftest import open_fds

from .._driving import wait_all

REASON = posix_aio.PosixAioDriver.unavailable_reason()
needs_posix_aio = pytest.mark.skipif(REASON is not None, reason=f"posix_aio cannot run here: {REASON}")
LINUX_GLIBC = _platforms.PLATFORM is _platforms.LINUX_GLIBC


# -- helpers ------------------------------------------------------------------------------------


def drive(d: posix_aio.PosixAioDriver, ops: Sequence[Op], *, timeout: float = 20.0) -> list[Op]:
    """Submit ``ops`` and reap until every one is back, as the loop glue would."""
    d.submit(ops)
    return wait_all(d, ops, timeout=timeout)


def reap_for(d: posix_aio.PosixAioDriver, seconds: float) -> list[Op]:
    out: list[Op] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([d.fileno()], [], [], left)
        out += d.reap()
    return out


def aligned(n: int) -> memoryview:
    return memoryview(mmap.mmap(-1, n))


@pytest.fixture
def drv() -> Iterator[posix_aio.PosixAioDriver]:
    if REASON is not None:
        pytest.skip(f"posix_aio cannot run here: {REASON}")
    d = posix_aio.PosixAioDriver()
    yield d
    d.close()


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = random.Random(7).randbytes(1 << 20)
    p = tmp_path / "data.bin"
    p.write_bytes(data)
    return p, data


# -- layout -------------------------------------------------------------------------------------

_LAYOUT_C = r"""
#define _GNU_SOURCE
#include <aio.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#define F(s, f) printf("%s.%s %zu\n", #s, #f, offsetof(struct s, f))
int main(void) {
    printf("sizeof.aiocb %zu\n", sizeof(struct aiocb));
    printf("sizeof.sigevent %zu\n", sizeof(struct sigevent));
    F(aiocb, aio_fildes); F(aiocb, aio_lio_opcode); F(aiocb, aio_reqprio); F(aiocb, aio_buf);
    F(aiocb, aio_nbytes); F(aiocb, aio_sigevent); F(aiocb, __next_prio); F(aiocb, __abs_prio);
    F(aiocb, __policy); F(aiocb, __error_code); F(aiocb, __return_value); F(aiocb, aio_offset);
    F(aiocb, __glibc_reserved);
    F(sigevent, sigev_value); F(sigevent, sigev_signo); F(sigevent, sigev_notify);
    F(sigevent, _sigev_un); F(sigevent, sigev_notify_function); F(sigevent, sigev_notify_attributes);
    F(sigevent, _sigev_un._tid);
    printf("const.LIO_READ %d\nconst.LIO_WRITE %d\nconst.LIO_NOWAIT %d\n", LIO_READ, LIO_WRITE, LIO_NOWAIT);
    printf("const.AIO_CANCELED %d\nconst.AIO_NOTCANCELED %d\nconst.AIO_ALLDONE %d\n",
           AIO_CANCELED, AIO_NOTCANCELED, AIO_ALLDONE);
    printf("const.SIGEV_NONE %d\nconst.O_SYNC %d\nconst.O_DSYNC %d\n", SIGEV_NONE, O_SYNC, O_DSYNC);
    return 0;
}
"""


@pytest.mark.skipif(not LINUX_GLIBC, reason="the C layout check runs on Linux glibc (this machine's headers)")
def test_linux_layout_matches_the_c_headers(tmp_path: Path) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler (gcc/cc) to read sizeof/offsetof from the headers")
    src = tmp_path / "layout.c"
    src.write_text(_LAYOUT_C)
    exe = tmp_path / "layout"
    # _FILE_OFFSET_BITS=64 is what glibc builds of CPython use; on LP64 nothing moves either way.
    for defines in ([], ["-D_FILE_OFFSET_BITS=64"]):
        subprocess.run([gcc, *defines, "-o", str(exe), str(src)], check=True, capture_output=True)
        out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
        c = {k: int(v) for k, v in (line.split() for line in out.splitlines())}

        A, S = _layouts.LinuxAiocb, _layouts.LinuxSigevent
        sev = A.aio_sigevent.offset
        mine = {
            "sizeof.aiocb": ctypes.sizeof(A),
            "sizeof.sigevent": ctypes.sizeof(S),
            "aiocb.aio_fildes": A.aio_fildes.offset,
            "aiocb.aio_lio_opcode": A.aio_lio_opcode.offset,
            "aiocb.aio_reqprio": A.aio_reqprio.offset,
            "aiocb.aio_buf": A.aio_buf.offset,
            "aiocb.aio_nbytes": A.aio_nbytes.offset,
            "aiocb.aio_sigevent": sev,
            "aiocb.__next_prio": A.glibc_next_prio.offset,
            "aiocb.__abs_prio": A.glibc_abs_prio.offset,
            "aiocb.__policy": A.glibc_policy.offset,
            "aiocb.__error_code": A.glibc_error_code.offset,
            "aiocb.__return_value": A.glibc_return_value.offset,
            "aiocb.aio_offset": A.aio_offset.offset,
            "aiocb.__glibc_reserved": A.glibc_reserved.offset,
            "sigevent.sigev_value": S.sigev_value.offset,
            "sigevent.sigev_signo": S.sigev_signo.offset,
            "sigevent.sigev_notify": S.sigev_notify.offset,
            "sigevent._sigev_un": S.sigev_un.offset,
            "sigevent.sigev_notify_function": S.sigev_un.offset + _layouts.LinuxSigevUnion.thread.offset,
            "sigevent.sigev_notify_attributes": S.sigev_un.offset
            + _layouts.LinuxSigevUnion.thread.offset
            + _layouts.LinuxSigevThread.attribute.offset,
            "sigevent._sigev_un._tid": S.sigev_un.offset + _layouts.LinuxSigevUnion.tid.offset,
        }
        assert {k: c[k] for k in mine} == mine
        plat = _platforms.LINUX_GLIBC
        assert c["const.LIO_READ"] == plat.lio_read
        assert c["const.LIO_WRITE"] == plat.lio_write
        assert c["const.LIO_NOWAIT"] == plat.lio_nowait
        assert c["const.AIO_CANCELED"] == plat.aio_canceled
        assert c["const.AIO_NOTCANCELED"] == plat.aio_notcanceled
        assert c["const.AIO_ALLDONE"] == plat.aio_alldone
        assert c["const.SIGEV_NONE"] == plat.sigev_none
        assert c["const.O_SYNC"] == plat.fsync_op
        assert c["const.O_DSYNC"] == plat.fdatasync_op


def test_other_platform_layouts_have_the_header_sizes() -> None:
    """FreeBSD and macOS cannot be compiled against here: check the sizes and offsets the
    headers imply (LP64), so an edit to a field list cannot go unnoticed."""
    F, FS = _layouts.FreeBSDAiocb, _layouts.FreeBSDSigevent
    assert ctypes.sizeof(FS) == 80
    assert (FS.sigev_notify.offset, FS.sigev_signo.offset, FS.sigev_value.offset, FS.sigev_un.offset) == (
        0,
        4,
        8,
        16,
    )
    assert ctypes.sizeof(F) == 160
    assert (F.aio_offset.offset, F.aio_buf.offset, F.aio_nbytes.offset, F.aio_lio_opcode.offset) == (
        8,
        16,
        24,
        48,
    )
    assert (F.aiocb_private.offset, F.aio_sigevent.offset) == (56, 80)
    M, MS = _layouts.MacOSAiocb, _layouts.MacOSSigevent
    assert ctypes.sizeof(MS) == 32
    assert ctypes.sizeof(M) == 80
    assert (M.aio_reqprio.offset, M.aio_sigevent.offset, M.aio_lio_opcode.offset) == (32, 40, 72)


# The FreeBSD and macOS structs as their headers declare them, field for field, with the
# types spelled as LP64 C (off_t is int64_t on both; __lwpid_t is int). A C compiler lays
# them out here by the same natural-alignment rules as on amd64/arm64 FreeBSD and
# arm64/x86_64 macOS, so this checks the ctypes transcription against a compiler rather
# than against offsets worked out by hand. Sources: FreeBSD sys/sys/aio.h and
# sys/sys/signal.h (13.x/14.x); XNU bsd/sys/aio.h and bsd/sys/signal.h. The Rust libc
# crate's freebsd and apple modules declare the same fields.
_BSD_LAYOUT_C = r"""
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
union sigval_ { int sival_int; void *sival_ptr; };
struct fbsd_sigevent {
    int sigev_notify; int sigev_signo; union sigval_ sigev_value;
    union { int _threadid; struct { void (*_function)(union sigval_); void **_attribute; } _sigev_thread;
            unsigned short _kevent_flags; long __spare__[8]; } _sigev_un;
};
struct fbsd_aiocb_private { long status; long error; void *kernelinfo; };
struct fbsd_aiocb {
    int aio_fildes; int64_t aio_offset; volatile void *aio_buf; size_t aio_nbytes; int __spare__[2];
    void *__spare2__; int aio_lio_opcode; int aio_reqprio; struct fbsd_aiocb_private _aiocb_private;
    struct fbsd_sigevent aio_sigevent;
};
struct mac_sigevent {
    int sigev_notify; int sigev_signo; union sigval_ sigev_value;
    void (*sigev_notify_function)(union sigval_); void *sigev_notify_attributes;
};
struct mac_aiocb {
    int aio_fildes; int64_t aio_offset; volatile void *aio_buf; size_t aio_nbytes; int aio_reqprio;
    struct mac_sigevent aio_sigevent; int aio_lio_opcode;
};
#define F(s, f) printf("%s.%s %zu\n", #s, #f, offsetof(struct s, f))
#define Z(s) printf("%s %zu\n", #s, sizeof(struct s))
int main(void) {
    Z(fbsd_sigevent); Z(fbsd_aiocb); Z(mac_sigevent); Z(mac_aiocb);
    F(fbsd_sigevent, sigev_notify); F(fbsd_sigevent, sigev_signo); F(fbsd_sigevent, sigev_value);
    F(fbsd_sigevent, _sigev_un);
    F(fbsd_aiocb, aio_fildes); F(fbsd_aiocb, aio_offset); F(fbsd_aiocb, aio_buf); F(fbsd_aiocb, aio_nbytes);
    F(fbsd_aiocb, __spare__); F(fbsd_aiocb, __spare2__); F(fbsd_aiocb, aio_lio_opcode);
    F(fbsd_aiocb, aio_reqprio); F(fbsd_aiocb, _aiocb_private); F(fbsd_aiocb, aio_sigevent);
    F(mac_sigevent, sigev_notify); F(mac_sigevent, sigev_signo); F(mac_sigevent, sigev_value);
    F(mac_sigevent, sigev_notify_function); F(mac_sigevent, sigev_notify_attributes);
    F(mac_aiocb, aio_fildes); F(mac_aiocb, aio_offset); F(mac_aiocb, aio_buf); F(mac_aiocb, aio_nbytes);
    F(mac_aiocb, aio_reqprio); F(mac_aiocb, aio_sigevent); F(mac_aiocb, aio_lio_opcode);
    return 0;
}
"""


def _ctypes_layout(prefix: str, struct: type[ctypes.Structure], renames: dict[str, str]) -> dict[str, int]:
    out = {prefix: ctypes.sizeof(struct)}
    for name, *_ in struct._fields_:
        out[f"{prefix}.{renames.get(name, name)}"] = getattr(struct, name).offset
    return out


@pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="the BSD layouts are LP64")
def test_bsd_layouts_match_a_c_compiler(tmp_path: Path) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) to lay out the header structs")
    src, exe = tmp_path / "bsd.c", tmp_path / "bsd"
    src.write_text(_BSD_LAYOUT_C)
    subprocess.run([cc, "-o", str(exe), str(src)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    c = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    mine = {
        **_ctypes_layout("fbsd_sigevent", _layouts.FreeBSDSigevent, {"sigev_un": "_sigev_un"}),
        **_ctypes_layout(
            "fbsd_aiocb",
            _layouts.FreeBSDAiocb,
            {"spare": "__spare__", "spare2": "__spare2__", "aiocb_private": "_aiocb_private"},
        ),
        **_ctypes_layout("mac_sigevent", _layouts.MacOSSigevent, {}),
        **_ctypes_layout("mac_aiocb", _layouts.MacOSAiocb, {}),
    }
    assert mine == c


def test_bsd_constants_are_the_headers() -> None:
    """The numbers the FreeBSD and macOS code paths use, as their headers define them."""
    header_facts = {
        # FreeBSD sys/sys/aio.h: LIO_NOP 0, LIO_WRITE 1, LIO_READ 2; LIO_NOWAIT 0; AIO_CANCELED 1,
        # AIO_NOTCANCELED 2, AIO_ALLDONE 3; AIO_LISTIO_MAX 16. sys/sys/signal.h: SIGEV_NONE 0.
        # sys/sys/fcntl.h: O_SYNC 0x80, O_DSYNC 0x1000000.
        _platforms.FREEBSD: (2, 1, 0, 1, 2, 3, 0, 0x80, 0x1000000, 16),
        # XNU bsd/sys/aio.h: LIO_READ 1, LIO_WRITE 2; LIO_NOWAIT 1; AIO_ALLDONE 1, AIO_CANCELED 2,
        # AIO_NOTCANCELED 4; AIO_LISTIO_MAX 16; O_SYNC 0x80, "O_DSYNC - NOT SUPPORTED" by aio_fsync.
        _platforms.MACOS: (1, 2, 1, 2, 4, 1, 0, 0x80, 0x80, 16),
    }
    for plat, facts in header_facts.items():
        ours = (
            plat.lio_read,
            plat.lio_write,
            plat.lio_nowait,
            plat.aio_canceled,
            plat.aio_notcanceled,
            plat.aio_alldone,
            plat.sigev_none,
            plat.fsync_op,
            plat.fdatasync_op,
            plat.listio_max,
        )
        assert ours == facts, plat.name
    # sys/sys/event.h: EVFILT_AIO -3, EVFILT_TIMER -7, EVFILT_USER -11, NOTE_TRIGGER 0x01000000;
    # sys/sys/signal.h: SIGEV_KEVENT 3.
    assert (
        _notifiers.FREEBSD_EVFILT_AIO,
        _notifiers.FREEBSD_EVFILT_TIMER,
        _notifiers.FREEBSD_EVFILT_USER,
    ) == (
        -3,
        -7,
        -11,
    )
    assert (_notifiers.FREEBSD_NOTE_TRIGGER, _notifiers.FREEBSD_SIGEV_KEVENT) == (0x01000000, 3)


def test_platform_selection_and_reason() -> None:
    if LINUX_GLIBC:
        assert REASON is None
        assert posix_aio.tested_here()
        assert posix_aio.PosixAioDriver.unavailable_reason(direct=True) is None
    else:
        assert not posix_aio.tested_here()


def test_other_platforms_say_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one place that chooses: a platform without a described layout gets a reason that
    names it and what to use instead; the driver then refuses to start with that reason."""
    import platform
    import sys

    monkeypatch.setattr(sys, "platform", "sunos5")
    assert _platforms.select_platform() == (
        None,
        "POSIX AIO is not supported by this driver on sunos5 (use the worker driver)",
    )
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("", ""))
    plat, why = _platforms.select_platform()
    assert plat is None and why is not None
    assert why.startswith(
        "POSIX AIO through ctypes needs glibc's struct aiocb layout; this Python runs on an unknown"
    )
    for name, expected in (("freebsd14", _platforms.FREEBSD), ("darwin", _platforms.MACOS)):
        monkeypatch.setattr(sys, "platform", name)
        assert _platforms.select_platform() == (expected, None)
    monkeypatch.setattr(_platforms, "PLATFORM", None)
    monkeypatch.setattr(_platforms, "PLATFORM_REASON", "POSIX AIO is not supported by this driver on sunos5")
    assert (
        posix_aio.PosixAioDriver.unavailable_reason() == "POSIX AIO is not supported by this driver on sunos5"
    )
    assert not posix_aio.tested_here()
    with pytest.raises(
        RuntimeError, match=r"^posix_aio cannot run here: POSIX AIO is not supported .* sunos5$"
    ):
        posix_aio.PosixAioDriver()


@needs_posix_aio
def test_info_marks_an_untested_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`python -m aiopg_io info` says "not tested on this machine" for a platform whose code
    path the tests have not run (FreeBSD, macOS); here (Linux glibc) it says nothing."""
    import dataclasses

    from aiopg_io import _info

    assert "posix_aio" not in _info.machine_matrix(str(tmp_path)).untested
    assert _platforms.PLATFORM is not None
    monkeypatch.setattr(_platforms, "PLATFORM", dataclasses.replace(_platforms.PLATFORM, tested=False))
    m = _info.machine_matrix(str(tmp_path))
    assert m.untested == {"posix_aio": "not tested on this machine"}
    name = "posix_aio".ljust(max(map(len, m.drivers)) + 2)  # the column fits the longest name
    row = [line for line in _info.render(m).splitlines() if line.strip().startswith("posix_aio")]
    assert row == [f"  {name}yes         yes   (not tested on this machine)"]
    # A row whose direct column is refused keeps the note too.
    m.drivers["posix_aio"] = {"buffered": "available", "direct": "refused"}
    row = [line for line in _info.render(m).splitlines() if line.strip().startswith("posix_aio")]
    assert row == [f"  {name}yes         no: refused   (not tested on this machine)"]


# -- every op kind ------------------------------------------------------------------------------


@needs_posix_aio
def test_read_write_every_kind_buffered(drv: posix_aio.PosixAioDriver, data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    fd = os.open(path, os.O_RDWR)
    try:
        bufs = [bytearray(4096) for _ in range(40)]
        reads = [Op(OpKind.READ, fd, offset=i * 8192, buffers=(memoryview(b),)) for i, b in enumerate(bufs)]
        drive(drv, reads)
        for i, (op, b) in enumerate(zip(reads, bufs, strict=True)):
            assert op.error is None and op.result == 4096
            assert bytes(b) == data[i * 8192 : i * 8192 + 4096]

        a, b, c = bytearray(100), bytearray(0), bytearray(5000)
        readv = Op(OpKind.READV, fd, offset=777, buffers=(memoryview(a), memoryview(b), memoryview(c)))
        drive(drv, [readv])
        assert readv.result == 5100
        assert bytes(a) + bytes(c) == data[777 : 777 + 5100]

        write = Op(OpKind.WRITE, fd, offset=3, buffers=(memoryview(b"read-only bytes"),))
        writev = Op(
            OpKind.WRITEV,
            fd,
            offset=1 << 20,
            buffers=(memoryview(b"past "), memoryview(bytearray(b"the end"))),
        )
        drive(drv, [write, writev])
        assert (write.result, writev.result) == (15, 12)
        assert os.pread(fd, 15, 3) == b"read-only bytes"
        assert os.pread(fd, 20, 1 << 20) == b"past the end"

        sync, dsync = Op(OpKind.FSYNC, fd), Op(OpKind.FDATASYNC, fd)
        nop = Op(OpKind.NOP, fd)
        alloc = Op(OpKind.FALLOCATE, fd, offset=0, length=2 << 20)
        drive(drv, [sync, dsync, nop, alloc])
        assert [o.result for o in (sync, dsync, nop, alloc)] == [0, 0, 0, 0]
        assert os.fstat(fd).st_size == 2 << 20
        trunc = Op(OpKind.FTRUNCATE, fd, length=12345)
        drive(drv, [trunc])
        assert trunc.result == 0 and os.fstat(fd).st_size == 12345
    finally:
        os.close(fd)


@needs_posix_aio
def test_reads_at_and_past_eof_are_short(
    drv: posix_aio.PosixAioDriver, data_file: tuple[Path, bytes]
) -> None:
    path, data = data_file
    fd = os.open(path, os.O_RDONLY)
    try:
        tail, past = bytearray(8192), bytearray(10)
        x, y = bytearray(1000), bytearray(1000)
        ops = [
            Op(OpKind.READ, fd, offset=len(data) - 100, buffers=(memoryview(tail),)),
            Op(OpKind.READ, fd, offset=len(data) + 5, buffers=(memoryview(past),)),
            Op(OpKind.READV, fd, offset=len(data) - 1500, buffers=(memoryview(x), memoryview(y))),
        ]
        drive(drv, ops)
        assert [o.result for o in ops] == [100, 0, 1500]
        assert bytes(tail[:100]) == data[-100:]
        assert bytes(x) + bytes(y[:500]) == data[-1500:]
    finally:
        os.close(fd)


@needs_posix_aio
def test_errors_name_the_errno_and_do_not_disturb_the_batch(
    drv: posix_aio.PosixAioDriver, data_file: tuple[Path, bytes]
) -> None:
    path, data = data_file
    fd = os.open(path, os.O_RDONLY)
    r, w = os.pipe()
    os.close(w)
    try:
        good = bytearray(10)
        ops = [
            Op(OpKind.READ, 987654, buffers=(memoryview(bytearray(10)),), path="nowhere"),
            Op(OpKind.READ, fd, offset=0, buffers=(memoryview(good),)),
            Op(OpKind.WRITE, fd, offset=0, buffers=(memoryview(b"x"),), path=str(path)),
            Op(OpKind.FSYNC, 987654),
        ]
        drive(drv, ops)
        assert isinstance(ops[0].error, OSError) and ops[0].error.errno == errno.EBADF
        assert ops[0].error.filename == "nowhere"
        assert ops[1].result == 10 and bytes(good) == data[:10]
        assert ops[2].error is not None and ops[2].error.errno == errno.EBADF  # opened read-only
        assert ops[3].error is not None and ops[3].error.errno == errno.EBADF
        with pytest.raises(OSError, match="Bad file descriptor"):
            raise ops[0].error
    finally:
        os.close(fd)
        os.close(r)


@needs_posix_aio
def test_direct_io_round_trip(data_dir: Path) -> None:
    d = posix_aio.PosixAioDriver()
    path = data_dir / "direct.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_DIRECT", 0), 0o600)
    try:
        pages = [aligned(4096) for _ in range(8)]
        for i, p in enumerate(pages):
            p[:] = bytes([i + 1]) * 4096
        writes = [Op(OpKind.WRITE, fd, offset=i * 4096, buffers=(p,)) for i, p in enumerate(pages[:4])]
        writev = Op(OpKind.WRITEV, fd, offset=4 * 4096, buffers=tuple(pages[4:]))
        drive(d, [*writes, writev, Op(OpKind.FDATASYNC, fd)])
        assert [o.result for o in writes] == [4096] * 4 and writev.result == 4 * 4096

        back = [aligned(4096) for _ in range(8)]
        reads = [Op(OpKind.READ, fd, offset=i * 4096, buffers=(back[i],)) for i in range(4)]
        readv = Op(OpKind.READV, fd, offset=4 * 4096, buffers=tuple(back[4:]))
        drive(d, [*reads, readv])
        assert all(bytes(back[i]) == bytes([i + 1]) * 4096 for i in range(8))

        # O_DIRECT refuses an unaligned buffer with EINVAL, through AIO as through pread.
        odd = memoryview(bytearray(4097))[1:]
        bad = Op(OpKind.READ, fd, offset=0, buffers=(odd,))
        drive(d, [bad])
        assert bad.error is not None and bad.error.errno == errno.EINVAL
    finally:
        d.close()
        os.close(fd)


# -- short transfers, EAGAIN, limits ------------------------------------------------------------


class _Wrapped:
    """An _AioLib stand-in that forwards to the real one, with hooks to misbehave."""

    def __init__(self, real: _libc.AioLib) -> None:
        self.real = real
        self.aio_read = real.aio_read
        self.aio_write = real.aio_write
        self.aio_fsync = real.aio_fsync
        self.aio_error = real.aio_error
        self.aio_return = real.aio_return
        self.aio_cancel = real.aio_cancel
        self.aio_suspend = real.aio_suspend
        self.lio_listio = real.lio_listio


def _cbs(arr: ctypes.Array[ctypes.c_void_p], n: int) -> list[_layouts.LinuxAiocb]:
    return [_layouts.LinuxAiocb.from_address(arr[i] or 0) for i in range(n)]


@needs_posix_aio
@pytest.mark.skipif(not LINUX_GLIBC, reason="halves glibc aiocbs in flight")
def test_short_transfers_continue_until_whole(data_file: tuple[Path, bytes]) -> None:
    """Every request goes out asking for half its length: the driver must continue each op
    with Op.advance until whole, for reads and writes, plain and vectored."""
    path, data = data_file
    d = posix_aio.PosixAioDriver()
    lib = _Wrapped(d._lib)

    def halving(mode: int, arr: ctypes.Array[ctypes.c_void_p], n: int, sig: object) -> int:
        for cb in _cbs(arr, n):
            if cb.aio_nbytes > 1:
                cb.aio_nbytes //= 2
        return int(lib.real.lio_listio(mode, arr, n, sig))

    lib.lio_listio = halving
    d._lib = lib  # type: ignore[assignment]
    fd = os.open(path, os.O_RDWR)
    try:
        one, a, b = bytearray(10000), bytearray(3000), bytearray(7000)
        ops = [
            Op(OpKind.READ, fd, offset=5, buffers=(memoryview(one),)),
            Op(OpKind.READV, fd, offset=50_000, buffers=(memoryview(a), memoryview(b))),
        ]
        drive(d, ops)
        assert [o.result for o in ops] == [10000, 10000]
        assert bytes(one) == data[5:10005] and bytes(a) + bytes(b) == data[50_000:60_000]
        payload = random.Random(1).randbytes(9000)
        w = Op(
            OpKind.WRITEV, fd, offset=100, buffers=(memoryview(payload[:4000]), memoryview(payload[4000:]))
        )
        drive(d, [w])
        assert w.result == 9000 and os.pread(fd, 9000, 100) == payload
        stats = d.statistics()
        assert stats.short_transfers == 3 and stats.retries >= 3
    finally:
        d.close()
        os.close(fd)


@needs_posix_aio
@pytest.mark.skipif(not LINUX_GLIBC, reason="reads glibc aiocbs as they go out")
@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_vectored_ops_coalesce_bounce_or_split(data_dir: Path, direct: bool) -> None:
    """No vectored AIO on glibc or macOS: pieces adjacent in memory go out as one request;
    other ops of at most _BOUNCE_MAX bytes as one request on a bounce buffer (copied out
    after a read, in before a write); larger ones split, a request per piece."""
    data = random.Random(5).randbytes(3 << 20)
    path = data_dir / "vec.bin"
    path.write_bytes(data)
    d = posix_aio.PosixAioDriver()
    lib = _Wrapped(d._lib)
    sizes: list[list[int]] = []

    def recording(mode: int, arr: ctypes.Array[ctypes.c_void_p], n: int, sig: object) -> int:
        sizes.append([cb.aio_nbytes for cb in _cbs(arr, n)])
        return int(lib.real.lio_listio(mode, arr, n, sig))

    lib.lio_listio = recording
    d._lib = lib  # type: ignore[assignment]
    fd = os.open(path, os.O_RDWR | (getattr(os, "O_DIRECT", 0) if direct else 0))
    page, mib = 4096, 1 << 20
    try:
        arena = aligned(16 * page)
        adjacent = tuple(arena[i * page : (i + 1) * page] for i in range(16))
        drive(d, [Op(OpKind.READV, fd, offset=page, buffers=adjacent)])
        assert sizes.pop() == [16 * page] and bytes(arena) == data[page : 17 * page]

        scattered = tuple(reversed(adjacent))  # each piece ends where the one before starts: not adjacent
        drive(d, [Op(OpKind.READV, fd, offset=0, buffers=scattered)])
        assert sizes.pop() == [16 * page]
        assert all(bytes(p) == data[i * page : (i + 1) * page] for i, p in enumerate(scattered))

        big = aligned(3 * mib)
        split = (big[2 * mib :], big[: mib + page])  # past _BOUNCE_MAX together: one request each
        drive(d, [Op(OpKind.READV, fd, offset=page, buffers=split)])
        assert sizes.pop() == [mib, mib + page]
        assert bytes(split[0]) + bytes(split[1]) == data[page : 2 * mib + 2 * page]

        for i, p in enumerate(scattered):
            p[:] = bytes([i + 1]) * page
        w = Op(OpKind.WRITEV, fd, offset=8 * page, buffers=scattered)
        drive(d, [w])
        assert sizes.pop() == [16 * page] and w.result == 16 * page
        assert path.read_bytes()[8 * page : 24 * page] == b"".join(bytes([i + 1]) * page for i in range(16))

        # A bounced read cut short by the end of the file fills only what it read.
        os.ftruncate(fd, len(data) - page)
        tail = [aligned(page) for _ in range(3)]
        tail[2][:] = b"\xaa" * page
        r = Op(OpKind.READV, fd, offset=len(data) - 3 * page, buffers=tuple(tail))
        drive(d, [r])
        assert r.result == 2 * page
        assert sizes[-2:] == [[3 * page], [page]]  # short: the rest is asked for, and meets EOF
        assert bytes(tail[0]) + bytes(tail[1]) == data[-3 * page : -page]
        assert bytes(tail[2]) == b"\xaa" * page
    finally:
        d.close()
        os.close(fd)


@needs_posix_aio
def test_vectored_ops_random_layouts_move_the_right_bytes(tmp_path: Path) -> None:
    """Random READV/WRITEV, many in flight at once: pieces of random sizes, some adjacent in
    memory, some not, some ops past _BOUNCE_MAX, some reaching past the end of the file.
    Every read must return the file's bytes, every write land at its offset, in order."""
    rng = random.Random(17)
    size = 3 << 20
    data = bytearray(rng.randbytes(size))
    path = tmp_path / "rand.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    d = posix_aio.PosixAioDriver()

    def layout() -> tuple[memoryview, ...]:
        lengths = [rng.choice([1, 100, 4096, 65536, 400_000]) for _ in range(rng.randrange(1, 8))]
        arena = memoryview(bytearray(sum(lengths) + 64 * len(lengths)))
        pieces, at = [], 0
        for n in lengths:
            at += rng.choice([0, 0, 1, 64])  # 0: adjacent to the previous piece
            pieces.append(arena[at : at + n])
            at += n
        if rng.random() < 0.3:
            pieces.reverse()
        return tuple(pieces)

    try:
        for _round in range(6):
            reads = [
                Op(OpKind.READV, fd, offset=rng.randrange(0, size + 1000), buffers=layout())
                for _ in range(12)
            ]
            drive(d, reads)
            for op in reads:
                want = data[op.offset : op.offset + op.nbytes]
                got = b"".join(bytes(b) for b in op.buffers)[: len(want)]
                assert op.error is None and op.result == len(want) and got == want
            # Writes to disjoint ranges, one after another with gaps (the file may grow).
            writes, off = [], rng.randrange(0, 1 << 16)
            for _ in range(4):
                bufs = layout()
                for b in bufs:
                    b[:] = rng.randbytes(len(b))
                writes.append(Op(OpKind.WRITEV, fd, offset=off, buffers=bufs))
                off += sum(len(b) for b in bufs) + rng.randrange(0, 1 << 16)
            drive(d, writes)
            for w in writes:
                payload = b"".join(bytes(b) for b in w.buffers)
                assert w.error is None and w.result == len(payload)
                if w.offset > len(data):
                    data += bytes(w.offset - len(data))  # a hole reads as zeros
                data[w.offset : w.offset + len(payload)] = payload
            size = len(data)
            assert path.read_bytes() == bytes(data)
    finally:
        d.close()
        os.close(fd)


@needs_posix_aio
def test_tiny_kernel_limit_queues_thousands_of_ops(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    d = posix_aio.PosixAioDriver(max_in_flight_kernel=2)
    fd = os.open(path, os.O_RDONLY)
    try:
        rng = random.Random(3)
        offsets = [rng.randrange(0, len(data) - 512) for _ in range(3000)]
        bufs = [bytearray(512) for _ in offsets]
        ops = [
            Op(OpKind.READ, fd, offset=o, buffers=(memoryview(b),))
            for o, b in zip(offsets, bufs, strict=True)
        ]
        d.submit(ops)
        extra = dict(d.statistics().extra)
        assert extra["in_kernel"] <= 2 and extra["queued"] >= 2990
        wait_all(d, ops)
        assert all(op.result == 512 and op.error is None for op in ops)
        assert all(bytes(b) == data[o : o + 512] for o, b in zip(offsets, bufs, strict=True))
        assert dict(d.statistics().extra)["in_kernel"] == 0
    finally:
        d.close()
        os.close(fd)


@needs_posix_aio
@pytest.mark.skipif(not LINUX_GLIBC, reason="injects glibc-style EAGAIN")
def test_eagain_from_the_system_is_queued_and_retried(data_file: tuple[Path, bytes]) -> None:
    """lio_listio and aio_fsync say EAGAIN, first for everything (nothing of ours in flight:
    the retry timer must restart), then for half of each batch. No caller sees EAGAIN."""
    path, data = data_file
    d = posix_aio.PosixAioDriver(max_in_flight_kernel=8)
    lib = _Wrapped(d._lib)
    calls = {"listio": 0, "fsync": 0}

    def flaky_listio(mode: int, arr: ctypes.Array[ctypes.c_void_p], n: int, sig: object) -> int:
        calls["listio"] += 1
        if calls["listio"] <= 3:
            ctypes.set_errno(errno.EAGAIN)
            return -1  # nothing taken: every aiocb still says EAGAIN (preset by the driver)
        if n > 1 and calls["listio"] % 2:
            half = (ctypes.c_void_p * (n // 2))(*[arr[i] for i in range(n // 2)])
            assert lib.real.lio_listio(mode, half, n // 2, sig) == 0
            ctypes.set_errno(errno.EAGAIN)
            return -1
        return int(lib.real.lio_listio(mode, arr, n, sig))

    def flaky_fsync(how: int, cb: object) -> int:
        calls["fsync"] += 1
        if calls["fsync"] % 2:
            ctypes.set_errno(errno.EAGAIN)
            return -1
        return int(lib.real.aio_fsync(how, cb))

    lib.lio_listio = flaky_listio
    lib.aio_fsync = flaky_fsync
    d._lib = lib  # type: ignore[assignment]
    fd = os.open(path, os.O_RDWR)
    try:
        offsets = list(range(0, 400 * 1024, 1024))
        bufs = [bytearray(1024) for _ in offsets]
        ops = [
            Op(OpKind.READ, fd, offset=o, buffers=(memoryview(b),))
            for o, b in zip(offsets, bufs, strict=True)
        ]
        ops += [Op(OpKind.FSYNC, fd) for _ in range(5)]
        drive(d, ops)
        assert all(op.error is None for op in ops), [op.error for op in ops if op.error][:3]
        assert all(bytes(b) == data[o : o + 1024] for o, b in zip(offsets, bufs, strict=True))
        stats = d.statistics()
        assert stats.overflows >= 2 and dict(stats.extra)["eagain"] == stats.overflows
    finally:
        d.close()
        os.close(fd)


# -- cancellation and close ---------------------------------------------------------------------


@needs_posix_aio
def test_cancel_queued_in_the_driver(data_file: tuple[Path, bytes]) -> None:
    """With one kernel slot held by a read of an empty pipe, later ops wait in the driver's
    queue; cancelling them completes them with ECANCELED at once."""
    path, _ = data_file
    d = posix_aio.PosixAioDriver(max_in_flight_kernel=1)
    r, w = os.pipe()
    fd = os.open(path, os.O_RDONLY)
    try:
        blocker = Op(OpKind.READ, r, buffers=(memoryview(bytearray(8)),))
        queued = [Op(OpKind.READ, fd, offset=0, buffers=(memoryview(bytearray(64)),)) for _ in range(3)]
        d.submit([blocker, *queued])
        for op in queued:
            d.cancel(op)
        back = wait_all(d, queued, timeout=5)
        assert {id(o) for o in back} == {id(o) for o in queued}
        for op in queued:
            assert op.error is not None and op.error.errno == errno.ECANCELED
        assert d.statistics().cancelled == 3
        assert blocker.state is OpState.SUBMITTED
        os.write(w, b"12345678")
        wait_all(d, [blocker])
        assert blocker.result == 8 and bytes(blocker.buffers[0]) == b"12345678"
    finally:
        d.close()
        for x in (r, w, fd):
            os.close(x)


@needs_posix_aio
@pytest.mark.skipif(not LINUX_GLIBC, reason="relies on glibc chaining requests per fd")
def test_cancel_queued_in_glibc_and_running() -> None:
    """glibc runs requests on one fildes in order: the first read of an empty pipe runs (and
    blocks), the next ones wait behind it inside glibc. aio_cancel stops the waiting ones;
    the running one cannot be stopped and completes with its real result."""
    d = posix_aio.PosixAioDriver(spread_fds=False)
    r, w = os.pipe()
    try:
        running = Op(OpKind.READ, r, buffers=(memoryview(bytearray(4)),))
        behind = [Op(OpKind.READ, r, buffers=(memoryview(bytearray(4)),)) for _ in range(2)]
        d.submit([running])
        time.sleep(0.05)  # let glibc's thread enter read()
        d.submit(behind)
        for op in (running, *behind):
            d.cancel(op)
        back = wait_all(d, behind, timeout=5)
        assert all(op.error is not None and op.error.errno == errno.ECANCELED for op in back)
        assert running.state is OpState.SUBMITTED
        os.write(w, b"data")
        wait_all(d, [running])
        assert running.error is None and running.result == 4 and bytes(running.buffers[0]) == b"data"
    finally:
        d.close()
        os.close(r)
        os.close(w)


@needs_posix_aio
def test_close_with_ops_in_flight_drains(tmp_path: Path) -> None:
    """close() cancels what waits and waits for what runs: every op comes back REAPED from
    close() or an earlier reap, the running one with its real result."""
    d = posix_aio.PosixAioDriver(max_in_flight_kernel=4)
    r, w = os.pipe()
    path = tmp_path / "drain.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        blocker = Op(OpKind.READ, r, buffers=(memoryview(bytearray(5)),))
        writes = [
            Op(OpKind.WRITE, fd, offset=i * 4096, buffers=(memoryview(bytes([i]) * 4096),)) for i in range(64)
        ]
        d.submit([blocker, *writes])
        timer = threading.Timer(0.3, os.write, (w, b"later"))
        timer.start()
        back = d.close()
        timer.join()
        assert {id(o) for o in back} == {id(o) for o in [blocker, *writes]}
        assert all(o.state is OpState.REAPED for o in back)
        assert blocker.result == 5 and bytes(blocker.buffers[0]) == b"later"
        for i, op in enumerate(writes):
            if op.error is None:
                assert op.result == 4096 and os.pread(fd, 4096, i * 4096) == bytes([i]) * 4096
            else:
                assert op.error.errno == errno.ECANCELED
        with pytest.raises(RuntimeError, match="posix_aio driver is closed"):
            d.submit([Op(OpKind.NOP, fd)])
        assert d.close() == []
    finally:
        for x in (r, w, fd):
            os.close(x)


# -- leaks and process state --------------------------------------------------------------------


def _dispositions() -> dict[int, object]:
    out: dict[int, object] = {}
    for s in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError):
            out[int(s)] = signal.getsignal(s)
    return out


@needs_posix_aio
def test_no_fd_thread_or_signal_disposition_left_behind(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    fd = os.open(path, os.O_RDWR)
    before_fds = open_fds()
    before_signals = _dispositions()
    before_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        d = posix_aio.PosixAioDriver()
        bufs = [bytearray(4096) for _ in range(64)]
        ops = [Op(OpKind.READ, fd, offset=i * 4096, buffers=(memoryview(b),)) for i, b in enumerate(bufs)]
        ops.append(
            Op(OpKind.READV, fd, offset=0, buffers=tuple(memoryview(bytearray(512)) for _ in range(8)))
        )
        ops.append(Op(OpKind.FDATASYNC, fd))
        d.submit(ops)
        assert any(t.name == "aiopg_io-posix_aio" for t in threading.enumerate())
        wait_all(d, ops)
        assert all(bytes(b) == data[i * 4096 : (i + 1) * 4096] for i, b in enumerate(bufs))
        d.close()
        assert open_fds() == before_fds
        assert not any(t.name == "aiopg_io-posix_aio" for t in threading.enumerate())
        assert _dispositions() == before_signals
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before_mask
    finally:
        os.close(fd)


@needs_posix_aio
def test_the_macos_fallback_notifier_runs_here(
    monkeypatch: pytest.MonkeyPatch, data_file: tuple[Path, bytes]
) -> None:
    """macOS's notifier has no wake-up aiocb (XNU AIO refuses pipes): its thread re-reads its
    list every _MACOS_RESCAN s while requests are in flight and sleeps while none are. The
    same code runs on glibc, so it is tested here: ops submitted while the thread waits on
    a blocked request are picked up, an idle driver does not poll, close leaves nothing."""
    import dataclasses

    path, data = data_file
    assert _platforms.PLATFORM is not None
    monkeypatch.setattr(
        _platforms, "PLATFORM", dataclasses.replace(_platforms.PLATFORM, notifier="suspend+rescan")
    )
    before_fds = open_fds()
    fd = os.open(path, os.O_RDONLY)
    r, w = os.pipe()
    d = posix_aio.PosixAioDriver()
    try:
        assert isinstance(d._notifier, _notifiers.SuspendNotifier) and d._notifier._pipe is None
        calls = [0]
        real_suspend = d._lib.aio_suspend

        def counting(*args: object) -> int:
            calls[0] += 1
            return int(real_suspend(*args))

        d._lib.aio_suspend = counting
        blocker = Op(OpKind.READ, r, buffers=(memoryview(bytearray(3)),))
        d.submit([blocker])
        time.sleep(0.05)  # the thread is in aio_suspend over the blocked read alone
        bufs = [bytearray(1000) for _ in range(20)]
        reads = [Op(OpKind.READ, fd, offset=i * 5000, buffers=(memoryview(b),)) for i, b in enumerate(bufs)]
        d.submit(reads)
        wait_all(d, reads, timeout=5)
        assert all(bytes(b) == data[i * 5000 : i * 5000 + 1000] for i, b in enumerate(bufs))
        os.write(w, b"end")
        wait_all(d, [blocker], timeout=5)
        assert blocker.result == 3 and bytes(blocker.buffers[0]) == b"end"

        time.sleep(0.05)
        idle_from = calls[0]
        time.sleep(0.3)
        assert calls[0] - idle_from <= 1, f"{calls[0] - idle_from} aio_suspend calls while idle"
        assert d._notifier._state == _notifiers.SuspendNotifier._GRACE  # asleep on its condition
        again = Op(OpKind.READV, fd, offset=7, buffers=(memoryview(bytearray(10)), memoryview(bytearray(5))))
        drive(d, [again], timeout=5)
        assert again.result == 15 and b"".join(bytes(b) for b in again.buffers) == data[7:22]
    finally:
        d.close()
        for x in (fd, r, w):
            os.close(x)
    assert not any(t.name == "aiopg_io-posix_aio" for t in threading.enumerate())
    assert open_fds() == before_fds


@needs_posix_aio
@pytest.mark.skipif(not LINUX_GLIBC, reason="fd spreading is for glibc's per-fd chains")
def test_concurrent_requests_on_one_fd_spread_over_dups(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    fd = os.open(path, os.O_RDONLY)
    d = posix_aio.PosixAioDriver()
    before = open_fds()
    try:
        bufs = [bytearray(4096) for _ in range(32)]
        ops = [Op(OpKind.READ, fd, offset=i * 4096, buffers=(memoryview(b),)) for i, b in enumerate(bufs)]
        d.submit(ops)
        fildes = {r.fd for op in ops if op.driver_data for r in op.driver_data.requests}  # type: ignore[attr-defined]
        assert len(fildes) > 1 and fd in fildes
        wait_all(d, ops)
        assert all(bytes(b) == data[i * 4096 : (i + 1) * 4096] for i, b in enumerate(bufs))
        assert d._fds == {}  # the duplicates are closed once the fd is idle
        assert open_fds() == before
    finally:
        d.close()
        os.close(fd)


@needs_posix_aio
def test_many_drivers_at_once_do_not_starve_glibc_threads(data_file: tuple[Path, bytes]) -> None:
    """Each driver keeps one glibc helper thread in its wake-up read; 24 drivers exceed
    glibc's default cap of 20 threads, which the module raises before first use."""
    path, data = data_file
    fd = os.open(path, os.O_RDONLY)
    drivers = [posix_aio.PosixAioDriver() for _ in range(24)]
    try:
        ops = []
        for i, d in enumerate(drivers):
            op = Op(OpKind.READ, fd, offset=i * 100, buffers=(memoryview(bytearray(100)),))
            d.submit([op])
            ops.append(op)
        for i, (d, op) in enumerate(zip(drivers, ops, strict=True)):
            wait_all(d, [op], timeout=10)
            assert bytes(op.buffers[0]) == data[i * 100 : (i + 1) * 100]
    finally:
        for d in drivers:
            d.close()
        os.close(fd)


@needs_posix_aio
def test_constructor_checks_its_limit() -> None:
    with pytest.raises(ValueError, match=r"max_in_flight_kernel=0 is out of range: 1 to 65536"):
        posix_aio.PosixAioDriver(max_in_flight_kernel=0)


# -- through the file API -----------------------------------------------------------------------


@needs_posix_aio
@pytest.mark.anyio
async def test_file_api_with_a_tiny_kernel_limit(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    before = open_fds()
    rng = random.Random(11)
    offsets = [rng.randrange(0, len(data) - 300) for _ in range(400)]
    async with aiopg_io.open(path, "rb", driver="posix_aio:max_in_flight_kernel=3") as f:
        import anyio

        got: dict[int, bytes] = {}

        async def one(off: int) -> None:
            got[off] = await f.pread(300, off)

        async with anyio.create_task_group() as tg:
            for off in offsets:
                tg.start_soon(one, off)
    assert all(got[o] == data[o : o + 300] for o in offsets)
    assert open_fds() == before


@needs_posix_aio
@pytest.mark.anyio
async def test_file_api_cancelled_read_keeps_its_buffer_until_reaped(tmp_path: Path) -> None:
    """A task cancelled while its read sits in glibc still gets its op reaped before the
    cancellation surfaces (the buffer stays owned); the file closes cleanly after."""
    import anyio

    r, w = os.pipe()
    # glibc cannot stop a read already blocked in read(): the pipe gets its bytes later, from
    # a thread, and only then can the cancelled task go on.
    feeder = threading.Timer(0.3, os.write, (w, b"ping"))
    try:
        async with aiopg_io.open(f"/dev/fd/{r}", "rb", driver="posix_aio", buffering=0) as f:
            feeder.start()
            buf = bytearray(4)
            with anyio.move_on_after(0.05) as scope:
                await f.preadinto(buf, 0)
            assert scope.cancelled_caught
            assert buf == b"ping"  # the op ran to its end before the cancellation surfaced
            stats = f._ctx.driver.statistics()
            assert stats.in_flight == 0
    except (OSError, ValueError) as exc:  # a file API that refuses pipes is not what is tested
        pytest.skip(f"the file API does not open a pipe: {exc}")
    finally:
        feeder.cancel()
        feeder.join()
        os.close(r)
        os.close(w)
