"""A case's obligations, pure: from its ops, the county's rules and a time (docs/deadlines.md).

``case_status(case_id, ops, rules, now_ms)`` replays a case's ops in stamp order (the
same order and the same state machine as ``conflict.fold``) and returns every deadline
the case carries: its rule, the event it starts from, its due time and its state
(pending, met, overdue, awaiting sync, withdrawn; a petitioner's window is pending, met
or lapsed), plus the case's colour, backlog flag and clock flags. The laptop calls it to
show due dates offline; the county server calls it in its sweep and records the result
in ``case_status``.

``sweep_ops(...)`` says what the server must write for a case at ``now``: warnings,
overdue marks with reminder letters (提醒函), escalations one level up, warning notices
(警示单), follow-up requirements, finality after a lapsed review window, and the
withdrawal of any of these that later-arriving ops show to have been wrong. Every op it
returns has an id derived from (case, rule, due time, action) and a stamp fixed by the
rule, so writing them twice, or on a restored server, changes nothing.

Time: an op's moment is its HLC stamp (which the laptop corrects by the server's clock
offset), never later than the server received it. A device whose wall clock
(``occurred_at``) disagrees with its stamp by more than the county's
``max_skew_minutes`` is flagged, and the times a person typed on it are shifted back
by that skew. Dates are counted in China time (Asia/Shanghai, UTC+8 all year).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from schema.enums import COLOUR_ORDER, LEVEL_ORDER, AlertKind, Colour, NoticeKind
from schema.enums import ObligationState as OS
from schema.errors import TransitionRefused
from schema.lifecycle import NEXT_LEVEL, OPEN_STATES, apply_transition, initial_lifecycle
from schema.ops import SCHEMA_VERSION, Op
from schema.rules import START_EVENTS, Rules
from schema.stamp import encode as encode_stamp
from schema.stamp import parse as parse_stamp

CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")  # no daylight saving since 1991
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SWEEP_AUTHOR = "county-sweep"  # the author name of the server's sweep ops

CLOSING = frozenset({"decide", "close_by_agreement", "reject"})  # a handling level has dealt with it
RECEIPT_NOTICES = frozenset({NoticeKind.ROUTE, NoticeKind.ACCEPTANCE, NoticeKind.NON_ACCEPTANCE,
                             NoticeKind.NOT_REACCEPTED})


# ---- time ----

def ms_of(text: str) -> int:
    """Milliseconds of an ISO 8601 datetime with an offset (or a date: its start, China time)."""
    if len(text) == 10:
        d = date.fromisoformat(text)
        return int(datetime(d.year, d.month, d.day, tzinfo=CHINA).timestamp() * 1000)
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def iso(ms: int) -> str:
    """China time, to the second."""
    return datetime.fromtimestamp(ms / 1000, CHINA).isoformat(timespec="seconds")


def china_date(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, CHINA).date()


def end_of_day_ms(d: date) -> int:
    """The last millisecond of day ``d`` in China time."""
    nxt = d + timedelta(days=1)
    return int(datetime(nxt.year, nxt.month, nxt.day, tzinfo=CHINA).timestamp() * 1000) - 1


def derived_id(*parts: str) -> str:
    """32 hex digits from what an op is about, so every run names it alike."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


# ---- results ----

@dataclass(frozen=True)
class Obligation:
    """One deadline on a case."""

    rule: str
    zh: str
    kind: str  # "duty": the office must act | "window": someone may act until it closes
    start_event: str
    start_event_zh: str
    start: str
    due: str
    due_ms: int
    state: str  # schema.enums.ObligationState
    met_at: str | None = None
    met_by: str | None = None  # the op that met (or ended) it
    late: bool = False
    ended: str | None = None  # how it ended without being met: "escalated", "closed", "extended", "voided"
    estimated: bool = False  # working days counted on a year whose holidays are not yet published
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.rule}|{self.due}"

    @property
    def open(self) -> bool:
        """Still waiting for someone: not met, and not ended another way (an escalation, a closing)."""
        return self.ended is None and self.state in (OS.PENDING, OS.OVERDUE, OS.AWAITING_SYNC)

    def met_ms(self) -> int | None:
        return ms_of(self.met_at) if self.met_at else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "zh": self.zh, "kind": self.kind, "start_event": self.start_event,
            "start_event_zh": self.start_event_zh, "start": self.start, "due": self.due, "state": self.state,
            "met_at": self.met_at, "met_by": self.met_by, "late": self.late, "ended": self.ended,
            "estimated": self.estimated, "source": self.source,
        }


