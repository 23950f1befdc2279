"""``aiopg_io._openat2``: a cached path opened on the calling thread; a symlink never
followed under RESOLVE_NO_SYMLINKS; a kernel without openat2 makes it stop trying."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from aiopg_io import _openat2
from aiopg_io._openat2 import RESOLVE_NO_SYMLINKS, open_cached

AT_FDCWD = -100
needs_openat2 = pytest.mark.skipif(not _openat2.available(), reason="no openat2 here")


@needs_openat2
def test_a_cached_file_opens_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"hello")
    os.stat(path)  # the lookup cache holds it now
    fd = open_cached(AT_FDCWD, str(path), os.O_RDONLY | os.O_CLOEXEC, RESOLVE_NO_SYMLINKS)
    assert fd is not None
    try:
        assert os.pread(fd, 10, 0) == b"hello"
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)


@needs_openat2
def test_a_symlink_is_never_followed(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello")
    (tmp_path / "link").symlink_to(tmp_path / "a.txt")
    os.stat(tmp_path / "link")
    for _ in range(2):
        try:
            flags = os.O_RDONLY | os.O_CLOEXEC
            fd = open_cached(AT_FDCWD, str(tmp_path / "link"), flags, RESOLVE_NO_SYMLINKS)
        except OSError as e:
            assert e.errno == errno.ELOOP and e.filename == str(tmp_path / "link")
        else:
            assert fd is None  # not cached (EAGAIN): the caller looks elsewhere


def test_a_kernel_without_openat2_stops_the_tries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def enosys(*args: object) -> int:
        calls.append(1)
        ctypes.set_errno(errno.ENOSYS)
        return -1

    monkeypatch.setattr(_openat2, "_syscall", enosys)
    monkeypatch.setattr(_openat2, "_works", True)
    (tmp_path / "a").write_bytes(b"")
    assert open_cached(AT_FDCWD, str(tmp_path / "a"), os.O_RDONLY, 0) is None
    assert _openat2.available() is False
    assert open_cached(AT_FDCWD, str(tmp_path / "a"), os.O_RDONLY, 0) is None
    assert calls == [1]


def test_other_errors_raise_as_os_open_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def eacces(*args: object) -> int:
        ctypes.set_errno(errno.EACCES)
        return -1

    monkeypatch.setattr(_openat2, "_syscall", eacces)
    monkeypatch.setattr(_openat2, "_works", True)
    with pytest.raises(PermissionError) as info:
        open_cached(AT_FDCWD, str(tmp_path / "x"), os.O_RDONLY, 0)
    assert info.value.filename == str(tmp_path / "x")


@needs_openat2
def test_a_nul_in_the_path_is_refused_not_cut(tmp_path: Path) -> None:
    """A path with a NUL is a ValueError, as os.open's; ctypes passes a bytes object's letters
    up to its first NUL, so the kernel opened the file named by the part before it."""
    (tmp_path / "a.txt").write_bytes(b"hello")
    os.stat(tmp_path / "a.txt")
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(ValueError, match="embedded null byte"):
        open_cached(
            AT_FDCWD, str(tmp_path / "a.txt") + "\x00.png", os.O_RDONLY | os.O_CLOEXEC, RESOLVE_NO_SYMLINKS
        )
    assert sorted(os.listdir("/proc/self/fd")) == before
