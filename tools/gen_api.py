"""Write docs/api.md from the docstrings of the public API.

    python tools/gen_api.py            # rewrite docs/api.md
    python tools/gen_api.py --check    # exit 1 if docs/api.md is out of date (the tests do this)

Public means: listed in a public module's ``__all__``. Classes show their public methods
and properties; everything shows its signature and its docstring as written.
"""

from __future__ import annotations

import argparse
import enum
import functools
import importlib
import inspect
import sys
from pathlib import Path

MODULES = [
    "aiopg_io",
    "aiopg_io.errors",
    "aiopg_io.os",
    "aiopg_io.ospath",
    "aiopg_io.tempfile",
    "aiopg_io.drivers",
    "aiopg_io.testing",
    "aiopg_io.wal",
    "aiopg_io.buffers",
    "aiopg_io.asgi",
]
OUT = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _async_def(fn: object) -> bool:
    """An ``async def`` by its code, not by inspect.iscoroutinefunction: that one also says
    True, on 3.12+ only, for a plain function marked with inspect.markcoroutinefunction (the
    file's read calls, which return an awaitable), and the page must not differ by version."""
    code = getattr(inspect.unwrap(fn), "__code__", None)  # type: ignore[arg-type]
    return code is not None and bool(code.co_flags & inspect.CO_COROUTINE)


def _doc(obj: object) -> str:
    doc = inspect.getdoc(obj)
    return doc.strip() if doc else "*(no docstring)*"


def _sig(obj: object) -> str:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"
    # Defaults through _repr (a set of op kinds has no fixed order), annotations as written.
    params = [
        p.replace(default=_Verbatim(_repr(p.default)))
        if isinstance(p.default, (set, frozenset, dict, list, tuple))
        else p
        for p in sig.parameters.values()
    ]
    return str(sig.replace(parameters=params))


class _Verbatim:
    """A default shown as the given text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _indent(text: str) -> str:
    return "\n".join(("> " + line) if line else ">" for line in text.splitlines())


def _repr(value: object) -> str:
    """``repr``, with the members of sets in a fixed order: some hash by identity (the op
    enums), so their iteration order changes from run to run and ``--check`` would flap."""
    if isinstance(value, (set, frozenset)):
        inner = ", ".join(sorted(_repr(v) for v in value))
        return f"{type(value).__name__}({{{inner}}})" if inner else f"{type(value).__name__}()"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_repr(k)}: {_repr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        items = [_repr(v) for v in value]
        if isinstance(value, list):
            return "[" + ", ".join(items) + "]"
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return repr(value)


@functools.cache
def _documented() -> frozenset[type]:
    out: set[type] = set()
    for modname in MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        out |= {obj for obj in (getattr(mod, n) for n in getattr(mod, "__all__", [])) if inspect.isclass(obj)}
    return frozenset(out)


def _class(name: str, cls: type) -> list[str]:
    if issubclass(cls, enum.Enum):
        # Enum's own constructor signature differs between Python versions (3.11 added
        # boundary=, 3.13 prints *values): show the members, which are what users use.
        members = ", ".join(f"`{m.name}`" for m in cls)
        return [f"### enum `{name}`", "", _doc(cls), "", f"Members: {members}.", "", ""]
    out = [f"### class `{name}{_sig(cls)}`", "", _doc(cls), ""]
    # A base of aiopg_io's own that the reference does not document (the power-loss
    # simulator's model) lends its members: they are the class's API too.
    own: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        if klass is cls or (klass.__module__.startswith("aiopg_io") and klass not in _documented()):
            own.update(vars(klass))
    for attr, value in sorted(own.items()):
        if attr.startswith("_") and attr not in ("__aenter__", "__aiter__"):
            continue
        if isinstance(value, property):
            summary = f": {_doc(value).splitlines()[0]}" if value.__doc__ else ""
            out += [f"- **`{attr}`** (property){summary}"]
        elif inspect.isfunction(value) or isinstance(value, (classmethod, staticmethod)):
            fn = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
            prefix = "async " if _async_def(fn) or inspect.isasyncgenfunction(fn) else ""
            out += [f"- **`{prefix}{attr}{_sig(fn)}`**", ""]
            if fn.__doc__:
                out += [_indent(_doc(fn)), ""]
    out.append("")
    return out


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python tools/gen_api.py`; do not edit by hand.",
        "",
    ]
    for modname in MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        lines += [f"## `{modname}`", "", _doc(mod), ""]
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.ismodule(obj):  # its repr holds this checkout's path
                lines += [f"### module `{name}`: see `{obj.__name__}`", ""]
            elif inspect.isclass(obj):
                lines += _class(name, obj)
            elif callable(obj):
                prefix = "async " if _async_def(obj) else ""
                lines += [f"### `{prefix}{name}{_sig(obj)}`", "", _doc(obj), ""]
            else:
                lines += [f"### `{name}` = `{_repr(obj)}`", ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true")
    a = p.parse_args()
    text = render()
    if a.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python tools/gen_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
