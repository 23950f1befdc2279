"""benchmarks/powerloss.py runs, on a few cells, and reports no loss (the scaled run and its
figures are in docs/testing.md, "Durability")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "powerloss.py"


def test_the_powerloss_benchmark_runs_and_finds_nothing(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--runs",
            "8",
            "--cell",
            "asyncio/sync",
            "--jobs",
            "1",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    totals = {m[1]: m[2] for m in re.finditer(r"^(wal|pool) \(all cells.*?\)\s+(.*)$", out.stdout, re.M)}
    assert set(totals) == {"wal", "pool"}, out.stdout
    for experiment, row in totals.items():
        runs, acknowledged, *bad = (int(n) for n in row.split())
        assert runs == 8 and acknowledged > 0, (experiment, row)
        assert bad == [0, 0, 0, 0], (experiment, row)
