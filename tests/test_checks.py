"""The argument checks (aiopg_io/_checks.py) one by one: what each accepts, and for what it
refuses, the exception type and its exact message (the file-level tests in
tests/test_bad_input.py see the same checks through the file API)."""

from __future__ import annotations

import array
import errno
import io
import re

import pytest

from aiopg_io._checks import (
    NEWLINES,
    as_int,
    check_end,
    check_newline,
    exact_int,
    file_offset,
    readable_view,
    writable_view,
)
from aiopg_io.drivers.base import OFF_T_MAX
from aiopg_io.errors import InvalidOffsetError


class Index:
    """Not an int, but usable as one (``__index__``), as numpy integers are."""

    def __index__(self) -> int:
        return 7


def test_as_int_takes_an_index_but_not_a_bool() -> None:
    assert as_int(5, "size") == 5 and type(as_int(Index(), "size")) is int
    assert as_int(Index(), "size") == 7
    for value, name in ((True, "bool"), (1.0, "float"), ("1", "str"), (None, "NoneType")):
        with pytest.raises(TypeError, match=rf"^size must be an integer, not {name}$"):
            as_int(value, "size")


def test_exact_int_takes_a_plain_int_at_least_the_minimum() -> None:
    assert exact_int("threads", 4) == 4 and exact_int("threads", 1, minimum=1) == 1
    assert exact_int("depth", -3) == -3  # no minimum given: any int
    for value, name in ((True, "bool"), (Index(), "Index"), (4.0, "float")):
        with pytest.raises(TypeError, match=rf"^threads must be an int, not {name}$"):
            exact_int("threads", value, minimum=1)
    with pytest.raises(ValueError, match=r"^threads 0 is below the minimum 1$"):
        exact_int("threads", 0, minimum=1)


def test_file_offset_from_zero_to_off_t_max() -> None:
    assert file_offset(0, "f") == 0 and file_offset(OFF_T_MAX, "f") == OFF_T_MAX
    assert file_offset(Index(), "f") == 7
    with pytest.raises(InvalidOffsetError) as ei:
        file_offset(-1, "/d/f.bin")
    assert (ei.value.errno, ei.value.strerror, ei.value.filename) == (
        errno.EINVAL,
        "offset -1 is negative; file offsets start at 0",
        "/d/f.bin",
    )
    assert isinstance(ei.value, OSError) and isinstance(ei.value, ValueError)
    with pytest.raises(InvalidOffsetError) as ei:
        file_offset(OFF_T_MAX + 1, "f")
    past = OFF_T_MAX + 1
    assert ei.value.strerror == f"offset {past} is past the largest file offset, {OFF_T_MAX} (2**63 - 1)"
    with pytest.raises(TypeError, match=r"^offset must be an integer, not float$"):
        file_offset(1.0, "f")


def test_check_end_allows_a_transfer_ending_at_off_t_max() -> None:
    check_end(OFF_T_MAX - 10, 10, "f")  # ends exactly at the limit: fine
    check_end(0, 0, "f")
    with pytest.raises(InvalidOffsetError) as ei:
        check_end(OFF_T_MAX - 10, 11, "/d/f.bin")
    assert ei.value.errno == errno.EINVAL and ei.value.filename == "/d/f.bin"
    assert ei.value.strerror == (
        f"11 bytes at offset {OFF_T_MAX - 10} would end at {OFF_T_MAX + 1}, past the largest "
        f"file offset, {OFF_T_MAX} (2**63 - 1)"
    )


def test_writable_view_is_a_flat_byte_view_of_writable_memory() -> None:
    ba = bytearray(b"abcd")
    mv = writable_view(ba)
    assert (mv.format, mv.ndim, mv.readonly, mv.nbytes) == ("B", 1, False, 4)
    mv[0] = ord("z")
    assert ba == b"zbcd"  # a view, not a copy
    arr = array.array("i", [1, 2])
    assert writable_view(arr).nbytes == 2 * arr.itemsize and writable_view(arr).format == "B"
    grid = memoryview(bytearray(12)).cast("H", (2, 3))
    assert writable_view(grid).nbytes == 12 and writable_view(grid).ndim == 1
    with pytest.raises(TypeError, match=r"^buffer must be writable; bytes is read-only$"):
        writable_view(b"abc")
    with pytest.raises(TypeError, match=r"^buf must be a writable bytes-like object, not str$"):
        writable_view("abc", "buf")
    with pytest.raises(TypeError, match=r"^buffer must be C-contiguous$"):
        writable_view(memoryview(bytearray(8))[::2])


def test_readable_view_takes_any_bytes_like_but_not_str() -> None:
    for data in (b"abc", bytearray(b"abc"), memoryview(b"abc")):
        mv = readable_view(data)
        assert (mv.format, mv.ndim, bytes(mv)) == ("B", 1, b"abc")
    assert readable_view(array.array("H", [1, 2])).nbytes == 4
    hint = r"\(open the file in text mode for str\)"
    with pytest.raises(TypeError, match=rf"^data must be a bytes-like object, not 'str' {hint}$"):
        readable_view("abc")
    with pytest.raises(TypeError, match=r"^chunk must be a bytes-like object, not 'str' \(encode it\)$"):
        readable_view("abc", "chunk", "encode it")
    with pytest.raises(TypeError, match=r"^data must be a bytes-like object, not int$"):
        readable_view(5)
    with pytest.raises(TypeError, match=r"^data must be C-contiguous$"):
        readable_view(memoryview(b"abcdef")[::2])


def test_check_newline_takes_what_open_takes() -> None:
    for newline in NEWLINES:
        check_newline(newline)
    for bad in ("\n\r", "x", " "):
        with pytest.raises(ValueError) as python:
            io.TextIOWrapper(io.BytesIO(), newline=bad)
        with pytest.raises(ValueError, match=rf"^{re.escape(str(python.value))}$"):
            check_newline(bad)
