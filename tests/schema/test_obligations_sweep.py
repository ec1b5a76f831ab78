"""The server's sweep, pure: what it writes, when, how it withdraws, and that it writes it once.

Freshness (awaiting sync until due + grace), warnings, overdue marks with their letters,
escalations one level up, finality after a lapsed review window, and the withdrawal of
what later-arriving ops show to have been wrong. ``conflict.fold`` checks what the
written ops do to the case.
"""

from __future__ import annotations

from typing import Any

import pytest

from conflict.fold import EntityFold, fold
from schema.obligations import DAY_MS, HOUR_MS, SWEEP_AUTHOR, case_status, sweep_ops
from schema.ops import Op
from schema.rules import default_rules, parse_rules
from schema.stamp import parse as parse_stamp
from schema.validation import check_op
from tests.casebuild import SERVER_NODE, CaseBuilder, ms, new_ops, sweep_context

RULES = default_rules()
VILLAGE = "330102101"
TOWNSHIP = "330102"
RECEIVED = "2026-03-02T10:00:00+08:00"
V_DUE = ms("2026-03-10T00:00:00+08:00") - 1  # village_handling: 3/2 + 7 = 3/9, end of day
GRACE = 72 * HOUR_MS


def village_case(**values: Any) -> CaseBuilder:
    b = CaseBuilder(level="village", node=VILLAGE)
    b.create(RECEIVED, **values)
    b.transition("accept", "2026-03-03T10:00:00+08:00")
    b.notice("acceptance", "2026-03-03", at="2026-03-03T10:05:00+08:00")
    return b


def sweep(b: CaseBuilder, now: int | str, **ctx: Any) -> tuple[Any, list[Op]]:
    now_ms = ms(now) if isinstance(now, str) else now
    return sweep_ops(b.case_id, b.ops, RULES, now_ms, sweep_context(**ctx))


def write(b: CaseBuilder, now: int | str, **ctx: Any) -> list[Op]:
    """Sweep and write what the server does not hold yet; return what was written."""
    _, out = sweep(b, now, **ctx)
    fresh = new_ops(b.ops, out)
    b.ops.extend(fresh)
    return fresh


def what(ops: list[Op]) -> list[tuple[str, str, str]]:
    """(entity, kind, the alert/notice kind or the transition's action) of each op."""
    return [(o.entity, o.kind, str(o.values.get("kind") or o.values.get("action") or "")) for o in ops]


def stamp_ms(op: Op) -> int:
    return parse_stamp(op.stamp).ms


def case_fold(b: CaseBuilder) -> EntityFold:
    return fold("case", b.case_id, [o for o in b.ops if o.entity == "case"])


ESCALATION = [("alert", "create", "overdue"), ("notice", "create", "reminder_letter"),
              ("case", "transition", "escalate"), ("alert", "create", "escalated")]


# ---- warnings and freshness ----

def test_a_warning_comes_three_days_before_the_deadline_and_not_before() -> None:
    b = village_case()
    assert sweep(b, V_DUE - 3 * DAY_MS - 1)[1] == []
    _, out = sweep(b, V_DUE - 3 * DAY_MS)
    assert what(out) == [("alert", "create", "warning")]
    w = out[0]
    assert stamp_ms(w) == V_DUE - 3 * DAY_MS
    assert (w.values["rule"], w.values["due"], w.values["start_event"]) == (
        "village_handling", "2026-03-09T23:59:59+08:00", "received")
    assert (w.device, w.author) == (SERVER_NODE, SWEEP_AUTHOR)


@pytest.mark.parametrize("now", [V_DUE + 1, V_DUE + DAY_MS, V_DUE + GRACE - 1],
                         ids=["just-after-due", "a-day-after", "last-moment-of-grace"])
def test_a_duty_unmet_since_the_devices_last_sync_awaits_sync_during_the_grace_period(now: int) -> None:
    b = village_case()
    contact = ms("2026-03-08T18:00:00+08:00")  # the village's laptop synced before the due
    st = case_status(b.case_id, b.ops, RULES, now, last_contact_ms=contact)
    vh = [o for o in st.obligations if o.rule == "village_handling"][0]
    assert vh.state == "awaiting_sync"
    assert (st.awaiting_sync, st.overdue, st.colour) == (True, False, "yellow")
    _, out = sweep(b, now, last_contact=contact)
    assert [w for w in what(out) if w != ("alert", "create", "warning")] == []  # no overdue, no escalation


