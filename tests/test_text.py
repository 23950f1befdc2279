"""Text mode: AsyncTextFile against Python's own ``open()`` on the same bytes.

Every async test runs on asyncio, uvloop and trio x every driver here. What is compared:
the bytes written, the text read (read, readline, readlines, ``async for``), tell() cookies
as numbers and what seeking back to them reads, decoding errors, and the fd table.
"""

from __future__ import annotations

import io
import locale
import os
import random
from pathlib import Path

import anyio
import pytest

import aiopg_io
from aiopg_io._file import AsyncFile
from aiopg_io._text import AsyncTextFile
from tests.conftest import open_fds

pytestmark = pytest.mark.anyio

ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252", "ascii"]
NEWLINES = [None, "", "\n", "\r", "\r\n"]
SAMPLE = "first line\nsecond\r\nthird\rfourth\r\n\nlast without newline"
ACCENTED = "Grüße, café, naïve\r\nÀ bientôt\rfin\n"
WIDE = "日本語のテキスト\n€ and 😀\r\nend"


def _sample_for(encoding: str) -> str:
    text = SAMPLE
    for extra in (ACCENTED, WIDE):
        try:
            extra.encode(encoding)
        except UnicodeEncodeError:
            continue
        text += extra
    return text


def _python_read(path: Path, **kwargs: object) -> tuple[str, list[str], object]:
    with open(path, **kwargs) as f:  # type: ignore[call-overload]
        whole = f.read()
    with open(path, **kwargs) as f:  # type: ignore[call-overload]
        lines = f.readlines()
        newlines = f.newlines
    return whole, lines, newlines


# -- round trips -------------------------------------------------------------------------------------


async def test_write_bytes_equal_python(tmp_path: Path, driver: str) -> None:
    fds = open_fds()
    for encoding in ENCODINGS:
        text = _sample_for(encoding)
        for newline in NEWLINES:
            ours, theirs = tmp_path / "ours.txt", tmp_path / "theirs.txt"
            async with aiopg_io.open(ours, "w", encoding=encoding, newline=newline, driver=driver) as f:
                assert isinstance(f, AsyncTextFile)
                half = len(text) // 2
                assert await f.write(text[:half]) == half
                await f.writelines([text[half:], "\n"])
            with open(theirs, "w", encoding=encoding, newline=newline) as pf:
                pf.write(text[:half])
                pf.writelines([text[half:], "\n"])
            assert ours.read_bytes() == theirs.read_bytes(), (encoding, newline)
    assert open_fds() == fds


async def test_read_equals_python(tmp_path: Path, driver: str) -> None:
    fds = open_fds()
    path = tmp_path / "in.txt"
    for encoding in ENCODINGS:
        path.write_bytes(_sample_for(encoding).encode(encoding))
        for newline in NEWLINES:
            whole, lines, newlines = _python_read(path, encoding=encoding, newline=newline)
            async with aiopg_io.open(path, encoding=encoding, newline=newline, driver=driver) as f:
                assert await f.read() == whole, (encoding, newline)
                assert f.newlines == newlines
            async with aiopg_io.open(path, encoding=encoding, newline=newline, driver=driver) as f:
                assert await f.readlines() == lines, (encoding, newline)
            async with aiopg_io.open(path, encoding=encoding, newline=newline, driver=driver) as f:
                assert [line async for line in f] == lines, (encoding, newline)
            async with aiopg_io.open(path, encoding=encoding, newline=newline, driver=driver) as f:
                got = []
                while chunk := await f.read(3):
                    got.append(chunk)
                assert "".join(got) == whole
    assert open_fds() == fds


