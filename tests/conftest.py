"""The test matrix: every async test runs on asyncio, uvloop and trio x every driver here.

anyio's pytest plugin runs a test marked ``anyio`` once per ``anyio_backend`` param. The
``driver`` fixture adds the driver axis; a driver that cannot run on this machine is skipped
with its reason (never silently passed). Tests get the driver both as a value to pass as
``driver=`` and through ``AIOPG_IO_DRIVER``, so components that open files themselves (the
WAL, the buffer pool) use it too.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiopg_io.drivers import DRIVER_NAMES, unavailable_reason

BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


def _eager_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


if sys.version_info >= (3, 13):
    # Eager tasks (asyncio.eager_task_factory, 3.12+): a task runs at once, up to its first
    # suspension, when it is created (anyio's own suite runs this way too). A different
    # order of first steps: our end-of-tick batching and cancellation must hold under it.
    # Run on the newest Python only: on 3.12 too it cost CI about a tenth of its time, and
    # what it checks is our code's order of steps, not the interpreter's.
    BACKENDS.insert(1, pytest.param(("asyncio", {"loop_factory": _eager_loop}), id="asyncio+eager"))


#: For a test of trio's glue only: ``@ON_TRIO_ONLY`` runs it on trio alone (not collected,
#: rather than skipped, on the other loops).
ON_TRIO_ONLY = pytest.mark.parametrize("anyio_backend", [p for p in BACKENDS if p.id == "trio"])


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


#: The drivers of the whole matrix: every registered driver but the pure ``io_uring``, whose
#: place there is taken by ``io_uring_c`` (the same driver on the C ring: what ``auto`` picks,
#: so what users get).
MATRIX_DRIVERS = tuple(n for n in DRIVER_NAMES if n != "io_uring")

#: Where the pure ``io_uring`` driver joins the matrix too: the tests of what differs between
#: the two io_uring drivers, the ring and the driver logic (submission, completion, short
#: transfers, EAGAIN, cancellation, faults injected under the driver, what reaches the disk
#: before a crash). Paths under tests/, a directory ending in "/" (docs/testing.md, "The
#: compiled path in this project's suite", says why these).
PURE_RING_TESTS = (
    "drivers/",
    "test_differential.py",
    "test_cancel.py",
    "test_direct.py",
    "test_write_sync.py",
    "testing/test_file_faults.py",
    "testing/test_injector.py",
    "testing/test_sweep.py",
    "testing/test_powerloss.py",
    "wal/test_faults.py",
    "wal/test_truncate_crash.py",
    "buffers/test_checkpoint.py",
)

_TESTS = Path(__file__).parent


def _c_ring_reason() -> str | None:
    """Why ``io_uring_c`` cannot run here (its extension did not build or load, AIOPG_IO_PURE=1,
    no io_uring), or None. Where it cannot, its cases are skipped with this reason and the pure
    ``io_uring`` stands in for it through the whole matrix."""
    return unavailable_reason("io_uring_c")


def drivers_for(path: Path) -> tuple[str, ...]:
    """The drivers the ``driver`` fixture runs the tests of ``path`` on."""
    rel = path.relative_to(_TESTS).as_posix() if path.is_relative_to(_TESTS) else path.name
    pure = _c_ring_reason() is not None or any(
        rel.startswith(p) if p.endswith("/") else rel == p for p in PURE_RING_TESTS
    )
    return ("io_uring", *MATRIX_DRIVERS) if pure else MATRIX_DRIVERS


def _parametrized_directly(metafunc: pytest.Metafunc, name: str) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if name in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The driver axis, per test file (``drivers_for``); a test that parametrizes ``driver``
    itself keeps its own list."""
    if "driver" in metafunc.fixturenames and not _parametrized_directly(metafunc, "driver"):
        metafunc.parametrize("driver", drivers_for(metafunc.definition.path), indirect=True)


#: The per-test timeout (pyproject.toml: a hang fails instead of holding CI) for the stress
#: tests under ``-m slow``, which run for minutes by design.
SLOW_TIMEOUT_SECONDS = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_SECONDS))


@pytest.fixture
def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a driver that runs here (skipped with the reason for one that does not)."""
    name: str = request.param
    reason = unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"driver {name} cannot run here: {reason}")
    monkeypatch.setenv("AIOPG_IO_DRIVER", name)
    return name


@pytest.fixture
def direct_driver(driver: str) -> str:
    """A driver that also runs O_DIRECT here."""
    reason = unavailable_reason(driver, direct=True)
    if reason is not None:
        pytest.skip(f"driver {driver} cannot run direct I/O here: {reason}")
    return driver


def open_fds() -> list[str]:
    """This process's fd table, as names (``/proc/self/fd`` or ``/dev/fd``)."""
    for d in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(d):
            return sorted(os.listdir(d))
    pytest.skip("no fd table to inspect on this platform")


