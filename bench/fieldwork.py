"""A village mediator at work on a real ``FieldClient``: what the client and sync benches record.

``Mediator(client, seed, clock)`` performs the actions a person takes, each through the
client's own API, so each is its own transaction, as in the CLI and the web UI:

* ``new_case()``: ``FieldClient.new_case`` with a petitioner and a respondent (a third
  party one time in five): 3 or 4 ops in one transaction;
* ``visit()``, ``mediation()``, ``note()``, ``notice()``: ``FieldClient.add_record``;
* ``edit()``: ``FieldClient.edit`` of one or two fields of a case, a party, a visit or a
  mediation (base = the stamps the laptop shows);
* ``transition()``: ``FieldClient.transition``, the next step a village would take from
  the case's state (``schema.lifecycle.allowed_actions``);
* ``tag()``: ``FieldClient.set_tags``.

The text comes from ``bench.workload``'s vocabulary (titles, visit notes, terms, names,
ID numbers with correct check digits, phones). Every action returns the number of ops
it recorded and the seconds the client call took (``perf_counter`` around the call only:
choosing what to do next is not counted). The simulated clock moves on a few minutes per
action, within office hours; ``clock`` is the ``SimClock`` the client was made with.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench import workload as W
from field_client.store import FieldClient
from schema import lifecycle
from schema.enums import (
    AgreementForm,
    CaseTag,
    Channel,
    Decision,
    MediationKind,
    MediationOutcome,
    NoticeKind,
    Subject,
    VisitKind,
)

TOWNSHIP = "330102100"


class SimClock:
    """A clock the bench moves by hand (seconds since the epoch), office hours only."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        t = self.t + seconds
        local = datetime.fromtimestamp(t, W.CST)
        if local.hour >= 18:  # next morning at 08:00
            t += (24 - local.hour + 8) * 3600 - local.minute * 60 - local.second
        elif local.hour < 8:
            t += (8 - local.hour) * 3600 - local.minute * 60 - local.second
        self.t = t


@dataclass
class CaseInfo:
    id: str
    subject: Subject
    parties: list[str] = field(default_factory=list)
    visits: list[str] = field(default_factory=list)
    mediations: list[str] = field(default_factory=list)
    closed: bool = False


