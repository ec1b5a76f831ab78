"""Working days (工作日) on the Chinese public-holiday calendar, with make-up working days (调休).

Some statutory limits count working days (信访工作条例 Art. 23(3): 5 working days to object
that a matter is not one's responsibility; local simplified handling: 3 / 10). The
national calendar comes from the maintained ``chinesecalendar`` package (holidays and
make-up days as the State Council publishes them each year). A year the package does not
cover yet (the next year's schedule is published late in the year) falls back to
"Monday to Friday", plus any days the county configures, and the result says it is an
estimate, so a deadline never pretends to a certainty it does not have.

Counting: a limit of N working days from an event ends at the close of the Nth working
day *after* the event's day (the event's own day is not counted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

import chinese_calendar


@dataclass(frozen=True)
class WorkCalendar:
    """The national calendar plus county overrides (extra holidays, extra working days)."""

    extra_holidays: frozenset[date] = field(default_factory=frozenset)
    extra_workdays: frozenset[date] = field(default_factory=frozenset)

    @classmethod
    def with_overrides(cls, holidays: Iterable[date] = (), workdays: Iterable[date] = ()) -> WorkCalendar:
        return cls(frozenset(holidays), frozenset(workdays))

    def is_workday(self, day: date) -> tuple[bool, bool]:
        """(is it a working day, is that only an estimate because the year is not published)."""
        if day in self.extra_workdays:
            return True, False
        if day in self.extra_holidays:
            return False, False
        try:
            return bool(chinese_calendar.is_workday(day)), False
        except NotImplementedError:
            return day.weekday() < 5, True

    def add_workdays(self, start: date, n: int) -> tuple[date, bool]:
        """The Nth working day after ``start``, and whether any day counted was an estimate."""
        if n < 1:
            raise ValueError("a working-day limit is at least 1 day")
        day = start
        counted = 0
        estimated = False
        while counted < n:
            day += timedelta(days=1)
            work, guess = self.is_workday(day)
            estimated = estimated or guess
            if work:
                counted += 1
        return day, estimated


NATIONAL = WorkCalendar()
