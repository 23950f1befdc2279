"""FifoLock and HandOff (aiopg_io/_handoff.py) on every loop: tasks through in arrival order,
a waiter cancelled in line leaves it, and a turn given to a task cancelled before it runs is
handed on (so the line never stalls)."""

from __future__ import annotations

import anyio
import pytest

from aiopg_io._handoff import FifoLock, HandOff

pytestmark = pytest.mark.anyio


async def _until(cond: object) -> None:
    """Yield until ``cond()`` holds (each task parks within a few loop iterations)."""
    for _ in range(1000):
        if cond():  # type: ignore[operator]
            return
        await anyio.sleep(0)
    raise AssertionError("the tasks never parked")


async def test_handoff_wakes_one_at_a_time_in_arrival_order() -> None:
    line = HandOff()
    assert len(line) == 0 and line.wake_one() is False
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await line.wait()
        woken.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(waiter, i)
            await _until(lambda n=i + 1: len(line) == n)  # parked in the order started
        for n in range(1, 4):
            assert line.wake_one() is True
            await _until(lambda n=n: len(woken) == n)
        assert woken == [0, 1, 2] and len(line) == 2
        line.wake_all()  # together: the loop may run them in any order (trio shuffles)
    assert woken[:3] == [0, 1, 2] and sorted(woken[3:]) == [3, 4] and len(line) == 0


async def test_handoff_waiter_cancelled_in_line_leaves_it() -> None:
    unused: list[str] = []
    line = HandOff(on_unused=lambda: unused.append("turn"))
    woken: list[str] = []

    async def waiter(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await line.wait()
            woken.append(name)

    a, b = anyio.CancelScope(), anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "a", a)
        await _until(lambda: len(line) == 1)
        tg.start_soon(waiter, "b", b)
        await _until(lambda: len(line) == 2)
        a.cancel()  # not woken yet: it leaves the line, no turn is lost
        await _until(lambda: len(line) == 1)
        assert line.wake_one() is True
    assert woken == ["b"] and unused == [] and a.cancelled_caught


async def test_fifo_lock_passes_to_waiters_in_arrival_order() -> None:
    lock = FifoLock()
    assert not lock.contended
    order: list[int] = []

    async def user(i: int) -> None:
        async with lock:
            order.append(i)
            await anyio.sleep(0)  # hold it across a schedule point: the others must queue

    await lock.acquire()
    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(user, i)
            await _until(lambda n=i + 1: len(lock._line) == n)
        assert lock.contended
        lock.release()
    assert order == list(range(6))
    assert not lock.contended


async def test_fifo_lock_turn_given_to_a_waiter_cancelled_later_is_used_then_passed() -> None:
    """The holder releases (the lock passes to ``a``), then ``a``'s scope is cancelled in the
    same tick. anyio never throws into a task already woken: ``a`` takes its turn, and its
    cancellation lands after; ``b`` gets the lock next and the lock ends free."""
    lock = FifoLock()
    got: list[str] = []

    async def user(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            async with lock:
                got.append(name)
                await anyio.sleep(0)  # where ``a``'s cancellation lands, lock held

    a, b = anyio.CancelScope(), anyio.CancelScope()
    await lock.acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(user, "a", a)
        await _until(lambda: len(lock._line) == 1)
        tg.start_soon(user, "b", b)
        await _until(lambda: len(lock._line) == 2)
        lock.release()
        a.cancel()
    assert got == ["a", "b"] and a.cancelled_caught and not b.cancelled_caught
    assert not lock.contended and len(lock._line) == 0


async def test_fifo_lock_turn_given_to_a_task_cancelled_before_it_runs_goes_to_the_next(
    anyio_backend_name: str,
) -> None:
    """asyncio's own ``Task.cancel`` throws into a task whose wake-up is given but not yet
    taken (as a cancelled ``asyncio.Lock.acquire`` sees): that task hands its turn to the next
    in line. trio never throws into a task already rescheduled, so there it cannot happen."""
    if anyio_backend_name == "trio":
        pytest.skip("trio never cancels a task already woken: the hand-on path is asyncio's")
    import asyncio

    lock = FifoLock()
    got: list[str] = []
    tasks: dict[str, asyncio.Task[object]] = {}

    async def user(name: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks[name] = task
        try:
            async with lock:
                got.append(name)
        except asyncio.CancelledError:
            got.append(f"{name} cancelled")

    await lock.acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(user, "a")
        await _until(lambda: len(lock._line) == 1)
        tg.start_soon(user, "b")
        await _until(lambda: len(lock._line) == 2)
        lock.release()
        tasks["a"].cancel()  # in the same tick: `a` has its wake-up but has not run yet
    assert got == ["a cancelled", "b"]
    assert not lock.contended and len(lock._line) == 0