@dataclass
class CaseStatus:
    """Everything ``case_status`` finds for one case at one time."""

    case_id: str
    exists: bool = False
    voided: bool = False
    state: str | None = None
    level: str | None = None
    node: str | None = None
    category: str | None = None
    obligations: list[Obligation] = field(default_factory=list)
    colour: str = Colour.GREEN.value
    overdue: bool = False
    awaiting_sync: bool = False
    backlog: bool = False
    flags: list[dict[str, Any]] = field(default_factory=list)
    next_at_ms: int | None = None  # when this status next changes by the clock alone
    refused: dict[str, str] = field(default_factory=dict)  # transition op id -> refusal code
    applied: set[str] = field(default_factory=set)  # transition op ids the state machine took
    reopened_after_final: bool = False
    created_ms: int = 0  # the case's create op's moment: no server op may be stamped before it
    last_ms: int = 0  # the latest moment of an op not written by the sweep

    @property
    def is_open(self) -> bool:
        return self.exists and not self.voided and self.state in OPEN_STATES

    @property
    def next_due(self) -> Obligation | None:
        duties = [o for o in self.obligations if o.kind == "duty" and o.open]
        return min(duties, key=lambda o: o.due_ms) if duties else None

    def obligation(self, rule: str, due: str) -> Obligation | None:
        for o in self.obligations:
            if o.rule == rule and o.due == due:
                return o
        return None

    def to_row(self) -> dict[str, Any]:
        nd = self.next_due
        return {
            "case_id": self.case_id, "next_at_ms": self.next_at_ms, "next_due": nd.due if nd else None,
            "next_rule": nd.rule if nd else None, "colour": self.colour, "overdue": int(self.overdue),
            "awaiting_sync": int(self.awaiting_sync), "backlog": int(self.backlog),
            "obligations": [o.to_dict() for o in self.obligations], "flags": self.flags,
        }


# ---- the replay ----

@dataclass
class _Entity:
    values: dict[str, Any] = field(default_factory=dict)
    voided: bool = False
    first: Op | None = None
    progress: list[tuple[int, str]] = field(default_factory=list)  # (ms, op id) of progress entries


class _Times:
    """The moment of each op (its stamp, never after the server received it) and its skew."""

    def __init__(self, rules: Rules, received_ms: Mapping[str, int] | None) -> None:
        self.max_skew = rules.max_skew_minutes * 60_000
        self.received = received_ms or {}
        self.skewed: dict[str, tuple[int, str, int]] = {}  # device -> (skew ms, first op id, its ms)

    def of(self, op: Op) -> int:
        t = parse_stamp(op.stamp).ms
        got = self.received.get(op.op_id)
        if got is not None and got < t:
            t = got
        skew = self.skew(op)
        if skew and op.device not in self.skewed:
            self.skewed[op.device] = (skew, op.op_id, t)
        return t

    def skew(self, op: Op) -> int:
        try:
            skew = ms_of(op.occurred_at) - parse_stamp(op.stamp).ms
        except ValueError:
            return 0
        return skew if abs(skew) > self.max_skew else 0

    def typed(self, value: Any, op: Op) -> int | None:
        """A time a person typed (datetime or date), corrected by the op's skew, never after the op."""
        if not isinstance(value, str):
            return None
        try:
            t = ms_of(value)
        except ValueError:
            return None
        t -= self.skew(op)
        return min(t, self.of(op))


@dataclass
class _Ev:
    action: str
    ms: int
    op_id: str
    acting: str
    level_before: str
    level_after: str
    state_after: str
    values: dict[str, Any]
    device: str


def _replay(case_id: str, ops: Iterable[Op], times: _Times) -> tuple[CaseStatus, dict[str, Any], list[_Ev],
                                                                      dict[tuple[str, str], _Entity], int | None]:
    st = CaseStatus(case_id)
    case_values: dict[str, Any] = {}
    tags: set[str] = set()
    events: list[_Ev] = []
    entities: dict[tuple[str, str], _Entity] = {}
    life: dict[str, Any] | None = None
    received_ms: int | None = None
    for op in sorted(ops, key=lambda o: (o.stamp, o.op_id)):
        if op.case_id != case_id:
            continue
        t = times.of(op)  # also notes the device's clock skew
        if op.author != SWEEP_AUTHOR:
            st.last_ms = max(st.last_ms, t)
        if op.entity == "case" and op.entity_id == case_id:
            if op.kind == "create":
                for k, v in op.values.items():
                    if k == "tags":
                        tags.update(v)
                    elif not (st.exists and k in ("case_no", "origin_node", "first_receiver", "level", "node")):
                        case_values[k] = v
                if not st.exists:
                    st.exists = True
                    st.created_ms = t
                    life = initial_lifecycle(op.values["level"], op.values["node"], op.occurred_at)
                    received_ms = times.typed(op.values.get("received_at"), op) or times.of(op)
            elif op.kind in ("set", "resolve"):
                vals = op.values if op.kind == "set" else (
                    {op.values["field"]: op.values.get("value")} if op.values.get("field") else {})
                for k, v in vals.items():
                    case_values[k] = v
                    if k == "received_at" and st.exists:
                        received_ms = times.typed(v, op) or received_ms
            elif op.kind == "add" and op.values.get("field") == "tags":
                tags.update(op.values.get("items", []))
            elif op.kind == "remove" and op.values.get("field") == "tags":
                tags.difference_update(op.values.get("items", []))
            elif op.kind == "void":
                st.voided = True
            elif op.kind == "transition":
                if life is None:
                    st.refused[op.op_id] = "transition.case_not_created"
                    continue
                try:
                    new = apply_transition(life, op.values, op.occurred_at, voided=st.voided)
                except TransitionRefused as exc:
                    st.refused[op.op_id] = exc.code
                    continue
                if op.values["action"] == "reopen" and life["state"] == "final":
                    st.reopened_after_final = True
                events.append(_Ev(op.values["action"], t, op.op_id, op.values["acting_level"], life["level"],
                                  new["level"], new["state"], dict(op.values), op.device))
                st.applied.add(op.op_id)
                life = new
            continue
        ent = entities.setdefault((op.entity, op.entity_id), _Entity())
        if op.kind == "create":
            if ent.first is None:
                ent.first = op
            ent.values.update(op.values)
            if op.entity == "leader_assignment" and op.values.get("progress"):
                ent.progress.append((t, op.op_id))
        elif op.kind in ("set", "resolve"):
            vals = op.values if op.kind == "set" else (
                {op.values["field"]: op.values.get("value")} if op.values.get("field") else {})
            ent.values.update(vals)
            if op.entity == "leader_assignment" and vals.get("progress"):
                ent.progress.append((t, op.op_id))
        elif op.kind == "void":
            ent.voided = True
    if life is not None:
        st.state, st.level, st.node = life["state"], life["level"], life["node"]
    st.category = case_values.get("category")
    case_values["_tags"] = tags
    case_values["_life"] = life
    return st, case_values, events, entities, received_ms