def test_after_the_grace_period_the_duty_is_overdue_and_the_case_is_escalated_at_its_end() -> None:
    b = village_case()
    contact = ms("2026-03-08T18:00:00+08:00")
    now = V_DUE + GRACE
    st = case_status(b.case_id, b.ops, RULES, now, last_contact_ms=contact)
    assert [o.state for o in st.obligations if o.rule == "village_handling"] == ["overdue"]
    _, out = sweep(b, now, last_contact=contact)
    assert [w for w in what(out) if w[2] != "warning"] == ESCALATION
    assert {stamp_ms(o) for o in out if o.values.get("kind") != "warning"} == {V_DUE + GRACE}


def test_with_a_sync_after_the_due_the_duty_is_overdue_at_once() -> None:
    b = village_case()
    contact = ms("2026-03-10T08:00:00+08:00")
    now = ms("2026-03-10T09:00:00+08:00")
    st = case_status(b.case_id, b.ops, RULES, now, last_contact_ms=contact)
    assert [o.state for o in st.obligations if o.rule == "village_handling"] == ["overdue"]
    assert st.colour == "orange"
    _, out = sweep(b, now, last_contact=contact)
    assert [w for w in what(out) if w[2] != "warning"] == ESCALATION
    assert {stamp_ms(o) for o in out if o.values.get("kind") != "warning"} == {V_DUE + 1}


def test_the_escalation_reports_the_case_to_the_parent_node_and_the_fold_applies_it() -> None:
    b = village_case()
    written = write(b, V_DUE + 1)
    esc = [o for o in written if o.kind == "transition"]
    assert len(esc) == 1
    assert esc[0].values == {"action": "escalate", "acting_level": "county", "to_node": TOWNSHIP,
                             "from_level": "village", "rule": "village_handling",
                             "reason": esc[0].values["reason"]}
    alert = [o for o in written if o.values.get("kind") == "escalated"][0]
    assert alert.values["related_op"] == esc[0].op_id
    letter = [o for o in written if o.values.get("kind") == "reminder_letter"][0]
    assert letter.values["served_at"] == "2026-03-10"
    life = case_fold(b).life
    assert (life["level"], life["node"]) == ("township", TOWNSHIP)
    st = case_status(b.case_id, b.ops, RULES, V_DUE + 2)
    th = [o for o in st.obligations if o.rule == "township_handling"]
    assert [(o.start_event, o.due) for o in th] == [("reported_up", "2026-03-25T23:59:59+08:00")]


def test_no_grace_when_the_county_sets_none() -> None:
    rules = parse_rules("[freshness]\ngrace_hours = 0\n")
    b = village_case()
    st = case_status(b.case_id, b.ops, rules, V_DUE + 1, last_contact_ms=ms("2026-03-08T00:00:00+08:00"))
    assert [o.state for o in st.obligations if o.rule == "village_handling"] == ["overdue"]


def test_a_warning_notice_follows_fifteen_days_after_the_due() -> None:
    b = CaseBuilder(level="county", node="330100")
    b.create(RECEIVED)  # register_route and receipt_notice: due 3/17
    due = ms("2026-03-18T00:00:00+08:00") - 1
    assert "warning_notice" not in [w[2] for w in what(sweep(b, due + 15 * DAY_MS - 1)[1])]
    out = sweep(b, due + 15 * DAY_MS)[1]
    notices = [o for o in out if o.values.get("kind") == "warning_notice"]
    assert len(notices) == 2  # one per overdue duty
    assert {o.values["served_at"] for o in notices} == {"2026-04-01"}
    assert all(o.values["number"].startswith("JS-") for o in notices)


def test_the_county_may_turn_off_the_reminder_letter() -> None:
    rules = parse_rules("[sweep]\nreminder_letter = false\n")
    b = village_case()
    _, out = sweep_ops(b.case_id, b.ops, rules, V_DUE + 1, sweep_context())
    assert "reminder_letter" not in [w[2] for w in what(out)]
    assert ("alert", "create", "overdue") in what(out)


