"""What to inject (:class:`Fault`) and the record of what was injected (:class:`Injection`).

A :class:`Fault` is a rule: *which* ops it matches (kind, path, the Nth match, how many
times, a probability) and *what* happens to them (an errno, a short count, a delay), and
*when* (before the op reaches the real driver, or after it ran). The
:class:`~aiopg_io.testing.FaultInjector` applies the rules; the :class:`Injection` records
are its log.
"""

from __future__ import annotations

import errno as _errno
import fnmatch
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from ..drivers.base import PATH_KINDS, READ_KINDS, TRANSFER_KINDS, WRITE_KINDS, Op, OpKind

__all__ = ["KIND_GROUPS", "Fault", "Injection", "KindSpec", "PathSpec"]

#: Names that match several op kinds. A kind's own value (``"read"``, ``"fdatasync"``...)
#: matches exactly that kind.
KIND_GROUPS: dict[str, frozenset[OpKind]] = {
    "reads": frozenset(READ_KINDS),
    "writes": frozenset(WRITE_KINDS),
    "transfers": frozenset(TRANSFER_KINDS),
    "syncs": frozenset({OpKind.FSYNC, OpKind.FDATASYNC}),
    "paths": frozenset(PATH_KINDS),  # openat, renameat, unlinkat, mkdirat, statx, linkat, symlinkat
    "any": frozenset(OpKind),
}

KindSpec: TypeAlias = "str | OpKind | Iterable[str | OpKind] | None"
PathSpec: TypeAlias = "str | os.PathLike[str] | Callable[[str | None], bool] | None"

_TRANSIENT_ERRNOS = frozenset({_errno.EAGAIN, _errno.EWOULDBLOCK, _errno.EINTR})


