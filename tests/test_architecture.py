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
- The WAL and the buffer pool change directory entries through the op layer
  (``aiopg_io._paths``), never with a blocking ``os`` call: the fault injector and the
  power-loss simulator see only ops, and a change they do not see escapes both.
- The power-loss driver shows ops to its model through the model module's named calls
  (``before_op`` / ``after_op``), not its private members.
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


def _private_uses(path: Path) -> list[str]:
    """Underscored members of anything but ``self`` used in ``path``, and underscored names
    imported from another module."""
    tree = ast.parse(path.read_text(), str(path))
    out = [
        f"{_rel(path)}:{node.lineno} uses {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    out += [
        f"{_rel(path)}:{line} imports {name} from {module}"
        for line, module, names in _imports(path)
        for name in names
        if name.startswith("_")
    ]
    return out


def test_the_power_loss_driver_uses_the_model_s_named_calls() -> None:
    private = _private_uses(PACKAGE / "testing" / "_powerloss.py")
    assert not private, "another module's private members: " + "; ".join(private)


#: ``os`` calls that change a directory's entries (and ``shutil``, all of it).
_DIRECTORY_CALLS = {"unlink", "remove", "rename", "replace", "renames", "mkdir", "makedirs", "rmdir"}
_DIRECTORY_CALLS |= {"removedirs", "link", "symlink", "mkfifo", "mknod"}
#: Known exceptions, each with its reason.
_DIRECTORY_CALLS_ALLOWED = {
    # The flock needs a descriptor held for the WAL object's life, taken when it is made;
    # the file holds no data (aiopg_io/wal/_segments.py's docstring).
    ("aiopg_io/wal/_segments.py", "os.open"),
}


@pytest.mark.parametrize(
    "path", sorted([*(PACKAGE / "wal").rglob("*.py"), *(PACKAGE / "buffers").rglob("*.py")]), ids=_rel
)
def test_the_wal_and_the_pool_change_directories_through_the_op_layer(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if not isinstance(owner, ast.Name):
            continue
        call = f"{owner.id}.{node.func.attr}"
        creates = call == "os.open" and "O_CREAT" in ast.unparse(node)
        changes = (owner.id == "os" and node.func.attr in _DIRECTORY_CALLS) or owner.id == "shutil" or creates
        if changes and (_rel(path), call) not in _DIRECTORY_CALLS_ALLOWED:
            bad.append(f"{_rel(path)}:{node.lineno} calls {call}")
    assert not bad, "directory entries change through aiopg_io._paths (ops): " + "; ".join(bad)