# ---- obligations ----

class _Builder:
    def __init__(self, rules: Rules, now_ms: int, last_contact_ms: int | None, voided: bool) -> None:
        self.rules = rules
        self.now = now_ms
        self.last_contact = last_contact_ms
        self.voided = voided
        self.out: list[Obligation] = []
        self.grace = rules.grace_hours * HOUR_MS

    def due(self, rule_id: str, start_ms: int, extra_days: int = 0) -> tuple[int, bool]:
        rule = self.rules.rule(rule_id)
        d = china_date(start_ms)
        if rule.counted == "working":
            last, estimated = self.rules.calendar.add_workdays(d, rule.days)
            return end_of_day_ms(last + timedelta(days=extra_days)), estimated
        return end_of_day_ms(d + timedelta(days=rule.days + extra_days)), False

    def duty(self, rule_id: str, start_ms: int, start_event: str, *, met: tuple[int, str] | None = None,
             ended: tuple[int, str, str] | None = None, extra_days: int = 0) -> Obligation | None:
        if not self.rules.enabled(rule_id):
            return None
        rule = self.rules.rule(rule_id)
        due_ms, est = self.due(rule_id, start_ms, extra_days)
        met_at = met_by = how = None
        late = False
        if met is not None:
            state, met_at, met_by, late = OS.MET, iso(met[0]), met[1], met[0] > due_ms
        elif ended is not None:
            met_at, met_by, how = iso(ended[0]), ended[1], ended[2]
            late = ended[0] > due_ms
            state = OS.OVERDUE if late else OS.WITHDRAWN
        elif self.voided:
            state, how = OS.WITHDRAWN, "voided"
        elif self.now <= due_ms:
            state = OS.PENDING
        elif self.last_contact is not None and self.last_contact < due_ms and self.now < due_ms + self.grace:
            state = OS.AWAITING_SYNC
        else:
            state = OS.OVERDUE
        ob = Obligation(rule_id, rule.zh, "duty", start_event, START_EVENTS.get(start_event, start_event),
                        iso(start_ms), iso(due_ms), due_ms, state.value, met_at, met_by, late, how, est,
                        rule.definition.source)
        self.out.append(ob)
        return ob

    def window(self, rule_id: str, start_ms: int, start_event: str, used: tuple[int, str] | None) -> None:
        rule = self.rules.rule(rule_id)
        due_ms, est = self.due(rule_id, start_ms)
        met_at: str | None = None
        met_by: str | None = None
        late = False
        if used is not None:
            state, met_at, met_by, late = OS.MET, iso(used[0]), used[1], used[0] > due_ms
        else:
            state = OS.PENDING if self.now <= due_ms else OS.LAPSED
        self.out.append(Obligation(rule_id, rule.zh, "window", start_event, START_EVENTS.get(start_event, start_event),
                                   iso(start_ms), iso(due_ms), due_ms, state.value, met_at, met_by, late, None, est,
                                   rule.definition.source))


def _first(events: list[_Ev], after_ms: int, actions: frozenset[str] | set[str]) -> _Ev | None:
    for e in events:
        if e.ms >= after_ms and e.action in actions:
            return e
    return None


