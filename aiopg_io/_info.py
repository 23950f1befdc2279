"""What runs on this machine: the matrix ``python -m aiopg_io info`` prints.

The shape follows PostgreSQL's AIO CI table: the platform, then each I/O method x
{buffered, direct} with "available" or the reason it is not.
"""

from __future__ import annotations

import errno
import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import metadata

from . import __version__
from ._direct import Alignment, dio_alignment, direct_open_flags
from ._glue import trio_park_status
from .drivers import DRIVER_NAMES, auto_order, driver_class, unavailable_reason

__all__ = ["Matrix", "machine_matrix", "render"]


@dataclass
class Matrix:
    aiopg_io: str
    os: str
    kernel: str
    machine: str
    python: str
    liburing: str | None
    directory: str
    alignment: dict[str, int | str] | None
    direct_refused: str | None
    drivers: dict[str, dict[str, str]] = field(default_factory=dict)
    untested: dict[str, str] = field(default_factory=dict)
    auto: str | None = None
    #: Which path runs the io_uring ring: the C extension or pure Python, and why.
    compiled: str = ""
    #: How a task waits for an op on trio: parked from C, or in Python and why.
    trio_park: str = ""
    #: Which path lays a WAL record into the WAL buffers (``wal/_record.c`` or its twin).
    wal_records: str = ""
    #: io_uring driver -> whether ``sqpoll=1`` runs here, and its default.
    sqpoll: dict[str, str] = field(default_factory=dict)
    #: driver -> where its op kinds run: in the driver, or in the fallback threads.
    ops: dict[str, str] = field(default_factory=dict)
    #: io_uring driver -> the IORING_SETUP_* flags its ring runs with, as made by default.
    setup: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _direct_probe(directory: str) -> str | None:
    """None when ``directory``'s filesystem accepts O_DIRECT, else why not."""
    flags = direct_open_flags()
    if not flags:
        return None if sys.platform == "darwin" else "this platform has no O_DIRECT"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".aiopg_io-probe-", dir=directory)
    except OSError as exc:
        return f"cannot create a file in {directory}: {exc.strerror}"
    try:
        os.close(fd)
        try:
            fd = os.open(tmp, os.O_RDWR | flags)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return f"the filesystem of {directory} refuses O_DIRECT"
            return f"O_DIRECT open failed: {exc.strerror}"
        os.close(fd)
        return None
    finally:
        os.unlink(tmp)


def _compiled_path(c_row: str | None) -> str:
    """One line: which path runs the io_uring ring here, the C ring (driver ``io_uring_c``,
    what ``auto`` picks where it runs) or pure Python, and why: the reason the extension did
    not load, if it did not, or why the loaded ring cannot run (``c_row``, its matrix row)."""
    if not sys.platform.startswith("linux"):
        return "pure Python (the C ring is built on Linux only)"
    try:
        from .drivers.io_uring_c import compiled_status
    except Exception as exc:  # reported, not raised
        return f"pure Python (the io_uring_c driver cannot be imported: {exc!r})"
    loaded, why = compiled_status()
    if not loaded:
        return f"pure Python ({why})"
    from .drivers._compiled import load

    wakers = load("aiopg_io._glue._wake")[1]
    woken = "waiters woken from C" if wakers is None else f"waiters woken in Python: {wakers}"
    runs = "auto picks it" if c_row == "available" else f"but it cannot run here: {c_row}"
    return f"C ring for driver io_uring_c ({why}; {woken}); {runs}"


def _record_path() -> str:
    """Which path lays a WAL record into the WAL buffers: ``wal/_record.c`` or its twin."""
    from .drivers._compiled import load

    why = load("aiopg_io.wal._record")[1]
    return "records laid in C" if why is None else f"records laid in Python ({why})"


def _auto_line(m: Matrix) -> str:
    """``auto -> NAME``, and for an io_uring driver which ring it runs on, and why."""
    if m.auto is None:
        return "auto -> nothing runs here"
    if m.auto == "io_uring_c":
        return "auto -> io_uring_c (the C ring)"
    if m.auto == "io_uring":
        why = m.drivers.get("io_uring_c", {}).get("buffered", "not registered")
        return f"auto -> io_uring (the pure-Python ring: io_uring_c cannot run here: {why})"
    return f"auto -> {m.auto}"


def _sqpoll_rows(drivers: dict[str, dict[str, str]]) -> dict[str, str]:
    """For each io_uring driver that runs here: can ``sqpoll=1`` run, and is it on."""
    rows: dict[str, str] = {}
    for name in ("io_uring", "io_uring_c"):
        if drivers.get(name, {}).get("buffered") != "available":
            continue
        try:
            from .drivers.io_uring import DEFAULT_SQPOLL

            reason = driver_class(name).sqpoll_unavailable_reason()  # type: ignore[attr-defined]
        except Exception as exc:  # reported, not raised
            rows[name] = f"probe failed: {exc!r}"
            continue
        on, other = ("on", 0) if DEFAULT_SQPOLL else ("off", 1)
        change = f"{name}:sqpoll={other} to change"
        rows[name] = f"no: {reason}" if reason else f"available, {on} by default ({change})"
    return rows


