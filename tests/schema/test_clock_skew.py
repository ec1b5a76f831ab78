"""A laptop whose wall clock is a week off: deadlines from the stamps, typed times corrected, the case flagged.

``CaseBuilder(skew_ms=...)`` writes each op's ``occurred_at`` (and the default
``received_at``) from a wall clock that is off by that much, while the stamps (the
synchronised clock) are right.
"""

from __future__ import annotations

import pytest

from schema.obligations import DAY_MS, case_status, sweep_ops
from schema.rules import default_rules, parse_rules
from schema.stamp import parse as parse_stamp
from tests.casebuild import CaseBuilder, ms, new_ops, sweep_context

RULES = default_rules()
WEEK = 7 * DAY_MS
VILLAGE = "330102101"


def skewed_case(skew: int, device: str = "lap0000000000007") -> CaseBuilder:
    b = CaseBuilder(level="village", node=VILLAGE, skew_ms=skew, device=device)
    b.create("2026-03-02T10:00:00+08:00")  # received_at typed from the laptop's clock
    b.transition("accept", "2026-03-03T10:00:00+08:00")
    return b


@pytest.mark.parametrize("skew", [WEEK, -WEEK], ids=["a-week-fast", "a-week-slow"])
def test_deadlines_come_from_the_stamps_and_the_typed_receipt_is_corrected(skew: int) -> None:
    b = skewed_case(skew)
    typed = b.ops[0].values["received_at"]
    assert typed == ("2026-03-09T10:00:00+08:00" if skew > 0 else "2026-02-23T10:00:00+08:00")
    st = case_status(b.case_id, b.ops, RULES, ms("2026-03-04T00:00:00+08:00"))
    due = {o.rule: (o.start, o.due) for o in st.obligations}
    assert due["village_handling"] == ("2026-03-02T10:00:00+08:00", "2026-03-09T23:59:59+08:00")
    assert due["register_route"] == ("2026-03-02T10:00:00+08:00", "2026-03-17T23:59:59+08:00")
    assert due["handle_decide"] == ("2026-03-03T10:00:00+08:00", "2026-05-02T23:59:59+08:00")
    assert st.colour == "blue"  # village_handling within 7 days, nothing passed
    flags = [f for f in st.flags if f["flag"] == "clock_skew"]
    assert len(flags) == 1
    assert flags[0]["device"] == "lap0000000000007"
    assert flags[0]["skew_minutes"] == (10080 if skew > 0 else -10080)
    assert flags[0]["op_id"] == b.ops[0].op_id


@pytest.mark.parametrize("skew", [WEEK, -WEEK], ids=["a-week-fast", "a-week-slow"])
def test_the_sweep_records_the_skew_once_as_an_alert(skew: int) -> None:
    b = skewed_case(skew)
    now = ms("2026-03-04T00:00:00+08:00")
    _, out = sweep_ops(b.case_id, b.ops, RULES, now, sweep_context())
    alerts = [o for o in out if o.entity == "alert" and o.values["kind"] == "clock_skew"]
    assert len(alerts) == 1
    a = alerts[0]
    assert a.values["related_op"] == b.ops[0].op_id
    assert "lap0000000000007" in a.values["message"]
    assert parse_stamp(a.stamp).ms // 1000 == ms("2026-03-02T10:00:00+08:00") // 1000
    b.ops.extend(new_ops(b.ops, out))
    _, again = sweep_ops(b.case_id, b.ops, RULES, now + DAY_MS, sweep_context())
    assert new_ops(b.ops, again) == []


def test_typed_dates_of_notices_and_visits_are_corrected_too() -> None:
    b = CaseBuilder(level="county", node="330100", skew_ms=WEEK)
    b.create("2026-03-02T10:00:00+08:00")
    b.transition("accept", "2026-03-03T10:00:00+08:00")
    # the acceptance notice served on 3/16 (real), typed as 3/23 from the laptop's calendar
    n = b.notice("acceptance", "2026-03-23", at="2026-03-16T15:00:00+08:00")
    b.transition("decide", "2026-03-20T10:00:00+08:00")
    b.transition("close", "2026-03-21T10:00:00+08:00")
    v = b.visit("follow_up", "2026-04-01T10:00:00+08:00", at="2026-03-25T10:00:00+08:00")  # typed +7 days
    st = case_status(b.case_id, b.ops, RULES, ms("2026-04-20T00:00:00+08:00"))
    rn = [o for o in st.obligations if o.rule == "receipt_notice"][0]
    assert (rn.state, rn.met_at, rn.late, rn.met_by) == ("met", "2026-03-16T00:00:00+08:00", False, n.op_id)
    fu = [o for o in st.obligations if o.rule == "follow_up"][0]
    assert (fu.state, fu.met_at, fu.met_by) == ("met", "2026-03-25T10:00:00+08:00", v.op_id)


