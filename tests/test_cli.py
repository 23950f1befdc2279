"""``python -m aiopg_io``: the matrix, the main job and the benchmark commands run and say
what they should. (Figures are not checked: speed belongs to benchmarks, not tests.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aiopg_io import _mainjob
from aiopg_io._info import machine_matrix
from aiopg_io.bench import Job, JobResult
from aiopg_io.drivers import DRIVER_NAMES, unavailable_reason


def run_process(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m aiopg_io *args``, whatever its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "aiopg_io", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    r = run_process(*args, cwd=cwd)
    assert r.returncode == 0, f"{args}:\n{r.stdout}\n{r.stderr}"
    return r


def test_info_matrix(tmp_path: Path) -> None:
    out = run("info", str(tmp_path), cwd=tmp_path).stdout
    assert "I/O methods on this machine" in out
    assert f"directory {tmp_path}" in out
    for name in DRIVER_NAMES:
        reason = unavailable_reason(name)
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        assert ("yes" in line) == (reason is None), line
    assert "auto -> " in out


def test_info_says_how_trio_parks_a_task_on_an_op(tmp_path: Path) -> None:
    """``info``'s trio line: from C where the glue's wakers are built and trio's shapes hold,
    else in Python with the reason (``AIOPG_IO_PURE=1`` here)."""
    pytest.importorskip("trio")
    from aiopg_io._glue import _trio

    out = run("info", str(tmp_path), cwd=tmp_path).stdout
    line = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith("trio "))
    assert line == "trio      " + _trio.park_status()
    if _trio._WAKE is not None:
        assert line.startswith("trio      tasks wait on ops from C (trio ")
    pure = run_process("info", str(tmp_path), cwd=tmp_path, env={**os.environ, "AIOPG_IO_PURE": "1"})
    forced = "tasks wait on ops in Python: AIOPG_IO_PURE=1 forces the pure-Python path"
    assert f"  trio      {forced}" in pure.stdout


def test_trios_park_falls_back_where_trio_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C park leans on trio internals: each that differs (an older trio than the oldest
    tested, a run loop that tests for another trap class, a trap that cannot be built from C)
    turns it off with a reason, and the glue then waits through its Python twin."""
    trio = pytest.importorskip("trio")
    from trio._core import _run

    from aiopg_io._glue import _trio

    if _trio._WAKE is None:
        pytest.skip(_trio.park_status())
    in_python = "tasks wait on ops in Python: "
    args, why = _trio._park_shapes()
    assert args is not None
    assert why == f"tasks wait on ops from C (trio {trio.__version__}'s WaitTaskRescheduled yielded directly)"
    with monkeypatch.context() as m:
        m.setattr(trio, "__version__", "0.31.0")
        older = "trio 0.31.0 is older than 0.32, the oldest tested"
        assert _trio._park_shapes() == (None, in_python + older)
    with monkeypatch.context() as m:

        class Other:
            pass

        m.setattr(_run, "WaitTaskRescheduled", Other)
        moved = "trio's run loop no longer tests for _traps.WaitTaskRescheduled"
        assert _trio._park_shapes() == (None, in_python + moved)

    class Refuses:
        def __init__(self, *args: object) -> None:
            pass

        def trap(self, fn: object) -> object:
            raise TypeError("no dict")

    with monkeypatch.context() as m:
        m.setattr(_trio._WAKE, "TaskParker", Refuses)
        refused = "trio's WaitTaskRescheduled cannot be built from C (TypeError('no dict'))"
        assert _trio._park_shapes() == (None, in_python + refused)

    monkeypatch.setattr(_trio, "_PARK_ARGS", None)

    async def main() -> tuple[object, object]:
        glue = _trio.current()
        assert glue is not None
        return glue.wait, glue._wait_twin

    wait, twin = trio.run(main)
    assert wait == twin  # the twin, bound to that run's glue