class Mediator:
    """One village laptop's user; every action goes through the client's API."""

    def __init__(self, client: FieldClient, seed: int, clock: SimClock,
                 gap_s: tuple[float, float] = (60, 900)) -> None:
        self.c = client
        self.rng = random.Random(seed)
        self.clock = clock
        self.gap_s = gap_s
        self.cases: list[CaseInfo] = []
        self.calls: list[tuple[str, int, float]] = []  # (action, ops recorded, seconds)
        self.recorded = 0  # ops recorded so far
        self.village = self.rng.randrange(len(W.VILLAGES))
        self.agents = (self._person(), self._person())

    # ---- helpers ----

    def _person(self) -> str:
        rng = self.rng
        return rng.choice(W.SURNAMES) + "".join(rng.choice(W.GIVEN) for _ in range(rng.choice((1, 2))))

    def _fmt(self, template: str) -> str:
        rng = self.rng
        return template.format(
            g=rng.randrange(1, 13), n=rng.randrange(3, 40),
            m=rng.choice((800, 1500, 2000, 3500, 5000, 8000, 12000, 20000)),
            k=rng.randrange(2, 6), d=self._date(rng.randrange(7, 90)),
        )

    def _text(self, pool: tuple[str, ...], parts: int) -> str:
        return "；".join(self._fmt(self.rng.choice(pool)) for _ in range(parts)) + "。"

    def _now(self, minus_hours: float = 0.0) -> str:
        t = self.clock() - self.rng.uniform(0, minus_hours) * 3600
        return datetime.fromtimestamp(t, W.CST).isoformat(timespec="seconds")

    def _date(self, plus_days: int = 0) -> str:
        return datetime.fromtimestamp(self.clock() + plus_days * 86400, W.CST).date().isoformat()

    def _address(self) -> str:
        return f"{W.VILLAGES[self.village]}{self.rng.randrange(1, 13)}组{self.rng.randrange(1, 80)}号"

    def _call(self, action: str, fn: Callable[[], Any], n_ops: Callable[[Any], int]) -> Any:
        self.clock.advance(self.rng.uniform(*self.gap_s))
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        n = n_ops(out)
        self.calls.append((action, n, dt))
        self.recorded += n
        return out

    def pick(self, *, open_only: bool = True, recent: int = 60) -> CaseInfo:
        pool = [c for c in self.cases[-recent * 2:] if not (open_only and c.closed)][-recent:]
        return self.rng.choice(pool or self.cases)

    # ---- actions ----

    def new_case(self) -> CaseInfo:
        rng = self.rng
        subject = rng.choices(list(W.SUBJECT_WEIGHTS), weights=list(W.SUBJECT_WEIGHTS.values()))[0]
        petitioner = self._person()
        values: dict[str, Any] = {
            "title": self._fmt(rng.choice(W.TITLES[subject])),
            "category": W.SUBJECT_CATEGORY[subject],
            "subject": str(subject),
            "channel": rng.choices([c.value for c in Channel], weights=(45, 8, 12, 15, 20))[0],
            "received_at": self._now(1),
            "first_receiver": rng.choice(self.agents),
            "summary": f"{petitioner}反映：" + self._text(W.DETAILS, rng.randrange(1, 4)),
            "demands": self._text(W.DEMANDS, rng.randrange(1, 3)),
            "people_count": 1 if rng.random() < 0.8 else rng.randrange(2, 40),
        }
        if values["people_count"] >= 5:
            values["tags"] = [CaseTag.GROUP.value]
        parties = [self._party("petitioner", petitioner), self._party("respondent", self._person())]
        if rng.random() < 0.2:
            parties.append(self._party("other", self._person()))
        case_id = self._call("new_case", lambda: self.c.new_case(values, parties), lambda _: 1 + len(parties))
        info = CaseInfo(case_id, subject)
        info.parties = [r[0] for r in self.c.replica.conn.execute(
            "SELECT id FROM parties WHERE case_id=? ORDER BY created_stamp", (case_id,))]
        self.cases.append(info)
        return info

    def _party(self, role: str, name: str) -> dict[str, Any]:
        rng = self.rng
        p: dict[str, Any] = {"role": role, "name": name}
        if rng.random() < 0.9:
            p["id_number"] = W.id_number(rng, "3301" + rng.choice(("02", "06", "09", "10")))
        if rng.random() < 0.85:
            p["phone"] = W.phone(rng)
        if rng.random() < 0.8:
            p["address"] = self._address()
        if role == "respondent" and rng.random() < 0.3:
            p["organisation"] = rng.choice(("某建筑劳务公司", "村经济合作社", "某养殖专业合作社"))
        return p

    def visit(self, case: CaseInfo | None = None) -> None:
        rng = self.rng
        case = case or self.pick()
        values: dict[str, Any] = {
            "kind": rng.choice((VisitKind.RECEPTION, VisitKind.WALK, VisitKind.HOME, VisitKind.HOME,
                                VisitKind.FOLLOW_UP)).value,
            "visited_at": self._now(2), "visitor": rng.choice(self.agents),
        }
        if rng.random() < 0.8:
            values["place"] = rng.choice(W.PLACES)
        if rng.random() < 0.9:
            values["summary"] = self._text(W.VISIT_NOTES, rng.randrange(1, 4))
        eid = self._call("visit", lambda: self.c.add_record("visit", case.id, values), lambda _: 1)
        case.visits.append(eid)

    def mediation(self, case: CaseInfo | None = None) -> None:
        rng = self.rng
        case = case or self.pick()
        outcome = rng.choices([o.value for o in MediationOutcome], weights=(55, 35, 10))[0]
        values: dict[str, Any] = {
            "kind": rng.choices([k.value for k in MediationKind], weights=(85, 12, 3))[0],
            "mediator": rng.choice(self.agents), "held_at": self._now(2), "place": rng.choice(W.PLACES),
            "outcome": outcome, "facts": self._text(W.DETAILS, rng.randrange(1, 3)),
        }
        if outcome == MediationOutcome.AGREEMENT:
            values["agreement_form"] = rng.choices([f.value for f in AgreementForm], weights=(80, 20))[0]
            values["terms"] = self._text(W.TERMS, rng.randrange(1, 3))
            if rng.random() < 0.7:
                values["performance"] = "按协议约定期限履行，由调解委员会跟踪回访"
                values["performance_due"] = self._date(rng.randrange(7, 60))
        elif outcome == MediationOutcome.NO_AGREEMENT:
            values["remedies_told"] = True
        if case.parties:
            values["parties"] = case.parties[: rng.randrange(1, min(3, len(case.parties)) + 1)]
        eid = self._call("mediation", lambda: self.c.add_record("mediation", case.id, values), lambda _: 1)
        case.mediations.append(eid)

    def note(self, case: CaseInfo | None = None) -> None:
        case = case or self.pick()
        values = {"text": self._text(W.NOTES, self.rng.randrange(1, 3)), "written_at": self._now(2)}
        self._call("note", lambda: self.c.add_record("note", case.id, values), lambda _: 1)

    def notice(self, case: CaseInfo | None = None) -> None:
        rng = self.rng
        case = case or self.pick()
        values: dict[str, Any] = {
            "kind": rng.choice((NoticeKind.ROUTE, NoticeKind.ACCEPTANCE, NoticeKind.ACCEPTANCE)).value,
            "served_at": self._date(),
            "number": f"{W.VILLAGES[self.village][:2]}信告〔2026〕{rng.randrange(1, 400)}号",
        }
        if rng.random() < 0.6:
            values["summary"] = self._text(W.NOTES, 1)
        self._call("notice", lambda: self.c.add_record("notice", case.id, values), lambda _: 1)

    def edit(self, case: CaseInfo | None = None) -> None:
        """One field edit (sometimes two fields) of a record of the case."""
        rng = self.rng
        case = case or self.pick(open_only=False)
        r = rng.random()
        if r < 0.25 and case.parties:
            entity, eid = "party", rng.choice(case.parties)
            names = rng.choice((["phone"], ["address"], ["phone", "address"]))
        elif r < 0.45 and case.visits:
            entity, eid, names = "visit", rng.choice(case.visits[-3:]), [rng.choice(("summary", "place"))]
        elif r < 0.55 and case.mediations:
            entity, eid = "mediation", rng.choice(case.mediations)
            names = rng.choice((["facts"], ["terms"], ["performance", "performance_due"]))
        else:
            entity, eid = "case", case.id
            names = rng.choice((["summary"], ["demands"], ["people_count"], ["summary", "demands"],
                                ["simplified"], ["title"]))
        changes = {n: self._value(entity, n, case) for n in names}
        self._call("edit", lambda: self.c.edit(entity, eid, changes), lambda op: 0 if op is None else 1)

    def _value(self, entity: str, name: str, case: CaseInfo) -> Any:
        rng = self.rng
        if name == "phone":
            return W.phone(rng)
        if name == "address":
            return self._address()
        if name == "place":
            return rng.choice(W.PLACES)
        if name == "summary":
            return self._text(W.VISIT_NOTES if entity == "visit" else W.DETAILS, rng.randrange(1, 4))
        if name == "facts":
            return self._text(W.DETAILS, rng.randrange(1, 3))
        if name == "demands":
            return self._text(W.DEMANDS, rng.randrange(1, 3))
        if name == "people_count":
            return rng.randrange(1, 60)
        if name == "simplified":
            return rng.random() < 0.5
        if name == "title":
            return self._fmt(rng.choice(W.TITLES[case.subject]))
        if name == "terms":
            return self._text(W.TERMS, rng.randrange(1, 3))
        if name == "performance":
            return rng.choice(("一次性付清", "分期履行，调委会跟踪", "由村委会监督履行"))
        if name == "performance_due":
            return self._date(rng.randrange(1, 60))
        raise AssertionError(name)

    def next_action(self, case: CaseInfo) -> tuple[str, dict[str, Any]] | None:
        """The step a village would take next on this case, or None (closed, or not ours)."""
        row = self.c.replica.get("case", case.id)
        if row is None:
            return None
        allowed = lifecycle.actions_for(row, self.c.level)
        rng = self.rng
        order = ("accept", "start", "decide", "close", "close_by_agreement")
        choices = [a for a in order if a in allowed]
        if "escalate" in allowed and rng.random() < 0.04:
            choices = ["escalate"]
        elif "reject" in allowed and rng.random() < 0.04:
            choices = ["reject"]
        elif "extend" in allowed and not row.get("extended_days") and rng.random() < 0.05:
            choices = ["extend"]
        if not choices:
            return None
        action = choices[0]
        extra: dict[str, Any] = {}
        if action == "escalate":
            extra = {"to_node": TOWNSHIP, "reason": rng.choice(W.REASONS)}
        elif action in ("decide",):
            extra = {"decision": rng.choices([d.value for d in Decision], weights=(40, 45, 15))[0]}
        elif action == "extend":
            extra = {"days": 30, "reason": "案情复杂，需进一步调查核实", "rule": "信访工作条例第三十四条"}
        elif action == "reject":
            extra = {"reason": "属于诉讼途径解决事项"}
        return action, extra

    def transition(self, case: CaseInfo | None = None) -> bool:
        """Move one case on (the oldest open ones mostly); False if nothing could move."""
        tries = 0
        while tries < 5:
            tries += 1
            pool = [c for c in self.cases if not c.closed]
            if not pool:
                return False
            case = case or (pool[0] if self.rng.random() < 0.5 else self.rng.choice(pool[-80:]))
            step = self.next_action(case)
            if step is None:
                case.closed = True
                case = None
                continue
            action, extra = step
            target = case.id

            def move(target: str = target, action: str = action, extra: dict[str, Any] = extra) -> Any:
                return self.c.transition(target, action, **extra)

            self._call("transition", move, lambda _: 1)
            if action in ("close", "close_by_agreement", "reject", "escalate"):
                case.closed = True
            return True
        return False

    def tag(self, case: CaseInfo | None = None) -> None:
        case = case or self.pick()
        item = self.rng.choice((CaseTag.REPEAT.value, CaseTag.GROUP.value))
        self._call("tag", lambda: self.c.set_tags(case.id, add=[item]), len)

    # ---- a mix ----

    MIX: dict[str, float] = {  # by action; close to bench.workload.MIX for one village
        "new_case": 0.07, "visit": 0.27, "mediation": 0.09, "note": 0.05, "notice": 0.10,
        "edit": 0.28, "transition": 0.13, "tag": 0.01,
    }

    def work(self, n_ops: int, progress: Callable[[int], None] | None = None) -> int:
        """Act from the mix until at least ``n_ops`` ops are recorded; returns the count."""
        names = list(self.MIX)
        weights = list(self.MIX.values())
        while self.recorded < n_ops:
            action = self.rng.choices(names, weights=weights)[0]
            if action == "new_case" or len(self.cases) < 5:
                self.new_case()
            elif action == "transition":
                if not self.transition():
                    self.new_case()
            else:
                getattr(self, action)()
            if progress is not None:
                progress(self.recorded)
        return self.recorded
