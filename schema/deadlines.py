"""The next deadline of a case, from its lifecycle: which rule, from which event, when.

A first, deliberately small set of rules from DOMAIN.md "Deadlines" (calendar days,
counted in China time); the deadlines issue widens this into the full obligations
engine with county config and working days. Every result names its rule and start event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")


@dataclass(frozen=True)
class Due:
    """One deadline: when, by which rule, counted from which event."""

    rule: str
    zh: str
    start_event: str
    start: str
    due: str  # ISO 8601, China time, end of the last day


# rule id -> (days, Chinese label, source)
RULES: dict[str, tuple[int, str, str]] = {
    "register_route": (15, "登记转送/告知(15日)", "信访工作条例 Art. 22/23"),
    "village_handling": (7, "村级办理时限(7日)", "local default"),
    "township_handling": (15, "乡镇办理时限(15日)", "local default"),
    "handle_decide": (60, "受理后办理(60日)", "信访工作条例 Art. 34"),
    "review_decide": (30, "复查决定(30日)", "信访工作条例 Art. 35"),
    "rereview_decide": (30, "复核决定(30日)", "信访工作条例 Art. 36"),
}


def _end_of_day_after(start: str, days: int) -> str:
    t = datetime.fromisoformat(start).astimezone(CHINA)
    end = datetime(t.year, t.month, t.day, 23, 59, 59, tzinfo=CHINA) + timedelta(days=days)
    return end.isoformat()


def case_deadlines(case: Mapping[str, Any]) -> list[Due]:
    """The deadlines open on a case row (state, level, received_at, accepted_at, ...)."""
    state = case.get("state")
    out: list[Due] = []

    def add(rule: str, event: str, start: str | None, extra_days: int = 0) -> None:
        if not start:
            return
        days, zh, _ = RULES[rule]
        out.append(Due(rule, zh, event, start, _end_of_day_after(start, days + extra_days)))

    if case.get("voided"):
        return out
    if state in ("registered", "routed"):
        add("register_route", "received", case.get("received_at"))
    if state in ("registered", "routed", "accepted", "in_handling", "extended"):
        if case.get("level") == "village":
            add("village_handling", "received", case.get("received_at"))
        elif case.get("level") == "township":
            add("township_handling", "reported_up", case.get("level_since"))
    if state in ("accepted", "in_handling", "extended"):
        add("handle_decide", "accepted", case.get("accepted_at"), int(case.get("extended_days") or 0))
    if state == "review_requested":
        add("review_decide", "review_requested", case.get("state_since"))
    if state == "rereview_requested":
        add("rereview_decide", "rereview_requested", case.get("state_since"))
    return sorted(out, key=lambda d: d.due)


def next_due(case: Mapping[str, Any]) -> Due | None:
    dues = case_deadlines(case)
    return dues[0] if dues else None