def _trap_classes() -> dict[str, tuple[type, bool]]:
    """Trap classes a later trio might have, and whether the C park may build them."""
    attrs = pytest.importorskip("attrs")

    @attrs.frozen(slots=True)
    class Slotted:  # slots instead of a dict: object.__setattr__ still sets them
        abort_func: object

    @attrs.frozen
    class ExtraField:
        abort_func: object
        reason: object = None

    @attrs.frozen
    class Renamed:
        abort_fn: object

    @attrs.frozen(eq=False)
    class NoEquality:
        abort_func: object

    class Positional:
        def __new__(cls, abort_func: object) -> Positional:
            self = super().__new__(cls)
            self.abort_func = abort_func
            return self

    return {
        "slotted": (Slotted, True),
        "extra field": (ExtraField, False),
        "renamed field": (Renamed, False),
        "no equality": (NoEquality, False),
        "__new__ takes the field": (Positional, False),
    }


@pytest.mark.parametrize(
    "shape", ["slotted", "extra field", "renamed field", "no equality", "__new__ takes the field"]
)
def test_trios_park_checks_the_trap_trio_would_build(monkeypatch: pytest.MonkeyPatch, shape: str) -> None:
    """A trio whose WaitTaskRescheduled has another shape (faked here in both places trio's
    run loop and wait_task_rescheduled take it from): the C park is used only where a trap
    it builds is equal to trio's own, field for field; otherwise the twin, with the reason."""
    pytest.importorskip("trio")
    from trio._core import _run, _traps

    from aiopg_io._glue import _trio

    if _trio._WAKE is None:
        pytest.skip(_trio.park_status())
    cls, buildable = _trap_classes()[shape]
    monkeypatch.setattr(_traps, "WaitTaskRescheduled", cls)
    monkeypatch.setattr(_run, "WaitTaskRescheduled", cls)
    args, why = _trio._park_shapes()
    if buildable:
        assert args is not None and args[1] is cls, why
        trap = _trio._WAKE.TaskParker(*args).trap(len)
        assert type(trap) is cls and trap == cls(len)
    else:
        assert args is None
        assert why.startswith("tasks wait on ops in Python: ") and "WaitTaskRescheduled" in why, why


def test_info_json(tmp_path: Path) -> None:
    doc = json.loads(run("info", "--json", cwd=tmp_path).stdout)
    assert doc["os"] == os.uname().sysname
    assert set(doc["drivers"]) == set(DRIVER_NAMES)
    assert doc["drivers"]["sync"] == {"buffered": "available", "direct": "available"}
    assert doc["alignment"]["offset"] in (512, 1024, 2048, 4096)


#: The main job as the tests run it: the whole plan, every round, in a few seconds.
QUICK = ("--seconds", "0.02", "--ramp", "0", "--size", "8m")


def test_main_job_json(tmp_path: Path) -> None:
    doc = json.loads(run(*QUICK, "--rounds", "3", "--json", cwd=tmp_path).stdout)
    drivers = doc["matrix"]["drivers"]
    ran = {(r["driver"], r["job"]["direct"], r["job"]["iodepth"]) for r in doc["results"]}
    for name in ("io_uring", "posix_aio", "worker"):
        for mode, direct in (("buffered", False), ("direct", True)):
            if drivers[name][mode] == "available":  # direct at every depth buffered is measured at
                assert {(name, direct, 1), (name, direct, 8), (name, direct, 32)} <= ran
    assert sum(r["ops"] for r in doc["results"]) > 0
    assert doc["rounds"] == 3 and doc["noisy_threshold"] == 1.25
    for r in doc["results"]:
        rounds = r["extra"]["rounds_iops"]
        assert len(rounds) == 3
        assert r["iops"] == sorted(rounds)[1]  # the median round is the one reported
        if "rounds_vs_worker" in r["extra"]:  # the worker ran every mode and depth, and read in each round
            ratios = r["extra"]["rounds_vs_worker"]
            assert len(ratios) == 3 and r["extra"]["vs_worker"] == sorted(ratios)[1]
    assert any("rounds_vs_worker" in r["extra"] for r in doc["results"])
    noisy = [r for r in doc["results"] if r["extra"]["noisy"]]
    assert len(doc["noisy"]) == len(noisy)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_main_job_table(tmp_path: Path) -> None:
    r = run(*QUICK, "--rounds", "2", cwd=tmp_path)
    assert "Self-benchmark: 4 KiB random reads on a 8 MiB file" in r.stdout
    lines = r.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if "Self-benchmark" in line) + 1
    assert lines[head].split() == [
        "driver",
        "mode",
        "in",
        "flight",
        "IOPS",
        "low-high",
        "MiB/s",
        "p50",
        "µs",
        "vs",
        "worker",
        "low-high",
    ]
    rows = lines[head + 1 : lines.index("", head)]
    assert len(rows) >= 6  # the worker driver, buffered and direct, at 1, 8 and 32
    iops, ratio = r"[\d,]+ +[\d,]+-[\d,]+", r"[\d.]+x +[\d.]+-[\d.]+"
    for row in rows:  # every figure with its lowest and highest round (no ratio: a round without reads)
        pattern = rf"  \S+ +(buffered|direct) +\d+ +{iops} +[\d.]+ +[\d.]+ +({ratio}|-)"
        assert re.fullmatch(pattern, row), row
    assert "each figure the median of 2 interleaved rounds, the lowest and highest" in r.stdout
    assert "done" in r.stderr  # the progress bar


