"""Every deadline of DOMAIN.md's table, against the figures there, counted by hand.

One row per rule (and per way of starting or meeting it): the ops that start it, the
expected start and due (China time, end of the last day), the state before / at / after
the due time, and the op that meets it. Expected dates are literals worked out by hand
from the calendar, never computed by the code under test.

Working days: the State Council's holiday notices (国务院办公厅关于 2025 / 2026 年部分节假日
安排的通知), which the ``chinesecalendar`` package encodes:

* 2025 春节: off 1/28-2/4; work Sun 1/26 and Sat 2/8.
* 2025 国庆·中秋: off 10/1-10/8; work Sun 9/28 and Sat 10/11.
* 2026 春节: off 2/15-2/23; work Sat 2/14 and Sat 2/28 (Fri 2/13 is an ordinary working day).
* 2026 中秋: off 9/25-9/27; 国庆: off 10/1-10/7; work Sun 9/20 and Sat 10/10.

Years after the package's data (2027 on) are counted Monday to Friday and say ``estimated``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import chinese_calendar
import pytest

from schema.obligations import DAY_MS, Obligation, case_status
from schema.rules import default_rules, parse_rules
from tests.casebuild import CaseBuilder, ms

RULES = default_rules()
VILLAGE = "330102101"
TOWNSHIP = "330102"
COUNTY = "330100"


def at(day: str, hhmm: str = "10:00") -> str:
    return f"{day}T{hhmm}:00+08:00"


def end_of(day: str) -> str:
    return f"{day}T23:59:59+08:00"


def the(b: CaseBuilder, now: str | int, rule: str, start_event: str | None = None, rules=RULES) -> Obligation:
    now_ms = ms(now) if isinstance(now, str) else now
    st = case_status(b.case_id, b.ops, rules, now_ms)
    found = [o for o in st.obligations if o.rule == rule and (start_event is None or o.start_event == start_event)]
    assert len(found) == 1, f"expected one {rule} obligation, got {[(o.rule, o.start_event, o.due) for o in st.obligations]}"
    return found[0]


# ---- the ops that start each obligation ----

def petition(level: str = "county", node: str = COUNTY, **values: object) -> CaseBuilder:
    b = CaseBuilder(level=level, node=node, category="complaint")
    b.create(at("2026-03-02"), **values)  # Monday; received and recorded then
    return b


def decided(b: CaseBuilder) -> None:
    b.transition("accept", at("2026-03-03", "09:00"))
    b.transition("decide", at("2026-04-01"))


def closed(b: CaseBuilder) -> None:
    decided(b)
    b.transition("close", at("2026-04-02"))


def review_requested(b: CaseBuilder) -> None:
    closed(b)
    b.transition("request_review", at("2026-04-20"))


def review_decided(b: CaseBuilder) -> None:
    review_requested(b)
    b.transition("decide_review", at("2026-05-10"))


@dataclass(frozen=True)
class Row:
    id: str
    rule: str
    start_event: str
    start_event_zh: str
    build: Callable[[], CaseBuilder]
    start: str  # ISO, China time
    due: str  # the last day (YYYY-MM-DD); due is its end, 23:59:59+08:00
    kind: str  # duty | window
    meet: Callable[[CaseBuilder, str], object] | None  # add the op that meets it, at a time
    zh: str  # the rule's name with the county's figure
    met_at: str = "10:00"  # a notice meets it at the start of the day it was served


def _b(f: Callable[[CaseBuilder], object], **kw: object) -> Callable[[], CaseBuilder]:
    def build() -> CaseBuilder:
        b = petition(**kw)  # type: ignore[arg-type]
        f(b)
        return b

    return build


def _dispute(f: Callable[[CaseBuilder], object]) -> Callable[[], CaseBuilder]:
    def build() -> CaseBuilder:
        b = CaseBuilder(level="village", node=VILLAGE, category="dispute")
        b.create(at("2026-03-02"))
        f(b)
        return b

    return build


def _nothing(b: CaseBuilder) -> None:
    return None


def _accept(b: CaseBuilder) -> None:
    b.transition("accept", at("2026-03-03", "09:00"))


def _route(b: CaseBuilder) -> None:
    b.transition("route", at("2026-03-02", "15:00"))


def _leader(b: CaseBuilder) -> None:
    _accept(b)
    b.leader("2026-03-02", at=at("2026-03-02", "12:00"))


def _leader_progressed(b: CaseBuilder) -> None:
    _accept(b)
    a = b.leader("2026-03-02", at=at("2026-03-02", "12:00"))
    b.progress(a, "召开协调会", at=at("2026-03-06"))


def _extended(days: int) -> Callable[[CaseBuilder], None]:
    def f(b: CaseBuilder) -> None:
        _accept(b)
        b.transition("extend", at("2026-04-20"), **({"days": days} if days else {}))  # none: the full 30

    return f


def _decided_with_notice(b: CaseBuilder) -> None:
    decided(b)
    b.notice("decision", "2026-04-03", at=at("2026-04-03", "16:00"))
    b.transition("close", at("2026-04-04"))


def _review_decided_with_opinion(b: CaseBuilder) -> None:
    review_decided(b)
    b.notice("review_opinion", "2026-05-12", at=at("2026-05-12", "16:00"))


def _rereview_requested(b: CaseBuilder) -> None:
    review_decided(b)
    b.transition("request_rereview", at("2026-05-20"))


def _agreement(b: CaseBuilder) -> None:
    b.transition("accept", at("2026-03-03", "09:00"))
    b.mediation("agreement", at("2026-03-10", "15:00"))


def _village_reports_up(b: CaseBuilder) -> None:
    b.transition("escalate", at("2026-03-05"), acting_level="village")


def _reopened(b: CaseBuilder) -> None:
    closed(b)
    b.transition("reopen", at("2026-04-10"))


def _meet(action: str, **values: object) -> Callable[[CaseBuilder, str], object]:
    return lambda b, t: b.transition(action, t, **values)


def _meet_notice(kind: str) -> Callable[[CaseBuilder, str], object]:
    return lambda b, t: b.notice(kind, t[:10], at=t)


ROWS = [
    # 信访工作条例 Art. 22: register and route within 15 days of receipt
    Row("register_route", "register_route", "received", "收件", _b(_nothing), at("2026-03-02"), "2026-03-17",
        "duty", _meet("route"), "登记转送(15日)"),
    Row("register_route-met-by-accept", "register_route", "received", "收件", _b(_nothing), at("2026-03-02"),
        "2026-03-17", "duty", _meet("accept"), "登记转送(15日)"),
    Row("register_route-met-by-reject", "register_route", "received", "收件", _b(_nothing), at("2026-03-02"),
        "2026-03-17", "duty", _meet("reject"), "登记转送(15日)"),
    # Art. 23: written notice of receipt/route within 15 days of receipt
    Row("receipt_notice-route", "receipt_notice", "received", "收件", _b(_nothing), at("2026-03-02"), "2026-03-17",
        "duty", _meet_notice("route"), "书面告知(15日)", "00:00"),
    Row("receipt_notice-acceptance", "receipt_notice", "received", "收件", _b(_nothing), at("2026-03-02"),
        "2026-03-17", "duty", _meet_notice("acceptance"), "书面告知(15日)", "00:00"),
    Row("receipt_notice-non_acceptance", "receipt_notice", "received", "收件", _b(_nothing), at("2026-03-02"),
        "2026-03-17", "duty", _meet_notice("non_acceptance"), "书面告知(15日)", "00:00"),
    # Art. 23(3): 5 working days from routing (Mon 3/2 -> 3/3, 3/4, 3/5, 3/6, Mon 3/9)
    Row("objection_window", "objection_window", "routed", "转送/交办", _b(_route), at("2026-03-02", "15:00"),
        "2026-03-09", "window", None, "职责异议期(5个工作日)"),
    # Art. 34: 60 days from acceptance (3/3 + 60 = 5/2)
    Row("handle_decide", "handle_decide", "accepted", "受理", _b(_accept), at("2026-03-03", "09:00"), "2026-05-02",
        "duty", _meet("decide"), "受理后办结(60日)"),
    Row("handle_decide-met-by-agreement", "handle_decide", "accepted", "受理", _b(_accept),
        at("2026-03-03", "09:00"), "2026-05-02", "duty", _meet("close_by_agreement"), "受理后办结(60日)"),
    # Art. 34: extension at most 30 (5/2 + 30 = 6/1; + 15 = 5/17)
    Row("handle_decide-extended-30", "handle_decide", "accepted", "受理", _b(_extended(30)),
        at("2026-03-03", "09:00"), "2026-06-01", "duty", _meet("decide"), "受理后办结(60日)"),
    Row("handle_decide-extended-without-days", "handle_decide", "accepted", "受理", _b(_extended(0)),
        at("2026-03-03", "09:00"), "2026-06-01", "duty", _meet("decide"), "受理后办结(60日)"),
    Row("handle_decide-extended-15", "handle_decide", "accepted", "受理", _b(_extended(15)),
        at("2026-03-03", "09:00"), "2026-05-17", "duty", _meet("decide"), "受理后办结(60日)"),
    # reopened: 60 days again from the reopening (4/10 + 60 = 6/9)
    Row("handle_decide-reopened", "handle_decide", "reopened", "重新办理", _b(_reopened), at("2026-04-10"),
        "2026-06-09", "duty", _meet("decide"), "受理后办结(60日)"),
    # Art. 35: 30 days from receiving the decision: the notice's date (4/3 + 30 = 5/3) ...
    Row("review_request_window-notice", "review_request_window", "decision_served", "处理意见送达",
        _b(_decided_with_notice), "2026-04-03T00:00:00+08:00", "2026-05-03", "window", _meet("request_review"),
        "申请复查期(30日)"),
    # ... else the decide (4/1 + 30 = 5/1)
    Row("review_request_window-decide", "review_request_window", "decision_served", "处理意见送达", _b(closed),
        at("2026-04-01"), "2026-05-01", "window", _meet("request_review"), "申请复查期(30日)"),
    # Art. 35: review decision 30 days from the request (4/20 + 30 = 5/20)
    Row("review_decide", "review_decide", "review_requested", "申请复查", _b(review_requested), at("2026-04-20"),
        "2026-05-20", "duty", _meet("decide_review"), "复查决定(30日)"),
    # Art. 36: re-review request 30 days from the review decision (5/10 + 30 = 6/9), or its opinion served
    Row("rereview_request_window", "rereview_request_window", "review_decided", "复查决定", _b(review_decided),
        at("2026-05-10"), "2026-06-09", "window", _meet("request_rereview"), "申请复核期(30日)"),
    Row("rereview_request_window-opinion", "rereview_request_window", "review_decided", "复查决定",
        _b(_review_decided_with_opinion), "2026-05-12T00:00:00+08:00", "2026-06-11", "window",
        _meet("request_rereview"), "申请复核期(30日)"),
    # Art. 36: re-review decision 30 days (5/20 + 30 = 6/19)
    Row("rereview_decide", "rereview_decide", "rereview_requested", "申请复核", _b(_rereview_requested),
        at("2026-05-20"), "2026-06-19", "duty", _meet("decide_rereview"), "复核决定(30日)"),
    # 人民调解法 Art. 33: 30 days from the agreement (3/10 + 30 = 4/9)
    Row("judicial_confirmation_window", "judicial_confirmation_window", "agreement", "调解协议生效",
        _dispute(_agreement), at("2026-03-10", "15:00"), "2026-04-09", "window", None, "申请司法确认期(30日)"),
    # people's mediation: about one month from acceptance (3/3 + 30 = 4/2)
    Row("mediation_conclude", "mediation_conclude", "accepted", "受理", _dispute(_accept), at("2026-03-03", "09:00"),
        "2026-04-02", "duty", _meet("close_by_agreement"), "调解期限(30日)"),
    Row("mediation_conclude-met-by-decide", "mediation_conclude", "accepted", "受理", _dispute(_accept),
        at("2026-03-03", "09:00"), "2026-04-02", "duty", _meet("decide"), "调解期限(30日)"),
    # simplified handling: accept in 3 working days (Mon 3/2 -> 3/3, 3/4, 3/5) ...
    Row("simplified_accept", "simplified_accept", "received", "收件", _b(_nothing, simplified=True),
        at("2026-03-02"), "2026-03-05", "duty", _meet("accept"), "简易办理受理(3个工作日)"),
    # ... answer in 10 (Tue 3/3 -> 3/4 3/5 3/6 3/9 3/10 3/11 3/12 3/13 3/16 3/17)
    Row("simplified_answer", "simplified_answer", "accepted", "受理", _b(_accept, simplified=True),
        at("2026-03-03", "09:00"), "2026-03-17", "duty", _meet("decide"), "简易办理答复(10个工作日)"),
    # local: the village handles within 7 days of receipt (3/2 + 7 = 3/9), closing or reporting up
    Row("village_handling-decide", "village_handling", "received", "收件", _b(_accept, level="village", node=VILLAGE),
        at("2026-03-02"), "2026-03-09", "duty", _meet("decide"), "村级办理时限(7日)"),
    Row("village_handling-reports-up", "village_handling", "received", "收件",
        _b(_accept, level="village", node=VILLAGE), at("2026-03-02"), "2026-03-09", "duty",
        _meet("escalate", acting_level="village"), "村级办理时限(7日)"),
    Row("village_handling-rejects", "village_handling", "received", "收件",
        _b(_nothing, level="village", node=VILLAGE), at("2026-03-02"), "2026-03-09", "duty", _meet("reject"),
        "村级办理时限(7日)"),
    # local: the township within 15 days of the report up (3/5 + 15 = 3/20)
    Row("township_handling", "township_handling", "reported_up", "上报至本级",
        _b(_village_reports_up, level="village", node=VILLAGE), at("2026-03-05"), "2026-03-20", "duty",
        _meet("reject", acting_level="township"), "乡镇办理时限(15日)"),
    # local: a follow-up visit within 15 days of closing (4/2 + 15 = 4/17)
    Row("follow_up", "follow_up", "closed", "办结", _b(closed), at("2026-04-02"), "2026-04-17", "duty",
        lambda b, t: b.visit("follow_up", t), "办结后回访(15日)"),
    # local: a leader's progress entry every 7 days, from the assignment (3/2 + 7 = 3/9) ...
    Row("leader_progress", "leader_progress", "last_progress", "上次进展(或包案日期)", _b(_leader),
        "2026-03-02T00:00:00+08:00", "2026-03-09", "duty", None, "包案进展(每7日)"),
    # ... then from each entry (3/6 + 7 = 3/13)
    Row("leader_progress-after-entry", "leader_progress", "last_progress", "上次进展(或包案日期)",
        _b(_leader_progressed), at("2026-03-06"), "2026-03-13", "duty", None, "包案进展(每7日)"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_each_deadline_is_due_at_the_end_of_its_last_day_and_names_its_rule(row: Row) -> None:
    b = row.build()
    due_ms = ms(f"{row.due}T00:00:00+08:00") + DAY_MS - 1
    before = the(b, due_ms - DAY_MS, row.rule, row.start_event)
    assert (before.rule, before.kind, before.start_event) == (row.rule, row.kind, row.start_event)
    assert before.start_event_zh == row.start_event_zh
    assert before.zh == row.zh
    assert before.start == row.start
    assert before.due == end_of(row.due)
    assert before.due_ms == due_ms
    assert before.source  # its legal or local source is named
    assert before.estimated is False
    assert before.state == "pending"
    assert the(b, due_ms, row.rule, row.start_event).state == "pending"  # the whole last day counts
    after = the(b, due_ms + 1, row.rule, row.start_event)
    assert after.state == ("overdue" if row.kind == "duty" else "lapsed")


MEETABLE = [r for r in ROWS if r.meet is not None]


@pytest.mark.parametrize("row", MEETABLE, ids=[r.id for r in MEETABLE])
def test_each_deadline_is_met_on_its_last_day_by_the_op_that_does_the_work(row: Row) -> None:
    b = row.build()
    assert row.meet is not None
    op = row.meet(b, at(row.due, "10:00"))
    ob = the(b, at(row.due, "23:00") if row.kind == "window" else "2026-12-01T00:00:00+08:00", row.rule,
             row.start_event)
    assert ob.state == "met"
    assert ob.met_by == op.op_id  # type: ignore[attr-defined]
    assert ob.met_at == at(row.due, row.met_at)
    assert ob.late is False


DUTIES = [r for r in MEETABLE if r.kind == "duty"]


@pytest.mark.parametrize("row", DUTIES, ids=[r.id for r in DUTIES])
def test_work_done_the_day_after_meets_the_duty_late(row: Row) -> None:
    b = row.build()
    assert row.meet is not None
    nxt = date.fromisoformat(row.due).toordinal() + 1
    day = date.fromordinal(nxt).isoformat()
    op = row.meet(b, at(day, "08:00"))
    ob = the(b, "2026-12-01T00:00:00+08:00", row.rule, row.start_event)
    assert (ob.state, ob.late, ob.met_by) == ("met", True, op.op_id)  # type: ignore[attr-defined]


def test_leader_progress_is_met_by_the_next_entry_and_a_late_entry_shows_as_met_late() -> None:
    b = petition()
    _accept(b)
    a = b.leader("2026-03-02", at=at("2026-03-02", "12:00"))
    b.progress(a, "第一次", at=at("2026-03-06"))  # in time: the next period runs from it
    b.progress(a, "第二次", at=at("2026-03-16"))  # after 3/13: late
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-03-17")))
    lp = [o for o in st.obligations if o.rule == "leader_progress"]
    assert [(o.start, o.due, o.state, o.late) for o in lp] == [
        (at("2026-03-06"), end_of("2026-03-13"), "met", True),
        (at("2026-03-16"), end_of("2026-03-23"), "pending", False),
    ]


def test_a_decision_notice_does_not_count_as_the_written_notice_of_receipt() -> None:
    b = petition()
    b.notice("decision", "2026-03-05", at=at("2026-03-05"))
    assert the(b, at("2026-03-18"), "receipt_notice").state == "overdue"


def test_a_follow_up_visit_before_the_closing_day_or_of_another_kind_does_not_meet_the_follow_up() -> None:
    b = petition()
    decided(b)
    b.visit("follow_up", at("2026-04-01", "15:00"))  # before the close
    b.transition("close", at("2026-04-02"))
    b.visit("home", at("2026-04-05"))  # not a follow-up visit
    assert the(b, at("2026-04-18"), "follow_up").state == "overdue"


def test_a_mediation_without_agreement_opens_no_judicial_confirmation_window() -> None:
    b = CaseBuilder(level="village", node=VILLAGE, category="dispute")
    b.create(at("2026-03-02"))
    b.transition("accept", at("2026-03-03"))
    b.mediation("no_agreement", at("2026-03-10"))
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-03-11")))
    assert not [o for o in st.obligations if o.rule == "judicial_confirmation_window"]
    assert not [o for o in st.obligations if o.rule in ("register_route", "receipt_notice", "handle_decide")]


def test_simplified_rules_apply_only_to_simplified_cases() -> None:
    b = petition()
    _accept(b)
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-03-04")))
    assert not [o for o in st.obligations if o.rule.startswith("simplified")]


def test_an_extension_after_the_limit_leaves_the_first_limit_missed() -> None:
    b = petition()
    _accept(b)
    b.transition("extend", at("2026-05-04"), days=30)  # after 5/2
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-05-05")))
    hd = [(o.due, o.state, o.ended) for o in st.obligations if o.rule == "handle_decide"]
    assert (end_of("2026-05-02"), "overdue", "extended") in hd
    assert (end_of("2026-06-01"), "pending", None) in hd


def test_a_duty_ended_before_its_due_without_being_met_is_withdrawn() -> None:
    b = petition()
    b.transition("reject", at("2026-03-04"))  # meets register_route; the receipt notice was never sent
    ob = the(b, at("2026-03-30"), "receipt_notice")
    assert (ob.state, ob.ended) == ("withdrawn", "closed")


def test_a_voided_case_has_its_duties_withdrawn_and_is_green() -> None:
    b = petition()
    _accept(b)
    b.void(at("2026-03-04"))
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-06-01")))
    assert st.voided
    assert {o.state for o in st.obligations if o.kind == "duty"} == {"withdrawn", "met"}
    assert (st.colour, st.overdue, st.backlog) == ("green", False, False)


# ---- China time ----

@pytest.mark.parametrize(
    ("received_at", "due"),
    [
        ("2026-03-01T15:30:00+00:00", "2026-03-16"),  # 23:30 on 3/1 in China
        ("2026-03-01T16:30:00+00:00", "2026-03-17"),  # 00:30 on 3/2 in China
        ("2026-03-02T00:00:00+08:00", "2026-03-17"),
        ("2026-03-02T23:59:59+08:00", "2026-03-17"),
    ],
    ids=["utc-late-evening", "utc-after-china-midnight", "china-midnight", "china-last-second"],
)
def test_days_are_counted_on_the_china_calendar_whatever_offset_was_typed(received_at: str, due: str) -> None:
    b = CaseBuilder(level="county", node=COUNTY)
    b.create(at("2026-03-03"), received_at=received_at)
    assert the(b, at("2026-03-04"), "register_route").due == end_of(due)


# ---- working days across the holiday weeks, month ends and a leap day ----

def routed_on(day: str, hhmm: str = "10:00") -> CaseBuilder:
    b = CaseBuilder(level="county", node=COUNTY)
    b.create(f"{day}T09:00:00+08:00")
    b.transition("route", f"{day}T{hhmm}:00+08:00")
    return b


WORKDAY_ROWS = [
    # 2025 National Day: off 10/1-10/8, Sat 10/11 worked: 10/9, 10/10, 10/11, 10/13, 10/14
    ("objection_window", "2025-09-30", "2025-10-14", False),
    # Sun 9/28 worked: 9/28, 9/29, 9/30, 10/9, 10/10
    ("objection_window", "2025-09-26", "2025-10-10", False),
    # 2026 National Day: off 10/1-10/7, Sat 10/10 worked: 10/8, 10/9, 10/10, 10/12, 10/13
    ("objection_window", "2026-09-30", "2026-10-13", False),
    # 2026 Mid-Autumn (Fri 9/25) and Sun 9/20 worked: 9/20, 9/21, 9/22, 9/23, 9/24
    ("objection_window", "2026-09-18", "2026-09-24", False),
    # 2026 Spring Festival: Sat 2/14 worked, off 2/15-2/23: 2/14, 2/24, 2/25, 2/26, 2/27
    ("objection_window", "2026-02-13", "2026-02-27", False),
    # 2/13, 2/14, 2/24, 2/25, 2/26
    ("objection_window", "2026-02-12", "2026-02-26", False),
    # routed mid-holiday: 2/24, 2/25, 2/26, 2/27, Sat 2/28 (worked)
    ("objection_window", "2026-02-20", "2026-02-28", False),
    # 2025 Spring Festival: Sun 1/26 worked, off 1/28-2/4: 1/26, 1/27, 2/5, 2/6, 2/7
    ("objection_window", "2025-01-24", "2025-02-07", False),
    # 2027 is not published yet: Monday to Friday, an estimate. Leap year 2028: 2/28, 2/29, 3/1, 3/2, 3/3
    ("objection_window", "2028-02-25", "2028-03-03", True),
    # a range that starts in 2026 and ends in 2027: 12/31, then 1/1 .. 1/6 counted Monday to Friday
    ("objection_window", "2026-12-30", "2027-01-06", True),
]


@pytest.mark.parametrize(
    ("rule", "routed", "due", "estimated"), WORKDAY_ROWS, ids=[f"{r[0]}-{r[1]}" for r in WORKDAY_ROWS]
)
def test_the_five_working_day_objection_window_follows_the_holiday_schedule(
        rule: str, routed: str, due: str, estimated: bool) -> None:
    ob = the(routed_on(routed), f"{routed}T12:00:00+08:00", rule)
    assert ob.start_event == "routed"
    assert ob.due == end_of(due)
    assert ob.estimated is estimated


def test_routing_late_in_the_evening_utc_counts_from_the_china_day() -> None:
    # 15:30Z on 9/29 is 23:30 on 9/29 in China: 9/30, 10/9, 10/10, 10/11, 10/13
    b = CaseBuilder(level="county", node=COUNTY)
    b.create("2025-09-29T09:00:00+08:00")
    b.transition("route", "2025-09-29T15:30:00+00:00")
    assert the(b, "2025-09-30T12:00:00+08:00", "objection_window").due == end_of("2025-10-13")
    # 16:30Z on 9/29 is 00:30 on 9/30: the first example above
    b = CaseBuilder(level="county", node=COUNTY)
    b.create("2025-09-29T09:00:00+08:00")
    b.transition("route", "2025-09-29T16:30:00+00:00")
    assert the(b, "2025-09-30T12:00:00+08:00", "objection_window").due == end_of("2025-10-14")


@pytest.mark.parametrize(
    ("received", "accepted", "accept_due", "answer_due"),
    [
        # received Fri 2/13: Sat 2/14, 2/24, 2/25; accepted Thu 2/12 ... 10 working days:
        # 2/13, 2/14, 2/24, 2/25, 2/26, 2/27, Sat 2/28, 3/2, 3/3, 3/4
        ("2026-02-13", "2026-02-12", "2026-02-25", "2026-03-04"),
        # received 9/30/2025: 10/9, 10/10, Sat 10/11 (a make-up working day is a due day);
        # accepted 9/30: 10/9, 10/10, 10/11, 10/13, 10/14, 10/15, 10/16, 10/17, 10/20, 10/21
        ("2025-09-30", "2025-09-30", "2025-10-11", "2025-10-21"),
    ],
    ids=["spring-festival-2026", "national-day-2025"],
)
def test_simplified_handling_counts_working_days_across_the_holidays(
        received: str, accepted: str, accept_due: str, answer_due: str) -> None:
    b = CaseBuilder(level="county", node=COUNTY)
    b.create(f"{received}T08:00:00+08:00", received_at=f"{received}T08:00:00+08:00", simplified=True)
    acc = the(b, f"{received}T09:00:00+08:00", "simplified_accept")
    assert acc.due == end_of(accept_due)
    b2 = CaseBuilder(level="county", node=COUNTY)
    b2.create(f"{accepted}T08:00:00+08:00", simplified=True)
    b2.transition("accept", f"{accepted}T09:00:00+08:00")
    ans = the(b2, f"{accepted}T10:00:00+08:00", "simplified_answer")
    assert ans.due == end_of(answer_due)
    assert not acc.estimated and not ans.estimated


@pytest.mark.parametrize(
    ("rule", "start", "due"),
    [
        ("register_route", "2026-01-31", "2026-02-15"),  # January's end: 31 + 15
        ("register_route", "2026-02-20", "2026-03-07"),  # February 2026 has 28 days
        ("register_route", "2028-02-20", "2028-03-06"),  # February 2028 has 29
        ("handle_decide", "2026-12-31", "2027-03-01"),  # 31 (Jan) + 28 (Feb) + 1
        ("handle_decide", "2027-12-31", "2028-02-29"),  # 31 (Jan) + 29 (Feb): the leap day itself
        ("handle_decide", "2028-01-01", "2028-03-01"),  # 30 + 29 + 1
    ],
    ids=["received-jan-31", "received-feb-20-2026", "received-feb-20-2028", "accepted-dec-31-2026",
         "accepted-dec-31-2027-to-leap-day", "accepted-jan-1-2028"],
)
def test_calendar_days_cross_month_ends_and_the_leap_day(rule: str, start: str, due: str) -> None:
    b = CaseBuilder(level="county", node=COUNTY)
    b.create(f"{start}T10:00:00+08:00")
    if rule == "handle_decide":
        b.transition("accept", f"{start}T11:00:00+08:00")
    ob = the(b, f"{start}T12:00:00+08:00", rule)
    assert ob.due == end_of(due)
    assert ob.estimated is False  # calendar days need no holiday schedule


def test_the_hand_counted_dates_agree_with_the_published_schedule() -> None:
    """The make-up days and holidays the literals above rely on, as the package has them."""
    worked = ["2025-01-26", "2025-02-08", "2025-09-28", "2025-10-11", "2026-02-14", "2026-02-28", "2026-09-20",
              "2026-10-10"]
    off = ["2025-01-28", "2025-02-04", "2025-10-01", "2025-10-08", "2026-02-15", "2026-02-23", "2026-09-25",
           "2026-10-01", "2026-10-07"]
    assert all(chinese_calendar.is_workday(date.fromisoformat(d)) for d in worked)
    assert not any(chinese_calendar.is_workday(date.fromisoformat(d)) for d in off)
    assert chinese_calendar.is_workday(date(2026, 2, 13))  # an ordinary Friday, not a make-up day


def test_a_county_extra_holiday_moves_a_working_day_deadline() -> None:
    rules = parse_rules("[calendar]\nextra_holidays = [2026-03-04]\n")
    ob = the(routed_on("2026-03-02"), at("2026-03-03"), "objection_window", rules=rules)
    assert ob.due == end_of("2026-03-10")  # 3/3, (3/4 off), 3/5, 3/6, 3/9, 3/10


# ---- colours and backlog (DOMAIN.md's default scheme) ----

def only_handle_decide(**values: object) -> CaseBuilder:
    """An accepted petition whose one open duty is handle_decide, due 2026-05-02 23:59:59."""
    b = petition(**values)
    _accept(b)  # meets register_route
    b.notice("acceptance", "2026-03-03", at=at("2026-03-03"))  # meets receipt_notice
    return b


DUE = ms("2026-05-03T00:00:00+08:00") - 1


@pytest.mark.parametrize(
    ("now", "colour"),
    [
        (DUE - 8 * DAY_MS, "green"),
        (DUE - 7 * DAY_MS - 1, "green"),
        (DUE - 7 * DAY_MS, "blue"),  # within 7 days
        (DUE - 3 * DAY_MS - 1, "blue"),
        (DUE - 3 * DAY_MS, "yellow"),  # within 3 days
        (DUE, "yellow"),
        (DUE + 1, "orange"),  # passed
        (DUE + 15 * DAY_MS, "orange"),
        (DUE + 15 * DAY_MS + 1, "red"),  # passed by more than 15 days
    ],
    ids=["8-days-green", "just-over-7-green", "7-days-blue", "just-over-3-blue", "3-days-yellow",
         "last-moment-yellow", "passed-orange", "15-days-late-orange", "over-15-days-red"],
)
def test_colour_follows_the_nearest_deadline(now: int, colour: str) -> None:
    b = only_handle_decide()
    st = case_status(b.case_id, b.ops, RULES, now)
    assert st.colour == colour
    assert st.overdue is (now > DUE)


def test_a_repeat_petition_is_yellow_even_when_on_track() -> None:
    b = only_handle_decide()
    b.tag(at("2026-03-04"), "repeat")
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-03-10")))
    assert st.colour == "yellow"
    assert {"flag": "repeat"} in st.flags


@pytest.mark.parametrize(("people", "colour"), [(4, "green"), (5, "red"), (40, "red")])
def test_a_group_petition_of_five_or_more_is_red(people: int, colour: str) -> None:
    b = only_handle_decide(people_count=people)
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-03-10")))
    assert st.colour == colour
    assert any(f["flag"] == "group" for f in st.flags) is (colour == "red")


def test_a_group_tag_makes_a_case_red() -> None:
    b = only_handle_decide()
    b.tag(at("2026-03-04"), "group")
    assert case_status(b.case_id, b.ops, RULES, ms(at("2026-03-10"))).colour == "red"


def test_the_group_size_is_the_countys() -> None:
    rules = parse_rules("[colours]\ngroup_size = 10\n")
    b = only_handle_decide(people_count=6)
    assert case_status(b.case_id, b.ops, rules, ms(at("2026-03-10"))).colour == "green"


def test_a_case_escalated_again_after_closing_is_red() -> None:
    b = petition()
    closed(b)
    b.transition("reopen", at("2026-04-10"))
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-04-11")))
    assert st.colour == "red"
    assert {"flag": "reopened"} in st.flags
    assert st.backlog is False  # reopened after closing, not after a final decision


def test_a_closed_case_with_nothing_left_to_do_is_green() -> None:
    b = only_handle_decide()
    b.transition("decide", at("2026-03-10"))
    b.transition("close", at("2026-03-11"))
    b.visit("follow_up", at("2026-03-12"))
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-09-01")))
    assert (st.colour, st.overdue, st.backlog) == ("green", False, False)


def test_an_open_case_past_its_handling_deadline_is_backlog() -> None:
    b = only_handle_decide()
    assert case_status(b.case_id, b.ops, RULES, DUE).backlog is False
    assert case_status(b.case_id, b.ops, RULES, DUE + 1).backlog is True


def test_an_extended_case_is_backlog_only_after_the_extension() -> None:
    b = only_handle_decide()
    b.transition("extend", at("2026-04-20"), days=30)
    assert case_status(b.case_id, b.ops, RULES, DUE + DAY_MS).backlog is False
    assert case_status(b.case_id, b.ops, RULES, ms("2026-06-02T00:00:00+08:00")).backlog is True


def test_a_mediation_open_past_its_month_is_backlog_and_a_late_review_is_not() -> None:
    b = CaseBuilder(level="village", node=VILLAGE, category="dispute")
    b.create(at("2026-03-02"))
    b.transition("accept", at("2026-03-03"))
    b.transition("escalate", at("2026-03-04"), acting_level="village")
    b.transition("escalate", at("2026-03-05"), acting_level="township", to_node=COUNTY)
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-04-03")))
    assert st.backlog is True
    r = petition()
    review_requested(r)
    st = case_status(r.case_id, r.ops, RULES, ms(at("2026-05-21")))
    assert "review_decide" in [o.rule for o in st.obligations if o.state == "overdue"]
    assert not [o for o in st.obligations if o.rule == "handle_decide" and o.state != "met"]
    assert st.backlog is False  # review_decide is not in [backlog] open_past


def test_a_case_reopened_after_a_final_decision_is_backlog_unless_the_county_says_not() -> None:
    b = petition()
    closed(b)
    b.transition("finalize", at("2026-05-05"))
    b.transition("reopen", at("2026-06-01"))
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-06-02")))
    assert st.backlog is True
    assert st.reopened_after_final is True
    rules = parse_rules("[backlog]\nreopened_after_final = false\n")
    assert case_status(b.case_id, b.ops, rules, ms(at("2026-06-02"))).backlog is False


def test_the_status_says_when_the_clock_alone_next_changes_it() -> None:
    b = only_handle_decide()
    st = case_status(b.case_id, b.ops, RULES, DUE - 10 * DAY_MS)
    assert st.next_at_ms == DUE - 7 * DAY_MS  # turns blue
    st = case_status(b.case_id, b.ops, RULES, DUE - 7 * DAY_MS)
    assert st.next_at_ms == DUE - 3 * DAY_MS  # turns yellow (and the warning comes)
    st = case_status(b.case_id, b.ops, RULES, DUE)
    assert st.next_at_ms == DUE + 1  # overdue


# ---- what DOMAIN.md says about closed cases: colour is per open case ----

def test_a_case_escalated_on_its_village_deadline_and_closed_by_the_township_is_not_overdue() -> None:
    b = CaseBuilder(level="village", node=VILLAGE)
    b.create(at("2026-03-02"))
    # the county server's escalation at the village deadline (3/9), as the sweep writes it
    b.op(ms("2026-03-10T00:00:00+08:00"), "case", b.case_id, "transition",
         {"action": "escalate", "acting_level": "county", "to_node": TOWNSHIP, "from_level": "village"},
         device="cty0000000000001")
    b.transition("accept", at("2026-03-11"), acting_level="township")
    b.transition("decide", at("2026-03-14"), acting_level="township")
    b.transition("close", at("2026-03-15"), acting_level="township")
    b.visit("follow_up", at("2026-03-20"))
    st = case_status(b.case_id, b.ops, RULES, ms(at("2026-04-01")))
    assert st.state == "closed"
    assert st.overdue is False
    assert st.colour == "green"