def _kinds(spec: KindSpec) -> frozenset[OpKind]:
    if spec is None:
        return KIND_GROUPS["any"]
    if isinstance(spec, (str, OpKind)):
        spec = (spec,)
    out: set[OpKind] = set()
    for item in spec:
        if isinstance(item, OpKind):
            out.add(item)
        elif item in KIND_GROUPS:
            out |= KIND_GROUPS[item]
        else:
            try:
                out.add(OpKind(item))
            except ValueError:
                names = sorted([k.value for k in OpKind] + list(KIND_GROUPS))
                raise ValueError(f"unknown op kind {item!r}: use one of {', '.join(names)}") from None
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault-injection rule.

    Matching (all must hold):

    - ``kind``: an op kind or its name (``"read"``, ``"writev"``, ``"fdatasync"``...), a group
      (``"reads"``, ``"writes"``, ``"transfers"``, ``"syncs"``, ``"paths"``, ``"any"``), or several of
      these; None matches every kind. A fault with ``short`` matches transfers only.
    - ``path``: None matches every file. A string without a path separator is matched
      against the file's base name, one with a separator against its absolute path; either
      may be a glob (``fnmatch``: ``*``, ``?``, ``[...]``). A callable gets ``op.path`` (None
      for an fd opened without a name) and returns whether it matches.
    - ``nth`` (1-based): the first matching op that is hit is the ``nth``; earlier matches
      pass untouched. ``times`` is how many ops are hit from there (None: every one). With
      ``probability`` < 1, each match from the ``nth`` on is hit with that probability,
      drawn from the injector's seeded generator, until ``times`` hits.

    Action (at least one; with none given, ``errno=EIO``):

    - ``errno``: the op fails with ``OSError(errno, ...)`` (Python picks the subclass from the
      errno: ``BlockingIOError`` for EAGAIN, ``InterruptedError`` for EINTR...). With
      ``transient=True`` (EAGAIN/EINTR only) the caller never sees it: the wrapper resubmits
      the op as a real driver does after EAGAIN, and ``op.retries`` counts it.
    - ``short``: a transfer completes with only ``short`` bytes. A read returns that count
      (which callers read as end of file; ``when`` makes no difference to a read). A write
      transfers ``short`` bytes and then fails with ``errno`` (default ENOSPC),
      ``op.transferred == short``: a disk that filled up. On an O_DIRECT file, make
      ``short`` a multiple of the file's alignment: with ``when="before"`` the kernel
      really writes ``short`` bytes, and rejects an unaligned length with EINVAL.
    - ``delay``: seconds the op is held (before it runs, or after it completed).

    ``when``: ``"before"``: the op is decided before it reaches the real driver, so a
    failure means nothing happened (a failed fsync did not flush: the kernel dropped the
    dirty pages; a short write wrote only ``short`` bytes). ``"after"``: the op really ran,
    then its outcome is rewritten, so a failed write may well be in the file and a failed
    fsync did flush, yet the caller was told otherwise.
    """

    kind: KindSpec = None
    path: PathSpec = None
    nth: int = 1
    times: int | None = 1
    probability: float = 1.0
    errno: int | None = None
    short: int | None = None
    delay: float = 0.0
    transient: bool = False
    when: Literal["before", "after"] = "before"
    kinds: frozenset[OpKind] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kinds = _kinds(self.kind)
        if self.short is not None:
            if self.short < 0:
                raise ValueError(f"short={self.short}: a byte count is never negative")
            kinds &= TRANSFER_KINDS
            if not kinds:
                raise ValueError(f"short={self.short} needs a transfer kind (read/write), not {self.kind!r}")
        object.__setattr__(self, "kinds", kinds)
        if self.errno is None and self.short is None and self.delay == 0:
            object.__setattr__(self, "errno", _errno.EIO)
        if not isinstance(self.nth, int) or self.nth < 1:
            raise ValueError(f"nth={self.nth!r}: ops are counted from 1")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times={self.times!r}: at least 1, or None for every op from the nth on")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability={self.probability!r} is not between 0 and 1")
        if self.delay < 0:
            raise ValueError(f"delay={self.delay!r}: seconds, never negative")
        if self.when not in ("before", "after"):
            raise ValueError(f"when={self.when!r}: 'before' (the op never runs) or 'after' (it ran)")
        if self.transient and (self.errno not in _TRANSIENT_ERRNOS or self.short is not None):
            raise ValueError(
                f"transient=True retries EAGAIN or EINTR, not errno={self.errno!r}"
                + (f" with short={self.short}" if self.short is not None else "")
            )

    @property
    def action(self) -> str:
        """A short name of what the fault does: ``"errno"``, ``"short"``, ``"delay"``, ``"retry"``."""
        if self.short is not None:
            return "short"
        if self.transient:
            return "retry"
        if self.errno is not None:
            return "errno"
        return "delay"

    def write_errno(self) -> int:
        """The errno a short write fails with."""
        return self.errno if self.errno is not None else _errno.ENOSPC

    def matches(self, op: Op) -> bool:
        """Whether ``op`` matches ``kind`` and ``path`` (``nth``/``times`` are counted by the
        injector)."""
        if op.kind not in self.kinds:
            return False
        spec = self.path
        if spec is None:
            return True
        if callable(spec):
            return bool(spec(op.path))
        if op.path is None:
            return False
        pattern = os.fspath(spec)
        if os.sep in pattern or (os.altsep is not None and os.altsep in pattern):
            return fnmatch.fnmatchcase(os.path.abspath(op.path), os.path.abspath(pattern))
        return fnmatch.fnmatchcase(os.path.basename(op.path), pattern)


@dataclass(frozen=True, slots=True)
class Injection:
    """One entry of :attr:`FaultInjector.log`: an op a fault hit.

    ``op`` is the op's number among every op the injector saw (1-based, in submission
    order); ``fault`` the index of the rule in :attr:`FaultInjector.faults`; ``action``
    :attr:`Fault.action`.
    """

    op: int
    kind: OpKind
    path: str | None
    offset: int
    nbytes: int
    fault: int
    action: str
    errno: int | None
    short: int | None
    delay: float
    when: str

    def __str__(self) -> str:
        what = {
            "errno": f"{_errno.errorcode.get(self.errno or 0, self.errno)}",
            "retry": f"{_errno.errorcode.get(self.errno or 0, self.errno)} retried",
            "short": f"short {self.short}",
            "delay": "",
        }[self.action]
        if self.delay:
            what = f"{what} delayed {self.delay}s".strip()
        return (
            f"op #{self.op} {self.kind.value} {self.path or '<fd>'} @{self.offset}+{self.nbytes}: "
            f"{what} ({self.when}, fault {self.fault})"
        )
