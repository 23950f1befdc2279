"""Kernel range (issue 14, item 2): an opcode the kernel's probe does not list sends its op
kind to the fallback threads (drivers/_fallback.py), on both io_uring drivers.

The probe is masked, one opcode at a time, to play a kernel without it; every kind then
gives the same results and the same errors (type, errno and message) as on a ring that
has the opcode, and ``python -m aiopg_io info`` says where each kind runs.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aiopg_io import _info
from aiopg_io.drivers import Driver, DriverSpec, _statx, unavailable_reason
from aiopg_io.drivers._fallback import ThreadFallback
from aiopg_io.drivers.base import AT_FDCWD, AT_SYMLINK_NOFOLLOW, Op, OpKind

from ..conftest import open_fds

MASKABLE = [
    OpKind.FALLOCATE, OpKind.OPENAT, OpKind.CLOSE, OpKind.RENAMEAT, OpKind.UNLINKAT, OpKind.MKDIRAT,
    OpKind.STATX, OpKind.LINKAT, OpKind.SYMLINKAT,
]  # fmt: skip
NAMES = ["io_uring", "io_uring_c"]


def mask(monkeypatch: pytest.MonkeyPatch, name: str, kinds: set[OpKind]) -> None:
    """Play a kernel whose probe lists none of ``kinds``' opcodes."""
    if name == "io_uring":
        from aiopg_io.drivers import io_uring

        ops = dict(io_uring._opcodes())
        for k in kinds:
            ops[io_uring.KIND_OPCODES[k]] = False
        monkeypatch.setattr(io_uring, "_PROBED", [ops])
    else:
        from aiopg_io.drivers import io_uring_c

        real = io_uring_c._ring_opcodes
        codes = {io_uring_c._kind_opcodes()[k] for k in kinds}

        def masked(ring: object) -> frozenset[int] | None:
            got = real(ring)
            return None if got is None else got - codes

        monkeypatch.setattr(io_uring_c, "_ring_opcodes", masked)


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> Iterator[str]:
    reason = unavailable_reason(request.param)
    if reason is not None:
        pytest.skip(f"driver {request.param} cannot run here: {reason}")
    yield request.param


SUBMITTED: list[OpKind] = []


def run(d: Driver, op: Op) -> Op:
    SUBMITTED.append(op.kind)
    d.submit([op])
    while not op.done:
        select.select([d.fileno()], [], [], 10)
        d.reap()
    return op


Scenario = Callable[[Driver, Path], list[object]]


def _outcome(op: Op) -> object:
    if op.error is not None:
        return (type(op.error).__name__, op.error.errno, str(op.error))
    return op.result


def scenario(kind: OpKind, d: Driver, tmp: Path) -> list[object]:
    """A success and a failure of ``kind``, as comparable outcomes (paths made relative)."""
    out: list[object] = []
    (tmp / "f").write_bytes(b"data")
    if kind is OpKind.OPENAT:
        op = run(d, Op(OpKind.OPENAT, AT_FDCWD, path=str(tmp / "f"), flags=os.O_RDONLY | os.O_CLOEXEC))
        assert op.result is not None and op.result >= 0
        out.append(os.pread(op.result, 4, 0))
        os.close(op.result)
        missing = Op(OpKind.OPENAT, AT_FDCWD, path=str(tmp / "missing"), flags=os.O_RDONLY)
        out.append(_outcome(run(d, missing)))
    elif kind is OpKind.CLOSE:
        fd = os.open(tmp / "f", os.O_RDONLY)
        out.append(_outcome(run(d, Op(OpKind.CLOSE, fd))))
        out.append(_outcome(run(d, Op(OpKind.CLOSE, fd))))  # closed already: EBADF
    elif kind is OpKind.RENAMEAT:
        op = Op(OpKind.RENAMEAT, AT_FDCWD, path=str(tmp / "f"), newpath=str(tmp / "g"))
        out.append(_outcome(run(d, op)))
        out.append(sorted(os.listdir(tmp)))
        op = Op(OpKind.RENAMEAT, AT_FDCWD, path=str(tmp / "f"), newpath=str(tmp / "h"))
        out.append(_outcome(run(d, op)))
        os.rename(tmp / "g", tmp / "f")
    elif kind is OpKind.UNLINKAT:
        out.append(_outcome(run(d, Op(OpKind.UNLINKAT, AT_FDCWD, path=str(tmp / "f")))))
        out.append(_outcome(run(d, Op(OpKind.UNLINKAT, AT_FDCWD, path=str(tmp / "f")))))
    elif kind is OpKind.MKDIRAT:
        out.append(_outcome(run(d, Op(OpKind.MKDIRAT, AT_FDCWD, path=str(tmp / "d"), mode=0o700))))
        out.append(os.path.isdir(tmp / "d"))
        out.append(_outcome(run(d, Op(OpKind.MKDIRAT, AT_FDCWD, path=str(tmp / "d"), mode=0o700))))
        os.rmdir(tmp / "d")
    elif kind is OpKind.STATX:
        os.symlink("f", tmp / "l")
        for path, flags in ((tmp / "l", 0), (tmp / "l", AT_SYMLINK_NOFOLLOW), (tmp / "missing", 0)):
            buf = _statx.new_buffer()
            op = run(d, Op(OpKind.STATX, AT_FDCWD, buffers=(buf,), path=str(path), flags=flags))
            out.append(_outcome(op))
            assert (op.error is None) is (path.name != "missing")
            if op.error is None:  # what os.stat says, field for field
                st = _statx.to_stat_result(buf)
                want = os.stat(path, follow_symlinks=not flags)
                out.append(st == want)
                out.append((st.st_size, oct(st.st_mode)))
        os.unlink(tmp / "l")
    elif kind is OpKind.LINKAT:
        op = Op(OpKind.LINKAT, AT_FDCWD, path=str(tmp / "f"), newpath=str(tmp / "h"))
        out.append(_outcome(run(d, op)))
        out.append((os.stat(tmp / "h").st_ino == os.stat(tmp / "f").st_ino, os.stat(tmp / "f").st_nlink))
        out.append(_outcome(run(d, Op(OpKind.LINKAT, AT_FDCWD, path=str(tmp / "f"), newpath=str(tmp / "h")))))
        os.unlink(tmp / "h")
    elif kind is OpKind.SYMLINKAT:
        op = Op(OpKind.SYMLINKAT, AT_FDCWD, path="../x//y/", newpath=str(tmp / "s"))
        out.append(_outcome(run(d, op)))
        out.append(os.readlink(tmp / "s"))
        out.append(_outcome(run(d, Op(OpKind.SYMLINKAT, AT_FDCWD, path="t", newpath=str(tmp / "s")))))
        os.unlink(tmp / "s")
    elif kind is OpKind.FALLOCATE:
        fd = os.open(tmp / "f", os.O_RDWR)
        try:
            out.append(_outcome(run(d, Op(OpKind.FALLOCATE, fd, 0, length=8192, path=str(tmp / "f")))))
            out.append(os.fstat(fd).st_size)
        finally:
            os.close(fd)
        fd = os.open(tmp / "f", os.O_RDONLY)
        try:  # a read-only fd: EBADF
            out.append(_outcome(run(d, Op(OpKind.FALLOCATE, fd, 0, length=16384, path=str(tmp / "f")))))
        finally:
            os.close(fd)
    return [str(x).replace(str(tmp), "<tmp>") for x in out]