def test_a_follow_up_is_required_at_closing() -> None:
    b = village_case()
    b.transition("decide", "2026-03-05T10:00:00+08:00")
    b.transition("close", "2026-03-06T10:00:00+08:00")
    out = sweep(b, "2026-03-06T12:00:00+08:00")[1]
    fu = [o for o in out if o.values.get("kind") == "follow_up_required"]
    assert len(fu) == 1
    assert stamp_ms(fu[0]) == ms("2026-03-06T10:00:00+08:00") + 1  # just after the close it follows
    assert fu[0].values["due"] == "2026-03-21T23:59:59+08:00"


# ---- determinism ----

def test_sweeping_twice_gives_the_same_ops_and_writing_them_twice_changes_nothing() -> None:
    b = village_case()
    now = V_DUE + 5 * DAY_MS
    st1, out1 = sweep(b, now)
    st2, out2 = sweep(b, now)
    assert out1 == out2
    assert [w for w in what(out1) if w[2] != "warning"] == ESCALATION
    assert st1.to_row() == st2.to_row()
    b.ops.extend(out1)
    _, again = sweep(b, now)
    held = {o.op_id: o for o in b.ops}
    assert again and all(o.op_id in held for o in again)
    assert all(held[o.op_id] == o for o in again)  # the same ops, byte for byte


def test_a_sweep_that_runs_late_catches_up_in_a_second_round_and_then_has_nothing_new() -> None:
    b = village_case()
    now = V_DUE + 20 * DAY_MS  # the township's limit (3/10 + 15 = 3/25) has passed too by now
    first = write(b, now)
    assert ("case", "transition", "escalate") in what(first)
    second = write(b, now)
    esc = [o for o in second if o.kind == "transition"]
    assert [(o.values["from_level"], o.values["to_node"]) for o in esc] == [("township", "330100")]
    assert case_fold(b).life["level"] == "county"
    assert write(b, now) == []


def test_every_op_the_sweep_writes_is_a_valid_op() -> None:
    b = village_case()
    written = write(b, V_DUE + 20 * DAY_MS)
    b.transition("decide", "2026-03-08T10:00:00+08:00")  # in time, but arriving late
    written += write(b, V_DUE + 20 * DAY_MS)
    assert {w[2] for w in what(written)} >= {"overdue", "escalate", "escalated", "reminder_letter",
                                             "warning_notice", ""}
    for op in written:
        check_op(op)


def test_op_ids_are_derived_from_case_rule_due_and_action() -> None:
    one, two = village_case(), village_case()
    first = sweep(one, V_DUE + 1)[1]
    ids_one = {o.op_id for o in first}
    ids_two = {o.op_id for o in sweep(two, V_DUE + 1)[1]}
    assert ids_one and not ids_one & ids_two  # another case, other ids
    later = sweep(one, V_DUE + 16 * DAY_MS)[1]  # a day later the same actions keep their ids and stamps
    assert all(o in later for o in first)
    assert {w[2] for w in what([o for o in later if o not in first])} == {"warning_notice"}


# ---- withdrawal ----

def escalated_village_case() -> tuple[CaseBuilder, list[Op]]:
    b = village_case()
    written = write(b, V_DUE + 1)
    assert [w for w in what(written) if w[2] != "warning"] == ESCALATION
    return b, written


def test_a_close_stamped_before_the_due_but_arriving_after_the_escalation_withdraws_it() -> None:
    b, written = escalated_village_case()
    esc = [o for o in written if o.kind == "transition"][0]
    decide = b.transition("decide", "2026-03-08T10:00:00+08:00")
    close = b.transition("close", "2026-03-09T10:00:00+08:00")
    now = ms("2026-03-10T12:00:00+08:00")
    received = {decide.op_id: now, close.op_id: now}
    st, out = sweep(b, now, received_ms=received)
    assert st.refused == {esc.op_id: "transition.not_allowed_from_state"}
    fresh = new_ops(b.ops, out)
    kinds = what(fresh)
    assert kinds.count(("alert", "set", "")) == 2  # the overdue mark and the escalation
    assert ("notice", "void", "") in kinds  # the reminder letter
    resolves = [o for o in fresh if o.kind == "resolve"]
    assert [r.values["resolves"] for r in resolves] == [[esc.op_id]]
    for w in (o for o in fresh if o.entity == "alert" and o.kind == "set"):
        assert w.values["withdrawn_reason"]
        assert "in time" in w.values["withdrawn_reason"]
        assert w.values["withdrawn_at"] == "2026-03-10T12:00:00+08:00"  # when the server learnt it
    b.ops.extend(fresh)
    f = case_fold(b)
    assert (f.life["state"], f.life["level"]) == ("closed", "village")
    assert [c["status"] for c in f.conflicts] == ["resolved"]
    for alert_id in {o.entity_id for o in written if o.entity == "alert" and o.values["kind"] != "warning"}:
        a = fold("alert", alert_id, [o for o in b.ops if o.entity_id == alert_id])
        assert a.values["withdrawn_at"] is not None
    # and the next sweep has nothing more to say
    assert new_ops(b.ops, sweep(b, now + DAY_MS, received_ms=received)[1]) == []