def case_status(
    case_id: str,
    ops: Iterable[Op],
    rules: Rules,
    now_ms: int,
    *,
    last_contact_ms: int | None = None,
    received_ms: Mapping[str, int] | None = None,
) -> CaseStatus:
    """The obligations, colour and flags of one case at ``now_ms``.

    ``last_contact_ms``: when the device(s) responsible for the case last synced (the
    server passes it; a laptop passes None: it knows its own work). ``received_ms``: when
    the server received each op (op id -> ms), an upper bound on when it happened.
    """
    times = _Times(rules, received_ms)
    st, values, events, entities, received = _replay(case_id, ops, times)
    if not st.exists or received is None:
        return st
    b = _Builder(rules, now_ms, last_contact_ms, st.voided)
    petition = values.get("category") != "dispute"
    simplified = bool(values.get("simplified"))
    life = values["_life"]

    def closing_after(t: int, actions: frozenset[str] | set[str]) -> tuple[int, str] | None:
        e = _first(events, t, actions)
        return (e.ms, e.op_id) if e else None

    def ended_by_end(t: int) -> tuple[int, str, str] | None:
        e = _first(events, t, {"close", "finalize", "reject"})
        return (e.ms, e.op_id, "closed") if e else None

    # registration and written notice (petitions)
    if petition:
        b.duty("register_route", received, "received",
               met=closing_after(0, {"route", "accept", "reject", "close_by_agreement"}), ended=ended_by_end(0))
        notice = None
        for (kind, _), ent in entities.items():
            if kind == "notice" and not ent.voided and ent.values.get("kind") in RECEIPT_NOTICES and ent.first:
                t = times.typed(ent.values.get("served_at"), ent.first)
                if t is not None and (notice is None or t < notice[0]):
                    notice = (t, ent.first.op_id)
        b.duty("receipt_notice", received, "received", met=notice, ended=ended_by_end(0) if notice is None else None)
    if simplified:
        b.duty("simplified_accept", received, "received", met=closing_after(0, {"accept", "reject"}),
               ended=ended_by_end(0))

    # the handling windows of each level: village from receipt, township from reporting up
    level_start: list[tuple[str, int, str, int]] = []  # (level, start ms, event, index of first later event)
    create_level = values.get("level")
    if create_level in ("village", "township"):
        level_start.append((create_level, received, "received", 0))
    for i, e in enumerate(events):
        if e.action == "escalate" and e.level_after in ("village", "township"):
            level_start.append((e.level_after, e.ms, "reported_up", i + 1))
    for level, start, event, first in level_start:
        met = ended = None
        for e in events[first:]:
            if e.action == "escalate" and e.level_before == level:
                if e.acting == level:
                    met = (e.ms, e.op_id)
                else:
                    ended = (e.ms, e.op_id, "escalated")
                break
            if e.action in CLOSING and e.level_before == level:
                met = (e.ms, e.op_id)
                break
            if e.action in ("close", "finalize", "reject") or e.action in CLOSING:
                ended = (e.ms, e.op_id, "closed")
                break
        b.duty(f"{level}_handling", start, event, met=met, ended=ended)

    # handling after acceptance (or after a reopen), with the extension
    handle_rule = "handle_decide" if petition else "mediation_conclude"
    finishing = {"decide", "close_by_agreement", "close", "finalize", "reject"}
    for i, e in enumerate(events):
        if e.action not in ("accept", "reopen"):
            continue
        start, event = e.ms, ("accepted" if e.action == "accept" else "reopened")
        later = events[i + 1 :]
        nxt = next((x for x in later if x.action in finishing or x.action == "extend"), None)
        extra = 0
        if nxt is not None and nxt.action == "extend":
            due_before, _ = b.due(handle_rule, start)
            if nxt.ms > due_before:  # extended after the limit had passed: that limit stays missed
                b.duty(handle_rule, start, event, ended=(nxt.ms, nxt.op_id, "extended"))
            extra = int(nxt.values.get("days") or 30)
            j = later.index(nxt)
            nxt = next((x for x in later[j + 1 :] if x.action in finishing), None)
        met = (nxt.ms, nxt.op_id) if nxt and nxt.action in ("decide", "close_by_agreement") else None
        ended = (nxt.ms, nxt.op_id, "closed") if nxt and not met else None
        b.duty(handle_rule, start, event, met=met, ended=ended, extra_days=extra)
        if simplified and e.action == "accept":
            b.duty("simplified_answer", start, "accepted", met=met, ended=ended)

    # review and re-review: the petitioner's windows and the office's decisions
    notices = [(ent.values.get("kind"), times.typed(ent.values.get("served_at"), ent.first), ent.first.op_id)
               for (kind, _), ent in entities.items() if kind == "notice" and not ent.voided and ent.first]
    for i, e in enumerate(events):
        later = events[i + 1 :]
        if e.action in ("decide", "decide_review"):
            kind = NoticeKind.DECISION if e.action == "decide" else NoticeKind.REVIEW_OPINION
            served = [t for k, t, _ in notices if k == kind and t is not None and t >= e.ms - DAY_MS]
            start = min(served) if served else e.ms
            rule_id = "review_request_window" if e.action == "decide" else "rereview_request_window"
            event = "decision_served" if e.action == "decide" else "review_decided"
            ask = "request_review" if e.action == "decide" else "request_rereview"
            use = next((x for x in later if x.action == ask), None)
            b.window(rule_id, start, event, (use.ms, use.op_id) if use else None)
        elif e.action in ("request_review", "request_rereview"):
            review = e.action == "request_review"
            answer = "decide_review" if review else "decide_rereview"
            done = next((x for x in later if x.action in (answer, "reopen", "finalize")), None)
            b.duty("review_decide" if review else "rereview_decide", e.ms,
                   "review_requested" if review else "rereview_requested",
                   met=(done.ms, done.op_id) if done and done.action == answer else None,
                   ended=(done.ms, done.op_id, "closed") if done and done.action != answer else None)

    # follow-up after closing, until a follow-up visit
    visits = sorted(
        (t, ent.first.op_id)
        for (kind, _), ent in entities.items()
        if kind == "visit" and not ent.voided and ent.first and ent.values.get("kind") == "follow_up"
        for t in [times.typed(ent.values.get("visited_at"), ent.first)] if t is not None
    )
    for i, e in enumerate(events):
        if e.state_after != "closed" or e.action not in ("close", "close_by_agreement"):
            continue
        visit = next(((t, oid) for t, oid in visits if china_date(t) >= china_date(e.ms)), None)
        reopen = next((x for x in events[i + 1 :] if x.action == "reopen"), None)
        b.duty("follow_up", e.ms, "closed", met=visit,
               ended=(reopen.ms, reopen.op_id, "reopened") if reopen and visit is None else None)

    # mediation agreements: the parties' window to apply for judicial confirmation
    for (kind, _), ent in entities.items():
        if kind == "mediation" and not ent.voided and ent.first and ent.values.get("outcome") == "agreement":
            t = times.typed(ent.values.get("held_at"), ent.first)
            if t is not None:
                b.window("judicial_confirmation_window", t, "agreement", None)
    route = _first(events, 0, {"route"})
    if route is not None:
        b.window("objection_window", route.ms, "routed", None)

    # leader-assigned cases: a progress entry every N days while the case is open
    closed_evs = [e for e in events if e.state_after not in OPEN_STATES]
    case_end = closed_evs[-1].ms if closed_evs and life["state"] not in OPEN_STATES else None
    for (kind, _), ent in entities.items():
        if kind != "leader_assignment" or ent.voided or ent.first is None:
            continue
        assigned = times.typed(ent.values.get("assigned_at"), ent.first)
        if assigned is None:
            continue
        start = assigned
        ended_at = times.typed(ent.values.get("ended_at"), ent.first) if ent.values.get("ended_at") else None
        stops = [t for t in (case_end, ended_at) if t is not None]
        stop = min(stops) if stops else None
        entries = sorted(ent.progress)
        for _ in range(1000):
            if stop is not None and start >= stop:
                break
            nxt_entry = next(((t, oid) for t, oid in entries if t > start), None)
            due_ms, _ = b.due("leader_progress", start)
            if nxt_entry is not None and (stop is None or nxt_entry[0] <= stop):
                if nxt_entry[0] > due_ms:
                    b.duty("leader_progress", start, "last_progress", met=nxt_entry)
                start = nxt_entry[0]
                continue
            ended = (stop, ent.first.op_id, "closed") if stop is not None else None
            b.duty("leader_progress", start, "last_progress", ended=ended)
            break

    st.obligations = sorted(b.out, key=lambda o: (o.due_ms, o.rule))
    _colour(st, values, rules, now_ms, times)
    return st


