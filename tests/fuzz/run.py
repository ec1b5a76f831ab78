"""Running a Hypothesis strategy a fixed number of times from a plain function (the CLI,
and tests that count rather than shrink): the body records what it sees in a Part."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
         HealthCheck.large_base_example]


def drive(strategy: st.SearchStrategy[Any], body: Callable[[Any], None], *, examples: int, seed: int | None) -> int:
    """Call ``body`` on ``examples`` values drawn from ``strategy`` (fewer if it runs dry, none
    when it can draw nothing: negative data for an operation without parameters); how many."""
    calls = 0

    @settings(max_examples=examples, database=None, deadline=None, suppress_health_check=QUIET,
              phases=[Phase.generate])
    @given(strategy)
    def each(value: Any) -> None:
        nonlocal calls
        calls += 1
        body(value)

    if seed is not None:
        each = hypothesis_seed(seed)(each)
    try:
        each()
    except Unsatisfiable:
        pass
    return calls
