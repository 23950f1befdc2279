"""``python -m aiopg_io``: the matrix, the main job and the benchmark commands run and say
what they should. (Figures are not checked: speed belongs to benchmarks, not tests.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiopg_io.drivers import DRIVER_NAMES, unavailable_reason


def run_process(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m aiopg_io *args``, whatever its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "aiopg_io", *args], cwd=cwd, capture_output=True, text=True, env=env,
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


def test_info_json(tmp_path: Path) -> None:
    doc = json.loads(run("info", "--json", cwd=tmp_path).stdout)
    assert doc["os"] == os.uname().sysname
    assert set(doc["drivers"]) == set(DRIVER_NAMES)
    assert doc["drivers"]["sync"] == {"buffered": "available", "direct": "available"}
    assert doc["alignment"]["offset"] in (512, 1024, 2048, 4096)


def test_main_job_json(tmp_path: Path) -> None:
    doc = json.loads(run("--seconds", "0.3", "--json", cwd=tmp_path).stdout)
    ran = {(r["driver"], r["job"]["direct"], r["job"]["iodepth"]) for r in doc["results"]}
    for name in ("io_uring", "posix_aio", "worker"):
        if unavailable_reason(name) is None:
            assert {(name, False, 1), (name, False, 8), (name, False, 32)} <= ran
    assert all(r["ops"] > 0 and r["iops"] > 0 for r in doc["results"])
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_main_job_rounds_report_medians(tmp_path: Path) -> None:
    doc = json.loads(run("--seconds", "0.05", "--rounds", "3", "--json", cwd=tmp_path).stdout)
    assert doc["rounds"] == 3
    for r in doc["results"]:
        rounds = r["extra"]["rounds_iops"]
        assert len(rounds) == 3
        assert r["iops"] == sorted(rounds)[1]  # the median round is the one reported


def test_main_job_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is the 'plot' extra")
    out = tmp_path / "out" / "iops.png"
    out.parent.mkdir()
    r = run("--seconds", "0.05", "--rounds", "1", "--plot", str(out), cwd=tmp_path)
    assert f"plot written to {out}" in r.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


def test_main_job_table(tmp_path: Path) -> None:
    r = run("--seconds", "0.05", cwd=tmp_path)
    assert "Self-benchmark" in r.stdout and "vs worker" in r.stdout
    assert "done" in r.stderr  # the progress bar


def test_bench_fio_vocabulary(tmp_path: Path) -> None:
    out = run(
        "bench", "--rw", "randwrite", "--bs", "8k", "--iodepth", "1,4", "--size", "1m",
        "--runtime", "0.05", "--ramp_time", "0", "--driver", "worker,sync", "--loop", "asyncio,trio",
        "--json", str(tmp_path / "r.json"), cwd=tmp_path,
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
        "bench", "--size", "1m", "--runtime", "0.2", "--ramp_time", "0.1", "--driver", f"worker,{contender}",
        cwd=tmp_path,
    ).stdout
    assert contender in out