async def test_readline_size_and_readlines_hint_equal_python(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes((SAMPLE + ACCENTED + WIDE).encode("utf-8"))
    for newline in NEWLINES:
        for size in (0, 1, 2, 5, 13):
            with open(path, encoding="utf-8", newline=newline) as pf:
                expected = [pf.readline(size) for _ in range(40)]
            async with aiopg_io.open(path, encoding="utf-8", newline=newline, driver=driver) as f:
                assert [await f.readline(size) for _ in range(40)] == expected, (newline, size)
        for hint in (1, 10, 11, 30):
            with open(path, encoding="utf-8", newline=newline) as pf:
                expected_lines = pf.readlines(hint)
            async with aiopg_io.open(path, encoding="utf-8", newline=newline, driver=driver) as f:
                assert await f.readlines(hint) == expected_lines


async def test_decoding_errors_equal_python(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"plain\nbytes \xff\xfe here\n\xc3(\n")
    for encoding in ("ascii", "utf-8"):
        for errors in ("replace", "ignore", "surrogateescape", "backslashreplace"):
            with open(path, encoding=encoding, errors=errors) as pf:
                expected = pf.read()
            async with aiopg_io.open(path, encoding=encoding, errors=errors, driver=driver) as f:
                assert f.errors == errors
                assert await f.read() == expected
        with open(path, encoding=encoding) as pf, pytest.raises(UnicodeDecodeError) as py_exc:
            pf.read()
        async with aiopg_io.open(path, encoding=encoding, driver=driver) as f:
            assert f.errors == "strict"
            with pytest.raises(UnicodeDecodeError) as our_exc:
                await f.read()
        assert str(our_exc.value) == str(py_exc.value)
        # The whole chunk is decoded at once, so even the first (clean) line raises, as in Python.
        async with aiopg_io.open(path, encoding=encoding, driver=driver) as f:
            with pytest.raises(
                UnicodeDecodeError, match=f"'{encoding}' codec can't decode byte 0xff in position 12"
            ):
                await f.readline()


async def test_surrogateescape_round_trip_and_encode_errors(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "raw.txt"
    raw = bytes(range(256))
    path.write_bytes(raw)
    async with aiopg_io.open(
        path, encoding="utf-8", errors="surrogateescape", newline="", driver=driver
    ) as f:
        text = await f.read()
    out = tmp_path / "out.txt"
    async with aiopg_io.open(
        out, "w", encoding="utf-8", errors="surrogateescape", newline="", driver=driver
    ) as f:
        await f.write(text)
    assert out.read_bytes() == raw
    async with aiopg_io.open(out, "w", encoding="ascii", driver=driver) as f:
        with pytest.raises(UnicodeEncodeError, match="'ascii' codec can't encode character '\\\\xe9'"):
            await f.write("café")
        assert await f.write("cafe") == 4
    assert out.read_bytes() == b"cafe"


async def test_default_encoding_is_pythons(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "default.txt"
    path.write_text("x", encoding="ascii")
    with open(path) as pf:
        expected = pf.encoding
    async with aiopg_io.open(path, driver=driver) as f:
        assert f.encoding == expected
        assert await f.read() == "x"
    getencoding = getattr(locale, "getencoding", None)
    async with aiopg_io.open(path, encoding="locale", driver=driver) as f:
        assert f.encoding == (getencoding() if getencoding else locale.getpreferredencoding(False))


async def test_properties(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "props.txt"
    f = await aiopg_io.open(path, "w+", encoding="utf-8", newline="\r\n", buffering=1, driver=driver)
    try:
        assert f.name == str(path)
        assert f.mode == "w+"
        assert not f.closed
        assert f.encoding == "utf-8"
        assert f.errors == "strict"
        assert f.line_buffering
        assert f.newlines is None
        assert isinstance(f.buffer, AsyncFile)
        assert f.buffer.mode == "rb+"
        assert f.readable() and f.writable() and f.seekable()
        assert not f.isatty()
        assert f.fileno() == f.buffer.fileno()
        assert "AsyncTextFile" in repr(f) and repr(str(path)) in repr(f)
        # Line buffering: a write holding a newline reaches the file at once, one without waits.
        await f.write("one\ntwo")
        assert os.pread(f.fileno(), 100, 0) == b"one\r\ntwo"
        await f.write("three")
        assert os.pread(f.fileno(), 100, 0) == b"one\r\ntwo"
    finally:
        await f.aclose()
    assert f.closed
    await f.aclose()  # a second close is a no-op
    async with aiopg_io.open(path, "rt", driver=driver) as f:
        assert f.mode == "rt"
        assert not f.line_buffering
        assert not f.writable()
        assert await f.read() == "one\ntwothree"
        assert f.newlines == "\r\n"


# -- a large file ------------------------------------------------------------------------------------


def _large_text(lines: int, seed: int) -> str:
    rnd = random.Random(seed)
    words = ["alpha", "beta", "gamma", "δέλτα", "日本", "€uro", "😀", "x" * 90, ""]
    endings = ["\n", "\r\n", "\r"]
    return "".join(
        " ".join(rnd.choice(words) for _ in range(rnd.randint(0, 12))) + rnd.choice(endings)
        for _ in range(lines)
    )


async def test_large_file_line_iteration(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "large.txt"
    path.write_bytes(_large_text(40_000, 7).encode("utf-8"))
    assert path.stat().st_size > 2_000_000
    fds = open_fds()
    for newline in (None, "\r\n"):
        with open(path, encoding="utf-8", newline=newline) as pf:
            expected = pf.readlines()
        async with aiopg_io.open(path, encoding="utf-8", newline=newline, driver=driver) as f:
            got = [line async for line in f]
            assert await f.readline() == ""
        assert got == expected
    assert open_fds() == fds


# -- tell / seek -------------------------------------------------------------------------------------


async def test_tell_seek_at_every_line(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "lines.txt"
    text = _large_text(400, 3)
    for encoding, newline in (("utf-8", None), ("utf-8", ""), ("utf-16", None), ("utf-8-sig", "\r\n")):
        path.write_bytes(text.encode(encoding))
        with open(path, encoding=encoding, newline=newline) as pf:
            py_cookies, py_lines = [], []
            while True:
                py_cookies.append(pf.tell())
                line = pf.readline()
                if not line:
                    break
                py_lines.append(line)
        async with aiopg_io.open(path, encoding=encoding, newline=newline, driver=driver) as f:
            cookies, lines = [], []
            while True:
                cookies.append(await f.tell())
                line = await f.readline()
                if not line:
                    break
                lines.append(line)
            assert lines == py_lines
            assert cookies == py_cookies  # same packing as CPython, same numbers
            with open(path, encoding=encoding, newline=newline) as pf:
                for i in random.Random(1).sample(range(len(lines) - 1), 60):
                    assert await f.seek(cookies[i]) == cookies[i]
                    assert await f.readline() == lines[i]
                    # After a seek the chunks fall elsewhere: the cookie may be another
                    # spelling of the same place (CPython's is too), and leads to the next line.
                    after = await f.tell()
                    pf.seek(cookies[i])
                    pf.readline()
                    assert after == pf.tell()
                    await f.seek(after)
                    assert await f.readline() == lines[i + 1]


async def test_tell_seek_after_random_partial_reads(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "partial.txt"
    rnd = random.Random(11)
    text = _large_text(300, 5)
    for encoding, newline in (("utf-8", None), ("utf-16", ""), ("utf-8", "\r"), ("latin-1", None)):
        data = text.encode(encoding, "replace")
        path.write_bytes(data)
        sizes = [rnd.randint(1, 40) for _ in range(400)]
        with open(path, encoding=encoding, newline=newline) as pf:
            expected = []
            for n in sizes:
                expected.append((pf.read(n), pf.tell()))
        async with aiopg_io.open(path, encoding=encoding, newline=newline, driver=driver) as f:
            got = []
            for n in sizes:
                got.append((await f.read(n), await f.tell()))
            assert got == expected
            # Seeking back to any cookie and reading on gives what followed it.
            whole = "".join(chunk for chunk, _ in got)
            consumed = 0
            offsets = []
            for chunk, cookie in got:
                consumed += len(chunk)
                offsets.append((cookie, consumed))
            for cookie, at in rnd.sample(offsets, 50):
                await f.seek(cookie)
                assert await f.read(25) == whole[at : at + 25]


async def test_seek_whence_rules(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "seek.txt"
    path.write_text("abc\ndef\n", encoding="utf-8")
    async with aiopg_io.open(path, "r+", encoding="utf-8", newline="", driver=driver) as f:
        assert await f.read(2) == "ab"
        here = await f.tell()
        assert await f.seek(0, os.SEEK_CUR) == here
        assert await f.read(2) == "c\n"
        assert await f.seek(0, os.SEEK_END) == 8
        assert await f.read() == ""
        with pytest.raises(io.UnsupportedOperation, match="can't do nonzero cur-relative seeks"):
            await f.seek(1, os.SEEK_CUR)
        with pytest.raises(io.UnsupportedOperation, match="can't do nonzero end-relative seeks"):
            await f.seek(-1, os.SEEK_END)
        with pytest.raises(ValueError, match=r"invalid whence \(7, should be 0, 1 or 2\)"):
            await f.seek(0, 7)
        with pytest.raises(ValueError, match="negative seek position -1"):
            await f.seek(-1)
        assert await f.seek(0) == 0
        assert await f.readline() == "abc\n"
    assert path.read_text(encoding="utf-8") == "abc\ndef\n"


# -- append and read/write ---------------------------------------------------------------------------


async def test_append_mode_equals_python(tmp_path: Path, driver: str) -> None:
    for encoding in ("utf-8", "utf-16", "utf-8-sig"):
        ours, theirs = tmp_path / "ours.txt", tmp_path / "theirs.txt"
        for p in (ours, theirs):
            p.write_bytes("start\n".encode(encoding))
        async with aiopg_io.open(ours, "a", encoding=encoding, driver=driver) as f:
            await f.write("more\n")  # no second BOM in the middle of the file
            assert await f.tell() == ours.stat().st_size
        async with aiopg_io.open(ours, "a+", encoding=encoding, driver=driver) as f:
            await f.write("and more")
            await f.seek(0)
            assert await f.read() == "start\nmore\nand more"
        with open(theirs, "a", encoding=encoding) as pf:
            pf.write("more\n")
        with open(theirs, "a+", encoding=encoding) as pf:
            pf.write("and more")
        assert ours.read_bytes() == theirs.read_bytes(), encoding
        # A new file in append mode starts with the BOM, as Python's does.
        for p in (ours, theirs):
            p.unlink()
        async with aiopg_io.open(ours, "a", encoding=encoding, driver=driver) as f:
            await f.write("x")
        with open(theirs, "a", encoding=encoding) as pf:
            pf.write("x")
        assert ours.read_bytes() == theirs.read_bytes()


async def test_read_write_mix_equals_python(tmp_path: Path, driver: str) -> None:
    initial = "héllo\r\nwörld\nthird line\r\n"
    for encoding in ("utf-8", "utf-16"):
        for newline in (None, ""):
            ours, theirs = tmp_path / "ours.txt", tmp_path / "theirs.txt"
            for p in (ours, theirs):
                p.write_bytes(initial.encode(encoding))
            async with aiopg_io.open(ours, "r+", encoding=encoding, newline=newline, driver=driver) as f:
                first = await f.readline()
                cookie = await f.tell()
                await f.seek(cookie)
                await f.write("WÖRLD")
                await f.flush()
                await f.seek(0)
                whole = await f.read()
                await f.seek(0, os.SEEK_END)
                await f.write("tail\n")
                await f.seek(cookie)
                again = await f.read(5)
                end = await f.truncate()
            with open(theirs, "r+", encoding=encoding, newline=newline) as pf:
                expected: list[object] = [pf.readline()]
                pf.seek(pf.tell())
                pf.write("WÖRLD")
                pf.flush()
                pf.seek(0)
                expected.append(pf.read())
                pf.seek(0, os.SEEK_END)
                pf.write("tail\n")
                pf.seek(cookie)
                expected.append(pf.read(5))
                expected.append(pf.truncate())
            assert [first, whole, again, end] == expected
            assert ours.read_bytes() == theirs.read_bytes()


async def test_concurrent_readers_share_the_cursor(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "shared.txt"
    lines = [f"line {i} ✓\n" for i in range(2000)]
    path.write_text("".join(lines), encoding="utf-8")
    seen: list[str] = []
    async with aiopg_io.open(path, encoding="utf-8", driver=driver) as f:

        async def reader() -> None:
            while line := await f.readline():
                seen.append(line)

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(reader)
    assert sorted(seen) == sorted(lines)


# -- bad input ---------------------------------------------------------------------------------------


async def test_wrong_types_and_modes(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "w.txt"
    async with aiopg_io.open(path, "w", encoding="utf-8", driver=driver) as f:
        with pytest.raises(TypeError, match="write\\(\\) argument must be str, not bytes"):
            await f.write(b"bytes")
        with pytest.raises(io.UnsupportedOperation, match="not readable"):
            await f.read()
        with pytest.raises(io.UnsupportedOperation, match="not readable"):
            await f.readline()
        with pytest.raises(TypeError, match="argument should be integer or None, not 'str'"):
            await f.read("1")
        await f.write("kept")
    async with aiopg_io.open(path, "r", encoding="utf-8", driver=driver) as f:
        with pytest.raises(io.UnsupportedOperation, match="not writable"):
            await f.write("x")
        with pytest.raises(io.UnsupportedOperation, match="not open for writing"):
            await f.truncate(0)
        assert await f.read() == "kept"
    assert path.read_bytes() == b"kept"


async def test_closed_file_raises_closed_error(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "closed.txt"
    f = await aiopg_io.open(path, "w+", encoding="utf-8", driver=driver)
    await f.write("data")
    await f.close()
    assert f.closed
    name = str(path)
    for call in (
        lambda: f.read(),
        lambda: f.readline(),
        lambda: f.readlines(),
        lambda: f.write("x"),
        lambda: f.writelines(["x"]),
        lambda: f.tell(),
        lambda: f.seek(0),
        lambda: f.flush(),
        lambda: f.truncate(0),
    ):
        with pytest.raises(aiopg_io.ClosedError, match="closed file") as exc:
            await call()
        assert name in str(exc.value)
        assert isinstance(exc.value, ValueError)
    for sync_call in (f.fileno, f.readable, f.writable, f.seekable, f.isatty):
        with pytest.raises(aiopg_io.ClosedError, match="closed file"):
            sync_call()
    assert path.read_bytes() == b"data"


async def test_open_argument_errors_leave_no_fd(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "args.txt"
    path.write_text("intact", encoding="utf-8")
    fds = open_fds()
    with pytest.raises(LookupError, match="unknown encoding: no-such-codec"):
        await aiopg_io.open(path, encoding="no-such-codec", driver=driver)
    with pytest.raises(LookupError, match="'hex' is not a text encoding"):
        await aiopg_io.open(path, encoding="hex", driver=driver)
    with pytest.raises(ValueError, match=r"^illegal newline value: x$"):  # as open() says it
        await aiopg_io.open(path, newline="x", driver=driver)
    with pytest.raises(TypeError, match="open\\(\\) argument 'newline' must be str or None, not int"):
        await aiopg_io.open(path, newline=5, driver=driver)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="open\\(\\) argument 'encoding' must be str or None, not int"):
        await aiopg_io.open(path, encoding=5, driver=driver)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="can't have unbuffered text I/O"):
        await aiopg_io.open(path, buffering=0, driver=driver)
    with pytest.raises(ValueError, match="direct I/O needs binary mode"):
        await aiopg_io.open(path, direct=True, driver=driver)
    assert open_fds() == fds
    assert path.read_text(encoding="utf-8") == "intact"


async def test_mode_w_with_bad_encoding_truncates_like_python(tmp_path: Path, driver: str) -> None:
    # io.open opens (and truncates) the file before the encoding is looked up.
    ours, theirs = tmp_path / "ours.txt", tmp_path / "theirs.txt"
    for p in (ours, theirs):
        p.write_text("old", encoding="utf-8")
    with pytest.raises(LookupError), open(theirs, "w", encoding="no-such-codec"):
        pass
    fds = open_fds()
    with pytest.raises(LookupError, match="unknown encoding"):
        await aiopg_io.open(ours, "w", encoding="no-such-codec", driver=driver)
    assert open_fds() == fds
    assert ours.read_bytes() == theirs.read_bytes() == b""


async def test_detach_gives_the_binary_file_as_python(tmp_path: Path, driver: str) -> None:
    """io.TextIOWrapper.detach: the binary file comes back, at the position the text
    layer's reads reached (its decoded read-ahead is dropped), with text writes in it."""
    path = tmp_path / "detach.txt"
    text = "héllo\nworld\n" * 2000
    path.write_text(text, encoding="utf-8")
    py = open(path, encoding="utf-8")  # noqa: SIM115 - the reference (a with would raise at exit)
    py.readline()
    py_buffer = py.detach()
    py_pos = py_buffer.tell()
    py_buffer.close()
    before = open_fds()
    f = await aiopg_io.open(path, "r+", encoding="utf-8", driver=driver)
    assert await f.readline() == "héllo\n"
    binary = f.detach()
    assert isinstance(binary, AsyncFile) and f.buffer is None
    assert await binary.tell() == py_pos  # 8192: one chunk, as CPython
    for sync_call in (f.fileno, f.readable, f.writable, f.detach, lambda: f.closed, lambda: f.name):
        with pytest.raises(ValueError, match=r"^underlying buffer has been detached$"):
            sync_call()
    for call in (f.read(), f.readline(), f.write("x"), f.tell(), f.seek(0), f.flush(), f.aclose()):
        with pytest.raises(ValueError, match=r"^underlying buffer has been detached$"):
            await call
    assert f.encoding == "utf-8" and f.mode == "r+"  # as io: what needs no buffer still answers
    assert "detached" in repr(f)
    await binary.seek(0)
    assert (await binary.read(6)).decode() == "héllo"
    await binary.aclose()
    assert open_fds() == before

    detached: list[AsyncFile] = []
    # As with Python's files, leaving the block closes the text file, which then raises.
    with pytest.raises(ValueError, match=r"^underlying buffer has been detached$"):
        async with aiopg_io.open(path, "w", encoding="utf-8", driver=driver) as w:
            await w.write("kept")  # in the binary file's buffer: detach does no I/O
            detached.append(w.detach())
    await detached[0].aclose()
    assert path.read_text(encoding="utf-8") == "kept"


async def test_detach_closed_file(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "c.txt"
    f = await aiopg_io.open(path, "w", encoding="utf-8", driver=driver)
    await f.aclose()
    with pytest.raises(aiopg_io.ClosedError, match="I/O operation on closed file"):
        f.detach()
    b = await aiopg_io.open(path, "rb", driver=driver)
    await b.aclose()
    for call in (b.peek(1), b.read1(1)):
        with pytest.raises(aiopg_io.ClosedError, match="I/O operation on closed file"):
            await call
    with pytest.raises(aiopg_io.ClosedError, match="I/O operation on closed file"):
        b.detach()
