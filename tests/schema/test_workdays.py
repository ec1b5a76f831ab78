"""Working-day limits across the holiday weeks, with make-up working days, checked by hand.

Expected dates come from the State Council schedules, counted by hand, not from the code:
2025 National Day: off 10/1-10/8, work Sun 9/28 and Sat 10/11.
2026 Spring Festival: off 2/15-2/23, work Sat 2/14 and Sat 2/28.
2026 Mid-Autumn and National Day: off 9/25, 10/1-10/7, work Sat 10/10.
"""

from __future__ import annotations

from datetime import date

import pytest

from schema.workdays import NATIONAL, WorkCalendar

D = date


@pytest.mark.parametrize(
    ("start", "n", "due"),
    [
        # Art. 23(3): 5 working days to object, across National Day 2025
        (D(2025, 9, 30), 5, D(2025, 10, 14)),  # 10/9, 10/10, Sat 10/11 (make-up), 10/13, 10/14
        (D(2025, 9, 26), 5, D(2025, 10, 10)),  # Sun 9/28 (make-up), 9/29, 9/30, 10/9, 10/10
        (D(2025, 9, 27), 1, D(2025, 9, 28)),  # a Sunday that is a working day
        # Spring Festival 2026
        (D(2026, 2, 13), 5, D(2026, 2, 27)),  # Sat 2/14, then 2/24, 2/25, 2/26, 2/27
        (D(2026, 2, 14), 5, D(2026, 2, 28)),  # 2/24 .. 2/27, Sat 2/28 (make-up)
        (D(2026, 2, 16), 1, D(2026, 2, 24)),  # mid-holiday: the first day back
        # Mid-Autumn 2026 (Fri 9/25) and National Day 2026
        (D(2026, 9, 24), 3, D(2026, 9, 30)),  # 9/28, 9/29, 9/30
        (D(2026, 9, 30), 3, D(2026, 10, 10)),  # 10/8, 10/9, Sat 10/10 (make-up)
        # simplified handling: 10 working days, across a month end, and an ordinary week
        (D(2026, 1, 26), 10, D(2026, 2, 9)),  # 1/27-1/30, 2/2-2/6, 2/9
        (D(2026, 6, 1), 3, D(2026, 6, 4)),
    ],
)
def test_working_day_limits_match_the_published_calendar(start: date, n: int, due: date) -> None:
    got, estimated = NATIONAL.add_workdays(start, n)
    assert got == due
    assert estimated is False


def test_a_year_without_a_published_calendar_is_counted_as_an_estimate() -> None:
    got, estimated = NATIONAL.add_workdays(D(2026, 12, 30), 5)
    assert estimated is True
    assert got.year == 2027 and got.weekday() < 5


def test_county_overrides_win_over_the_national_calendar() -> None:
    cal = WorkCalendar.with_overrides(holidays=[D(2026, 6, 2)], workdays=[D(2026, 6, 6)])
    got, _ = cal.add_workdays(D(2026, 6, 1), 3)  # 6/2 off by the county, 6/3, 6/4, 6/5
    assert got == D(2026, 6, 5)
    got, _ = cal.add_workdays(D(2026, 6, 4), 2)  # 6/5, Sat 6/6 worked by the county
    assert got == D(2026, 6, 6)


def test_a_limit_below_one_day_is_refused() -> None:
    with pytest.raises(ValueError):
        NATIONAL.add_workdays(D(2026, 6, 1), 0)