@pytest.mark.parametrize("kind", MASKABLE, ids=[k.value for k in MASKABLE])
def test_a_kind_the_probe_lacks_runs_in_threads_with_the_same_results(
    name: str, kind: OpKind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    native_dir, masked_dir = tmp_path / "native", tmp_path / "masked"
    native_dir.mkdir()
    masked_dir.mkdir()
    before = open_fds()
    d = DriverSpec(name).create()
    try:
        # This kernel has every opcode, so the kind runs in the ring, none in a thread.
        inner = d.inner if isinstance(d, ThreadFallback) else d
        assert kind in inner.capabilities.kinds
        native = scenario(kind, d, native_dir)
        assert dict(d.statistics().extra).get("fallback_ops", 0) == 0
    finally:
        d.close()
    with monkeypatch.context() as m:
        mask(m, name, {kind})
        d = DriverSpec(name).create()
    try:
        assert isinstance(d, ThreadFallback)
        assert kind not in d.inner.capabilities.kinds
        assert set(d.inner.capabilities.kinds) >= {OpKind.READ, OpKind.WRITEV, OpKind.FSYNC, OpKind.NOP}
        SUBMITTED.clear()
        masked = scenario(kind, d, masked_dir)
        assert dict(d.statistics().extra)["fallback_ops"] == SUBMITTED.count(kind) > 0
    finally:
        d.close()
    assert masked == native
    assert open_fds() == before


def test_info_says_which_kinds_run_in_threads(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both drivers run every kind in the ring on a kernel that has every opcode.
    assert _info.machine_matrix(str(tmp_path)).ops[name] == "every kind in the driver"
    mask(monkeypatch, name, {OpKind.RENAMEAT, OpKind.FALLOCATE, OpKind.STATX, OpKind.SYMLINKAT})
    m = _info.machine_matrix(str(tmp_path))
    want = "in threads: fallocate, renameat, statx, symlinkat; the rest in the driver"
    assert m.ops[name] == want
    assert f"  ops       {name}: {want}" in _info.render(m).splitlines()


def test_c_ring_without_a_probe_runs_the_5_1_kinds_and_threads_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before 5.6 IORING_REGISTER_PROBE is refused: only readv, writev, fsync and nop are
    assumed; ftruncate runs inline, every other kind in threads, with the same results."""
    if unavailable_reason("io_uring_c") is not None:
        pytest.skip("io_uring_c cannot run here")
    from aiopg_io.drivers import io_uring_c

    monkeypatch.setattr(io_uring_c, "_ring_opcodes", lambda ring: None)
    d = DriverSpec("io_uring_c").create()
    try:
        assert isinstance(d, ThreadFallback)
        inner = d.inner
        assert set(inner.capabilities.kinds) == {
            OpKind.READ, OpKind.READV, OpKind.WRITE, OpKind.WRITEV, OpKind.FSYNC, OpKind.FDATASYNC,
            OpKind.NOP, OpKind.FTRUNCATE,
        }  # fmt: skip
        assert inner.ftruncate_inline is True
        p = tmp_path / "f"
        p.write_bytes(b"0123456789")
        fd = os.open(p, os.O_RDWR)
        try:
            assert run(d, Op(OpKind.FTRUNCATE, fd, length=4)).result == 0
            buf = bytearray(8)
            assert run(d, Op(OpKind.READ, fd, 0, (memoryview(buf),), direct=True)).result == 4
            assert buf[:4] == b"0123"
        finally:
            os.close(fd)
        assert run(d, Op(OpKind.UNLINKAT, AT_FDCWD, path=str(p))).result == 0
        assert not p.exists()
        assert dict(d.statistics().extra)["fallback_ops"] == 1
    finally:
        d.close()
