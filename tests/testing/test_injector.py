"""The fault injector at the driver level: every action, as the caller sees it, on every
driver (the ``driver`` fixture), and the log it keeps."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiopg_io.drivers import Op, OpKind
from aiopg_io.testing import Fault, FaultInjector, FaultyDriver, Injection

from ._util import fds, read, run, sync, write


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "rel.dat"
    path.write_bytes(b"0123456789" * 10)
    fd = os.open(path, os.O_RDWR)
    yield path, fd
    os.close(fd)


def make(driver: str, *faults: Fault, seed: int = 0) -> tuple[FaultInjector, FaultyDriver]:
    inj = FaultInjector(*faults, driver=driver, seed=seed)
    return inj, inj.create()


ERRNOS = [
    (errno.EIO, OSError, "Input/output error"),
    (errno.ENOSPC, OSError, "No space left on device"),
    (errno.EAGAIN, BlockingIOError, "Resource temporarily unavailable"),
    (errno.EINTR, InterruptedError, "Interrupted system call"),
    (errno.EROFS, OSError, "Read-only file system"),
]


@pytest.mark.parametrize(("err", "exc_type", "text"), ERRNOS, ids=[errno.errorcode[e[0]] for e in ERRNOS])
def test_errno_before_the_write_ran(
    driver: str, target: tuple[Path, int], err: int, exc_type: type[OSError], text: str
) -> None:
    path, fd = target
    inj, d = make(driver, Fault(kind="write", errno=err))
    try:
        (op,) = run(d, [write(fd, b"XXXX", 0, str(path))])
    finally:
        d.close()
    assert type(op.error) is exc_type
    assert op.error.errno == err and op.error.filename == str(path)
    assert op.error.strerror == f"{text} (injected by aiopg_io.testing into op #1)"
    with pytest.raises(exc_type, match=rf"\[Errno {err}\] {text} \(injected"):
        raise op.error
    assert op.result is None and op.transferred == 0
    assert path.read_bytes()[:4] == b"0123"  # nothing happened
    assert inj.log == [
        Injection(
            op=1,
            kind=OpKind.WRITE,
            path=str(path),
            offset=0,
            nbytes=4,
            fault=0,
            action="errno",
            errno=err,
            short=None,
            delay=0.0,
            when="before",
        )
    ]


def test_errno_after_the_write_ran(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    inj, d = make(driver, Fault(kind="write", errno=errno.EIO, when="after"))
    try:
        (op,) = run(d, [write(fd, b"XXXX", 0, str(path))])
    finally:
        d.close()
    assert isinstance(op.error, OSError) and op.error.errno == errno.EIO
    assert op.transferred == 0
    assert path.read_bytes()[:4] == b"XXXX"  # it happened, the caller was told it failed
    assert [(e.action, e.when) for e in inj.log] == [("errno", "after")]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("err", [errno.EAGAIN, errno.EINTR])
def test_transient_errors_are_retried_not_reported(
    driver: str, target: tuple[Path, int], when: str, err: int
) -> None:
    path, fd = target
    inj, d = make(driver, Fault(kind="reads", errno=err, transient=True, when=when))  # type: ignore[arg-type]
    try:
        (op,) = run(d, [read(fd, 10, 10, str(path))])
    finally:
        d.close()
    assert op.error is None and op.result == 10 and bytes(op.buffers[0]) == b"0123456789"
    assert op.retries == 1
    assert [(e.action, e.errno) for e in inj.log] == [("retry", err)]
    assert d.statistics().retries == 1


@pytest.mark.parametrize("when", ["before", "after"])
def test_short_read_looks_like_end_of_file(driver: str, target: tuple[Path, int], when: str) -> None:
    path, fd = target
    inj, d = make(driver, Fault(kind="read", short=3, when=when))  # type: ignore[arg-type]
    try:
        op, op2 = run(d, [read(fd, 10, 20, str(path)), read(fd, 10, 20, str(path))])
    finally:
        d.close()
    if op.result == 10:  # the completion order of one batch is the driver's business
        op, op2 = op2, op
    assert op.error is None and op.result == 3 and bytes(op.buffers[0][:3]) == b"012"
    assert op2.result == 10
    assert [(e.action, e.short) for e in inj.log] == [("short", 3)]


def test_short_write_before_writes_only_the_short_count(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    inj, d = make(driver, Fault(kind="writes", short=2))
    try:
        (op,) = run(d, [Op(OpKind.WRITEV, fd, 0, (memoryview(b"AB"), memoryview(b"CD")), path=str(path))])
    finally:
        d.close()
    assert isinstance(op.error, OSError) and op.error.errno == errno.ENOSPC
    assert "No space left on device (injected" in str(op.error)
    assert op.transferred == 2
    assert path.read_bytes()[:4] == b"AB23"
    assert inj.log[0].errno == errno.ENOSPC and inj.log[0].kind is OpKind.WRITEV


def test_short_write_after_wrote_everything(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    _, d = make(driver, Fault(kind="write", short=1, errno=errno.EDQUOT, when="after"))
    try:
        (op,) = run(d, [write(fd, b"ABCD", 0, str(path))])
    finally:
        d.close()
    assert isinstance(op.error, OSError) and op.error.errno == errno.EDQUOT and op.transferred == 1
    assert path.read_bytes()[:4] == b"ABCD"


@pytest.mark.parametrize("kind", [OpKind.FSYNC, OpKind.FDATASYNC])
def test_failing_syncs(driver: str, target: tuple[Path, int], kind: OpKind) -> None:
    path, fd = target
    inj, d = make(driver, Fault(kind="syncs", errno=errno.EIO))
    try:
        (op,) = run(d, [sync(fd, str(path), kind)])
        (op2,) = run(d, [sync(fd, str(path), kind)])
    finally:
        d.close()
    assert isinstance(op.error, OSError) and op.error.errno == errno.EIO
    assert op2.error is None  # times=1: only the first
    assert [(e.kind, e.op) for e in inj.log] == [(kind, 1)]


def test_delay_holds_a_completion(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    inj, d = make(driver, Fault(kind="read", path="rel.dat", nth=1, delay=0.3))
    try:
        slow, fast = read(fd, 4, 0, str(path)), read(fd, 4, 4, str(path))
        got = run(d, [slow, fast])
    finally:
        d.close()
    assert got == [fast, slow]
    assert slow.error is None and bytes(slow.buffers[0]) == b"0123"
    assert [(e.action, e.delay) for e in inj.log] == [("delay", 0.3)]
    assert str(inj.log[0]).endswith("@0+4: delayed 0.3s (before, fault 0)")


def test_delay_after_an_error(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    _, d = make(driver, Fault(kind="write", delay=0.2, errno=errno.EIO, when="after"))
    try:
        slow, fast = write(fd, b"S", 0, str(path)), read(fd, 1, 0, str(path))
        got = run(d, [slow, fast])
    finally:
        d.close()
    assert got[-1] is slow and isinstance(slow.error, OSError)
    assert path.read_bytes()[:1] == b"S"


def test_cancel_a_held_op_means_it_never_ran(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    _, d = make(driver, Fault(kind="write", delay=0.2))
    try:
        op = write(fd, b"ZZ", 0, str(path))
        d.submit([op])
        d.cancel(op)
        (got,) = run_pending(d)
    finally:
        d.close()
    assert got is op and isinstance(op.error, OSError) and op.error.errno == errno.ECANCELED
    assert path.read_bytes()[:2] == b"01"


def run_pending(d: FaultyDriver) -> list[Op]:
    import select

    out: list[Op] = []
    while not out:
        assert select.select([d.fileno()], [], [], 5)[0]
        out = d.reap()
    return out


def test_close_releases_held_ops(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    _, d = make(driver, Fault(kind="write", delay=30))
    op = write(fd, b"ZZ", 0, str(path))
    d.submit([op])
    out = d.close()
    assert out == [op] and isinstance(op.error, OSError) and op.error.errno == errno.ECANCELED
    assert d.close() == []
    with pytest.raises(RuntimeError, match=r"driver faulty\(.*\) is closed"):
        d.submit([write(fd, b"Z", 0)])


def test_nth_times_and_every_op_from_n(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    for fault, failed in [
        (Fault(kind="write", nth=3), [3]),
        (Fault(kind="write", nth=3, times=2), [3, 4]),
        (Fault(kind="write", nth=3, times=None), [3, 4, 5, 6]),
    ]:
        inj, d = make(driver, fault)
        try:
            ops = [run(d, [write(fd, b"w", i, str(path))])[0] for i in range(6)]
        finally:
            d.close()
        assert [i + 1 for i, op in enumerate(ops) if op.error is not None] == failed
        assert [e.op for e in inj.log] == failed


def test_ops_are_numbered_across_kinds_and_rules_count_their_own_matches(
    driver: str, target: tuple[Path, int]
) -> None:
    path, fd = target
    inj, d = make(driver, Fault(kind="fdatasync", nth=2), Fault(kind="read", nth=2, short=0))
    try:
        for _ in range(3):
            run(d, [write(fd, b"w", 0, str(path))])
            run(d, [read(fd, 1, 0, str(path))])
            run(d, [sync(fd, str(path))])
    finally:
        d.close()
    assert [(e.op, e.kind.value, e.fault) for e in inj.log] == [(5, "read", 1), (6, "fdatasync", 0)]
    assert inj.ops == 9


def test_path_matching(driver: str, tmp_path: Path) -> None:
    (tmp_path / "wal").mkdir()
    paths = [tmp_path / "wal" / "000001", tmp_path / "base.dat", tmp_path / "wal" / "x.tmp"]
    for p in paths:
        p.write_bytes(b"....")
    fdmap = {p: os.open(p, os.O_RDWR) for p in paths}
    cases = [
        ("base.dat", [paths[1]]),
        ("*.tmp", [paths[2]]),
        (str(tmp_path / "wal" / "*"), [paths[0], paths[2]]),
        (tmp_path / "base.dat", [paths[1]]),
        (lambda p: p is not None and p.endswith("1"), [paths[0]]),
        (None, paths),
    ]
    try:
        for spec, hit in cases:
            _, d = make(driver, Fault(path=spec, times=None))  # type: ignore[arg-type]
            try:
                ops = {p: run(d, [write(fd, b"w", 0, str(p))])[0] for p, fd in fdmap.items()}
                (op_nameless,) = run(d, [write(fdmap[paths[1]], b"w", 0, None)])
            finally:
                d.close()
            assert [p for p, op in ops.items() if op.error is not None] == hit, spec
            assert (op_nameless.error is not None) == (spec is None)
    finally:
        for fd in fdmap.values():
            os.close(fd)


def test_kind_groups_and_names(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    _, d = make(driver, Fault(kind=("writev", OpKind.FTRUNCATE), times=None))
    try:
        a = run(d, [write(fd, b"a", 0, str(path))])[0]
        b = run(d, [Op(OpKind.WRITEV, fd, 0, (memoryview(b"b"),), path=str(path))])[0]
        c = run(d, [Op(OpKind.FTRUNCATE, fd, length=100, path=str(path))])[0]
    finally:
        d.close()
    assert (a.error, b.error is not None, c.error is not None) == (None, True, True)
    assert Fault(kind="syncs").kinds == {OpKind.FSYNC, OpKind.FDATASYNC}
    assert Fault(kind="transfers", short=1).kinds == Fault(kind=None, short=1).kinds


def test_probability_is_deterministic_for_a_seed(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target

    def hits(seed: int, p: float) -> list[int]:
        inj, d = make(driver, Fault(kind="read", probability=p, times=None), seed=seed)
        try:
            for _ in range(40):
                run(d, [read(fd, 1, 0, str(path))])
        finally:
            d.close()
        return [e.op for e in inj.log]

    a = hits(7, 0.3)
    assert a == hits(7, 0.3)
    assert a != hits(8, 0.3)
    assert 3 <= len(a) <= 25
    assert hits(7, 0.0) == []
    assert len(hits(7, 1.0)) == 40


def test_reset_replays_the_same_faults(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    inj = FaultInjector(Fault(kind="read", probability=0.5, times=None), driver=driver, seed=3)
    logs = []
    for _ in range(2):
        d = inj.create()
        try:
            for _ in range(10):
                run(d, [read(fd, 1, 0, str(path))])
        finally:
            d.close()
        logs.append(list(inj.log))
        inj.reset()
    assert logs[0] == logs[1] and logs[0]


def test_injectors_nest(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    inner = FaultInjector(Fault(kind="read", nth=2), driver=driver)
    outer = FaultInjector(Fault(kind="read", nth=1), driver=inner)
    d = outer.create()
    try:
        ops = [run(d, [read(fd, 1, 0, str(path))])[0] for _ in range(3)]
    finally:
        d.close()
    # The outer rule stops op 1 before the inner injector sees it: op 3 is the inner's 2nd.
    assert [op.error is not None for op in ops] == [True, False, True]
    assert outer.name == f"faulty(faulty({driver}))"
    assert [e.op for e in outer.log] == [1] and [e.op for e in inner.log] == [2]


def test_capabilities_and_statistics(driver: str) -> None:
    inj, d = make(driver, Fault())
    try:
        assert d.capabilities.asynchronous is True
        assert d.capabilities.max_in_flight == d.inner.capabilities.max_in_flight
        assert d.statistics().driver == f"faulty({driver})"
        assert inj.key is inj and inj.open_drivers == 1
    finally:
        d.close()
    assert inj.open_drivers == 0


def test_no_descriptor_left_after_close(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    before = fds()
    _, d = make(driver, Fault(kind="read", delay=0.05))
    run(d, [read(fd, 1, 0, str(path))])
    d.close()
    assert fds() == before


# -- the rules themselves --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nth": 0}, r"nth=0: ops are counted from 1"),
        ({"times": 0}, r"times=0: at least 1, or None"),
        ({"probability": 1.5}, r"probability=1.5 is not between 0 and 1"),
        ({"delay": -1}, r"delay=-1: seconds, never negative"),
        ({"when": "during"}, r"when='during': 'before' \(the op never runs\) or 'after'"),
        ({"kind": "fsink"}, r"unknown op kind 'fsink': use one of"),
        ({"kind": "fsync", "short": 1}, r"short=1 needs a transfer kind \(read/write\), not 'fsync'"),
        ({"short": -1}, r"short=-1: a byte count is never negative"),
        ({"errno": errno.EIO, "transient": True}, r"transient=True retries EAGAIN or EINTR, not errno=5"),
    ],
)
def test_invalid_rules(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fault(**kwargs)  # type: ignore[arg-type]


def test_default_action_is_eio_and_actions_are_named() -> None:
    assert Fault().errno == errno.EIO and Fault().action == "errno"
    assert Fault(delay=1).errno is None and Fault(delay=1).action == "delay"
    assert Fault(short=0).action == "short" and Fault(short=0).errno is None
    assert Fault(errno=errno.EAGAIN, transient=True).action == "retry"


def test_an_injector_takes_only_rules() -> None:
    with pytest.raises(TypeError, match="FaultInjector takes Fault rules, not str"):
        FaultInjector("read", driver="sync")  # type: ignore[arg-type]


def test_short_write_of_zero_bytes(driver: str, target: tuple[Path, int]) -> None:
    path, fd = target
    _, d = make(driver, Fault(kind="write", short=0))
    try:
        (op,) = run(d, [write(fd, b"ABCD", 0, str(path))])
    finally:
        d.close()
    assert isinstance(op.error, OSError) and op.error.errno == errno.ENOSPC and op.transferred == 0
    assert path.read_bytes()[:4] == b"0123"