def _made_driver(name: str) -> tuple[str, str | None]:
    """What one driver ``name`` made and closed here (as a file would make it) says: which
    op kinds it runs itself and which go to the fallback threads (an io_uring kernel
    without the opcode, POSIX AIO without path ops), and for an io_uring driver the
    ``IORING_SETUP_*`` flags its ring runs with (None for another driver)."""
    from .drivers import DriverSpec
    from .drivers._fallback import ThreadFallback
    from .drivers.base import ALL_KINDS

    try:
        d = DriverSpec(name).create()
    except Exception as exc:  # reported, not raised
        return f"cannot tell: {exc}", None
    try:
        inner = d.inner if isinstance(d, ThreadFallback) else d
        native = inner.capabilities.kinds
        inline = ["ftruncate"] if getattr(inner, "ftruncate_inline", False) else []
        flags: tuple[str, ...] | None = getattr(inner, "setup_flags", None)
    finally:
        d.close()
    threads = sorted(k.value for k in ALL_KINDS - native)
    where = (
        "every kind in the driver"
        if not threads
        else f"in threads: {', '.join(threads)}; the rest in the driver"
    )
    if inline:
        where += f" ({', '.join(inline)} inline: the kernel lacks the opcode)"
    setup = None if flags is None else (" | ".join(flags) or "none")
    return where, setup


def machine_matrix(directory: str = ".") -> Matrix:
    directory = os.path.abspath(directory)
    uname = platform.uname()
    try:
        liburing: str | None = metadata.version("liburing")
    except metadata.PackageNotFoundError:
        liburing = None
    refused = _direct_probe(directory)
    alignment: Alignment | None = None
    if refused is None:
        try:
            alignment = dio_alignment(directory)
        except OSError as exc:
            refused = str(exc)
    m = Matrix(
        aiopg_io=__version__,
        os=uname.system,
        kernel=uname.release,
        machine=uname.machine,
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        liburing=liburing,
        directory=directory,
        alignment=None
        if alignment is None
        else {"memory": alignment.memory, "offset": alignment.offset, "source": alignment.source},
        direct_refused=refused,
    )
    for name in DRIVER_NAMES:
        row = {}
        for mode, direct in (("buffered", False), ("direct", True)):
            try:
                reason = unavailable_reason(name, direct=direct)
            except Exception as exc:  # a broken probe is reported, not raised
                reason = f"probe failed: {exc!r}"
            if reason is None and direct and refused is not None:
                reason = refused
            row[mode] = "available" if reason is None else reason
        m.drivers[name] = row
        if row["buffered"] == "available":
            try:
                tested = getattr(sys.modules[driver_class(name).__module__], "tested_here", None)
            except Exception:
                tested = None
            if tested is not None and not tested():
                m.untested[name] = "not tested on this machine"
    m.compiled = _compiled_path(m.drivers.get("io_uring_c", {}).get("buffered"))
    m.trio_park = trio_park_status()
    m.wal_records = _record_path()
    m.sqpoll = _sqpoll_rows(m.drivers)
    for name, row in m.drivers.items():
        if row["buffered"] == "available":
            m.ops[name], setup = _made_driver(name)
            if setup is not None:
                m.setup[name] = setup
    for name in auto_order():
        if m.drivers.get(name, {}).get("buffered") == "available":
            m.auto = name
            break
    return m


def render(m: Matrix) -> str:
    lines = [
        f"aiopg_io {m.aiopg_io} — I/O methods on this machine",
        "",
        f"  OS        {m.os} {m.kernel} ({m.machine})",
        f"  Python    {m.python}",
        f"  liburing  {m.liburing or 'not installed'}",
        f"  compiled  {m.compiled}",
        f"  trio      {m.trio_park}",
        f"  wal       {m.wal_records}",
        f"  directory {m.directory}",
    ]
    if m.alignment is not None:
        a = m.alignment
        lines.append(f"  direct    alignment: memory {a['memory']}, offset {a['offset']} ({a['source']})")
    else:
        lines.append(f"  direct    not here: {m.direct_refused}")
    lines.append("")
    w = max(len(n) for n in m.drivers) + 2
    lines.append(f"  {'driver'.ljust(w)}{'buffered'.ljust(12)}direct")
    for name, row in m.drivers.items():
        b, d = row["buffered"], row["direct"]
        note = m.untested.get(name)
        tail = f"   ({note})" if note else ""
        if b == "available" and d == "available":
            lines.append(f"  {name.ljust(w)}{'yes'.ljust(12)}yes{tail}")
        elif b == "available":
            lines.append(f"  {name.ljust(w)}{'yes'.ljust(12)}no: {d}{tail}")
        else:
            lines.append(f"  {name.ljust(w)}no: {b}")
    if m.sqpoll or m.ops:
        lines.append("")
    for name, sq in m.sqpoll.items():
        lines.append(f"  sqpoll    {name}: {sq}")
    for name, flags in m.setup.items():
        lines.append(f"  setup     {name}: {flags}")
    for name, where in m.ops.items():
        lines.append(f"  ops       {name}: {where}")
    lines.append("")
    lines.append(f"  {_auto_line(m)}")
    return "\n".join(lines)