def _colour(st: CaseStatus, values: Mapping[str, Any], rules: Rules, now: int, times: _Times) -> None:
    tags = values["_tags"]
    open_duties = [o for o in st.obligations if o.kind == "duty" and o.open]
    st.overdue = any(o.state == OS.OVERDUE for o in open_duties)
    st.awaiting_sync = any(o.state == OS.AWAITING_SYNC for o in open_duties)
    st.backlog = st.is_open and (
        any(o.state == OS.OVERDUE and o.rule in rules.backlog_open_past for o in open_duties)
        or (rules.backlog_reopened_after_final and st.reopened_after_final)
    )
    for device, (skew, op_id, t) in sorted(times.skewed.items()):
        st.flags.append({"flag": "clock_skew", "device": device, "skew_minutes": round(skew / 60_000),
                         "op_id": op_id, "at": iso(t)})
    people = values.get("people_count") or 0
    group = st.is_open and (people >= rules.group_size or "group" in tags)
    life = values["_life"] or {}
    if group:
        st.flags.append({"flag": "group", "people": people})
    if "repeat" in tags:
        st.flags.append({"flag": "repeat"})
    if life.get("reopened"):
        st.flags.append({"flag": "reopened"})
    if st.state == "final":
        st.flags.append({"flag": "final"})
    colour = Colour.GREEN
    red = rules.red_overdue_days * DAY_MS
    blue = rules.blue_within_days * DAY_MS
    yellow = rules.yellow_within_days * DAY_MS
    if not st.voided and (st.is_open or open_duties):
        if group or (life.get("reopened") and st.is_open) or any(
                o.state == OS.OVERDUE and now - o.due_ms > red for o in open_duties):
            colour = Colour.RED
        elif st.overdue:
            colour = Colour.ORANGE
        elif st.awaiting_sync or ("repeat" in tags and st.is_open) or any(
                o.due_ms - now <= yellow for o in open_duties):
            colour = Colour.YELLOW
        elif any(o.due_ms - now <= blue for o in open_duties):
            colour = Colour.BLUE
    st.colour = colour.value
    # when the clock alone next changes this status (the sweep's index)
    candidates: list[int] = []
    grace = rules.grace_hours * HOUR_MS
    for o in st.obligations:
        if o.kind == "window":
            if o.state == OS.PENDING:
                candidates.append(o.due_ms + 1)
            continue
        if not o.open:
            continue
        candidates += [o.due_ms - blue, o.due_ms - yellow, o.due_ms - rules.warn_before_days * DAY_MS,
                       o.due_ms + 1, o.due_ms + grace, o.due_ms + red + 1,
                       o.due_ms + rules.warning_notice_after_days * DAY_MS]
    future = [t for t in candidates if t > now]
    st.next_at_ms = min(future) if future else None


