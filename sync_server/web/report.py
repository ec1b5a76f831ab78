"""The monthly report (一月一排名): rates, the 136 split, rankings, quiet villages, leaders.

Everything is counted for one calendar month in China time, over cases that are not
voided, from the replica's tables and the sweep's ``case_status`` obligations
(docs/coordinator.md "The monthly report" says each definition and its reasons):

* **timely acceptance** (及时受理率): of the cases received in the month whose duty to
  register and route (``register_route``, 15 days) has been met or has fallen due, the
  share met within its limit. Cases still inside their limit are counted apart
  (``pending``), not as late; cases the sweep has not examined yet likewise.
* **on-time closure** (按期办结率): of the answering duties (``handle_decide``,
  ``mediation_conclude``, ``simplified_answer``, ``review_decide``, ``rereview_decide``)
  due in the month and not withdrawn, the share met by their due time.
* **participation** (参评率): cases evaluated in the month ÷ (those + cases whose
  evaluation window, the county's follow-up period after closing, ended in the month
  without an evaluation).
* **satisfaction** (满意率): (满意 + 基本满意) ÷ evaluations in the month.
* **the 136 split**: cases closed in the month (``closed_at``; not "not accepted"), by the
  level that closed them, against the target 60% / 30% / 10%.
* **ranking**: townships and villages by on-time closure, then timely acceptance, then
  satisfaction (higher first), then open overdue cases (fewer first); a unit with no
  figure for a rate sorts after those with one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from schema.lifecycle import OPEN_STATES
from schema.obligations import CHINA
from schema.rules import Rules
from sync_server.web.caseindex import Nodes

ANSWER_RULES = frozenset({"handle_decide", "mediation_conclude", "simplified_answer", "review_decide",
                          "rereview_decide"})
TARGET_SHARE = {"village": 60, "township": 30, "county": 10}
GOOD_RATINGS = frozenset({"satisfied", "basically_satisfied"})
WINDOW_DAYS = 120  # cases received, accepted or closed this long before the month may have duties due in it


def month_bounds(month: str) -> tuple[int, int, date]:
    """(start ms, end ms, first day) of ``YYYY-MM`` in China time; ValueError if malformed."""
    first = datetime.strptime(month + "-01", "%Y-%m-%d").date()
    nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    start = int(datetime(first.year, first.month, 1, tzinfo=CHINA).timestamp() * 1000)
    end = int(datetime(nxt.year, nxt.month, 1, tzinfo=CHINA).timestamp() * 1000)
    return start, end, first


def this_month(now_ms: int) -> str:
    return datetime.fromtimestamp(now_ms / 1000, CHINA).strftime("%Y-%m")


def _ms(text: Any) -> int | None:
    if not text:
        return None
    s = str(text)
    try:
        if len(s) == 10:
            d = date.fromisoformat(s)
            return int(datetime(d.year, d.month, d.day, tzinfo=CHINA).timestamp() * 1000)
        return int(datetime.fromisoformat(s).timestamp() * 1000)
    except ValueError:
        return None


@dataclass
class Rate:
    num: int = 0
    den: int = 0

    @property
    def value(self) -> float | None:
        return None if not self.den else round(100 * self.num / self.den, 1)


@dataclass
class UnitFigures:
    """One township's or village's month."""

    code: str
    name: str
    parent: str = ""
    received: int = 0
    closed: int = 0
    acceptance: Rate = field(default_factory=Rate)
    acceptance_pending: int = 0
    closure: Rate = field(default_factory=Rate)
    participation: Rate = field(default_factory=Rate)
    satisfaction: Rate = field(default_factory=Rate)
    open_overdue: int = 0
    backlog: int = 0
    rank: int = 0

    def sort_key(self) -> tuple[Any, ...]:
        def desc(r: Rate) -> tuple[int, float]:
            v = r.value
            return (1, 0.0) if v is None else (0, -v)
        return (desc(self.closure), desc(self.acceptance), desc(self.satisfaction), self.open_overdue, self.code)


@dataclass
class Report:
    month: str
    start_ms: int
    end_ms: int
    county: UnitFigures
    townships: list[UnitFigures]
    villages: list[UnitFigures]
    levels: dict[str, int]
    quiet_villages: list[UnitFigures]
    leaders: list[dict[str, Any]]
    unswept: int = 0
    follow_up_days: int = 15

    @property
    def level_total(self) -> int:
        return sum(self.levels.values())

    def level_share(self, level: str) -> float | None:
        return None if not self.level_total else round(100 * self.levels.get(level, 0) / self.level_total, 1)


def _in(ms: int | None, start: int, end: int) -> bool:
    return ms is not None and start <= ms < end


def build(conn: Any, nodes: Nodes, rules: Rules, month: str, now_ms: int) -> Report:
    start, end, _first = month_bounds(month)
    lo = datetime.fromtimestamp((start - WINDOW_DAYS * 86_400_000) / 1000, CHINA).isoformat()
    hi = datetime.fromtimestamp((end + 86_400_000) / 1000, CHINA).isoformat()
    follow_days = rules.rules["follow_up"].days if "follow_up" in rules.rules else 15

    county = UnitFigures("*", "")
    towns: dict[str, UnitFigures] = {t: UnitFigures(t, nodes.name(t)) for t in nodes.of_level("township")}
    villages: dict[str, UnitFigures] = {}
    for t in towns:
        for v in nodes.children(t, "village"):
            villages[v] = UnitFigures(v, nodes.name(v), parent=t)

    def units_of(origin: str | None) -> list[UnitFigures]:
        township, village = nodes.place(origin)
        out = [county]
        if township in towns:
            out.append(towns[township])
        if village in villages:
            out.append(villages[village])
        return out

    # the candidates: cases with something in or shortly before the month
    q = ("SELECT c.id, c.origin_node, c.state, c.level, c.received_at, c.closed_at, c.voided, s.obligations "
         "FROM cases c LEFT JOIN case_status s ON s.case_id = c.id WHERE c.voided = 0 AND ("
         "(c.received_at >= ? AND c.received_at < ?) OR (c.accepted_at >= ? AND c.accepted_at < ?) OR "
         "(c.closed_at >= ? AND c.closed_at < ?))")
    levels: dict[str, int] = defaultdict(int)
    closed_cases: dict[str, int] = {}
    unswept = 0
    for case_id, origin, state, level, received_at, closed_at, _voided, obligations in conn.execute(
            q, (lo, hi, lo, hi, lo, hi)):
        us = units_of(origin)
        if _in(_ms(received_at), start, end):
            for u in us:
                u.received += 1
        closed_ms = _ms(closed_at)
        if _in(closed_ms, start, end) and state != "not_accepted":
            levels[level or "village"] += 1
            for u in us:
                u.closed += 1
        if closed_ms is not None and state not in OPEN_STATES and state != "not_accepted":
            closed_cases[case_id] = closed_ms
        if obligations is None:
            if _in(_ms(received_at), start, end):
                unswept += 1
            continue
        for o in json.loads(obligations):
            rule, st = o.get("rule"), o.get("state")
            if rule == "register_route" and _in(_ms(received_at), start, end):
                for u in us:
                    if st == "met":
                        u.acceptance.den += 1
                        u.acceptance.num += 0 if o.get("late") else 1
                    elif st in ("overdue", "awaiting_sync"):
                        u.acceptance.den += 1
                    elif st == "pending":
                        u.acceptance_pending += 1
            elif rule in ANSWER_RULES and st != "withdrawn" and _in(_ms(o.get("due")), start, end):
                for u in us:
                    u.closure.den += 1
                    if st == "met" and not o.get("late"):
                        u.closure.num += 1

    # evaluations and the evaluation window (participation, satisfaction)
    evaluated: dict[str, str] = {}
    q = ("SELECT e.case_id, e.rating, e.evaluated_at, c.origin_node FROM evaluations e JOIN cases c ON c.id = "
         "e.case_id WHERE e.voided = 0 AND c.voided = 0")
    ever_evaluated: set[str] = set()
    origin_of: dict[str, str] = {}
    for case_id, rating, evaluated_at, origin in conn.execute(q):
        ever_evaluated.add(case_id)
        origin_of[case_id] = origin
        if _in(_ms(evaluated_at), start, end):
            for u in units_of(origin):
                u.satisfaction.den += 1
                u.satisfaction.num += 1 if rating in GOOD_RATINGS else 0
            evaluated[case_id] = origin
    for _case_id, origin in evaluated.items():
        for u in units_of(origin):
            u.participation.num += 1
            u.participation.den += 1
    window = follow_days * 86_400_000
    lo_closed = datetime.fromtimestamp((start - window - 86_400_000) / 1000, CHINA).isoformat()
    for case_id, origin, closed_at in conn.execute(
            "SELECT id, origin_node, closed_at FROM cases WHERE voided = 0 AND closed_at >= ? AND closed_at < ? "
            "AND state NOT IN ('not_accepted')", (lo_closed, hi)):
        if case_id in ever_evaluated or case_id in evaluated:
            continue
        closed_ms = _ms(closed_at)
        if closed_ms is not None and _in(closed_ms + window, start, end) and closed_ms + window <= now_ms:
            for u in units_of(origin):
                u.participation.den += 1

    # open overdue and backlog now (the ranking's tie-breaker)
    for origin, overdue, backlog in conn.execute(
            "SELECT c.origin_node, s.overdue, s.backlog FROM case_status s JOIN cases c ON c.id = s.case_id "
            "WHERE (s.overdue = 1 OR s.backlog = 1) AND c.voided = 0"):
        for u in units_of(origin):
            u.open_overdue += 1 if overdue else 0
            u.backlog += 1 if backlog else 0

    town_list = sorted(towns.values(), key=UnitFigures.sort_key)
    for i, u in enumerate(town_list, 1):
        u.rank = i
    village_list = sorted(villages.values(), key=UnitFigures.sort_key)
    for i, u in enumerate(village_list, 1):
        u.rank = i
    quiet = sorted((v for v in villages.values() if v.received == 0), key=lambda v: (v.parent, v.code))
    return Report(month, start, end, county, town_list, village_list, dict(levels), quiet,
                  leader_cases(conn, nodes), unswept, follow_days)


def leader_cases(conn: Any, nodes: Nodes, *, leader: str | None = None,
                 open_only: bool = False) -> list[dict[str, Any]]:
    """Active leader assignments (领导包案) with their case and the progress duty's state."""
    q = ("SELECT la.id, la.case_id, la.leader, la.handler, la.assigned_at, la.progress, la.team, la.plan, "
         "c.case_no, c.title, c.category, c.state, c.level, c.origin_node, COALESCE(s.colour, 'green'), "
         "s.obligations FROM leader_assignments la JOIN cases c ON c.id = la.case_id "
         "LEFT JOIN case_status s ON s.case_id = c.id WHERE la.voided = 0 AND la.ended_at IS NULL AND c.voided = 0")
    params: list[Any] = []
    if leader is not None:
        q += " AND la.leader = ?"
        params.append(leader)
    q += " ORDER BY la.leader, c.case_no"
    out = []
    cols = ("id", "case_id", "leader", "handler", "assigned_at", "progress", "team", "plan", "case_no", "title",
            "category", "state", "level", "origin_node", "colour", "obligations")
    for r in conn.execute(q, params):
        d = dict(zip(cols, r, strict=True))
        if open_only and d["state"] not in OPEN_STATES:
            continue
        obs = [o for o in json.loads(d.pop("obligations") or "[]") if o.get("rule") == "leader_progress"]
        latest = max(obs, key=lambda o: str(o.get("due"))) if obs else None
        d["progress_state"] = latest.get("state") if latest else None
        d["progress_due"] = latest.get("due") if latest else None
        d["team"] = json.loads(d["team"] or "[]")
        d["origin_name"] = nodes.name(d["origin_node"])
        d["open"] = d["state"] in OPEN_STATES
        out.append(d)
    return out


