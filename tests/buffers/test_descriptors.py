"""The clock sweep and the descriptors, without I/O."""

from __future__ import annotations

from aiopg_io.buffers._descriptors import BM_MAX_USAGE_COUNT, BufferDesc, ClockSweep


def _descs(n: int) -> list[BufferDesc]:
    return [BufferDesc(i, memoryview(bytearray(8))) for i in range(n)]


class _Rel:
    rel_id = 0
    path = "r"


def _occupy(sweep: ClockSweep) -> None:
    """Take every buffer off the free list, as pages do once the pool is warm."""
    for d in sweep.descs:
        d.rel = _Rel()  # type: ignore[assignment]
        d.valid = True
    sweep.free.clear()


def test_free_list_first_then_clock_order() -> None:
    descs = _descs(3)
    sweep = ClockSweep(descs)
    assert [sweep.victim() for _ in range(3)] == descs
    _occupy(sweep)
    assert sweep.victim() is descs[0]
    assert sweep.victim() is descs[1]


def test_usage_count_buys_a_lap_per_pin() -> None:
    descs = _descs(3)
    sweep = ClockSweep(descs)
    _occupy(sweep)
    descs[0].usage_count = 3
    # A new page starts with a usage count of 1 (the pool's claim); buffer 0 loses one per lap.
    order = []
    for _ in range(4):
        v = sweep.victim()
        assert v is not None
        v.usage_count = 1
        order.append(v.buf_id)
    assert order == [1, 2, 1, 2]
    assert descs[0].usage_count == 0
    assert sweep.victim() is descs[0]


def test_pin_caps_usage_count() -> None:
    d = _descs(1)[0]
    for _ in range(BM_MAX_USAGE_COUNT + 3):
        d.pin()
    assert d.usage_count == BM_MAX_USAGE_COUNT
    assert d.refcount == BM_MAX_USAGE_COUNT + 3


def test_pinned_and_in_flight_buffers_are_never_victims() -> None:
    descs = _descs(3)
    sweep = ClockSweep(descs)
    _occupy(sweep)
    descs[0].refcount = 1
    descs[1].io = object()  # type: ignore[assignment]
    assert sweep.victim() is descs[2]
    descs[2].refcount = 1
    assert sweep.victim() is None  # every buffer pinned or busy: the sweep gives up


def test_sweep_gives_up_after_decrementing_to_zero_only_if_all_pinned() -> None:
    descs = _descs(4)
    sweep = ClockSweep(descs)
    _occupy(sweep)
    for d in descs:
        d.usage_count = BM_MAX_USAGE_COUNT
    descs[3].refcount = 1
    victim = sweep.victim()
    assert victim is descs[0]
    assert all(d.usage_count == 0 for d in descs[:3])


def test_dirty_ahead_lists_reusable_dirty_buffers_from_the_hand() -> None:
    descs = _descs(5)
    sweep = ClockSweep(descs)
    _occupy(sweep)
    for d in descs:
        d.dirty = True
    descs[1].refcount = 1
    descs[2].usage_count = 1
    sweep.hand = 1
    assert list(sweep.dirty_ahead(10)) == [descs[3], descs[4], descs[0]]
    assert list(sweep.dirty_ahead(2)) == [descs[3], descs[4]]
    assert sweep.hand == 1 and descs[2].usage_count == 1  # looking never moves anything