def colour_rank(colour: str) -> int:
    return COLOUR_ORDER.get(colour, 0)


# ---- what the server writes ----

@dataclass(frozen=True)
class SweepContext:
    """What the server knows beyond the case's ops."""

    server_node: str
    parent_of: Callable[[str], str | None]
    last_contact_ms: int | None = None
    received_ms: Mapping[str, int] = field(default_factory=dict)


def _op(ctx: SweepContext, op_id: str, ms: int, counter: int, entity: str, entity_id: str, case_id: str,
        kind: str, values: dict[str, Any], base: dict[str, str | None] | None = None) -> Op:
    return Op(op_id=op_id, stamp=encode_stamp(ms, counter, ctx.server_node), device=ctx.server_node,
              author=SWEEP_AUTHOR, entity=entity, entity_id=entity_id, case_id=case_id, kind=kind, values=values,
              base=base or {}, occurred_at=iso(ms), schema_version=SCHEMA_VERSION)


def _alert(ctx: SweepContext, key: str, ms: int, case_id: str, kind: AlertKind, ob: Obligation | None,
           message: str, related_op: str | None = None, related_case: str | None = None) -> Op:
    values: dict[str, Any] = {"kind": kind.value, "raised_at": iso(ms), "message": message}
    if ob is not None:
        values.update(rule=ob.rule, due=ob.due, start_event=ob.start_event, start=ob.start)
    if related_op:
        values["related_op"] = related_op
    if related_case:
        values["related_case"] = related_case
    return _op(ctx, derived_id(key, "alert", "create"), ms, 0, "alert", derived_id(key, "alert"), case_id,
               "create", values)


def _withdraw(ctx: SweepContext, key: str, ms: int, case_id: str, reason: str) -> Op:
    return _op(ctx, derived_id(key, "alert", "withdraw"), ms, 1, "alert", derived_id(key, "alert"), case_id, "set",
               {"withdrawn_at": iso(ms), "withdrawn_reason": reason},
               {"withdrawn_at": None, "withdrawn_reason": None})


def _met_before(ob: Obligation, t: int) -> bool:
    m = ob.met_ms()
    return m is not None and m <= t and (ob.state == OS.MET or ob.ended not in (None, "escalated"))


def _why(ob: Obligation | None, default: str) -> str:
    if ob is None:
        return default
    if ob.state == OS.MET and ob.late:
        return (f"{ob.zh}已于 {ob.met_at} 完成 (操作 {ob.met_by and ob.met_by[:8]})，晚于期限 {ob.due}，"
                f"但早于本督办生效；该记录晚于本督办到达 (the work was done late, but before this took effect; "
                f"its record arrived afterwards)")
    if ob.state == OS.MET:
        return (f"{ob.zh}已于 {ob.met_at} 完成 (操作 {ob.met_by and ob.met_by[:8]})，"
                f"不晚于期限 {ob.due}；该记录晚于本督办到达 (the work was done in time; its record arrived late)")
    if ob.state == OS.WITHDRAWN:
        return f"{ob.zh}已不再适用 ({ob.ended or '案件已作废'}; the obligation no longer applies)"
    return f"{ob.zh}已于 {ob.met_at} 办结 (the case was dealt with before this took effect)"


