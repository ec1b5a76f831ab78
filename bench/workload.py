"""A deterministic, realistic op stream for the benchmarks.

``generate(n_ops, seed)`` simulates a year of casework in one township: six village
laptops (村代办员 / 调解员) and the township station's laptop (乡镇代办站) register cases,
add parties, record visits, mediation sessions, notices, notes and evaluations, edit
fields, move cases through the statutory state machine (``schema.lifecycle``), report
some up (上报), void a few records and tag cases. Every op is made with
``conflict.author.make_op`` on the device's own HLC, so each device's stamps rise.

What the stream contains on purpose, so that the replica does all of its work:

* concurrent edits of one field from a village laptop and the township laptop with the
  same ``base`` (the stamp both authors saw): the second one opens a conflict; about a
  third of them are later resolved by the township (``resolve`` naming the conflict);
* invalid transitions (a village acting on a case reported up to the township, an action
  from the wrong state, a transition on a voided case): kept, not applied, conflict;
* add/remove on the case tags with ``observed`` add ids (add-wins set);
* voids of cases and of records entered by mistake.

The simulated clock only moves forward (office hours 08:00-18:00 China time from
2026-01-05, about 313 ops a day, so 100,000 ops end near 2026-11-20): the list
``generate`` returns is in stamp order. ``batches`` reorders it as the
county server would receive it: each laptop holds its ops until it syncs (villages every
12-72 hours, the township every 2-6 hours) and then delivers them in one go; the result
is cut into batches. Ops of one entity written on two laptops therefore arrive out of
stamp order, and the replica must fold those entities again.

Everything comes from one ``random.Random(seed)``: no global state, same seed, same ops.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from conflict.author import make_op
from conflict.hlc import Stamp
from schema.entities import ENTITIES
from schema.enums import (
    AgreementForm,
    CaseTag,
    Channel,
    Decision,
    MediationKind,
    MediationOutcome,
    NoticeKind,
    PartyRole,
    Rating,
    State,
    Subject,
    VisitKind,
)
from schema.errors import TransitionRefused
from schema.lifecycle import OPEN_STATES, apply_transition, initial_lifecycle
from schema.ops import Op

CST = timezone(timedelta(hours=8))
START = datetime(2026, 1, 5, 8, 0, tzinfo=CST)
# One township's casework: 100,000 ops take 2026-01-05 to about 2026-11-20. The density
# is fixed, so a shorter run (--quick) is a shorter stretch of the same work.
OPS_PER_DAY = 313
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
OFFICE_OPEN_MS = 8 * HOUR_MS  # local time of day, China time
OFFICE_CLOSE_MS = 18 * HOUR_MS
CST_OFFSET_MS = 8 * HOUR_MS

# Share of *events* by category; an event makes one op except a concurrent edit (two).
MIX: dict[str, float] = {
    "case": 0.08,
    "party": 0.12,
    "visit": 0.24,
    "evaluation": 0.01,
    "mediation": 0.08,
    "notice": 0.10,
    "note": 0.045,
    "leader": 0.005,
    "edit": 0.20,
    "transition": 0.10,
    "void": 0.01,
    "tag": 0.01,
}
CONCURRENT_SHARE = 0.08  # of edit events: a village and the township edit one field
RESOLVE_SHARE = 0.35  # of concurrent edits: the township resolves the conflict later
INVALID_TRANSITION_SHARE = 0.05  # of transition events
# A laptop knows what another laptop wrote once both have synced: villages sync at least
# every 72 hours, the township every 6, so after about this long.
KNOWN_AFTER_MS = 3 * DAY_MS + 6 * HOUR_MS

COUNTY_NODE = "330102000"
TOWNSHIP_NODE = "330102100"
VILLAGES = ("东山村", "西溪村", "南湖村", "北岙村", "石桥村", "竹园村")
VILLAGE_WEIGHTS = (0.17, 0.15, 0.14, 0.13, 0.12, 0.11)
TOWNSHIP_WEIGHT = 0.18

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈姚卢"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀英华平刚桂兰霞建国志红玉梅金凤海林春燕德福云飞荣新文"
LOGINS = (
    "wangli", "zhangwei", "liuyang", "chenjing", "yangfan", "zhaolei", "huangmin",
    "zhoujie", "wuqiang", "xuyan", "sunhao", "majun", "zhuhong", "hulin",
)

SUBJECT_CATEGORY = {
    Subject.LAND_REQUISITION: "complaint",
    Subject.DEMOLITION: "complaint",
    Subject.LAND_CONTRACT: "dispute",
    Subject.WAGE_ARREARS: "complaint",
    Subject.NEIGHBOUR: "dispute",
    Subject.FAMILY: "dispute",
    Subject.ENVIRONMENT: "complaint",
    Subject.PROPERTY_DAMAGE: "dispute",
    Subject.MEDICAL: "dispute",
    Subject.SOCIAL_SECURITY: "complaint",
    Subject.OFFICIAL_CONDUCT: "accusation",
    Subject.OTHER: "suggestion",
}
SUBJECT_WEIGHTS = {
    Subject.NEIGHBOUR: 22, Subject.FAMILY: 14, Subject.LAND_CONTRACT: 12,
    Subject.LAND_REQUISITION: 9, Subject.DEMOLITION: 6, Subject.WAGE_ARREARS: 9,
    Subject.ENVIRONMENT: 7, Subject.PROPERTY_DAMAGE: 7, Subject.MEDICAL: 2,
    Subject.SOCIAL_SECURITY: 5, Subject.OFFICIAL_CONDUCT: 2, Subject.OTHER: 5,
}
TITLES = {
    Subject.LAND_REQUISITION: ("{g}组征地补偿款分配争议", "征地青苗补偿标准异议", "被征地农民社保待遇问题"),
    Subject.DEMOLITION: ("拆迁安置房分配不公", "旧村改造过渡费未按时发放", "拆迁评估价格异议"),
    Subject.LAND_CONTRACT: ("土地承包经营权流转纠纷", "{g}组承包地边界争议", "流转土地租金拖欠"),
    Subject.WAGE_ARREARS: ("工地拖欠农民工工资", "装修工程款拖欠", "厂方拖欠{n}名工人工资"),
    Subject.NEIGHBOUR: ("宅基地边界纠纷", "排水沟堵塞引发邻里矛盾", "相邻通行纠纷", "违章搭建影响采光"),
    Subject.FAMILY: ("赡养老人费用分担纠纷", "离婚后子女抚养费纠纷", "家庭财产分割纠纷"),
    Subject.ENVIRONMENT: ("养殖场异味扰民", "夜间施工噪声扰民", "企业排污影响农田灌溉"),
    Subject.PROPERTY_DAMAGE: ("交通事故赔偿纠纷", "犬只咬伤赔偿纠纷", "建房损坏邻居房屋赔偿"),
    Subject.MEDICAL: ("卫生院诊疗纠纷", "村卫生室用药争议"),
    Subject.SOCIAL_SECURITY: ("低保资格认定异议", "养老保险缴费年限争议", "残疾人补贴未发放"),
    Subject.OFFICIAL_CONDUCT: ("反映村干部工作作风问题", "反映村务公开不及时"),
    Subject.OTHER: ("建议修复村道路灯", "建议增设公交站点", "反映村道积水问题"),
}
DETAILS = (
    "双方多次协商未果，矛盾有激化趋势",
    "当事人情绪较为激动，要求尽快处理",
    "该问题已持续两年有余，曾向村委会口头反映",
    "经初步了解，双方对事实基本无争议，主要分歧在于赔偿数额",
    "涉及{n}户村民，部分村民表示将集体上访",
    "当事人提供了相关照片和书面材料",
    "对方当事人表示愿意配合调查",
    "网格员在日常走访中发现并上报",
    "当事人称曾多次拨打热线未获答复",
    "现场查看发现情况基本属实",
)
DEMANDS = (
    "要求按照政策标准足额发放补偿款",
    "要求对方恢复原状并赔偿损失{m}元",
    "要求村委会出面协调解决",
    "要求依法查处并公开处理结果",
    "要求支付拖欠款项共计{m}元",
    "要求重新测量并确认边界",
    "要求停止侵害、消除影响",
)
VISIT_NOTES = (
    "上门了解情况，当事人情绪稳定，表示愿意接受调解",
    "会同网格员实地查看，拍照取证，并向周边群众了解情况",
    "电话联系对方当事人未果，改为上门走访，对方表示近期外出务工",
    "回访当事人，对处理结果表示基本满意，协议已按期履行",
    "向当事人解释相关政策规定，当事人表示理解",
    "组织双方在村委会面谈，初步达成调解意向",
    "当事人反映的问题已转交乡镇相关部门，告知办理进度",
)
TERMS = (
    "甲方于{d}前一次性支付乙方赔偿款{m}元，乙方不再就此事主张其他权利",
    "双方同意以原界桩为准重新确认边界，费用由双方平均分担",
    "甲方拆除违章搭建部分，乙方撤回信访诉求",
    "赡养费由子女三人按月各支付{k}00元，于每月10日前交付",
    "工程款分{k}期支付，首期于{d}前支付{m}元",
)
NOTES = (
    "已向乡镇代办站报告进展",
    "当事人要求暂缓调解，待其子女返乡后再行协商",
    "包案领导已听取汇报，要求本周内拿出化解方案",
    "材料已补齐，待出具处理意见",
    "对方当事人提出新的证据，需进一步核实",
    "当事人来电询问办理进度，已告知",
)
VOID_REASONS = ("录入错误", "重复录入", "信息填写有误，已重新登记")
PLACES = ("村委会调解室", "当事人家中", "村文化礼堂", "乡镇综治中心", "田间现场", "村便民服务中心")
REASONS = ("超出村级调处能力，报请乡镇协调", "涉及多个部门职责", "群体性矛盾，需上级统筹", "当事人要求上级处理")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, CST).isoformat(timespec="seconds")


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, CST).date().isoformat()


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def id_number(rng: random.Random, region: str = "330102") -> str:
    """A resident ID number (18 digits) with a correct check digit."""
    birth = datetime(1940, 1, 1) + timedelta(days=rng.randrange(0, 60 * 365))
    body = f"{region}{birth:%Y%m%d}{rng.randrange(1000):03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(c) * w for c, w in zip(body, weights, strict=True))
    return body + "10X98765432"[total % 11]


def phone(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return f"0571-8{rng.randrange(10**6, 10**7)}"
    return f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"


@dataclass
class Device:
    """One laptop: its node id, where it works, who uses it, its HLC."""

    id: str
    name: str
    level: str  # village | township
    node: str
    village: int | None  # index into VILLAGES, None for the township
    authors: tuple[str, ...]
    agents: tuple[str, ...]  # the people's names (visitor, mediator, first receiver)
    last: Stamp | None = None
    case_seq: int = 0


@dataclass
class CaseSim:
    """What the simulation knows about a case (mirrors what the fold will compute)."""

    id: str
    village: int
    creator: int  # device index
    created_ms: int
    subject: str
    life: dict[str, Any]
    voided: bool = False
    has_agreement: bool = False
    children: dict[str, list[str]] = field(default_factory=dict)  # entity -> ids
    tags: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)  # item -> live adds (op id, ms, device)
    township_at: int = 0  # from when the township laptop knows the case is at its level
    people: list[str] = field(default_factory=list)


class _World:
    def __init__(self, n_ops: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n_ops = n_ops
        self.ops: list[Op] = []
        self.mean_gap = (OFFICE_CLOSE_MS - OFFICE_OPEN_MS) / OPS_PER_DAY
        self.now = _ms(START)
        rng = self.rng
        logins = list(LOGINS)
        rng.shuffle(logins)
        self.devices: list[Device] = []
        for i, _ in enumerate(VILLAGES):
            self.devices.append(
                Device(
                    id=self._node_id(), name=f"V{i + 1:03d}", level="village",
                    node=f"330102{i + 1:03d}", village=i,
                    authors=(logins[2 * i], logins[2 * i + 1]),
                    agents=(self._person(), self._person()),
                )
            )
        self.devices.append(
            Device(
                id=self._node_id(), name="T001", level="township", node=TOWNSHIP_NODE,
                village=None, authors=(logins[12], logins[13]),
                agents=(self._person(), self._person(), self._person()),
            )
        )
        self.township = len(self.devices) - 1
        self.device_weights = (*VILLAGE_WEIGHTS, TOWNSHIP_WEIGHT)
        self.cases: dict[str, CaseSim] = {}
        self.active: list[list[str]] = [[] for _ in VILLAGES]  # open cases by village
        self.closed: list[list[str]] = [[] for _ in VILLAGES]  # for evaluations, follow-ups
        self.township_cases: list[str] = []  # open cases at township level
        self.voided: list[CaseSim] = []
        self.owner: dict[str, tuple[str, str]] = {}  # entity id -> (entity, case id)
        # the fold's view of every field: (entity id, field) -> (stamp, op id, value)
        self.win: dict[tuple[str, str], tuple[str, str, Any]] = {}
        self.open_conflicts: dict[tuple[str, str], list[str]] = {}
        self.to_resolve: list[tuple[int, str, str]] = []  # (when, entity id, field)
        self.born: dict[str, tuple[int, int]] = {}  # entity id -> (ms, device) of its create
        self.stats: Counter[str] = Counter()

    # ---- small helpers ----

    def _hex(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def _node_id(self) -> str:
        return "".join(self.rng.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(16))

    def _person(self) -> str:
        rng = self.rng
        return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))

    def _money(self) -> int:
        return self.rng.choice((800, 1500, 2000, 3500, 5000, 8000, 12000, 20000, 36000))

    def _fmt(self, template: str) -> str:
        rng = self.rng
        return template.format(
            g=rng.randrange(1, 13), n=rng.randrange(3, 40), m=self._money(),
            k=rng.randrange(2, 6), d=_date(self.now + rng.randrange(7, 90) * DAY_MS),
        )

    def _text(self, pool: Sequence[str], parts: int) -> str:
        return "；".join(self._fmt(self.rng.choice(pool)) for _ in range(parts)) + "。"

    def _advance(self, scale: float = 1.0) -> None:
        """Move the clock forward by a random gap, within office hours (China time)."""
        gap = max(1, int(self.rng.expovariate(1.0 / (self.mean_gap * scale))))
        t = self.now + gap
        local = t + CST_OFFSET_MS
        tod = local % DAY_MS
        if tod >= OFFICE_CLOSE_MS:
            t += DAY_MS - tod + OFFICE_OPEN_MS
        elif tod < OFFICE_OPEN_MS:
            t += OFFICE_OPEN_MS - tod
        self.now = t

    def _earlier(self, max_hours: float) -> str:
        """An ISO time a little before now (when the thing recorded happened)."""
        return _iso(self.now - int(self.rng.uniform(0, max_hours) * HOUR_MS))

    def _emit(
        self, dev: int, entity: str, entity_id: str, case_id: str, kind: str,
        values: dict[str, Any], base: dict[str, str | None] | None = None,
    ) -> Op:
        d = self.devices[dev]
        op, stamp = make_op(
            last=d.last, wall_ms=self.now, device=d.id, author=self.rng.choice(d.authors),
            op_id=self._hex(), entity=entity, entity_id=entity_id, case_id=case_id,
            kind=kind, values=values, occurred_at=_iso(self.now), base=base,
        )
        d.last = stamp
        self.ops.append(op)
        self.stats[f"{entity}.{kind}"] += 1
        if kind in ("create", "set", "resolve"):
            self._track_writes(op)
        return op

    def _track_writes(self, op: Op) -> None:
        """Mirror the fold's last-writer-wins and conflict rule for each field written."""
        spec = ENTITIES[op.entity]
        if op.kind == "resolve":
            named = set(op.values["resolves"])
            for key, ids in list(self.open_conflicts.items()):
                if key[0] == op.entity_id and named.issuperset(ids):
                    del self.open_conflicts[key]
            name = op.values.get("field")
            writes = {name: op.values["value"]} if name else {}
        else:
            writes = op.values
        for name, value in writes.items():
            fs = spec.field_map[name]
            if fs.create_only or fs.kind == "set":
                continue
            key = (op.entity_id, name)
            current = self.win.get(key)
            base = op.base.get(name) if op.kind != "create" else None
            if current is not None and (base is None or base < current[0]) and current[2] != value:
                ids = self.open_conflicts.setdefault(key, [])
                for oid in (current[1], op.op_id):
                    if oid not in ids:
                        ids.append(oid)
            self.win[key] = (op.stamp, op.op_id, value)

    def _base(self, entity_id: str, names: Iterable[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for n in names:
            w = self.win.get((entity_id, n))
            out[n] = w[0] if w else None
        return out

    # ---- choosing who and what ----

    def _pick_device(self) -> int:
        return self.rng.choices(range(len(self.devices)), weights=self.device_weights)[0]

    def _knows(self, dev: int, entity_id: str) -> bool:
        """Whether this laptop has the entity: it wrote it, or it has synced since."""
        ms, author = self.born[entity_id]
        return author == dev or self.now - ms > KNOWN_AFTER_MS

    def _pick_case(self, dev: int) -> CaseSim | None:
        """A case this laptop works on and knows of, recent ones mostly."""
        rng = self.rng
        d = self.devices[dev]
        if d.village is not None:
            window = self.active[d.village][-80:]
        elif self.township_cases and rng.random() < 0.6:
            window = [c for c in self.township_cases[-80:] if self.cases[c].township_at <= self.now]
        else:
            window = self.active[rng.randrange(len(VILLAGES))][-80:]
        pool = [c for c in window if self._knows(dev, c)][-60:]
        if not pool:
            return None
        return self.cases[rng.choice(pool)]

    def _retire(self, case: CaseSim) -> None:
        """A case leaves the open lists (closed, final, not accepted, voided)."""
        if case.id in self.active[case.village]:
            self.active[case.village].remove(case.id)
        if case.id in self.township_cases:
            self.township_cases.remove(case.id)
        if not case.voided:
            self.closed[case.village].append(case.id)

    # ---- events ----

    def create_case(self, dev: int) -> None:
        rng = self.rng
        d = self.devices[dev]
        village = d.village if d.village is not None else rng.randrange(len(VILLAGES))
        subject = rng.choices(list(SUBJECT_WEIGHTS), weights=list(SUBJECT_WEIGHTS.values()))[0]
        cid = self._hex()
        d.case_seq += 1
        petitioner = self._person()
        n_people = 1 if rng.random() < 0.8 else rng.randrange(2, 40)
        values: dict[str, Any] = {
            "case_no": f"{d.name}-{d.id[:4]}-{_iso(self.now)[:4]}-{d.case_seq:04d}",
            "title": self._fmt(rng.choice(TITLES[subject])),
            "category": SUBJECT_CATEGORY[subject],
            "subject": str(subject),
            "channel": rng.choices(
                [c.value for c in Channel], weights=(45, 8, 12, 15, 20)
            )[0],
            "origin_node": f"330102{village + 1:03d}",
            "received_at": self._earlier(4),
            "first_receiver": rng.choice(d.agents),
            "summary": f"{petitioner}反映：" + self._text(DETAILS, rng.randrange(1, 4)),
            "demands": self._text(DEMANDS, rng.randrange(1, 3)),
            "people_count": n_people,
            "level": d.level,
            "node": d.node,
        }
        if rng.random() < 0.3:
            values["simplified"] = rng.random() < 0.5
        if rng.random() < 0.1:
            values["not_public"] = True
        tags = []
        if n_people >= 5:
            tags.append(CaseTag.GROUP.value)
        if rng.random() < 0.08:
            tags.append(CaseTag.REPEAT.value)
        if d.level == "township" and rng.random() < 0.3:
            tags.append(CaseTag.SKIP_LEVEL.value)
        if tags:
            values["tags"] = tags
        if rng.random() < 0.05 and self.closed[village]:
            values["related_case"] = rng.choice(self.closed[village][-50:])
        op = self._emit(dev, "case", cid, cid, "create", values)
        self.born[cid] = (self.now, dev)
        case = CaseSim(
            id=cid, village=village, creator=dev, created_ms=self.now, subject=str(subject),
            life=initial_lifecycle(d.level, d.node, op.occurred_at), people=[petitioner],
            tags={t: [(op.op_id, self.now, dev)] for t in tags}, township_at=self.now,
        )
        self.cases[cid] = case
        self.owner[cid] = ("case", cid)
        self.active[village].append(cid)
        if d.level == "township":
            self.township_cases.append(cid)

    def _child(self, dev: int, case: CaseSim, entity: str, values: dict[str, Any]) -> Op:
        eid = self._hex()
        op = self._emit(dev, entity, eid, case.id, "create", values)
        case.children.setdefault(entity, []).append(eid)
        self.owner[eid] = (entity, case.id)
        self.born[eid] = (self.now, dev)
        return op

    def create_party(self, dev: int, case: CaseSim) -> None:
        rng = self.rng
        role = rng.choices([r.value for r in PartyRole], weights=(60, 30, 10))[0]
        name = case.people[0] if role == "petitioner" and not case.children.get("party") else self._person()
        values: dict[str, Any] = {"role": role, "name": name}
        if rng.random() < 0.9:
            values["id_number"] = id_number(rng, "3301" + rng.choice(("02", "06", "09", "10")))
        if rng.random() < 0.85:
            values["phone"] = phone(rng)
        if rng.random() < 0.8:
            values["address"] = f"{VILLAGES[case.village]}{rng.randrange(1, 13)}组{rng.randrange(1, 80)}号"
        if role == "respondent" and rng.random() < 0.4:
            values["organisation"] = rng.choice(("某建筑劳务公司", "村经济合作社", "某养殖专业合作社", "镇卫生院"))
        case.people.append(name)
        self._child(dev, case, "party", values)

    def create_visit(self, dev: int, case: CaseSim, *, follow_up: bool = False) -> None:
        rng = self.rng
        kind = VisitKind.FOLLOW_UP if follow_up else rng.choice(
            (VisitKind.RECEPTION, VisitKind.WALK, VisitKind.HOME, VisitKind.HOME)
        )
        values: dict[str, Any] = {
            "kind": kind.value,
            "visited_at": self._earlier(8),
            "visitor": rng.choice(self.devices[dev].agents),
        }
        if rng.random() < 0.8:
            values["place"] = rng.choice(PLACES)
        if rng.random() < 0.9:
            values["summary"] = self._text(VISIT_NOTES, rng.randrange(1, 4))
        self._child(dev, case, "visit", values)

    def create_mediation(self, dev: int, case: CaseSim) -> None:
        rng = self.rng
        outcome = rng.choices(
            [o.value for o in MediationOutcome], weights=(55, 35, 10)
        )[0]
        values: dict[str, Any] = {
            "kind": rng.choices([k.value for k in MediationKind], weights=(85, 12, 3))[0],
            "mediator": rng.choice(self.devices[dev].agents),
            "held_at": self._earlier(6),
            "place": rng.choice(PLACES),
            "outcome": outcome,
            "facts": self._text(DETAILS, rng.randrange(1, 3)),
        }
        if outcome == MediationOutcome.AGREEMENT:
            values["agreement_form"] = rng.choices(
                [f.value for f in AgreementForm], weights=(80, 20)
            )[0]
            values["terms"] = self._text(TERMS, rng.randrange(1, 3))
            if rng.random() < 0.7:
                values["performance"] = "按协议约定期限履行，由调解委员会跟踪回访"
                values["performance_due"] = _date(self.now + rng.randrange(7, 60) * DAY_MS)
            case.has_agreement = True
        elif outcome == MediationOutcome.NO_AGREEMENT:
            values["remedies_told"] = True
        if rng.random() < 0.1:
            values["not_public"] = True
        parties = [p for p in case.children.get("party", []) if self._knows(dev, p)]
        if parties:
            values["parties"] = parties[: rng.randrange(1, min(4, len(parties)) + 1)]
        self._child(dev, case, "mediation", values)

    def _notice_kind(self, case: CaseSim) -> str:
        rng = self.rng
        if rng.random() < 0.05:
            return rng.choice((NoticeKind.REMINDER_LETTER, NoticeKind.WARNING_NOTICE)).value
        state = case.life["state"]
        if state in (State.REGISTERED, State.ROUTED):
            return NoticeKind.ROUTE.value
        if state in (State.ACCEPTED, State.IN_HANDLING):
            return NoticeKind.ACCEPTANCE.value
        if state == State.EXTENDED:
            return NoticeKind.EXTENSION.value
        if state == State.NOT_ACCEPTED:
            return NoticeKind.NON_ACCEPTANCE.value
        if state in (State.REVIEW_DECIDED, State.REVIEW_REQUESTED):
            return NoticeKind.REVIEW_OPINION.value
        if state in (State.REREVIEW_REQUESTED, State.FINAL):
            return NoticeKind.REREVIEW_OPINION.value
        if case.has_agreement:
            return rng.choice((NoticeKind.MEDIATION_AGREEMENT, NoticeKind.SETTLEMENT)).value
        return NoticeKind.DECISION.value

    def create_notice(self, dev: int, case: CaseSim) -> None:
        rng = self.rng
        d = self.devices[dev]
        values: dict[str, Any] = {"kind": self._notice_kind(case), "served_at": _date(self.now)}
        if rng.random() < 0.85:
            short = VILLAGES[d.village][:2] if d.village is not None else "乡镇"
            values["number"] = f"{short}信告〔2026〕{rng.randrange(1, 400)}号"
        if rng.random() < 0.6:
            values["summary"] = self._text(NOTES, 1)
        self._child(dev, case, "notice", values)

    def create_note(self, dev: int, case: CaseSim) -> None:
        self._child(dev, case, "note", {
            "text": self._text(NOTES, self.rng.randrange(1, 3)), "written_at": self._earlier(2),
        })

    def create_evaluation(self, dev: int) -> None:
        rng = self.rng
        d = self.devices[dev]
        village = d.village if d.village is not None else rng.randrange(len(VILLAGES))
        if not self.closed[village]:
            case = self._pick_case(dev)
            if case is not None:
                self.create_visit(dev, case)
            return
        case = self.cases[rng.choice(self.closed[village][-100:])]
        values: dict[str, Any] = {
            "rating": rng.choices([r.value for r in Rating], weights=(70, 22, 8))[0],
            "evaluated_at": self._earlier(3),
        }
        if rng.random() < 0.4:
            values["comment"] = rng.choice(("工作人员态度很好", "处理及时", "希望加强后续跟踪", "对赔偿金额仍有意见"))
        self._child(dev, case, "evaluation", values)

    def create_leader(self, case: CaseSim) -> None:
        rng = self.rng
        handler = self._person()
        team = sorted({self._person() for _ in range(rng.randrange(2, 5))})
        self._child(self.township, case, "leader_assignment", {
            "leader": self._person(),
            "assigned_at": _date(self.now),
            "handler": handler,
            "team": team,
            "plan": "召开专题协调会，厘清各方责任，一周内提出化解方案",
            "response_plan": "安排专人二十四小时联系当事人，防止矛盾激化",
            "progress": "已召开首次协调会",
        })

    # ---- field edits ----

    def _edit_target(self, dev: int, case: CaseSim) -> tuple[str, str, list[str]]:
        """(entity, entity id, fields to write) for an ordinary edit of this case."""
        rng = self.rng
        r = rng.random()
        ch = {e: [i for i in ids if self._knows(dev, i)] for e, ids in case.children.items()}
        if r < 0.20 and ch.get("party"):
            return "party", rng.choice(ch["party"][-4:]), rng.choice(
                (["phone"], ["address"], ["phone", "address"], ["organisation"], ["id_number"])
            )
        if r < 0.35 and ch.get("visit"):
            return "visit", rng.choice(ch["visit"][-3:]), rng.choice((["summary"], ["place"]))
        if r < 0.45 and ch.get("mediation"):
            return "mediation", rng.choice(ch["mediation"]), rng.choice(
                (["terms"], ["performance", "performance_due"], ["remedies_told"], ["facts"])
            )
        if r < 0.50 and ch.get("notice"):
            return "notice", rng.choice(ch["notice"]), ["number"]
        if r < 0.53 and ch.get("note"):
            return "note", rng.choice(ch["note"]), ["text"]
        if r < 0.55 and ch.get("leader_assignment"):
            return "leader_assignment", ch["leader_assignment"][0], rng.choice(
                (["progress"], ["progress"], ["ended_at", "handed_over_to"])
            )
        return "case", case.id, rng.choice(
            (["summary"], ["demands"], ["title"], ["people_count"], ["summary", "demands"],
             ["simplified"], ["not_public"], ["related_case"])
        )

    def _value(self, entity: str, name: str, case: CaseSim) -> Any:
        rng = self.rng
        if name == "phone":
            return phone(rng)
        if name == "address":
            return f"{VILLAGES[case.village]}{rng.randrange(1, 13)}组{rng.randrange(1, 80)}号"
        if name == "organisation":
            return rng.choice(("某建筑劳务公司", "村经济合作社", "镇农业服务中心", "某物流公司"))
        if name == "id_number":
            return id_number(rng)
        if name == "place":
            return rng.choice(PLACES)
        if name in ("summary", "facts") and entity in ("case", "visit", "mediation", "notice"):
            pool = VISIT_NOTES if entity == "visit" else DETAILS
            return self._text(pool, rng.randrange(1, 4))
        if name == "demands":
            return self._text(DEMANDS, rng.randrange(1, 3))
        if name == "title":
            return self._fmt(rng.choice(TITLES[Subject[case.subject.upper()]]))
        if name == "people_count":
            return rng.randrange(1, 60)
        if name in ("simplified", "not_public", "remedies_told"):
            return rng.random() < 0.5
        if name == "related_case":
            others = self.active[case.village][-40:] or [case.id]
            other = rng.choice(others)
            return other if other != case.id else self._hex()
        if name == "terms":
            return self._text(TERMS, rng.randrange(1, 3))
        if name == "performance":
            return rng.choice(("一次性付清", "分期履行，调委会跟踪", "由村委会监督履行"))
        if name in ("performance_due", "ended_at"):
            return _date(self.now + rng.randrange(1, 60) * DAY_MS)
        if name == "number":
            return f"乡镇信告〔2026〕{rng.randrange(1, 400)}号"
        if name in ("text", "progress"):
            return self._text(NOTES, rng.randrange(1, 3))
        if name == "handed_over_to":
            return self._person()
        raise AssertionError(f"no value maker for {entity}.{name}")

    def _set(self, dev: int, entity: str, eid: str, case: CaseSim, names: list[str],
             base: dict[str, str | None] | None = None, avoid: dict[str, Any] | None = None) -> Op:
        values = {}
        for n in names:
            v = self._value(entity, n, case)
            tries = 0
            while avoid is not None and avoid.get(n) == v and tries < 20:
                v = self._value(entity, n, case)
                tries += 1
            values[n] = v
        return self._emit(dev, entity, eid, case.id, "set", values,
                          base if base is not None else self._base(eid, names))

    def edit(self, dev: int, case: CaseSim) -> None:
        rng = self.rng
        if self.to_resolve and self.now - self.to_resolve[0][0] > KNOWN_AFTER_MS and rng.random() < 0.5:
            self.resolve()
            return
        village_dev = case.village
        if rng.random() < CONCURRENT_SHARE and self.now - case.created_ms > KNOWN_AFTER_MS:
            # The village laptop (offline) and the township both edit one field, both
            # having seen the same value: the second in stamp order opens a conflict.
            entity, eid = "case", case.id
            names = [rng.choice(("summary", "demands", "people_count", "title"))]
            parties = [p for p in case.children.get("party", []) if self.now - self.born[p][0] > KNOWN_AFTER_MS]
            if parties and rng.random() < 0.3:
                entity, eid = "party", rng.choice(parties)
                names = [rng.choice(("phone", "address"))]
            base = self._base(eid, names)
            first, second = (village_dev, self.township)
            if rng.random() < 0.5:
                first, second = second, first
            op1 = self._set(first, entity, eid, case, names, base)
            self._advance(0.05)
            self._set(second, entity, eid, case, names, base, avoid=op1.values)
            self.stats["concurrent_pairs"] += 1
            if rng.random() < RESOLVE_SHARE:
                self.to_resolve.append((self.now, eid, names[0]))
            return
        entity, eid, names = self._edit_target(dev, case)
        self._set(dev, entity, eid, case, names)

    def resolve(self) -> None:
        _, eid, name = self.to_resolve.pop(0)
        ids = self.open_conflicts.get((eid, name))
        if not ids:
            return
        entity, cid = self.owner[eid]
        case = self.cases[cid]
        chosen = self.win[(eid, name)][2] if self.rng.random() < 0.5 else self._value(entity, name, case)
        self._emit(
            self.township, entity, eid, cid, "resolve",
            {"resolves": list(ids), "field": name, "value": chosen},
            self._base(eid, [name]),
        )
        self.stats["resolves"] += 1

    # ---- transitions ----

    def _policy(self, case: CaseSim, dev: Device) -> str | None:
        rng = self.rng
        state = case.life["state"]
        level = case.life["level"]
        can_escalate = level == "village" or (level == "township" and rng.random() < 0.3)
        r = rng.random()
        if state == State.REGISTERED:
            if r < 0.06 and dev.level == "township":
                return "route"
            if r < 0.10:
                return "reject"
            if r < 0.16 and can_escalate:
                return "escalate"
            return "accept"
        if state == State.ROUTED:
            return "accept" if r < 0.92 else "reject"
        if state == State.ACCEPTED:
            if r < 0.06 and can_escalate:
                return "escalate"
            if r < 0.10:
                return "extend"
            return "start"
        if state == State.IN_HANDLING:
            if r < 0.07 and can_escalate:
                return "escalate"
            if r < 0.14 and not case.life["extended_days"]:
                return "extend"
            if case.has_agreement and r < 0.6:
                return "close_by_agreement"
            return "decide"
        if state == State.EXTENDED:
            return "close_by_agreement" if case.has_agreement and r < 0.5 else "decide"
        if state == State.DECIDED:
            return "close"
        if state == State.REVIEW_REQUESTED:
            return "decide_review"
        if state == State.REVIEW_DECIDED:
            return "finalize" if r < 0.6 else "request_rereview"
        if state == State.REREVIEW_REQUESTED:
            return "decide_rereview"
        return None

    def _transition_values(self, action: str, case: CaseSim, dev: Device) -> dict[str, Any]:
        rng = self.rng
        values: dict[str, Any] = {"action": action, "acting_level": dev.level}
        if action == "escalate":
            values["to_node"] = TOWNSHIP_NODE if case.life["level"] == "village" else COUNTY_NODE
            values["reason"] = rng.choice(REASONS)
        elif action == "route":
            values["to_node"] = f"330102{case.village + 1:03d}"
        elif action in ("decide", "decide_review", "decide_rereview"):
            values["decision"] = rng.choices([d.value for d in Decision], weights=(40, 45, 15))[0]
        elif action == "extend":
            values["days"] = rng.choice((15, 30, 30))
            values["reason"] = "案情复杂，需进一步调查核实"
            values["rule"] = "信访工作条例第三十四条"
        elif action == "reject":
            values["reason"] = rng.choice(("属于诉讼途径解决事项", "已依法处理完毕，不再受理"))
        return values

    def transition(self, dev: int) -> None:
        rng = self.rng
        d = self.devices[dev]
        if rng.random() < INVALID_TRANSITION_SHARE:
            self._invalid_transition(dev)
            return
        if d.village is not None and self.closed[d.village] and rng.random() < 0.03:
            case = self.cases[rng.choice(self.closed[d.village][-30:])]
            if case.life["state"] == State.CLOSED and not case.voided and self._knows(dev, case.id):
                self._do_transition(dev, case, self._transition_values("request_review", case, d))
                return
        # half the time the oldest open cases move on, half the time any open case
        if d.village is not None:
            cases = self.active[d.village]
        else:
            cases = self.township_cases
        start = 0 if rng.random() < 0.5 else rng.randrange(max(1, len(cases)))
        if d.village is not None:
            pool = [c for c in cases[start : start + 60]
                    if self.cases[c].life["level"] == "village" and self._knows(dev, c)]
        else:
            pool = [c for c in cases[start : start + 60]
                    if self.cases[c].life["level"] == "township" and self.cases[c].township_at <= self.now]
        if not pool:
            case_ = self._pick_case(dev)  # nothing to move here: an ordinary visit instead
            if case_ is not None:
                self.create_visit(dev, case_)
            return
        case = self.cases[rng.choice(pool[:30])]
        action = self._policy(case, d)
        if action is None:
            self._retire(case)
            return
        self._do_transition(dev, case, self._transition_values(action, case, d))

    def _invalid_transition(self, dev: int) -> None:
        rng = self.rng
        d = self.devices[dev]
        r = rng.random()
        voided = [c for c in self.voided[-20:] if self._knows(dev, c.id)] if r < 0.15 else []
        if voided:
            case = rng.choice(voided)  # a laptop that has not heard of the void
            action = "start"
            self.stats["invalid.voided"] += 1
        elif r < 0.5 and d.village is not None and (up := [
            c for c in self.active[d.village][:200]
            if self.cases[c].life["level"] != "village" and self._knows(dev, c)
        ]):
            case = self.cases[rng.choice(up)]
            action = rng.choice(("start", "decide", "close_by_agreement"))  # reported up already
            self.stats["invalid.level"] += 1
        else:
            case_ = self._pick_case(dev)
            if case_ is None:
                return
            case = case_
            state = case.life["state"]
            action = "close" if state != State.DECIDED else "accept"  # wrong state
            self.stats["invalid.state"] += 1
        values = self._transition_values(action, case, d)
        values["acting_level"] = d.level
        self._do_transition(dev, case, values)

    def _do_transition(self, dev: int, case: CaseSim, values: dict[str, Any]) -> None:
        op = self._emit(dev, "case", case.id, case.id, "transition", values)
        try:
            new = apply_transition(case.life, values, op.occurred_at, voided=case.voided)
        except TransitionRefused:
            self.stats["transition.refused"] += 1
            return
        old_level = case.life["level"]
        case.life = new
        if new["level"] != old_level:
            self.stats[f"escalated.{new['level']}"] += 1
            if new["level"] == "township":
                case.township_at = self.now + KNOWN_AFTER_MS  # once the village has synced
                self.township_cases.append(case.id)
            elif case.id in self.township_cases:
                self.township_cases.remove(case.id)  # county's now; no county laptop here
        if new["state"] in OPEN_STATES and case.id in self.closed[case.village]:
            self.closed[case.village].remove(case.id)  # review requested: open again
            self.active[case.village].append(case.id)
        if new["state"] not in OPEN_STATES:
            self._retire(case)
            if self.rng.random() < 0.3:
                self.create_visit(dev, case, follow_up=True)

    # ---- voids and tags ----

    def void(self, dev: int, case: CaseSim) -> None:
        rng = self.rng
        children = [(e, i) for e, ids in case.children.items() if e != "leader_assignment"
                    for i in ids[-3:] if self._knows(dev, i)]
        if rng.random() < 0.25 or not children:
            if case.voided:
                return
            self._emit(dev, "case", case.id, case.id, "void",
                       {"reason": rng.choice(("重复登记，已并入原案件办理", "误登记，非信访事项"))})
            case.voided = True
            self.voided.append(case)
            self._retire(case)
            return
        entity, eid = rng.choice(children)
        self._emit(dev, entity, eid, case.id, "void", {"reason": rng.choice(VOID_REASONS)})

    def tag(self, dev: int, case: CaseSim) -> None:
        rng = self.rng
        def seen(add: tuple[str, int, int]) -> bool:
            return add[2] == dev or self.now - add[1] > KNOWN_AFTER_MS

        present = sorted(i for i, adds in case.tags.items() if any(seen(a) for a in adds))
        if present and rng.random() < 0.3:
            item = rng.choice(present)
            observed = [a for a in case.tags[item] if seen(a)]
            self._emit(dev, "case", case.id, case.id, "remove", {
                "field": "tags", "items": [item], "observed": [a[0] for a in observed],
            })
            left = [a for a in case.tags[item] if a not in observed]  # adds it had not seen live on
            if left:
                case.tags[item] = left
            else:
                del case.tags[item]
            return
        absent = [t.value for t in CaseTag if t.value not in case.tags]
        if not absent:
            return
        items = rng.sample(absent, k=min(len(absent), rng.choice((1, 1, 2))))
        op = self._emit(dev, "case", case.id, case.id, "add", {"field": "tags", "items": items})
        for item in items:
            case.tags.setdefault(item, []).append((op.op_id, self.now, dev))

    # ---- the loop ----

    def run(self) -> list[Op]:
        rng = self.rng
        cats = list(MIX)
        weights = list(MIX.values())
        while len(self.ops) < self.n_ops:
            self._advance()
            dev = self._pick_device()
            cat = rng.choices(cats, weights=weights)[0]
            if cat == "case" or not any(self.active):
                self.create_case(dev)
                continue
            if cat == "transition":
                self.transition(dev)
                continue
            if cat == "evaluation":
                self.create_evaluation(dev)
                continue
            case = self._pick_case(dev)
            if case is None:
                self.create_case(dev)
                continue
            if cat == "party":
                self.create_party(dev, case)
            elif cat == "visit":
                self.create_visit(dev, case)
            elif cat == "mediation":
                self.create_mediation(dev, case)
            elif cat == "notice":
                self.create_notice(dev, case)
            elif cat == "note":
                self.create_note(dev, case)
            elif cat == "leader":
                if case.children.get("leader_assignment"):
                    self.create_note(dev, case)
                else:
                    self.create_leader(case)
            elif cat == "edit":
                self.edit(dev, case)
            elif cat == "void":
                self.void(dev, case)
            elif cat == "tag":
                self.tag(dev, case)
        return self.ops[: self.n_ops]


def generate(n_ops: int, seed: int = 1) -> list[Op]:
    """``n_ops`` ops of a realistic casework mix, in stamp order (deterministic by seed)."""
    return _World(n_ops, seed).run()


def arrival_order(ops: Sequence[Op], seed: int = 1) -> list[Op]:
    """The ops as the county server receives them: each laptop's ops in sync sessions.

    Each device holds its ops until its next sync (villages every 12-72 hours, the
    township every 2-6 hours, simulated time) and then delivers them in order.
    """
    rng = random.Random(seed)
    devices = sorted({op.device for op in ops})
    if not devices:
        return []
    counts = Counter(op.device for op in ops)
    first_ms = int(ops[0].stamp[:18])
    township = _township_device(ops)

    def interval(dev: str) -> int:
        if dev == township:
            return int(rng.uniform(2, 6) * HOUR_MS)
        return int(rng.uniform(12, 72) * HOUR_MS)

    next_sync = {d: first_ms + interval(d) for d in devices}
    pending: dict[str, list[Op]] = {d: [] for d in devices}
    out: list[Op] = []
    for op in ops:
        ms = int(op.stamp[:18])
        due = sorted((t, d) for d, t in next_sync.items() if t <= ms)
        for t, d in due:
            out.extend(pending[d])
            pending[d] = []
            nxt = t + interval(d)
            while nxt <= ms:
                nxt += interval(d)
            next_sync[d] = nxt
        pending[op.device].append(op)
    for _, d in sorted((t, d) for d, t in next_sync.items()):
        out.extend(pending[d])
    assert len(out) == len(ops) and counts == Counter(op.device for op in out)
    return out


def _township_device(ops: Sequence[Op]) -> str | None:
    """The device whose transitions act at township level (the township laptop)."""
    for op in ops:
        if op.kind == "transition" and op.values.get("acting_level") == "township":
            return op.device
    for op in ops:
        if op.kind == "resolve":
            return op.device
    return None


def batches(ops: Sequence[Op], size: int = 500, seed: int = 1) -> list[list[Op]]:
    """The ops in arrival order (``arrival_order``), cut into batches of ``size``."""
    arrived = arrival_order(ops, seed)
    return [arrived[i : i + size] for i in range(0, len(arrived), size)]


def mix(ops: Iterable[Op]) -> Counter[str]:
    """Counts by ``entity.kind``."""
    return Counter(f"{op.entity}.{op.kind}" for op in ops)


def categories(ops: Iterable[Op]) -> Counter[str]:
    """Counts by the categories of ``MIX`` (edits = set and resolve ops)."""
    names = {"case": "case", "party": "party", "visit": "visit", "mediation": "mediation",
             "notice": "notice", "note": "note", "evaluation": "evaluation",
             "leader_assignment": "leader"}
    out: Counter[str] = Counter()
    for op in ops:
        if op.kind == "create":
            out[names[op.entity]] += 1
        elif op.kind in ("set", "resolve"):
            out["edit"] += 1
        elif op.kind in ("add", "remove"):
            out["tag"] += 1
        else:
            out[op.kind] += 1
    return out


def self_check(n_ops: int = 3000, seed: int = 1) -> dict[str, Any]:
    """Generate, validate every op with ``parse_op``, check determinism and arrival order."""
    from schema.validation import parse_op

    ops = generate(n_ops, seed)
    assert len(ops) == n_ops, len(ops)
    for op in ops:
        assert parse_op(op) == op, op
    again = generate(n_ops, seed)
    assert [o.op_id for o in again] == [o.op_id for o in ops], "generate is not deterministic"
    assert len({o.op_id for o in ops}) == n_ops, "op ids repeat"
    stamps = [o.stamp for o in ops]
    assert stamps == sorted(stamps), "generate must return stamp order"
    bs = batches(ops, 500, seed)
    arrived = [o for b in bs for o in b]
    assert sorted(o.op_id for o in arrived) == sorted(o.op_id for o in ops)
    last: dict[str, str] = {}
    for o in arrived:  # each device delivers its own ops in stamp order
        assert last.get(o.device, "") < o.stamp
        last[o.device] = o.stamp
    late = sum(1 for a, b in zip(arrived, arrived[1:], strict=False) if b.stamp < a.stamp)
    return {"ops": n_ops, "batches": len(bs), "out_of_order_steps": late, "mix": categories(ops)}


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    info = self_check(n)
    print(f"{info['ops']} ops valid, deterministic; {info['batches']} batches; "
          f"{info['out_of_order_steps']} arrival steps go back in stamp order")
    for cat, count in sorted(info["mix"].items(), key=lambda kv: -kv[1]):
        print(f"  {cat:<11} {count:>7}  {100 * count / n:5.1f}%")
