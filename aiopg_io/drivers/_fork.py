"""How many times this process is a fork child: a cheap "am I still the process that made
this?" check for rings, threads and contexts, which do not survive fork(2).

Bumped in every child ``os.fork()`` makes (multiprocessing's "fork" start method included)
through ``os.register_at_fork``, so the per-call check is an integer compare rather than a
``getpid()`` system call (its cost: docs/benchmarks.md, "Smaller figures"). A child made by
a raw fork(2) that bypasses Python's fork hooks is not seen.
"""

from __future__ import annotations

import os

__all__ = ["generation"]

_generation = 0


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def generation() -> int:
    return _generation
