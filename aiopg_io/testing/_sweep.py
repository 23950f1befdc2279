"""The Nth-I/O sweep: run a scenario failing its 1st, 2nd, 3rd... matching op, until a run
completes with nothing injected (SQLite's "I/O error" tests, run for every I/O in turn).

Each run gets a fresh :class:`~aiopg_io.testing.FaultInjector` whose one rule is the
``fault`` template with ``nth=n`` and ``times=1``, so run ``n`` fails exactly the ``n``-th
op the template matches and nothing else. The injector is passed to the scenario and is
also the default driver inside it (as with :func:`~aiopg_io.testing.inject`), so code that
opens files without ``driver=`` is covered as well.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..drivers import DriverFactory, default_driver
from ._errors import SweepLimitError
from ._faults import Fault, Injection
from ._injector import FaultInjector

__all__ = ["SweepOutcome", "SweepReport", "sweep"]


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    """One run of a sweep: ``n`` (the matching op that was failed), and what the scenario
    did: ``error`` is None when it completed, else the exception it raised."""

    n: int
    error: BaseException | None
    log: tuple[Injection, ...]
    ops: int  # ops the injector saw in the run

    @property
    def completed(self) -> bool:
        return self.error is None

    @property
    def injected(self) -> bool:
        return bool(self.log)

    def describe(self) -> str:
        """``"completed"`` or ``"OSError: [Errno 5] ..."``."""
        if self.error is None:
            return "completed"
        return f"{type(self.error).__name__}: {self.error}"


@dataclass(slots=True)
class SweepReport:
    fault: Fault
    outcomes: list[SweepOutcome] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.outcomes)

    @property
    def failures(self) -> list[SweepOutcome]:
        """The runs in which the scenario raised."""
        return [o for o in self.outcomes if o.error is not None]

    def __str__(self) -> str:
        lines = [f"sweep of {self.fault!r}: {self.runs} runs"]
        for o in self.outcomes:
            what = "; ".join(str(i) for i in o.log) or "nothing injected"
            lines.append(f"  n={o.n}: {what} -> {o.describe()}")
        return "\n".join(lines)


def _note(exc: BaseException, text: str) -> None:
    add_note = getattr(exc, "add_note", None)  # Python >= 3.11
    if add_note is not None:
        add_note(text)


Scenario = Callable[[FaultInjector], Awaitable[object]]
Check = Callable[[SweepOutcome, FaultInjector], "Awaitable[object] | object"]


async def sweep(
    scenario: Scenario,
    *,
    fault: Fault | None = None,
    driver: str | DriverFactory | None = None,
    max_n: int = 1000,
    start: int = 1,
    expected: tuple[type[BaseException], ...] = (OSError,),
    check: Check | None = None,
    seed: int = 0,
) -> SweepReport:
    """Run ``await scenario(injector)`` with ``fault`` hitting the ``n``-th matching op, for
    ``n = start, start+1, ...``, until a run completes with nothing injected.

    - ``fault``: the rule to sweep (``nth`` and ``times`` are overridden); default
      ``Fault(errno=EIO)`` on every op kind.
    - ``driver``: the driver under the injector (a name, a spec, a
      :class:`~aiopg_io.testing.PowerLossSimulator`...; default: the one files use here).
    - ``expected``: exception types a run may end with (a scenario that catches the
      injected error and completes is fine too). Anything else propagates at once, with
      a note naming ``n`` and the injection: the code under test leaked an undocumented
      exception. An expected exception in a run where nothing was injected propagates too
      (the scenario fails on its own).
    - ``check``: called after every run with the outcome and the injector (sync or async):
      verify invariants, simulate a crash and reopen, check no fd leaked...
    - ``max_n``: raise :class:`SweepLimitError` (with the report) if run ``max_n`` still
      injected something.
    """
    template = fault if fault is not None else Fault()
    report = SweepReport(template)
    for n in range(start, max_n + 1):
        rule = dataclasses.replace(template, nth=n, times=1)
        injector = FaultInjector(rule, driver=driver, seed=seed)
        error: BaseException | None = None
        with default_driver(injector):
            try:
                await scenario(injector)
            except expected as exc:
                error = exc
            except Exception as exc:
                what = "; ".join(str(i) for i in injector.log) or "nothing injected"
                _note(exc, f"aiopg_io.testing.sweep: run n={n} ({what}) raised an unexpected exception")
                raise
        outcome = SweepOutcome(n, error, tuple(injector.log), injector.ops)
        report.outcomes.append(outcome)
        if check is not None:
            result = check(outcome, injector)
            if inspect.isawaitable(result):
                await result
        if not injector.injected:
            if error is not None:
                _note(error, f"aiopg_io.testing.sweep: run n={n} failed with nothing injected")
                raise error
            return report
    raise SweepLimitError(
        f"sweep reached max_n={max_n} and run {max_n} still injected a fault: the scenario has more "
        f"matching ops than that; raise max_n or narrow the fault ({template!r})",
        report,
    )
