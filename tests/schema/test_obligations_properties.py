"""Properties of case_status and the sweep over random case histories (Hypothesis).

A history is a case registered at a village, township or county, then a random walk of
the transitions the state machine allows (with notices, visits, mediations and a leader's
progress between them) at random gaps. The laptop syncs at random moments: each op
reaches the server at the first sync after it was made, and the server sweeps at each sync
and at moments of its own, writing the ops it does not hold yet.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from conflict.fold import fold
from schema.errors import TransitionRefused
from schema.lifecycle import OPEN_STATES, actions_for, apply_transition, initial_lifecycle
from schema.obligations import (
    DAY_MS,
    HOUR_MS,
    SWEEP_AUTHOR,
    SweepContext,
    case_status,
    iso,
    sweep_ops,
)
from schema.ops import Op
from schema.rules import default_rules
from schema.stamp import parse as parse_stamp
from schema.validation import check_op
from tests.casebuild import CaseBuilder, ms, new_ops, parent_of, sweep_context

RULES = default_rules()
NODES = {"village": "330102101", "township": "330102", "county": "330100"}
T0 = ms("2026-03-02T09:00:00+08:00")


@dataclass
class History:
    b: CaseBuilder
    end: int
    syncs: list[int] = field(default_factory=list)
    sweeps: list[int] = field(default_factory=list)


@st.composite
def histories(draw: st.DrawFn) -> History:
    level = draw(st.sampled_from(["village", "village", "township", "county"]))
    category = draw(st.sampled_from(["complaint", "complaint", "dispute"]))
    b = CaseBuilder(level=level, node=NODES[level], category=category)
    t = T0 + draw(st.integers(0, 40 * 24)) * HOUR_MS + draw(st.integers(0, 59_999))
    typed_back = draw(st.integers(0, 4)) * DAY_MS
    values: dict[str, Any] = {"people_count": draw(st.integers(1, 7))}
    if draw(st.booleans()):
        values["simplified"] = True
    b.create(iso(t), received_at=iso(t - typed_back), **values)
    life = initial_lifecycle(level, NODES[level], iso(t))
    assignment: str | None = None
    for _ in range(draw(st.integers(0, 9))):
        t += draw(st.integers(1, 16 * 24)) * HOUR_MS + draw(st.integers(0, 59_999))
        what = draw(st.sampled_from(["transition"] * 5 + ["notice", "visit", "mediation", "leader"]))
        if what == "transition":
            actions = sorted(actions_for(life, life["level"]))
            if not actions:
                continue
            action = draw(st.sampled_from(actions))
            v: dict[str, Any] = {}
            if action == "escalate":
                parent = parent_of(life["node"])
                if parent is None:
                    continue
                v["to_node"] = parent
            if action == "route":
                v["to_node"] = life["node"]
            if action == "extend":
                v["days"] = draw(st.integers(1, 30))
            acting = life["level"]
            try:
                life = apply_transition(life, {"action": action, "acting_level": acting, "decision": "support", **v},
                                        iso(t))
            except TransitionRefused:
                continue
            b.transition(action, iso(t), acting_level=acting, **v)
        elif what == "notice":
            kind = draw(st.sampled_from(["acceptance", "route", "decision", "review_opinion", "extension"]))
            b.notice(kind, iso(t)[:10], at=iso(t))
        elif what == "visit":
            b.visit(draw(st.sampled_from(["follow_up", "home"])), iso(t))
        elif what == "mediation":
            b.mediation(draw(st.sampled_from(["agreement", "no_agreement"])), iso(t))
        elif assignment is None:
            assignment = b.leader(iso(t)[:10], at=iso(t))
        else:
            b.progress(assignment, f"进展 {t}", at=iso(t))
    end = t + draw(st.integers(0, 90)) * DAY_MS
    syncs = sorted(set(draw(st.lists(st.integers(T0, end), max_size=3)))) + [end + 1]
    sweeps = sorted(set(draw(st.lists(st.integers(T0, end), max_size=6)) + syncs))
    return History(b, end + 1, syncs, sweeps)


def arrival(h: History, op: Op) -> int:
    t = parse_stamp(op.stamp).ms
    return next(s for s in h.syncs if s >= t)


def run_server(h: History) -> tuple[list[Op], list[tuple[int, Op]]]:
    """Replay the syncs and sweeps; return what the server holds and what it wrote, with when."""
    device_ops = list(h.b.ops)
    received = {op.op_id: arrival(h, op) for op in device_ops}
    written: list[tuple[int, Op]] = []
    for now in h.sweeps:
        held = [op for op in device_ops if received[op.op_id] <= now] + [op for _, op in written]
        contacts = [s for s in h.syncs if s <= now]
        ctx = sweep_context(last_contact=contacts[-1] if contacts else None,
                            received_ms={k: v for k, v in received.items() if v <= now})
        for _ in range(4):  # a late sweep may need a second round (an escalation opens the next level's limit)
            _, out = sweep_ops(h.b.case_id, held, RULES, now, ctx)
            fresh = new_ops(held, out)
            if not fresh:
                break
            written += [(now, op) for op in fresh]
            held = held + fresh
        else:
            raise AssertionError("the sweep did not settle in four rounds")
    return device_ops + [op for _, op in written], written


def final_ctx(h: History, ops: list[Op]) -> SweepContext:
    return sweep_context(last_contact=h.syncs[-1],
                         received_ms={op.op_id: arrival(h, op) for op in ops if op.author != SWEEP_AUTHOR})


@given(histories(), st.randoms(use_true_random=False))
def test_status_does_not_depend_on_the_order_ops_arrive_in(h: History, rnd: random.Random) -> None:
    ops = list(h.b.ops)
    shuffled = list(ops)
    rnd.shuffle(shuffled)
    for now in (h.sweeps[0], h.end):
        a = case_status(h.b.case_id, ops, RULES, now)
        b = case_status(h.b.case_id, shuffled, RULES, now)
        assert a.to_row() == b.to_row()
        assert (a.state, a.level, a.refused) == (b.state, b.level, b.refused)


@given(histories())
def test_the_sweep_is_deterministic_and_settles(h: History) -> None:
    ops, written = run_server(h)
    ctx = final_ctx(h, ops)
    _, out1 = sweep_ops(h.b.case_id, ops, RULES, h.end, ctx)
    _, out2 = sweep_ops(h.b.case_id, ops, RULES, h.end, ctx)
    assert out1 == out2
    held = {op.op_id for op in ops}
    assert all(op.op_id in held for op in out1)  # everything it says is already written
    for when, op in written:
        check_op(op)
        assert op.device == ctx.server_node and op.author == SWEEP_AUTHOR
        # the sweep never writes the future (it may stamp 1 ms after an op it holds that was made at `when`)
        assert parse_stamp(op.stamp).ms <= when + 1


@given(histories())
def test_after_the_sweep_no_server_transition_is_left_in_conflict(h: History) -> None:
    ops, _ = run_server(h)
    f = fold("case", h.b.case_id, [op for op in ops if op.entity == "case"])
    server = {op.op_id for op in ops if op.author == SWEEP_AUTHOR}
    open_server = [c for c in f.conflicts if c["status"] == "open" and set(c["op_ids"]) & server]
    assert open_server == []


@given(histories())
def test_every_standing_escalation_alert_names_an_escalation_the_case_took(h: History) -> None:
    ops, _ = run_server(h)
    stt = case_status(h.b.case_id, ops, RULES, h.end, last_contact_ms=h.syncs[-1])
    alerts: dict[str, dict[str, Any]] = {}
    for op in sorted(ops, key=lambda o: o.stamp):
        if op.entity == "alert":
            alerts.setdefault(op.entity_id, {}).update(op.values)
    for a in alerts.values():
        if a["kind"] != "escalated":
            continue
        if a.get("withdrawn_at"):
            continue
        assert a["related_op"] in stt.applied, a
        assert a["related_op"] not in stt.refused


@given(histories())
def test_an_overdue_mark_that_stands_names_a_duty_not_met_by_its_due(h: History) -> None:
    ops, _ = run_server(h)
    stt = case_status(h.b.case_id, ops, RULES, h.end, last_contact_ms=h.syncs[-1])
    alerts: dict[str, dict[str, Any]] = {}
    for op in sorted(ops, key=lambda o: o.stamp):
        if op.entity == "alert":
            alerts.setdefault(op.entity_id, {}).update(op.values)
    for a in alerts.values():
        if a["kind"] != "overdue" or a.get("withdrawn_at"):
            continue
        # (a case closed, reopened and closed again on one day has two follow-ups with one due: either will do)
        obs = [o for o in stt.obligations if (o.rule, o.due) == (a["rule"], a["due"])]
        assert obs, a
        assert [o for o in obs if o.state != "withdrawn"
                and (o.met_ms() is None or o.met_ms() > o.due_ms or o.ended == "escalated")], (a, obs)


def _decided_in_time_synced_late() -> History:
    b = CaseBuilder(level="village", node=NODES["village"])
    b.create("2026-03-02T10:00:00+08:00")
    b.transition("accept", "2026-03-04T10:00:00+08:00")
    b.transition("decide", "2026-03-08T10:00:00+08:00")  # in time; the laptop syncs only on 3/20
    end = ms("2026-03-20T10:00:00+08:00")
    return History(b, end, [ms("2026-03-02T10:00:01+08:00"), end], [ms("2026-03-13T00:00:00+08:00"), end])


@example(_decided_in_time_synced_late())
@given(histories())
def test_a_server_escalation_in_effect_follows_a_level_limit_that_was_missed(h: History) -> None:
    ops, _ = run_server(h)
    stt = case_status(h.b.case_id, ops, RULES, h.end, last_contact_ms=h.syncs[-1])
    for op in ops:
        if op.author != SWEEP_AUTHOR or op.kind != "transition" or op.values["action"] != "escalate":
            continue
        if op.op_id not in stt.applied:
            continue
        at = parse_stamp(op.stamp).ms
        missed = [o for o in stt.obligations if o.rule == op.values["rule"] and o.due_ms < at
                  and (o.met_ms() is None or o.met_ms() > o.due_ms or o.ended == "escalated")]
        assert missed, (op.values, [(o.rule, o.due, o.state, o.met_at) for o in stt.obligations])


# ---- in-time village work that reaches the server after its escalation ----

VILLAGE_DUE = ms("2026-03-10T00:00:00+08:00") - 1  # received 3/2: 3/2 + 7 = 3/9, end of day


@dataclass
class LateWork:
    b: CaseBuilder
    first_sync: int  # the server holds what was made by then
    sweep_at: int  # when it sweeps (and escalates)
    second_sync: int  # the rest arrives


@st.composite
def late_village_work(draw: st.DrawFn) -> LateWork:
    b = CaseBuilder(level="village", node=NODES["village"])
    t = ms("2026-03-02T00:00:00+08:00") + draw(st.integers(0, DAY_MS - 1))
    b.create(iso(t))
    life = initial_lifecycle("village", NODES["village"], iso(t))
    first_sync = t + 1
    for _ in range(draw(st.integers(1, 5))):
        t += draw(st.integers(1, 48)) * HOUR_MS
        if t >= VILLAGE_DUE or life["level"] != "village":
            break
        actions = sorted(actions_for(life, "village"))
        if not actions:
            break
        action = draw(st.sampled_from(actions))
        v: dict[str, Any] = {"to_node": NODES["township"]} if action == "escalate" else {}
        if action == "route":
            v["to_node"] = NODES["village"]
        if action == "extend":
            v["days"] = 30
        life = apply_transition(life, {"action": action, "acting_level": "village", "decision": "support", **v},
                                iso(t))
        b.transition(action, iso(t), acting_level="village", **v)
    sweep_at = VILLAGE_DUE + 72 * HOUR_MS + draw(st.integers(0, 5 * DAY_MS))
    second_sync = sweep_at + draw(st.integers(1, 3 * DAY_MS))
    return LateWork(b, first_sync, sweep_at, second_sync)


def check_late_work(w: LateWork) -> None:
    b = w.b
    device_ops = list(b.ops)
    received = {op.op_id: (w.first_sync if parse_stamp(op.stamp).ms <= w.first_sync else w.second_sync)
                for op in device_ops}
    held = [op for op in device_ops if received[op.op_id] == w.first_sync]
    ctx = sweep_context(last_contact=w.first_sync, received_ms={o.op_id: received[o.op_id] for o in held})
    _, out = sweep_ops(b.case_id, held, RULES, w.sweep_at, ctx)
    ops = device_ops + new_ops(held, out)
    ctx = sweep_context(last_contact=w.second_sync, received_ms=received)
    for _ in range(4):
        _, out = sweep_ops(b.case_id, ops, RULES, w.second_sync, ctx)
        fresh = new_ops(ops, out)
        if not fresh:
            break
        ops += fresh
    stt = case_status(b.case_id, ops, RULES, w.second_sync, last_contact_ms=w.second_sync, received_ms=received)
    vh = [o for o in stt.obligations if o.rule == "village_handling" and o.start_event == "received"][0]
    if not (vh.state == "met" and not vh.late):
        return  # the village did not do its part in time: the escalation may well stand
    # the village's escalation never takes effect, and no conflict of it is left for a person
    escalations = [op.op_id for op in ops if op.author == SWEEP_AUTHOR and op.kind == "transition"
                   and op.values.get("rule") == "village_handling"]
    assert not [e for e in escalations if e in stt.applied]
    got = fold("case", b.case_id, [o for o in ops if o.entity == "case"])
    server = {op.op_id for op in ops if op.author == SWEEP_AUTHOR}
    assert not [c for c in got.conflicts if c["status"] == "open" and set(c["op_ids"]) & server]
    alerts: dict[str, dict[str, Any]] = {}
    for op in sorted(ops, key=lambda o: o.stamp):
        if op.entity == "alert":
            alerts.setdefault(op.entity_id, {}).update(op.values)
    standing = [a for a in alerts.values() if a.get("rule") == "village_handling"
                and a["kind"] in ("overdue", "escalated") and not a.get("withdrawn_at")]
    assert standing == []


def _settled_at_village(w: LateWork) -> bool:
    life = fold("case", w.b.case_id, [o for o in w.b.ops if o.entity == "case"]).life
    return life["level"] != "village" or life["state"] not in OPEN_STATES


@given(late_village_work().filter(_settled_at_village))
def test_in_time_village_work_that_closed_or_reported_the_case_up_undoes_a_late_escalation(w: LateWork) -> None:
    check_late_work(w)


def _decided_only() -> LateWork:
    b = CaseBuilder(level="village", node=NODES["village"])
    b.create("2026-03-02T10:00:00+08:00")
    b.transition("accept", "2026-03-04T10:00:00+08:00", acting_level="village")
    b.transition("decide", "2026-03-08T10:00:00+08:00", acting_level="village")
    return LateWork(b, ms("2026-03-02T10:00:00+08:00") + 1, VILLAGE_DUE + 72 * HOUR_MS, VILLAGE_DUE + 4 * DAY_MS)


@example(_decided_only())
@given(late_village_work())
def test_any_in_time_village_work_undoes_a_late_escalation(w: LateWork) -> None:
    check_late_work(w)
