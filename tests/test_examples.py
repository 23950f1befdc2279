"""Every example runs, as a user would run it, and does what it says."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str, cwd: Path) -> str:
    r = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, f"{args} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
@pytest.mark.parametrize("size", [0, 10, 12345, 3 * 131072 + 7])
def test_cp(tmp_path: Path, size: int, direct: bool, driver: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(size))
    extra = ["--direct"] if direct else []
    args = [str(EXAMPLES / "cp.py"), str(src), str(dst), "--depth", "4", "--driver", driver, *extra]
    out = run(*args, cwd=tmp_path)
    assert dst.read_bytes() == src.read_bytes()
    assert out.startswith(f"copied {size} bytes")


def test_trio_checksum(tmp_path: Path, driver: str) -> None:
    tree = tmp_path / "tree"
    expected = {}
    for i in range(20):
        d = tree / f"d{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        data = os.urandom(i * 150_001 % 2_500_000)
        (d / f"f{i}").write_bytes(data)
        expected[str(d / f"f{i}")] = hashlib.sha256(data).hexdigest()
    out = run(str(EXAMPLES / "trio_checksum.py"), str(tree), "--driver", driver, cwd=tmp_path)
    lines = out.splitlines()
    got = {path: digest for digest, path in (line.split("  ", 1) for line in lines[:-1])}
    assert got == expected
    assert lines[-1].startswith("20 files")


def test_aiofiles_migration(tmp_path: Path) -> None:
    out = run(str(EXAMPLES / "aiofiles_migration.py"), "--lines", "3000", cwd=tmp_path)
    assert "same output: True" in out
