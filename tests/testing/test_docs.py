"""The examples of docs/testing.md run (each ``async def test_...`` block, as written)."""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any

import pytest

import aiopg_io

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
BLOCKS = [
    b
    for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    # The fixture sketches (the plugin's, pytest-asyncio's) are not standalone.
    if "async def test_" in b and "fault_injector," not in b and "pytest_asyncio" not in b
]


@pytest.mark.parametrize("block", BLOCKS, ids=[re.search(r"def (test_\w+)", b)[1] for b in BLOCKS])  # type: ignore[index]
async def test_example(block: str, driver: str, tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"pytest": pytest, "errno": errno, "aiopg_io": aiopg_io}
    exec(compile(block, str(DOC), "exec"), namespace)
    (name,) = [n for n in namespace if n.startswith("test_")]
    await namespace[name](tmp_path)
