"""aiopg_io.tempfile against the stdlib's tempfile (issue 16, item 3).

Data written is read back; a named file is gone after close (kept with ``delete=False``,
kept past close with ``delete_on_close=False`` until the context ends); a directory is gone
after its context; a spooled file stays in memory up to ``max_size`` and then holds the
same bytes at the same position in a real file; bad arguments fail as the stdlib's do and
leave no file and no fd behind. Every loop x driver.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

import aiopg_io
import aiopg_io.tempfile

from .conftest import open_fds, stdlib_error

pytestmark = pytest.mark.anyio


async def test_temporary_file_reads_back_and_leaves_no_name(tmp_path: Path, driver: str) -> None:
    before = open_fds()
    async with aiopg_io.tempfile.TemporaryFile(dir=tmp_path) as f:
        assert isinstance(f, aiopg_io.AsyncFile)
        assert list(tmp_path.iterdir()) == []
        await f.write(b"hello temp")
        await f.seek(0)
        assert await f.read() == b"hello temp"
    async with aiopg_io.tempfile.TemporaryFile("w+", encoding="utf-8", dir=tmp_path) as t:
        await t.write("é\n")
        await t.seek(0)
        assert await t.read() == "é\n"
    f2 = await aiopg_io.tempfile.TemporaryFile(dir=tmp_path)
    await f2.aclose()
    assert open_fds() == before
    assert list(tmp_path.iterdir()) == []


async def test_named_file_is_deleted_as_the_stdlib_deletes(tmp_path: Path, driver: str) -> None:
    async with aiopg_io.tempfile.NamedTemporaryFile(dir=tmp_path, prefix="p", suffix=".s") as f:
        name = Path(f.name)
        assert name.parent == tmp_path and name.name.startswith("p") and name.suffix == ".s"
        await f.write(b"named")
        await f.flush()
        assert name.read_bytes() == b"named"
    assert not name.exists()
    async with aiopg_io.tempfile.NamedTemporaryFile(dir=tmp_path, delete=False) as f:
        await f.write(b"kept")
    assert Path(f.name).read_bytes() == b"kept"
    Path(f.name).unlink()
    async with aiopg_io.tempfile.NamedTemporaryFile(dir=tmp_path, delete_on_close=False) as f:
        await f.write(b"open again")
        await f.close()
        assert Path(f.name).read_bytes() == b"open again"  # closed, not yet deleted
    assert not Path(f.name).exists()
    f = await aiopg_io.tempfile.NamedTemporaryFile("w+", dir=tmp_path)
    await f.write("x\ny\n")
    await f.seek(0)
    assert [line async for line in f] == ["x\n", "y\n"]
    await f.aclose()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "rw"},
        {"mode": "wb", "encoding": "utf-8"},
        {"mode": "w", "encoding": "no-such-codec"},
    ],
    ids=["mode", "binary-encoding", "codec"],
)
async def test_bad_arguments_fail_as_the_stdlib_and_leave_nothing(
    tmp_path: Path, driver: str, kwargs: dict[str, Any]
) -> None:
    before = open_fds()
    for maker, std in (
        (aiopg_io.tempfile.TemporaryFile, tempfile.TemporaryFile),
        (aiopg_io.tempfile.NamedTemporaryFile, tempfile.NamedTemporaryFile),
    ):
        want = stdlib_error(lambda: std(dir=tmp_path, **kwargs))  # noqa: B023
        with pytest.raises(type(want)) as info:
            await maker(dir=tmp_path, **kwargs)
        assert str(info.value) == str(want)
    assert open_fds() == before
    assert list(tmp_path.iterdir()) == []


async def test_a_mode_of_the_wrong_type_is_a_type_error(tmp_path: Path, driver: str) -> None:
    # The stdlib's own message here is an accident of its code ("argument of type 'int' is
    # not iterable"); the type is the same, the message aiopg_io.open's.
    before = open_fds()
    with pytest.raises(TypeError, match="open\\(\\) argument 'mode' must be str, not int"):
        await aiopg_io.tempfile.NamedTemporaryFile(5, dir=tmp_path)  # type: ignore[arg-type]
    assert open_fds() == before and list(tmp_path.iterdir()) == []


async def test_missing_dir_fails_as_the_stdlib(tmp_path: Path, driver: str) -> None:
    missing = tmp_path / "missing"
    want = stdlib_error(lambda: tempfile.NamedTemporaryFile(dir=missing))  # noqa: SIM115
    assert isinstance(want, FileNotFoundError)
    for maker in (aiopg_io.tempfile.TemporaryFile, aiopg_io.tempfile.NamedTemporaryFile):
        with pytest.raises(FileNotFoundError) as info:
            await maker(dir=missing)
        # the name is mkstemp's random candidate in ``missing``, as the stdlib's error has
        assert info.value.args == want.args and os.path.dirname(info.value.filename) == str(missing)


async def test_spooled_file_rolls_over_past_max_size(tmp_path: Path, driver: str) -> None:
    before = open_fds()
    async with aiopg_io.tempfile.SpooledTemporaryFile(10, dir=tmp_path) as f:
        await f.write(b"0123456789")
        assert not f.rolled and f.name is None
        with pytest.raises(OSError, match="rollover"):
            f.fileno()
        await f.seek(2)
        assert await f.read(3) == b"234"
        await f.seek(0, os.SEEK_END)
        await f.write(b"ab")
        assert f.rolled and isinstance(f.file, aiopg_io.AsyncFile)
        assert await f.tell() == 12
        await f.write(b"!")
        await f.seek(0)
        assert await f.read() == b"0123456789ab!"
        assert list(tmp_path.iterdir()) == []
    async with aiopg_io.tempfile.SpooledTemporaryFile(4, "w+", encoding="utf-8", dir=tmp_path) as t:
        await t.write("éé")
        assert not t.rolled
        await t.write("x")  # 5 bytes
        assert t.rolled
        await t.write("y")
        await t.seek(0)
        assert await t.read() == "ééxy"
    async with aiopg_io.tempfile.SpooledTemporaryFile(4, dir=tmp_path) as g:
        await g.truncate(5)
        assert g.rolled and os.fstat(g.fileno()).st_size == 5
    async with aiopg_io.tempfile.SpooledTemporaryFile(dir=tmp_path) as h:  # 0: never
        await h.write(b"z" * 100_000)
        assert not h.rolled
    assert open_fds() == before


async def test_spooled_file_has_the_text_attributes_of_the_stdlib(tmp_path: Path, driver: str) -> None:
    """newlines, encoding and errors, in memory and rolled over, as the stdlib's answers."""
    text = "LF\nCRLF\r\n"
    for max_size in (0, 4):  # never rolls over; rolls over at the write
        with tempfile.SpooledTemporaryFile(max_size, "w+", encoding="utf-8", dir=tmp_path) as py:
            py.write(text)
            py.seek(0)
            want_before = py.newlines
            py.read()
            want = py.newlines
        async with aiopg_io.tempfile.SpooledTemporaryFile(
            max_size, "w+", encoding="utf-8", dir=tmp_path, driver=driver
        ) as f:
            await f.write(text)
            assert f.rolled == bool(max_size)
            await f.seek(0)
            assert f.newlines == want_before is None
            await f.read()
            assert f.newlines == want == ("\n", "\r\n")
            assert (f.encoding, f.errors) == ("utf-8", "strict")
    async with aiopg_io.tempfile.SpooledTemporaryFile(dir=tmp_path, driver=driver) as b:
        with pytest.raises(AttributeError, match="newlines"):
            b.newlines  # noqa: B018 - a binary file has none, as the stdlib's BytesIO