def test_a_close_stamped_after_the_escalation_withdraws_nothing() -> None:
    b, written = escalated_village_case()
    b.transition("decide", "2026-03-10T10:00:00+08:00")  # after the escalation: refused, level too low
    b.transition("close", "2026-03-10T11:00:00+08:00")
    st, out = sweep(b, "2026-03-10T12:00:00+08:00")
    assert [w for w in what(new_ops(b.ops, out))] == []
    assert st.level == "township"
    assert set(st.refused.values()) == {"transition.level_too_low"}
    f = case_fold(b)
    assert f.life["level"] == "township"
    # the village's refused work is a conflict for a coordinator, not resolved by the server
    assert [c["status"] for c in f.conflicts] == ["open", "open"]


def test_the_villages_own_report_up_before_the_due_arriving_late_withdraws_the_servers() -> None:
    b, written = escalated_village_case()
    esc = [o for o in written if o.kind == "transition"][0]
    b.transition("escalate", "2026-03-09T16:00:00+08:00", acting_level="village")
    st, out = sweep(b, "2026-03-10T12:00:00+08:00")
    assert st.refused == {esc.op_id: "transition.level_changed"}
    vh = [o for o in st.obligations if o.rule == "village_handling"][0]
    assert (vh.state, vh.late) == ("met", False)
    fresh = new_ops(b.ops, out)
    assert [o.values["resolves"] for o in fresh if o.kind == "resolve"] == [[esc.op_id]]
    withdrawn = {o.entity_id for o in fresh if o.entity == "alert" and o.kind == "set"}
    escalated_alert = [o for o in written if o.values.get("kind") == "escalated"][0]
    assert escalated_alert.entity_id in withdrawn
    b.ops.extend(fresh)
    f = case_fold(b)
    assert (f.life["level"], f.life["node"]) == ("township", TOWNSHIP)  # once, by the village
    assert [c["status"] for c in f.conflicts] == ["resolved"]
    # the township's limit runs from the village's report, not from the refused escalation
    st = case_status(b.case_id, b.ops, RULES, ms("2026-03-11T00:00:00+08:00"))
    assert [o.start for o in st.obligations if o.rule == "township_handling"] == ["2026-03-09T16:00:00+08:00"]


def test_a_warning_raised_after_the_work_was_done_offline_is_withdrawn() -> None:
    b = village_case()
    written = write(b, V_DUE - 3 * DAY_MS)
    assert what(written) == [("alert", "create", "warning")]
    b.transition("decide", "2026-03-06T10:00:00+08:00")  # before the warning's moment (3/6 23:59:59)
    fresh = new_ops(b.ops, sweep(b, V_DUE - 2 * DAY_MS)[1])
    assert what(fresh) == [("alert", "set", "")]
    assert fresh[0].entity_id == written[0].entity_id


def test_voiding_the_case_withdraws_its_alerts_and_voids_its_letters() -> None:
    b = CaseBuilder(level="county", node="330100")
    b.create(RECEIVED)
    b.transition("accept", "2026-03-03T10:00:00+08:00")  # receipt_notice (3/17) is left undone
    written = write(b, "2026-03-18T12:00:00+08:00")
    assert sorted(what(written)) == sorted([("alert", "create", "overdue"), ("notice", "create", "reminder_letter")])
    b.void("2026-03-19T09:00:00+08:00")
    fresh = new_ops(b.ops, sweep(b, "2026-03-19T12:00:00+08:00")[1])
    assert sorted(what(fresh)) == sorted([("alert", "set", ""), ("notice", "void", "")])
    assert all("作废" in o.values["withdrawn_reason"] for o in fresh if o.entity == "alert")
    st = case_status(b.case_id, b.ops + fresh, RULES, ms("2026-03-19T12:00:00+08:00"))
    assert (st.voided, st.colour, st.overdue) == (True, "green", False)


