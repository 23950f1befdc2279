"""Fixtures of the WAL tests."""

from __future__ import annotations

import pytest

from aiopg_io.testing import _powerloss

from ._cuts import see_then_record


@pytest.fixture
def power_cuts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a :class:`~tests.wal._cuts.CuttingSimulator` see every op its driver gets."""
    monkeypatch.setattr(_powerloss, "before_op", see_then_record)