def test_a_mediation_agreement_typed_on_a_slow_clock_starts_the_window_on_the_real_day() -> None:
    b = CaseBuilder(level="village", node=VILLAGE, category="dispute", skew_ms=-WEEK)
    b.create("2026-03-02T10:00:00+08:00")
    b.transition("accept", "2026-03-03T10:00:00+08:00")
    b.mediation("agreement", "2026-03-03T15:00:00+08:00", at="2026-03-10T16:00:00+08:00")  # real: 3/10 15:00
    st = case_status(b.case_id, b.ops, RULES, ms("2026-03-11T00:00:00+08:00"))
    jc = [o for o in st.obligations if o.rule == "judicial_confirmation_window"][0]
    assert (jc.start, jc.due) == ("2026-03-10T15:00:00+08:00", "2026-04-09T23:59:59+08:00")


def test_a_typed_time_never_lies_after_the_op_that_recorded_it() -> None:
    b = CaseBuilder(level="county", node="330100")
    b.create("2026-03-02T10:00:00+08:00", received_at="2026-03-05T10:00:00+08:00")  # a typo: 3 days ahead
    st = case_status(b.case_id, b.ops, RULES, ms("2026-03-03T00:00:00+08:00"))
    assert [o.start for o in st.obligations if o.rule == "register_route"] == ["2026-03-02T10:00:00+08:00"]


def test_a_receipt_typed_days_before_the_record_counts_from_the_typed_day() -> None:
    b = CaseBuilder(level="county", node="330100")
    b.create("2026-03-05T10:00:00+08:00", received_at="2026-03-02T09:00:00+08:00")
    st = case_status(b.case_id, b.ops, RULES, ms("2026-03-06T00:00:00+08:00"))
    assert [o.due for o in st.obligations if o.rule == "register_route"] == ["2026-03-17T23:59:59+08:00"]
    assert not [f for f in st.flags if f["flag"] == "clock_skew"]


@pytest.mark.parametrize(
    ("skew_minutes", "max_skew", "flagged", "start"),
    [
        (-20, 30, False, "2026-03-02T09:40:00+08:00"),  # not flagged, so the receipt is taken as typed
        (-31, 30, True, "2026-03-02T10:00:00+08:00"),
        (-20, 10, True, "2026-03-02T10:00:00+08:00"),
        (45, 30, True, "2026-03-02T10:00:00+08:00"),
        (20, 30, False, "2026-03-02T10:00:00+08:00"),  # typed 10:20, but never after the record (10:00)
    ],
    ids=["20-slow-under-30", "31-slow-over-30", "20-slow-over-10", "45-fast", "20-fast-under-30"],
)
def test_only_a_skew_beyond_the_countys_limit_is_flagged_and_corrected(
        skew_minutes: int, max_skew: int, flagged: bool, start: str) -> None:
    rules = parse_rules(f"[clock]\nmax_skew_minutes = {max_skew}\n")
    b = skewed_case(skew_minutes * 60_000)
    st = case_status(b.case_id, b.ops, rules, ms("2026-03-04T00:00:00+08:00"))
    assert any(f["flag"] == "clock_skew" for f in st.flags) is flagged
    assert [o.start for o in st.obligations if o.rule == "village_handling"] == [start]


def test_two_skewed_laptops_on_one_case_are_flagged_each_once() -> None:
    b = skewed_case(WEEK, device="lap0000000000007")
    b.skew_ms = -2 * DAY_MS
    b.visit("home", "2026-03-04T10:00:00+08:00", at="2026-03-06T10:00:00+08:00")
    b.op("2026-03-06T11:00:00+08:00", "note", "f" * 32, "create",
         {"text": "入户走访", "written_at": "2026-03-04T11:00:00+08:00"}, device="lap0000000000008")
    st, out = sweep_ops(b.case_id, b.ops, RULES, ms("2026-03-07T00:00:00+08:00"), sweep_context())
    devices = sorted(f["device"] for f in st.flags if f["flag"] == "clock_skew")
    assert devices == ["lap0000000000007", "lap0000000000008"]
    assert len([o for o in out if o.values.get("kind") == "clock_skew"]) == 2