def test_a_case_escalated_on_its_deadline_and_then_voided_can_still_be_swept() -> None:
    b, _ = escalated_village_case()
    b.void("2026-03-10T09:00:00+08:00")
    st, out = sweep(b, "2026-03-10T12:00:00+08:00")
    assert st.voided and st.colour == "green"
    assert ("notice", "void", "") in what(new_ops(b.ops, out))


def test_a_decide_stamped_before_the_due_arriving_after_the_escalation_leaves_the_case_at_the_village() -> None:
    b, written = escalated_village_case()
    b.transition("decide", "2026-03-08T10:00:00+08:00")  # the village decided in time; not closed yet
    fresh = new_ops(b.ops, sweep(b, "2026-03-10T12:00:00+08:00")[1])
    assert [o for o in fresh if o.entity == "alert" and o.values.get("withdrawn_reason")]  # this much works
    b.ops.extend(fresh)
    f = case_fold(b)
    assert f.life["level"] == "village"
    st = case_status(b.case_id, b.ops, RULES, ms("2026-04-01T00:00:00+08:00"))
    assert not [o for o in st.obligations if o.rule == "township_handling"]


def test_the_withdrawal_of_an_escalation_after_late_work_does_not_say_it_was_in_time() -> None:
    b = village_case()
    contact = ms("2026-03-08T00:00:00+08:00")
    written = write(b, V_DUE + GRACE, last_contact=contact)  # escalated at the end of the grace period
    assert ("case", "transition", "escalate") in what(written)
    b.transition("decide", "2026-03-10T02:00:00+08:00")  # two hours late, before the escalation
    b.transition("close", "2026-03-10T03:00:00+08:00")
    fresh = new_ops(b.ops, sweep(b, V_DUE + GRACE + HOUR_MS, last_contact=V_DUE + GRACE + HOUR_MS)[1])
    reasons = [o.values["withdrawn_reason"] for o in fresh if o.entity == "alert" and o.kind == "set"]
    assert len(reasons) == 1  # the escalation; the overdue mark stands (the work was late)
    assert "in time" not in reasons[0] and "不晚于期限" not in reasons[0]


def test_no_warning_notice_for_a_case_escalated_and_closed_in_time_by_the_township() -> None:
    b, _ = escalated_village_case()
    b.transition("decide", "2026-03-12T10:00:00+08:00", acting_level="township")
    b.transition("close", "2026-03-13T10:00:00+08:00", acting_level="township")
    b.visit("follow_up", "2026-03-14T10:00:00+08:00")
    fresh = new_ops(b.ops, sweep(b, "2026-03-30T00:00:00+08:00")[1])
    assert "warning_notice" not in [w[2] for w in what(fresh)]


def test_an_op_stamped_in_the_future_does_not_hold_back_the_sweep() -> None:
    b = CaseBuilder(level="village", node=VILLAGE)
    # a laptop whose clock ran 18 days fast stamped the record; the server received it on 3/2
    create = b.create("2026-03-20T10:00:00+08:00", received_at=RECEIVED)
    received = {create.op_id: ms("2026-03-02T10:05:00+08:00")}
    st, out = sweep(b, V_DUE + 1, received_ms=received)
    assert [o.state for o in st.obligations if o.rule == "village_handling"] == ["overdue"]
    assert ("case", "transition", "escalate") in what(out)
    assert all(stamp_ms(o) <= V_DUE + 1 for o in out)


# ---- review windows and finality ----

def decided_and_closed() -> CaseBuilder:
    b = CaseBuilder(level="county", node="330100")
    b.create(RECEIVED)
    b.transition("accept", "2026-03-03T10:00:00+08:00")
    b.notice("acceptance", "2026-03-03", at="2026-03-03T10:05:00+08:00")
    b.transition("decide", "2026-03-10T10:00:00+08:00")  # review window: 3/10 + 30 = 4/9
    b.transition("close", "2026-03-11T10:00:00+08:00")
    b.visit("follow_up", "2026-03-12T10:00:00+08:00")
    return b


W_DUE = ms("2026-04-10T00:00:00+08:00") - 1