async def test_temporary_directory_is_removed_with_its_tree(tmp_path: Path, anyio_backend: object) -> None:
    async with aiopg_io.tempfile.TemporaryDirectory(dir=tmp_path, prefix="d") as d:
        assert Path(d).is_dir() and Path(d).name.startswith("d")
        (Path(d) / "sub").mkdir()
        (Path(d) / "sub" / "f").write_bytes(b"x")
    assert not Path(d).exists()
    async with aiopg_io.tempfile.TemporaryDirectory(dir=tmp_path, delete=False) as kept:
        pass
    assert Path(kept).is_dir()
    with pytest.raises(FileNotFoundError):
        async with aiopg_io.tempfile.TemporaryDirectory(dir=tmp_path / "missing"):
            pass


def test_the_package_s_tempfile_shadows_nothing() -> None:
    """``aiopg_io.tempfile`` is reached by its full name only: the stdlib's module stays the
    one ``import tempfile`` gives, inside the package too, and a star-import binds neither."""
    import sys

    assert aiopg_io.tempfile is not tempfile and sys.modules["tempfile"] is tempfile
    assert aiopg_io.tempfile.tempfile is tempfile  # the module's own `import tempfile`
    assert aiopg_io.tempfile.os is os and aiopg_io.pathlib.os is os  # and aiopg_io.os beside them
    assert sys.modules["pathlib"].__name__ == "pathlib" and sys.modules["os"] is os
    names: dict[str, object] = {}
    exec("from aiopg_io import *", names)
    assert "tempfile" not in names and "os" not in names and "Path" in names


async def test_temporary_directory_awaited_is_the_directory_object(tmp_path: Path) -> None:
    """``await TemporaryDirectory()`` as aiofiles': the object, with ``name`` and an awaitable
    ``cleanup`` / ``close``; awaiting again makes no second directory."""
    made = aiopg_io.tempfile.TemporaryDirectory(dir=tmp_path, suffix=".t")
    d = await made
    assert d is made and d.name is not None and d.name.endswith(".t") and Path(d.name).is_dir()
    assert await made is d and os.listdir(tmp_path) == [Path(d.name).name]
    (Path(d.name) / "f").write_bytes(b"x")
    await d.cleanup()
    assert os.listdir(tmp_path) == []
    await d.close()  # once gone, nothing to do
    other = await aiopg_io.tempfile.TemporaryDirectory(dir=tmp_path)
    async with other as name:  # entering after the await: the same directory
        assert name == other.name and Path(name).is_dir()
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        await aiopg_io.tempfile.TemporaryDirectory(dir=tmp_path / "missing")
