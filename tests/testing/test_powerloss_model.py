"""Property test of the power-loss simulator against an independent model: the durable
state is the file as it was at the last sync; a crash leaves, sector by sector, that state,
the latest one, or (not with atomic sectors) garbage — and ``policy="drop"`` leaves exactly
the durable state, ``"keep"`` exactly the latest."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from aiopg_io.testing import PowerLossSimulator

from .test_powerloss import Scene, check_file

SS = 512

op = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 6 * SS), st.integers(1, 2 * SS), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 6 * SS), st.just(0), st.just(0)),
    st.tuples(st.just("sync"), st.just(0), st.just(0), st.just(0)),
)


@settings(max_examples=50, deadline=None)
@given(
    initial=st.integers(0, 4 * SS),
    ops=st.lists(op, max_size=12),
    seed=st.integers(0, 2**32),
    atomic=st.booleans(),
    safe_append=st.booleans(),
)
def test_crash_states_follow_the_model(
    initial: int, ops: list[tuple[str, int, int, int]], seed: int, atomic: bool, safe_append: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for policy in ("random", "drop", "keep"):
            d = Path(tmp) / policy
            d.mkdir()
            path = d / "rel"
            path.write_bytes(bytes(range(256)) * (initial // 256) + bytes(initial % 256))
            durable = path.read_bytes()
            sim = PowerLossSimulator("sync", atomic_sectors=atomic, safe_append=safe_append)
            s = Scene(d, sim)
            for kind, offset, length, byte in ops:
                if kind == "write":
                    s.write(bytes([byte]) * length, offset)
                elif kind == "truncate":
                    s.truncate(offset)
                else:
                    s.sync()
                    durable = path.read_bytes()
            latest = path.read_bytes()
            s.close()
            report = sim.crash(seed=seed, policy=policy)
            after = path.read_bytes()
            results[policy] = after
            if not report.files:
                assert after == latest == durable
                continue
            (fc,) = report.files
            assert fc.durable_size == len(durable) and fc.size_before == len(latest)
            check_file(path, durable, latest, fc, SS, safe_append=safe_append)
            if atomic:
                assert "garbled" not in fc.sectors.values()
        assert results["drop"] == durable
        assert results["keep"] == latest
        assert os.path.exists(Path(tmp) / "random" / "rel")