def test_the_review_window_is_open_after_the_decision_and_the_decision_becomes_final_when_it_lapses() -> None:
    b = decided_and_closed()
    st, out = sweep(b, W_DUE)
    win = [o for o in st.obligations if o.rule == "review_request_window"][0]
    assert (win.state, win.due) == ("pending", "2026-04-09T23:59:59+08:00")
    assert "finalize" not in [w[2] for w in what(out)]
    written = write(b, W_DUE + 1)
    fin = [o for o in written if o.kind == "transition"]
    assert len(fin) == 1
    assert fin[0].values["action"] == "finalize"
    assert (fin[0].values["acting_level"], fin[0].values["rule"]) == ("county", "review_request_window")
    assert stamp_ms(fin[0]) == W_DUE  # at the window's end, not when the sweep ran
    assert case_fold(b).life["state"] == "final"
    st = case_status(b.case_id, b.ops, RULES, W_DUE + DAY_MS)
    assert st.state == "final" and {"flag": "final"} in st.flags
    assert new_ops(b.ops, sweep(b, W_DUE + 2 * DAY_MS)[1]) == []


def test_a_review_requested_in_time_but_arriving_after_the_finality_undoes_it() -> None:
    b = decided_and_closed()
    fin = [o for o in write(b, W_DUE + 1) if o.kind == "transition"][0]
    req = b.transition("request_review", "2026-04-08T10:00:00+08:00")  # within the window
    now = ms("2026-04-12T00:00:00+08:00")
    st, out = sweep(b, now, received_ms={req.op_id: now - HOUR_MS})
    assert st.refused == {fin.op_id: "transition.not_allowed_from_state"}
    assert st.state == "review_requested"
    win = [o for o in st.obligations if o.rule == "review_request_window"][0]
    assert (win.state, win.met_by) == ("met", req.op_id)
    assert [(o.rule, o.due) for o in st.obligations if o.rule == "review_decide"] == [
        ("review_decide", "2026-05-08T23:59:59+08:00")]
    fresh = new_ops(b.ops, out)
    assert [o.values["resolves"] for o in fresh if o.kind == "resolve"] == [[fin.op_id]]
    b.ops.extend(fresh)
    f = case_fold(b)
    assert f.life["state"] == "review_requested"
    assert [c["status"] for c in f.conflicts] == ["resolved"]
    assert new_ops(b.ops, sweep(b, now + DAY_MS)[1]) == []


def test_a_review_requested_after_the_window_stays_refused_for_a_coordinator() -> None:
    b = decided_and_closed()
    write(b, W_DUE + 1)
    late = b.transition("request_review", "2026-04-11T10:00:00+08:00")
    st, out = sweep(b, "2026-04-12T00:00:00+08:00")
    assert st.refused == {late.op_id: "transition.not_allowed_from_state"}
    assert st.state == "final"
    assert new_ops(b.ops, out) == []


def test_the_review_window_runs_from_the_decision_notice_when_one_was_served() -> None:
    b = CaseBuilder(level="county", node="330100")
    b.create(RECEIVED)
    b.transition("accept", "2026-03-03T10:00:00+08:00")
    b.transition("decide", "2026-03-10T10:00:00+08:00")
    b.notice("decision", "2026-03-13", at="2026-03-13T09:00:00+08:00")
    b.transition("close", "2026-03-13T10:00:00+08:00")
    assert "finalize" not in [w[2] for w in what(sweep(b, W_DUE + 1)[1])]  # 3/13 + 30 = 4/12
    out = sweep(b, "2026-04-13T00:00:00+08:00")[1]
    fin = [o for o in out if o.kind == "transition"]
    assert [o.values["action"] for o in fin] == ["finalize"]
    assert stamp_ms(fin[0]) == ms("2026-04-13T00:00:00+08:00") - 1


def test_a_lapsed_rereview_window_makes_the_review_decision_final() -> None:
    b = decided_and_closed()
    b.transition("request_review", "2026-03-20T10:00:00+08:00")
    b.transition("decide_review", "2026-04-01T10:00:00+08:00")  # re-review window: 4/1 + 30 = 5/1
    assert "finalize" not in [w[2] for w in what(sweep(b, "2026-05-01T23:00:00+08:00")[1])]
    written = write(b, "2026-05-02T00:00:00+08:00")
    fin = [o for o in written if o.kind == "transition"]
    assert [(o.values["action"], o.values["rule"]) for o in fin] == [("finalize", "rereview_request_window")]
    assert case_fold(b).life["state"] == "final"