def test_main_job_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is the 'plot' extra")
    out = tmp_path / "out" / "iops.png"
    out.parent.mkdir()
    r = run(*QUICK, "--rounds", "1", "--plot", str(out), cwd=tmp_path)
    assert f"plot written to {out}" in r.stdout
    assert "one round, so no spread" in r.stdout and "Noisy" not in r.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the main job's summary, table, noise line and plot, from figures made up here ------------


def made_up_runs(iops: dict[tuple[str, bool, int], list[float]]) -> list[list[JobResult]]:
    """Rounds of the cells ``(driver, direct, depth)`` with the IOPS given, one per round."""
    runs = []
    for (driver, direct, depth), rounds in iops.items():
        job = Job("f", iodepth=depth, direct=direct, driver=driver)
        runs.append([JobResult(job, driver, int(x), 1.0, x, x / 256, 10.0, 20.0, 5.0) for x in rounds])
    return runs


def test_summary_takes_medians_and_ratios_within_rounds() -> None:
    runs = made_up_runs(
        {
            ("io_uring", False, 1): [4000.0, 1000.0, 3000.0],
            ("worker", False, 1): [1000.0, 1000.0, 1100.0],
            ("io_uring", True, 1): [500.0, 500.0, 500.0],  # no worker direct figure: no ratio
        }
    )
    uring, worker, direct = _mainjob.summarize(runs)
    assert uring.iops == 3000.0 and uring.extra["rounds_iops"] == [4000.0, 1000.0, 3000.0]
    # Within each round (4.0, 1.0, 3000/1100), the median: not 3000/1000 from the medians.
    assert uring.extra["rounds_vs_worker"] == [4.0, 1.0, 3000.0 / 1100.0]
    assert uring.extra["vs_worker"] == 3000.0 / 1100.0
    assert worker.extra["vs_worker"] == 1.0
    assert "vs_worker" not in direct.extra
    assert [r.extra["noisy"] for r in (uring, worker, direct)] == [True, False, False]
    table = _mainjob.table([uring, worker, direct]).splitlines()
    assert table[1].split() == [
        "io_uring",
        "buffered",
        "1",
        "3,000",
        "1,000-4,000",
        "11.7",
        "10.0",
        "2.73x",
        "1.00-4.00",
    ]
    assert table[2].split()[-2:] == ["1.00x", "1.00-1.00"]
    assert table[3].split()[-1] == "-"