def sweep_ops(case_id: str, ops: list[Op], rules: Rules, now_ms: int, ctx: SweepContext) -> tuple[CaseStatus, list[Op]]:
    """The case's status at ``now_ms`` and the server ops to write (those already written included).

    The caller writes the ops whose ids it does not hold yet; the rest are the same ops again.
    """
    st = case_status(case_id, ops, rules, now_ms, last_contact_ms=ctx.last_contact_ms,
                     received_ms=ctx.received_ms)
    have = {op.op_id for op in ops}
    out: list[Op] = []
    if not st.exists:
        return st, out
    warn = rules.warn_before_days * DAY_MS
    grace = rules.grace_hours * HOUR_MS
    by_key = {o.key: o for o in st.obligations}
    # The sweep acts after everything it knows of the case: after the record itself (a
    # receipt typed days before it was recorded) and after the latest op it holds, so work
    # already reported is never put behind an escalation decided later.
    floor = max(st.created_ms, st.last_ms) + 1

    def moment(t: int) -> int:
        return max(t, floor)

    def key(ob: Obligation, action: str) -> str:
        return f"{case_id}|{ob.rule}|{ob.due}|{action}"

    for ob in st.obligations:
        if ob.kind == "window":
            # a lapsed review window makes the decision final (信访工作条例 第35/36条)
            final_from = {"review_request_window": "closed", "rereview_request_window": "review_decided"}
            if ob.rule in final_from and ob.state == OS.LAPSED and st.state == final_from[ob.rule] and not st.voided:
                k = key(ob, "finalize")
                out.append(_op(ctx, derived_id(k, "finalize"), moment(ob.due_ms), 0, "case", case_id, case_id, "transition",
                               {"action": "finalize", "acting_level": "county", "rule": ob.rule,
                                "reason": f"{ob.zh}届满未申请，处理意见终结 (the window lapsed unused)"}))
            continue
        if st.voided or ob.state == OS.WITHDRAWN:
            continue
        due = ob.due_ms
        # a warning before the deadline
        if warn and ob.state == OS.PENDING and due - warn <= now_ms:
            k = key(ob, "warn")
            out.append(_alert(ctx, k, moment(due - warn), case_id, AlertKind.WARNING, ob,
                              f"{ob.zh}将于 {ob.due} 到期 (due soon)"))
        missed = ob.state in (OS.OVERDUE,) or (ob.state == OS.MET and ob.late)
        if not missed:
            continue
        fresh = ctx.last_contact_ms is None or ctx.last_contact_ms >= due
        at = moment(due + 1 if fresh else due + grace)
        if at > now_ms:
            continue
        k = key(ob, "overdue")
        out.append(_alert(ctx, k, at, case_id, AlertKind.OVERDUE, ob, f"{ob.zh}已于 {ob.due} 到期未完成 (overdue)"))
        if rules.reminder_letter:
            out.append(_op(ctx, derived_id(k, "notice", "create"), at, 0, "notice", derived_id(k, "notice"),
                           case_id, "create",
                           {"kind": NoticeKind.REMINDER_LETTER.value, "served_at": china_date(at).isoformat(),
                            "number": f"TX-{ob.rule}-{china_date(due).isoformat()}",
                            "summary": f"提醒函：{ob.zh}已于 {ob.due} 到期，请尽快办理并记录。"}))
        later = moment(due + rules.warning_notice_after_days * DAY_MS)
        if ob.open and ob.state == OS.OVERDUE and rules.warning_notice_after_days and later <= now_ms:
            k2 = key(ob, "warning_notice")
            out.append(_op(ctx, derived_id(k2, "notice", "create"), later, 0, "notice", derived_id(k2, "notice"),
                           case_id, "create",
                           {"kind": NoticeKind.WARNING_NOTICE.value, "served_at": china_date(later).isoformat(),
                            "number": f"JS-{ob.rule}-{china_date(due).isoformat()}",
                            "summary": f"警示单：{ob.zh}超期已逾 {rules.warning_notice_after_days} 日。"}))
        rule_level = {"village_handling": "village", "township_handling": "township"}.get(ob.rule)
        if (ob.state == OS.OVERDUE and rule_level and st.is_open and st.level == rule_level
                and rule_level in NEXT_LEVEL and st.node):
            parent = ctx.parent_of(st.node)
            if parent:
                k3 = key(ob, "escalate")
                esc_id = derived_id(k3, "escalate")
                out.append(_op(ctx, esc_id, at, 0, "case", case_id, case_id, "transition",
                               {"action": "escalate", "acting_level": "county", "to_node": parent,
                                "from_level": rule_level, "rule": ob.rule,
                                "reason": f"{ob.zh}超期，自动上报 (reported up on the deadline)"}))
                out.append(_alert(ctx, k3, at, case_id, AlertKind.ESCALATED, ob,
                                  f"{ob.zh}超期，已上报至 {parent} (escalated to {parent})", related_op=esc_id))

    # follow-up visits required after closing
    for ob in st.obligations:
        if ob.rule == "follow_up" and ob.state != OS.WITHDRAWN and not st.voided:
            start = moment(ms_of(ob.start))
            if start <= now_ms:
                out.append(_alert(ctx, key(ob, "follow_up"), start, case_id, AlertKind.FOLLOW_UP_REQUIRED, ob,
                                  f"案件已办结，请于 {ob.due} 前回访 (a follow-up visit is due)"))

    # a device whose clock is off: flagged on the case once per device
    for flag in st.flags:
        if flag["flag"] == "clock_skew":
            k = f"{case_id}|clock_skew|{flag['device']}"
            ms = ms_of(flag["at"])
            if ms <= now_ms:
                out.append(_alert(ctx, k, ms, case_id, AlertKind.CLOCK_SKEW, None,
                                  f"设备 {flag['device']} 的时钟偏差约 {flag['skew_minutes']} 分钟；时限按其同步时钟计算 "
                                  f"(the device's clock is off by about {flag['skew_minutes']} min; deadlines use "
                                  f"its synchronised clock)", related_op=flag["op_id"]))

    # withdraw what later-arriving ops show to have been wrong
    out += _withdrawals(case_id, ops, st, by_key, have, ctx, now_ms)
    return st, out