def leaders(conn: Any) -> list[tuple[str, int]]:
    """Leaders with active assignments and how many open cases each holds."""
    rows = conn.execute(
        "SELECT la.leader, COUNT(DISTINCT la.case_id) FROM leader_assignments la JOIN cases c ON c.id = la.case_id "
        f"WHERE la.voided = 0 AND la.ended_at IS NULL AND c.voided = 0 AND c.state IN "
        f"({', '.join(repr(str(s)) for s in sorted(OPEN_STATES))}) GROUP BY la.leader ORDER BY la.leader")
    return [(r[0], r[1]) for r in rows]


def handover_specs(assignments: Iterable[dict[str, Any]], successor: str, today: str,
                   bases: dict[str, dict[str, str | None]]) -> list[dict[str, Any]]:
    """The ops of a leader's handover (离任交接): each open assignment ended and handed over
    (``bases``: the stamps of the values seen, by assignment id), and a new assignment for
    the successor with the same handler, team and plan."""
    import os

    specs = []
    for a in assignments:
        base = bases.get(a["id"], {})
        specs.append({"entity": "leader_assignment", "entity_id": a["id"], "case_id": a["case_id"], "kind": "set",
                      "values": {"ended_at": today, "handed_over_to": successor},
                      "base": {"ended_at": base.get("ended_at"), "handed_over_to": base.get("handed_over_to")}})
        new_id = os.urandom(16).hex()
        values: dict[str, Any] = {"leader": successor, "assigned_at": today, "handler": a["handler"]}
        if a.get("team"):
            values["team"] = list(a["team"])
        if a.get("plan"):
            values["plan"] = a["plan"]
        specs.append({"entity": "leader_assignment", "entity_id": new_id, "case_id": a["case_id"],
                      "kind": "create", "values": values})
    return specs
