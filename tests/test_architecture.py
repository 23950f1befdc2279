"""The layering rules of docs/architecture.md, checked on the source (issue 13, item 7).

- Only ``aiopg_io/_glue`` knows which event loop runs: no other module imports asyncio,
  trio or uvloop (anyio, which is loop-agnostic, is fine).
- A driver imports nothing above the driver layer: the standard library, its own third-party
  binding (liburing), ``aiopg_io.drivers.*`` and ``aiopg_io.errors``.
- The WAL and the buffer pool reach the kernel through files only: from the drivers package
  they take the ``DriverFactory`` type (of their ``driver=`` argument), never a driver.
- The read stream drives the pool through its public calls (``start_read_buffers`` /
  ``wait_read_buffers``, as read_stream.c does bufmgr.c): no underscored member of another
  object, and no run-time import of the pool, which imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aiopg_io"
LOOP_MODULES = {"asyncio", "trio", "uvloop"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, absolute module, names taken from it) for every import in ``path``, including
    those inside functions and ``if TYPE_CHECKING`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module, [a.name for a in node.names]


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_the_rules_see_every_module() -> None:
    found = {_rel(p) for p in _modules()}
    assert "aiopg_io/_glue/_asyncio.py" in found and "aiopg_io/drivers/worker.py" in found
    # The walker finds imports inside functions too (the glue imports trio lazily).
    assert any(m == "trio" for _, m, _ in _imports(PACKAGE / "_glue" / "__init__.py"))


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_only_the_glue_knows_the_event_loop(path: Path) -> None:
    if path.is_relative_to(PACKAGE / "_glue"):
        return
    bad = [
        f"{_rel(path)}:{line} imports {module}"
        for line, module, _ in _imports(path)
        if module.split(".")[0] in LOOP_MODULES
    ]
    assert not bad, "loop-specific code belongs in aiopg_io/_glue: " + "; ".join(bad)


@pytest.mark.parametrize("path", sorted((PACKAGE / "drivers").rglob("*.py")), ids=_rel)
def test_a_driver_imports_nothing_above_its_layer(path: Path) -> None:
    bad = [
        f"{_rel(path)}:{line} imports {module}"
        for line, module, _ in _imports(path)
        if module.split(".")[0] == "aiopg_io"
        and not (module == "aiopg_io.errors" or module.startswith("aiopg_io.drivers"))
    ]
    assert not bad, "a driver may import only aiopg_io.drivers.* and aiopg_io.errors: " + "; ".join(bad)


@pytest.mark.parametrize(
    "path", sorted([*(PACKAGE / "wal").rglob("*.py"), *(PACKAGE / "buffers").rglob("*.py")]), ids=_rel
)
def test_the_wal_and_the_pool_use_files_not_drivers(path: Path) -> None:
    bad = []
    for line, module, names in _imports(path):
        if module == "aiopg_io.drivers._compiled":
            continue  # the one loader of the C extensions (the WAL's record writer), not a driver
        if module.startswith("aiopg_io.drivers.") or (
            module == "aiopg_io.drivers" and set(names) - {"DriverFactory"}
        ):
            bad.append(f"{_rel(path)}:{line} imports {module} {names}")
    assert not bad, "the WAL and the pool go through aiopg_io files: " + "; ".join(bad)


def test_the_read_stream_uses_the_pool_s_public_calls_only() -> None:
    path = PACKAGE / "buffers" / "_read_stream.py"
    tree = ast.parse(path.read_text(), str(path))
    private = [
        f"{_rel(path)}:{node.lineno} uses {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    assert not private, "another class's private members: " + "; ".join(private)
    runtime = [  # module-level imports, those under `if TYPE_CHECKING:` left out
        node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "_pool"
    ]
    assert not runtime, f"{_rel(path)} imports _pool at run time: an import cycle"