def test_noise_line_when_a_figure_moved_more_than_the_threshold() -> None:
    assert _mainjob.NOISY == 1.25
    calm = _mainjob.summarize(made_up_runs({("worker", False, 8): [1000.0, 1250.0, 1100.0]}))
    assert _mainjob.noise_note(calm) is None  # exactly 1.25x is not noisy
    busy = _mainjob.summarize(
        made_up_runs(
            {
                ("worker", False, 8): [1000.0, 1260.0, 1100.0],
                ("worker", True, 32): [100.0, 300.0, 200.0],
                ("worker", False, 1): [0.0, 10.0, 10.0],  # a round that counted nothing
            }
        )
    )
    note = _mainjob.noise_note(busy)
    assert note is not None
    assert "in 3 of 3 figures the highest round was more than 1.25x the lowest" in note
    assert "(the widest: worker buffered x1, a round that counted no read)" in note
    assert "Something else was using this machine" in note


def test_plot_draws_each_driver_and_mode_from_zero() -> None:
    plt = pytest.importorskip("matplotlib.pyplot", reason="matplotlib is the 'plot' extra")
    drivers, modes = ("io_uring", "worker"), (False, True)
    cells = {(d, m, q): [1000.0 * q, 1100.0 * q] for d in drivers for m in modes for q in (1, 8, 32)}
    results = _mainjob.summarize(made_up_runs(cells))
    matrix = machine_matrix(".")
    fig = _mainjob.figure(plt, results, matrix)
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0
    # errorbar: a container per driver and mode, holding the line and its bars.
    lines = {c.get_label(): c.lines[0] for c in ax.containers}
    assert set(lines) == {f"{d}, {m}" for d in drivers for m in ("buffered", "direct")}
    # Same figures, yet no marker on another: every line has its own x positions and look.
    xs = {tuple(line.get_xdata()) for line in lines.values()}
    looks = {(line.get_linestyle(), line.get_marker(), line.get_color()) for line in lines.values()}
    assert len(xs) == 4 and len(looks) == 4
    assert matrix.kernel in ax.get_title() and f"Python {matrix.python}" in ax.get_title()
    plt.close(fig)


def test_main_job_plot_without_matplotlib_fails_before_running(tmp_path: Path) -> None:
    # A matplotlib that cannot be imported: a package whose import raises ImportError.
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = {**os.environ, "PYTHONPATH": str(fake)}
    r = run_process("--plot", "x.png", cwd=tmp_path, env=env, timeout=60)
    assert r.returncode == 1
    assert "--plot needs matplotlib: pip install 'aiopg_io[plot]'" in r.stderr
    assert "Self-benchmark" not in r.stdout  # nothing ran first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake"]


def test_main_job_refuses_zero_rounds(tmp_path: Path) -> None:
    r = run_process("--rounds", "0", cwd=tmp_path)
    assert r.returncode == 2
    assert "--rounds: '0' is not a positive whole number" in r.stderr


def test_bench_fio_vocabulary(tmp_path: Path) -> None:
    out = run(
        "bench",
        "--rw",
        "randwrite",
        "--bs",
        "8k",
        "--iodepth",
        "1,4",
        "--size",
        "1m",
        "--runtime",
        "0.05",
        "--ramp_time",
        "0",
        "--driver",
        "worker,sync",
        "--loop",
        "asyncio,trio",
        "--json",
        str(tmp_path / "r.json"),
        cwd=tmp_path,
    ).stdout
    rows = json.loads((tmp_path / "r.json").read_text())
    assert len(rows) == 2 * 2 * 2
    assert {(r["driver"], r["job"]["loop"], r["job"]["iodepth"]) for r in rows} == {
        (d, lp, q) for d in ("worker", "sync") for lp in ("asyncio", "trio") for q in (1, 4)
    }
    assert "randwrite bs=8192" in out


def test_bench_rejects_bad_arguments(tmp_path: Path) -> None:
    r = run_process("bench", "--size", "12x", cwd=tmp_path)
    assert "usage:" in r.stderr
    assert r.returncode != 0 and "size '12x' is not a number" in r.stderr


@pytest.mark.parametrize("contender", ["aiofiles", "to_thread"])
def test_reference_contenders(tmp_path: Path, contender: str) -> None:
    out = run(
        "bench",
        "--size",
        "1m",
        "--runtime",
        "0.2",
        "--ramp_time",
        "0.1",
        "--driver",
        f"worker,{contender}",
        cwd=tmp_path,
    ).stdout
    assert contender in out
