"""A hypothesis state machine: the pool against a plain dict of pages.

Each example drives one event loop (a blocking portal on the test's backend) and one pool of
few buffers over one relation, so that every rule makes the pool evict, write back, combine
and wait. After every flush the file must equal the model; every page read must equal it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from aiopg_io.buffers import BlockOutOfRangeError, BufferPool, NoUnpinnedBuffersError, Page, Relation

PS = 512
NBUFFERS = 4
INITIAL_BLOCKS = 6


def _machine(
    portal: BlockingPortal, data_dir: Path, driver: str, open_pools: list[Any]
) -> type[RuleBasedStateMachine]:
    counter = iter(range(1_000_000))

    class PoolMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.path = data_dir / f"rel{next(counter)}"
            self.model: dict[int, bytes] = {b: bytes([b + 1]) * PS for b in range(INITIAL_BLOCKS)}
            self.path.write_bytes(b"".join(self.model[b] for b in range(INITIAL_BLOCKS)))
            self.pool = BufferPool(NBUFFERS, PS, driver=driver)
            # The pool's task group must live in one task: the portal gives it one.
            self.pool_cm = portal.wrap_async_context_manager(self.pool)
            self.pool_cm.__enter__()
            open_pools.append(self.pool_cm)
            self.rel: Relation = self.call(self.pool.open, self.path)
            self.pins: list[Page] = []

        def call(self, fn: Callable[..., Any], *args: Any) -> Any:
            return portal.call(fn, *args)

        def teardown(self) -> None:
            for p in self.pins:
                self.call(p.release)
            open_pools.remove(self.pool_cm)
            self.pool_cm.__exit__(None, None, None)
            assert self.path.read_bytes() == self.file_image()  # closing checkpoints

        def file_image(self) -> bytes:
            return b"".join(self.model[b] for b in range(len(self.model)))

        blocks = st.integers(0, 40)

        def _block(self, b: int) -> int:
            return b % len(self.model)

        @rule(b=blocks, offset=st.integers(0, PS - 8), data=st.binary(min_size=1, max_size=8))
        def write(self, b: int, offset: int, data: bytes) -> None:
            b = self._block(b)

            async def go() -> None:
                with await self.pool.read_page(self.rel, b) as page:
                    assert bytes(page.data) == self.model[b]
                    page.data[offset : offset + len(data)] = data
                    page.mark_dirty()

            self.call(go)
            m = bytearray(self.model[b])
            m[offset : offset + len(data)] = data
            self.model[b] = bytes(m)

        @rule(b=blocks)
        def read(self, b: int) -> None:
            b = self._block(b)

            async def go() -> bytes:
                with await self.pool.read_page(self.rel, b) as page:
                    return bytes(page.data)

            assert self.call(go) == self.model[b]

        @precondition(lambda self: len(self.pins) < NBUFFERS - 1)
        @rule(b=blocks)
        def pin(self, b: int) -> None:
            b = self._block(b)
            page = self.call(self.pool.read_page, self.rel, b)
            assert bytes(page.data) == self.model[b]
            self.pins.append(page)

        @precondition(lambda self: bool(self.pins))
        @rule(i=st.integers(0, 10), byte=st.integers(0, 255))
        def modify_pinned(self, i: int, byte: int) -> None:
            page = self.pins[i % len(self.pins)]

            def go() -> None:
                page.data[-1] = byte
                page.mark_dirty()

            self.call(go)
            self.model[page.blockno] = self.model[page.blockno][:-1] + bytes([byte])

        @precondition(lambda self: bool(self.pins))
        @rule(i=st.integers(0, 10))
        def unpin(self, i: int) -> None:
            self.call(self.pins.pop(i % len(self.pins)).release)

        @rule()
        def pin_everything_then_one_more(self) -> None:
            async def go() -> BaseException | None:
                extra = []
                pinned = {p.blockno for p in self.pins}
                try:
                    for blockno in range(len(self.model)):
                        if len(pinned) == NBUFFERS:
                            break
                        if blockno not in pinned:
                            extra.append(await self.pool.read_page(self.rel, blockno))
                            pinned.add(blockno)
                    missing = min(set(range(len(self.model))) - pinned)
                    try:
                        await self.pool.read_page(self.rel, missing)
                    except NoUnpinnedBuffersError as exc:
                        return exc
                    return None
                finally:
                    for p in extra:
                        p.release()

            # pytest.raises cannot run in the portal: its failure is a BaseException that
            # would stop the portal's loop.
            exc = self.call(go)
            assert isinstance(exc, NoUnpinnedBuffersError)
            assert f"{NBUFFERS} of the pool's {NBUFFERS} buffers are pinned" in str(exc)

        @rule(n=st.integers(1, 3))
        def extend(self, n: int) -> None:
            first = self.call(self.pool.extend, self.rel, n)
            assert first == len(self.model)
            for b in range(first, first + n):
                self.model[b] = bytes(PS)

        @rule()
        def flush(self) -> None:
            self.call(self.pool.flush)
            assert self.path.read_bytes() == self.file_image()

        @precondition(lambda self: not self.pins)
        @rule()
        def reopen(self) -> None:
            async def go() -> Relation:
                await self.pool.close_relation(self.rel)
                return await self.pool.open(self.path)

            self.rel = self.call(go)
            assert self.rel.nblocks == len(self.model)
            assert self.path.read_bytes() == self.file_image()

        @rule(
            blocks=st.lists(st.integers(0, 40), max_size=24),
            max_ios=st.integers(1, 4),
            combine=st.integers(1, 4),
            past_end=st.booleans(),
        )
        def stream(self, blocks: list[int], max_ios: int, combine: int, past_end: bool) -> None:
            want = [self._block(b) for b in blocks]
            if past_end:
                want.append(len(self.model) + 1)

            async def go() -> list[int]:
                got = []
                try:
                    stream = self.pool.read_stream(self.rel, want, max_ios=max_ios, io_combine_limit=combine)
                    async for page in stream:
                        with page:
                            assert bytes(page.data) == self.model[page.blockno]
                            got.append(page.blockno)
                except BlockOutOfRangeError:
                    assert past_end
                return got

            got = self.call(go)
            assert got == want[: len(want) - past_end]

        @rule(blocks=st.lists(st.integers(0, 40), min_size=2, max_size=12))
        def many_tasks(self, blocks: list[int]) -> None:
            async def reader(b: int) -> None:
                with await self.pool.read_page(self.rel, b) as page:
                    assert bytes(page.data) == self.model[b]
                    await anyio.sleep(0)
                    assert bytes(page.data) == self.model[b]

            async def go() -> None:
                async with anyio.create_task_group() as tg:
                    for b in blocks:
                        tg.start_soon(reader, self._block(b))

            self.call(go)

        @invariant()
        def consistent(self) -> None:
            self.call(self.pool._check_invariants)
            assert self.pool.statistics().pinned == len({id(p._desc) for p in self.pins})

    return PoolMachine


def _run(anyio_backend: Any, data_dir: Path, driver: str, max_examples: int) -> None:
    backend, options = anyio_backend
    open_pools: list[Any] = []
    with start_blocking_portal(backend, options) as portal:
        machine = _machine(portal, data_dir, driver, open_pools)
        try:
            run_state_machine_as_test(
                machine,
                settings=settings(
                    max_examples=max_examples,
                    stateful_step_count=25,
                    deadline=None,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
                ),
            )
        finally:
            for cm in open_pools:  # an example that failed before its teardown
                cm.__exit__(None, None, None)


def test_pool_against_a_dict_of_pages(anyio_backend: Any, data_dir: Path, driver: str) -> None:
    _run(anyio_backend, data_dir, driver, max_examples=12)


@pytest.mark.slow
def test_pool_against_a_dict_of_pages_long(anyio_backend: Any, data_dir: Path, driver: str) -> None:
    _run(anyio_backend, data_dir, driver, max_examples=300)