def _withdrawals(case_id: str, ops: list[Op], st: CaseStatus, by_key: Mapping[str, Obligation], have: set[str],
                 ctx: SweepContext, now_ms: int) -> list[Op]:
    out: list[Op] = []
    alerts: dict[str, Op] = {}
    for op in ops:
        if op.entity == "alert" and op.kind == "create" and op.device == ctx.server_node and op.author == SWEEP_AUTHOR:
            alerts[op.entity_id] = op
    for ent_id, create in sorted(alerts.items()):
        v = create.values
        rule, due, kind = v.get("rule"), v.get("due"), v.get("kind")
        if not rule or not due:
            continue
        action = {"warning": "warn", "overdue": "overdue", "escalated": "escalate",
                  "follow_up_required": "follow_up"}.get(str(kind))
        if action is None:
            continue
        k = f"{case_id}|{rule}|{due}|{action}"
        if ent_id != derived_id(k, "alert") or derived_id(k, "alert", "withdraw") in have:
            continue
        ob = by_key.get(f"{rule}|{due}")
        at = parse_stamp(create.stamp).ms
        if st.voided:
            right, reason = False, "案件已作废 (the case was voided)"
        elif action == "warn":
            right = ob is not None and ob.state != OS.WITHDRAWN and not _met_before(ob, at)
            reason = _why(ob, "该时限已不存在 (the deadline no longer exists)")
        elif action == "overdue":
            right = ob is not None and ob.state != OS.WITHDRAWN and not _met_before(ob, ob.due_ms)
            reason = _why(ob, "该时限已不存在 (the deadline no longer exists)")
        elif action == "escalate":
            right = ob is not None and ob.state != OS.WITHDRAWN and not _met_before(ob, at)
            esc_id = derived_id(k, "escalate")
            if right and esc_id in st.refused:
                right = False  # the state machine refused it: the case had moved on before it
            reason = _why(ob, "该时限已不存在 (the deadline no longer exists)")
        else:
            right = ob is not None and ob.state != OS.WITHDRAWN
            reason = _why(ob, "案件已重新办理 (the case was reopened)")
        if right:
            continue
        cause = ob.met_by if ob is not None else None
        ms = max(at, ctx.received_ms.get(cause, 0) if cause else 0)
        ms = min(max(ms, at), max(now_ms, at))
        out.append(_withdraw(ctx, k, ms, case_id, reason))
        if action == "overdue":
            notice_id = derived_id(k, "notice")
            if derived_id(k, "notice", "create") in have:
                out.append(_op(ctx, derived_id(k, "notice", "void"), ms, 1, "notice", notice_id, case_id, "void",
                               {"reason": f"提醒函撤回：{reason}"}))
            k2 = f"{case_id}|{rule}|{due}|warning_notice"
            if derived_id(k2, "notice", "create") in have:
                out.append(_op(ctx, derived_id(k2, "notice", "void"), ms, 1, "notice", derived_id(k2, "notice"),
                               case_id, "void", {"reason": f"警示单撤回：{reason}"}))
        if action == "escalate":
            esc_id = derived_id(k, "escalate")
            if esc_id in st.refused:
                out.append(_op(ctx, derived_id(k, "resolve"), ms, 1, "case", case_id, case_id, "resolve",
                               {"resolves": [esc_id]}))
    # finality transitions the state machine refused because the window was used in time
    for op in ops:
        if (op.op_id in st.refused and op.device == ctx.server_node and op.author == SWEEP_AUTHOR
                and op.kind == "transition" and op.values.get("action") == "finalize"):
            rid = derived_id(op.op_id, "resolve")
            if rid not in have:
                out.append(_op(ctx, rid, parse_stamp(op.stamp).ms, 1, "case", case_id, case_id, "resolve",
                               {"resolves": [op.op_id]}))
    return out


def worst(colours: Iterable[str]) -> str:
    """The most serious of some colours (green when none)."""
    return max(colours, key=colour_rank, default=Colour.GREEN.value)


LEVELS = LEVEL_ORDER  # re-exported for callers that rank levels beside colours