def fd_targets() -> dict[str, str]:
    out = {}
    for name in open_fds():
        try:
            out[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return out


def stdlib_error(fn: Callable[[], object]) -> BaseException:
    """What ``fn``, the stdlib's twin of a call under test, raises (it must raise)."""
    try:
        fn()
    except (OSError, ValueError, TypeError, OverflowError, LookupError) as exc:
        return exc
    raise AssertionError(f"{fn} did not fail")


async def raises_like(want: BaseException, call: Callable[[], Awaitable[object]]) -> None:
    """``call()`` raises what the stdlib raised: ``want``'s type exactly, and its message."""
    with pytest.raises(type(want)) as info:
        await call()
    assert type(info.value) is type(want)
    assert str(info.value) == str(want)


async def check_limiter_wait(limiter: Any, call: Callable[[], Awaitable[object]], waits: bool) -> None:
    """With ``limiter``'s one token held elsewhere, run ``call``: it waits for the token when
    ``waits`` (a thread of this process runs it), else it completes without it."""
    import anyio

    holder = object()
    await limiter.acquire_on_behalf_of(holder)
    done = anyio.Event()

    async def run() -> None:
        await call()
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        if waits:
            await anyio.wait_all_tasks_blocked()
            assert limiter.statistics().tasks_waiting == 1 and not done.is_set()
        else:
            await done.wait()  # never waited for the token
        limiter.release_on_behalf_of(holder)
    assert done.is_set() and limiter.borrowed_tokens == 0


@pytest.fixture
def contexts_made(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every IOContext made while the test runs, in order (its ``__init__`` counted)."""
    from aiopg_io import _context

    made: list[object] = []
    real_init = _context.IOContext.__init__

    def counting_init(self: _context.IOContext, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(_context.IOContext, "__init__", counting_init)
    return made


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A directory on a filesystem that accepts O_DIRECT (pytest's tmp_path, checked)."""
    probe = tmp_path / ".odirect-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | getattr(os, "O_DIRECT", 0))
    except OSError as exc:
        pytest.skip(f"{tmp_path} refuses O_DIRECT: {exc}")
    os.close(fd)
    probe.unlink()
    return tmp_path


@pytest.fixture(autouse=True)
def _no_context_left() -> Iterator[None]:
    """Every test must leave no IOContext (driver, ring, threads, fds) behind."""
    yield
    from aiopg_io._context import live_contexts

    left = live_contexts()
    assert not left, f"IOContexts left open after the test: {left}"


def in_child(child: Callable[[], str]) -> str:
    """Run ``child`` in a forked process and return the report it wrote on a pipe; the child
    never returns into pytest (or into a running event loop)."""
    rfd, wfd = os.pipe()
    threaded = threading.active_count() > 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.write(wfd, child().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        _, status = os.waitpid(pid, 0)
        report = os.read(rfd, 4096).decode()
    finally:
        os.close(rfd)
    assert os.waitstatus_to_exitcode(status) == 0, report
    # Python 3.12+ warns when a process with threads forks; aiopg_io's drivers (and anyio's
    # thread pool, which runs open(2)) own threads, so the warning is what users see
    # (docs/guide.md, "Fork"). Nothing else may be said.
    fork_warnings = [w for w in caught if "use of fork() may lead to deadlocks" in str(w.message)]
    assert len(caught) == len(fork_warnings), [str(w.message) for w in caught]
    if sys.version_info >= (3, 12) and threaded:
        assert [w.category for w in fork_warnings] == [DeprecationWarning]
    elif sys.version_info < (3, 12):
        assert not fork_warnings
    return report


#: The file the bad-input and direct-I/O tests start from (16 KiB), and must find unchanged.
CONTENT = bytes(range(256)) * 64


def rand(n: int, seed: int = 0) -> bytes:
    """``n`` random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(n)


def evict(path: Path) -> None:
    """Write ``path`` back and drop its pages from the page cache, so the next read of it is a
    miss (POSIX_FADV_DONTNEED may still leave a page cached on a loaded machine: a test that
    counts misses allows for it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    p = tmp_path / "keep.bin"
    p.write_bytes(CONTENT)
    return p


def _mount(fstype: str, options: str = "") -> Iterator[Path]:
    """A fresh ``fstype`` mount in a temporary directory, unmounted afterwards (needs root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip(f"mounting a {fstype} needs root and mount(8)")
    d = Path(tempfile.mkdtemp(prefix=f"aiopg-{fstype}-"))
    args = ["mount", "-t", fstype, *(["-o", options] if options else []), fstype, str(d)]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        d.rmdir()
        pytest.skip(f"cannot mount a {fstype} here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)
        d.rmdir()


@pytest.fixture
def ramfs() -> Iterator[Path]:
    """A ramfs mount: a filesystem that refuses O_DIRECT (tmpfs accepts it since Linux 6.6)."""
    yield from _mount("ramfs")


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A small tmpfs mount (256 KiB): a disk that fills up."""
    yield from _mount("tmpfs", "size=256k")
