"""The whole demo county that ``make run`` serves: every village at work for 75 days.

``build_county(root, cases=25, days=75)`` sets up the county server (three townships,
twelve villages), enrolls a laptop in every village (two in 东镇东村: the mediator and the
grid worker), one in each township station and one at the county's petition office, and
then plays ``days`` days of casework up to the real "now", in time order, on a clock the
script moves:

* each village laptop registers ``cases`` cases on working days, with visits, acceptance
  notices, mediations (some failing before they succeed), decisions, closings, follow-up
  visits and satisfaction ratings; some cases are not accepted (诉访分离), some reported
  up, some left too long so that the county's deadline sweep escalates them (超期上报);
* township and county laptops take up what reaches them: they mediate, decide, extend,
  report up, assign leaders (领导包案), or leave cases open until they are overdue;
* the same petitioner turns up in two villages (重复信访) and at a township station
  while a village case is open (越级访); a few duplicates are voided; group petitions;
* one 检举控告 case with a named reporter (to see masking in the coordinator's web), the
  shared 东村 case both 东村 laptops edit offline, and a few more concurrent edits and
  late village closes: the conflicts of the coordinator's queue;
* laptops sync through the server's real sync API (in-process, no network) every day or
  few days; the server's deadline sweep runs every night and after every merge.

At the end every laptop syncs, the sweep runs at "now", and every laptop syncs again, so
each holds exactly the server's ops of its jurisdiction (``demo.report`` checks it).
The build is deterministic for a seed, apart from ids, keys and the time it ends at.
"""

from __future__ import annotations

import heapq
import random
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from field_client.errors import ClientError
from field_client.store import FieldClient, now_iso
from field_client.sync import SyncAgent, WsgiTransport
from schema.errors import MinqingError
from sync_server.app import create_app
from sync_server.jurisdiction import import_nodes
from sync_server.service import SyncService
from sync_server.store import ServerStore

DAY = 86400.0
HOUR = 3600.0
CHINA = 8 * HOUR  # UTC+8 all year

# (node, unit name, user, display name, how often it syncs in days (low, high))
COUNTY_LAPTOPS: list[tuple[str, str, str, str, tuple[float, float]]] = [
    ("330102101", "东镇东村", "li.ming", "李明", (1, 3)),
    ("330102101", "东镇东村(网格员)", "zhao.fang", "赵芳", (2, 4)),
    ("330102203", "西镇南村", "chen.jun", "陈军", (1.5, 3.5)),
    ("330102100", "东镇代办站", "wu.gang", "吴刚", (1, 2)),
    ("330102102", "东镇西村", "sun.li", "孙丽", (1.5, 3.5)),
    ("330102103", "东镇南村", "zhou.hui", "周慧", (1.5, 3.5)),
    ("330102104", "东镇北村", "xu.qiang", "徐强", (2, 4)),
    ("330102201", "西镇东村", "hu.jing", "胡静", (1.5, 3.5)),
    ("330102202", "西镇西村", "zhu.wei", "朱伟", (1.5, 3.5)),
    ("330102204", "西镇北村", "gao.yan", "高燕", (2, 4)),
    ("330102301", "南镇东村", "lin.tao", "林涛", (1.5, 3.5)),
    ("330102302", "南镇西村", "he.ping", "何平", (1.5, 3.5)),
    ("330102303", "南镇南村", "guo.hong", "郭红", (2, 4)),
    ("330102304", "南镇北村", "ma.jie", "马杰", (4, 7)),  # a remote village: syncs seldom
    ("330102200", "西镇代办站", "luo.bin", "罗斌", (1, 2)),
    ("330102300", "南镇代办站", "liang.yu", "梁宇", (1, 2)),
    ("330102", "县信访局", "song.wen", "宋文", (1, 3)),
]
GRID_WORKER = 1  # index of 东村's second laptop: fewer cases of its own, edits 李明's
REMOTE = 13  # 南镇北村

SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙万段"
GIVEN = ["建国", "秀英", "桂兰", "志强", "海燕", "晓明", "玉梅", "德华", "春生", "丽娟", "国平", "秀珍",
         "卫东", "淑芬", "长青", "红梅", "金生", "小燕", "明辉", "凤英", "永福", "桂芳", "伟", "静",
         "新民", "翠花", "文军", "雪梅", "保国", "美玲"]
GROUPS = ["东", "西", "南", "北", "中", "前", "后"]
# (title, category, subject, summary, demands)
MATTERS: list[tuple[str, str, str, str, str]] = [
    ("宅基地边界纠纷", "dispute", "neighbour", "{p}反映邻居{r}建房越过原界址约半米，双方多次争吵。", "恢复原界址"),
    ("相邻通行纠纷", "dispute", "neighbour", "{p}反映{r}在共用通道堆放杂物，影响出行。", "清除杂物，保持通行"),
    ("排水沟堵塞引发邻里纠纷", "dispute", "neighbour", "{p}称{r}填埋排水沟，雨天积水倒灌。", "疏通排水沟"),
    ("土地承包经营权纠纷", "dispute", "land_contract", "{p}与{r}对二轮承包地块界线有争议。", "按承包合同确认地界"),
    ("承包地流转租金纠纷", "dispute", "land_contract", "{p}反映{r}拖欠两年流转租金。", "支付拖欠租金"),
    ("赡养老人纠纷", "dispute", "family", "{p}反映子女{r}不履行赡养义务。", "按月支付赡养费"),
    ("婚姻家庭纠纷", "dispute", "family", "{p}与{r}因分家析产发生纠纷。", "公平分割家庭财产"),
    ("交通事故赔偿纠纷", "dispute", "property_damage", "{p}的电动车被{r}的农用车撞坏，赔偿未谈拢。", "赔偿修车费和误工费"),
    ("养殖损害赔偿纠纷", "dispute", "property_damage", "{p}称{r}的鸭群毁坏其秧苗。", "赔偿青苗损失"),
    ("拖欠农民工工资", "complaint", "wage_arrears", "{p}等人反映在{r}的工地务工，工资被拖欠。", "结清拖欠工资"),
    ("征地补偿款分配", "complaint", "land_requisition", "{p}对村组征地补偿款分配方案有异议。", "重新核定分配方案"),
    ("房屋拆迁安置补偿", "complaint", "demolition", "{p}认为旧房拆迁评估价格偏低。", "重新评估补偿"),
    ("养殖场异味扰民", "complaint", "environment", "{p}反映村旁养殖场异味严重，夏季尤甚。", "督促养殖场整改"),
    ("企业排污影响农田", "complaint", "environment", "{p}反映上游厂房排水污染灌溉渠。", "查处排污，赔偿损失"),
    ("低保资格认定", "complaint", "social_security", "{p}对本户低保被取消有异议。", "恢复低保待遇"),
    ("医疗费用报销", "complaint", "medical", "{p}反映住院费用报销比例与政策不符。", "按政策报销"),
    ("村务公开建议", "suggestion", "other", "{p}建议村务公开栏按月更新并公布收支明细。", "按月公开村务"),
    ("村道路灯建议", "suggestion", "other", "{p}建议在村道急弯处加装路灯。", "加装路灯"),
    ("反映村干部优亲厚友", "accusation", "official_conduct", "{p}反映村干部在低保评定中优亲厚友。", "请求调查处理"),
]
WEIGHTS = [7, 5, 4, 6, 3, 5, 3, 3, 2, 5, 4, 2, 3, 2, 3, 1, 2, 2, 2]
ACCUSATION = {
    "title": "反映村会计挪用低保补助款",
    "summary": "举报人孙晓梅反映：村会计钱某某自去年起挪用本村低保补助款，并伪造领款签字。",
    "demands": "请求查处，并对举报人身份保密",
    "reporter": ("孙晓梅", "东组8号"),
    "accused": "钱某某",
}
LEADERS = {"township": ["镇党委书记 王海", "镇长 刘晨", "副镇长 陈光"], "county": ["副县长 张立", "县信访局局长 黄涛"]}


def china_hour(t: float) -> float:
    return ((t + CHINA) % DAY) / HOUR


def at_work(t: float, rnd: random.Random) -> float:
    """``t`` moved into office hours (08:30-17:30 China time, Monday to Friday)."""
    for _ in range(8):
        local = t + CHINA
        weekday = int(local // DAY + 3) % 7  # 1970-01-01 was a Thursday (3)
        hour = china_hour(t)
        if weekday < 5 and 8.5 <= hour < 17.5:
            return t
        if weekday < 5 and hour < 8.5:
            return t - hour * HOUR + rnd.uniform(8.5, 11.5) * HOUR
        t = t - hour * HOUR + DAY + rnd.uniform(8.5, 10.5) * HOUR
    return t


@dataclass
class Clock:
    """The demo's clock: the script moves it forward; never backward."""

    t: float

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Desk:
    """One enrolled laptop and what the script knows about it."""

    index: int
    client: FieldClient
    agent: SyncAgent
    every: tuple[float, float]
    display: str
    handled: set[str] = field(default_factory=set)  # cases this desk took up from above/below


@dataclass
class Facts:
    """What the build made, for the summary, the tests and the screenshots."""

    shared_case: str = ""
    accusation_case: str = ""
    stuck_case: str = ""
    current_case: str = ""
    repeat_cases: list[str] = field(default_factory=list)
    skip_level_cases: list[str] = field(default_factory=list)
    voided: list[str] = field(default_factory=list)
    seconds: float = 0.0
    end: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"shared_case": self.shared_case, "accusation_case": self.accusation_case, "stuck_case": self.stuck_case,
                "current_case": self.current_case,
                "repeat_cases": self.repeat_cases, "skip_level_cases": self.skip_level_cases,
                "voided": self.voided, "build_seconds": round(self.seconds, 1), "end": self.end}


Story = Generator[float, None, None]


class County:
    """The simulation: a queue of timed steps over the laptops and the server."""

    def __init__(self, root: Path, *, cases: int, days: int, seed: int, out: Any,
                 passphrase: str, server_url: str, jurisdiction: list[dict[str, str]]) -> None:
        self.rnd = random.Random(seed)
        self.root = root
        self.cases = cases
        self.days = days
        self.out = out
        self.end = time.time()
        self.start = self.end - days * DAY
        self.clock = Clock(self.start)
        self.store = ServerStore.init(root / "server", clock=self.clock)
        self.store.set_meta("public_url", server_url)
        import_nodes(self.store, jurisdiction)
        self.rules = self.store.rules()
        self.svc = SyncService(self.store, rules=self.rules)
        self.transport = WsgiTransport(create_app(root / "server", {"MINQING_CLOCK": self.clock}))
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self._n = 0
        self.desks: list[Desk] = []
        self.people: dict[str, list[dict[str, str]]] = {}  # village -> petitioners seen there
        self.open_by_village: dict[str, list[tuple[str, dict[str, str]]]] = {}
        self.facts = Facts(end=self.end)
        self.passphrase = passphrase
        self.server_url = server_url
        self.syncs = 0
        self.sweeps = 0
        self.numbers = 0

    # ---- the queue ----

    def at(self, t: float, fn: Callable[[], None]) -> None:
        if t <= self.end:
            self._n += 1
            heapq.heappush(self.queue, (t, self._n, fn))

    def play(self, story: Story, t: float, *, office: bool = True) -> None:
        """Run ``story`` from ``t``: each ``yield`` is the delay (seconds) to its next step,
        which falls in office hours unless ``office`` is false."""
        def step() -> None:
            try:
                delay = next(story)
            except StopIteration:
                return
            t = self.clock.t + max(delay, 60.0)
            self.at(at_work(t, self.rnd) if office else t, step)
        self.at(t, step)

    def run(self, progress: Callable[[float], None]) -> None:
        week = self.start + 7 * DAY
        while self.queue:
            t, _, fn = heapq.heappop(self.queue)
            while t >= week:
                progress(week)
                week += 7 * DAY
            if t > self.clock.t:
                self.clock.t = t
            fn()

    # ---- laptops ----

    def enroll(self, spec: tuple[str, str, str, str, tuple[float, float]]) -> Desk:
        node, name, user, display, every = spec
        level = self.store.node(node)["level"]  # type: ignore[index]
        index = len(self.desks) + 1
        lap = FieldClient.init(self.root / f"laptop{index}", self.passphrase, node=node, level=level, user=user,
                               node_name=name, clock=self.clock)
        code = self.svc.create_enroll_code(node, url=self.server_url, hours=24 * (self.days + 30))
        agent = SyncAgent(lap, self.transport)
        agent.enroll(code)
        desk = Desk(index, lap, agent, every, display)
        self.desks.append(desk)
        return desk

    def sync(self, desk: Desk) -> None:
        desk.agent.sync()
        self.syncs += 1

    def sync_loop(self, desk: Desk) -> Story:
        while True:
            low, high = desk.every
            gap = self.rnd.uniform(low, high) * DAY
            t = self.clock.t + gap
            hour = china_hour(t)
            yield gap + (self.rnd.uniform(17.0, 19.5) - hour) * HOUR  # an evening sync
            self.sync(desk)
            if desk.client.level != "village":
                self.take_up(desk)

    def sweep_loop(self) -> Story:
        from sync_server.sweep import Sweeper

        first = self.start + DAY - china_hour(self.start) * HOUR + 2 * HOUR  # 02:00 tomorrow
        yield first - self.clock.t
        while True:
            Sweeper(self.svc, self.rules).sweep(self.store.now_ms())
            self.sweeps += 1
            yield DAY

    # ---- people and cases ----

    def person(self, village: str) -> dict[str, str]:
        rnd = self.rnd
        birth = f"{rnd.randint(1945, 2002)}{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}"
        body = f"{village[:6]}{birth}{rnd.randint(0, 999):03d}"
        weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
        check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]
        return {"name": rnd.choice(SURNAMES) + rnd.choice(GIVEN), "id_number": body + check,
                "phone": f"1{rnd.choice('3578')}{rnd.randint(0, 999999999):09d}",
                "address": f"{rnd.choice(GROUPS)}组{rnd.randint(1, 80)}号"}

    def register(self, desk: Desk, *, origin: str | None = None, matter: tuple[str, ...] | None = None,
                 petitioner: dict[str, str] | None = None, extra: dict[str, Any] | None = None
                 ) -> tuple[str, str, dict[str, str]]:
        rnd, lap = self.rnd, desk.client
        village = origin or lap.node
        title, category, subject, summary, demands = matter or rnd.choices(MATTERS, WEIGHTS)[0]
        p = petitioner or self.person(village)
        r = self.person(village)
        people = 1
        if category == "complaint" and rnd.random() < 0.3:
            people = rnd.choice([2, 3, 6, 12])
        values: dict[str, Any] = {
            "title": title, "category": category, "subject": subject,
            "channel": rnd.choices(["visit", "phone", "screening", "letter", "online"], [5, 2, 3, 1, 1])[0],
            "summary": summary.format(p=p["name"], r=r["name"]), "demands": demands, "people_count": people,
            "origin_node": village,
        }
        if category == "suggestion" and rnd.random() < 0.5:
            values["simplified"] = True
        values.update(extra or {})
        parties = [{"role": "petitioner", **p}]
        if category == "dispute":
            parties.append({"role": "respondent", **r})
        cid = lap.new_case(values, parties)
        if people >= 5:
            lap.set_tags(cid, add=["group"])
        self.people.setdefault(village, []).append(p)
        return cid, category, p

    # ---- small actions that tolerate a case that moved on ----

    def act(self, desk: Desk, cid: str, action: str, **extra: Any) -> bool:
        try:
            desk.client.transition(cid, action, **extra)
            return True
        except (ClientError, MinqingError):
            return False

    def state(self, desk: Desk, cid: str) -> tuple[str, str]:
        row = desk.client.replica.get("case", cid) or {}
        return str(row.get("state")), str(row.get("level"))

    def mine(self, desk: Desk, cid: str) -> bool:
        """The case is still open at this desk's level, as this laptop knows it."""
        state, level = self.state(desk, cid)
        return level == desk.client.level and state not in ("closed", "not_accepted", "final", "review_decided")

    def now(self) -> str:
        return now_iso(self.clock)

    def today(self) -> str:
        return now_iso(self.clock)[:10]

    def visit(self, desk: Desk, cid: str, kind: str, summary: str, place: str = "") -> None:
        desk.client.add_record("visit", cid, {"kind": kind, "visited_at": self.now(), "visitor": desk.display,
                                              "place": place, "summary": summary})

    def notice(self, desk: Desk, cid: str, kind: str, summary: str = "") -> None:
        unit = (desk.client.keys.info.get("node_name") or "").split("(")[0]
        self.numbers += 1
        desk.client.add_record("notice", cid, {"kind": kind, "served_at": self.today(), "summary": summary,
                                               "number": f"{unit}告〔{self.today()[:4]}〕{self.numbers}号"})

    def accept(self, desk: Desk, cid: str, notice: bool = True) -> bool:
        if not self.act(desk, cid, "accept"):
            return self.state(desk, cid)[0] in ("accepted", "in_handling", "extended")
        if notice:
            self.notice(desk, cid, "acceptance", "依法受理，将在法定期限内办理并答复。")
        self.act(desk, cid, "start")
        return True

    def mediate(self, desk: Desk, cid: str, agreed: bool, kind: str = "people") -> None:
        rnd = self.rnd
        place = {"village": "村调解室", "township": "镇人民调解委员会", "county": "县矛盾纠纷调处中心"}[desk.client.level]
        values: dict[str, Any] = {"kind": kind, "mediator": desk.display, "held_at": self.now(), "place": place,
                                  "facts": "双方陈述了事实和争议焦点。"}
        if agreed:
            form = rnd.choice(["written", "written", "oral"])
            values.update(outcome="agreement", agreement_form=form,
                          terms=rnd.choice(["双方同意按原界址重新立界，费用各半。", "一方当面赔礼道歉并赔偿损失二千元。",
                                            "子女轮流赡养，每月各付赡养费五百元。", "欠款分三期付清。"]),
                          performance="于三十日内履行完毕")
        else:
            values.update(outcome=rnd.choice(["no_agreement", "no_agreement", "suspended"]), remedies_told=True)
        desk.client.add_record("mediation", cid, values)

    def note(self, desk: Desk, cid: str, text: str) -> None:
        desk.client.add_record("note", cid, {"text": text, "written_at": self.now()})

    def close_decided(self, desk: Desk, cid: str) -> bool:
        decision = self.rnd.choices(["support", "explain", "not_support"], [4, 4, 2])[0]
        if not self.act(desk, cid, "decide", decision=decision):
            return False
        self.notice(desk, cid, "decision", {"support": "诉求合理，予以支持。", "explain": "已就政策作出解释说明。",
                                            "not_support": "诉求缺乏依据，不予支持，告知复查途径。"}[decision])
        return self.act(desk, cid, "close")

    def close_agreed(self, desk: Desk, cid: str) -> bool:
        self.mediate(desk, cid, True)
        if not self.act(desk, cid, "close_by_agreement"):
            return False
        self.notice(desk, cid, "mediation_agreement", "调解协议已由双方签字确认。")
        return True

    def after_close(self, desk: Desk, cid: str) -> Story:
        """Follow-up visit (回访), sometimes late, then often a satisfaction rating."""
        rnd = self.rnd
        if rnd.random() < 0.85:
            yield rnd.uniform(2, 20) * DAY
            self.visit(desk, cid, "follow_up", "回访当事人，协议/答复意见已落实。")
            if rnd.random() < 0.8:
                yield rnd.uniform(0.1, 6) * DAY
                rating = rnd.choices(["satisfied", "basically_satisfied", "unsatisfied"], [6, 3, 1])[0]
                desk.client.add_record("evaluation", cid, {"rating": rating, "evaluated_at": self.now(),
                                                           "comment": "" if rating != "unsatisfied" else "处理太慢"})

    # ---- stories ----

    def village_case(self, desk: Desk) -> Story:
        rnd = self.rnd
        repeat = None
        others = [v for v in self.people if v != desk.client.node and self.people[v]]
        if others and rnd.random() < 0.04:  # the same person at another village (重复信访)
            repeat = rnd.choice(self.people[rnd.choice(others)])
        cid, category, petitioner = self.register(desk, petitioner=repeat)
        if repeat:
            self.facts.repeat_cases.append(cid)
        self.open_by_village.setdefault(desk.client.node, []).append((cid, petitioner))
        if rnd.random() < 0.015:  # registered twice by mistake: the copy is voided
            dup, _, _ = self.register(desk)
            desk.client.void("case", dup, "重复登记")
            self.facts.voided.append(dup)
        yield rnd.uniform(0.05, 1.0) * DAY
        self.visit(desk, cid, "reception" if rnd.random() < 0.5 else "home", "了解诉求，核实基本情况。")
        fate = rnd.choices(["resolve", "report_up", "slow", "reject"], [68, 14, 10, 8])[0]
        if fate == "reject":
            yield rnd.uniform(0.2, 2) * DAY
            if self.act(desk, cid, "reject", reason="属于诉讼程序处理事项，已引导当事人依法起诉"):
                desk.client.set_tags(cid, add=["litigation"])
                self.notice(desk, cid, "non_acceptance", "该事项应通过诉讼途径解决，不予受理。")
            return
        yield rnd.uniform(0.05, 1.5) * DAY
        if not self.accept(desk, cid, notice=rnd.random() < 0.9):
            return
        if fate == "report_up":
            yield rnd.uniform(1, 4) * DAY
            if category == "dispute":
                self.mediate(desk, cid, False)
                yield rnd.uniform(0.2, 1.5) * DAY
            if self.mine(desk, cid):
                self.act(desk, cid, "escalate", to_node=self.parent(desk), reason=rnd.choice(
                    ["村级难以化解，上报乡镇", "涉及多户，需乡镇协调", "涉及村干部，上报乡镇处理"]))
            return
        if fate == "slow":  # the village takes more than its 7 days: the sweep reports it up
            yield rnd.uniform(3, 5) * DAY
            if self.mine(desk, cid):
                self.note(desk, cid, "当事人外出务工，暂未联系上，待其返乡后再约。")
            yield rnd.uniform(3, 5) * DAY
            if rnd.random() < 0.5 or not self.mine(desk, cid):
                return  # left for the township; or closed late, refused if the escalation came first
            done = self.close_agreed(desk, cid) if category == "dispute" else self.close_decided(desk, cid)
            if done:
                yield from self.after_close(desk, cid)
            return
        # resolve at the village, within its 7 days
        yield rnd.uniform(0.5, 3) * DAY
        if not self.mine(desk, cid):
            return
        if category == "dispute":
            if rnd.random() < 0.3:
                self.mediate(desk, cid, False)
                yield rnd.uniform(0.5, 2) * DAY
                if not self.mine(desk, cid):
                    return
            done = self.close_agreed(desk, cid)
        else:
            self.visit(desk, cid, "walk", "走访相关人员，调查核实。")
            yield rnd.uniform(0.3, 2) * DAY
            done = self.mine(desk, cid) and self.close_decided(desk, cid)
        if not done:
            return
        if category == "complaint" and rnd.random() < 0.12:
            yield from self.review(desk, cid)
            return
        yield from self.after_close(desk, cid)

    def review(self, desk: Desk, cid: str) -> Story:
        """The petitioner asks for a review (复查); the township decides it."""
        rnd = self.rnd
        yield rnd.uniform(3, 20) * DAY
        town = self.desk_of(self.parent(desk))
        if not self.act(town, cid, "request_review", reason="信访人对处理意见不服，申请复查"):
            return
        yield rnd.uniform(5, 25) * DAY
        if self.act(town, cid, "decide_review", decision=rnd.choice(["support", "not_support"])):
            self.notice(town, cid, "review_opinion", "复查意见已送达信访人。")

    def upper_case(self, desk: Desk, cid: str) -> Story:
        """A township or the county takes up a case that reached it."""
        rnd = self.rnd
        level = desk.client.level
        yield rnd.uniform(0.2, 2) * DAY
        if not self.mine(desk, cid):
            return
        self.accept(desk, cid)  # a case reported up before it was accepted
        category = str((desk.client.replica.get("case", cid) or {}).get("category"))
        self.visit(desk, cid, "walk", "会同村两委走访当事人，调查核实。")
        if level == "township":
            fate = rnd.choices(["resolve", "report_up", "slow", "leader"], [62, 12, 16, 10])[0]
        else:
            fate = rnd.choices(["resolve", "open", "leader"], [45, 30, 25])[0]
        if fate == "leader":
            yield from self.leader(desk, cid)
            return
        if fate == "report_up":
            yield rnd.uniform(2, 8) * DAY
            if self.mine(desk, cid):
                self.act(desk, cid, "escalate", to_node=self.parent(desk), reason="涉及跨镇事项，上报县信访局")
            return
        if fate == "open":  # the county has not got to it: it runs towards its limits
            yield rnd.uniform(5, 20) * DAY
            if self.mine(desk, cid):
                self.note(desk, cid, "已函请有关部门核实，等待回复。")
            return
        if fate == "slow" and rnd.random() < 0.5 and self.act(desk, cid, "extend", days=30, reason="情况复杂，需补充调查"):
            self.notice(desk, cid, "extension", "延长办理期限三十日。")
        wait = rnd.uniform(16, 30) if fate == "slow" else rnd.uniform(2, 12)
        if category == "dispute" and rnd.random() < 0.4:
            yield wait / 2 * DAY
            if not self.mine(desk, cid):
                return
            self.mediate(desk, cid, False, kind="administrative" if level == "township" else "people")
            wait /= 2
        yield wait * DAY
        if not self.mine(desk, cid):
            return
        done = self.close_agreed(desk, cid) if category == "dispute" else self.close_decided(desk, cid)
        if done:
            yield from self.after_close(desk, cid)

    def leader(self, desk: Desk, cid: str) -> Story:
        """领导包案: a leader, a handler, a plan; progress entries about weekly (some late)."""
        rnd = self.rnd
        desk.client.set_tags(cid, add=["hard"])
        aid = desk.client.add_record("leader_assignment", cid, {
            "leader": rnd.choice(LEADERS[desk.client.level]), "assigned_at": self.today(), "handler": desk.display,
            "team": ["司法所", "综治中心", "村两委"], "plan": "成立工作专班，一周一研判，限期化解。",
            "response_plan": "发现群体性苗头立即报告，专人稳控。"})
        for week in range(rnd.randint(1, 6)):
            yield rnd.uniform(5, 10) * DAY
            if not self.mine(desk, cid):
                return
            desk.client.edit("leader_assignment", aid, {"progress": f"第{week + 1}周：已约谈双方，方案推进中。"})

    def take_up(self, desk: Desk) -> None:
        """After a sync: the cases now at this township (county) that it has not taken up."""
        rows = desk.client.replica.conn.execute(
            "SELECT id FROM cases WHERE level=? AND node=? AND voided=0 AND state NOT IN "
            "('closed', 'not_accepted', 'final', 'review_decided')", (desk.client.level, desk.client.node)).fetchall()
        for (cid,) in rows:
            if cid not in desk.handled:
                desk.handled.add(cid)
                self.play(self.upper_case(desk, cid), at_work(self.clock.t + 60, self.rnd))

    def walk_in(self, desk: Desk) -> Story:
        """A petitioner comes to the township station directly; sometimes one whose village case is open (越级)."""
        rnd = self.rnd
        villages = [n for n in self.open_by_village if self.store.node(n)["parent"] == desk.client.node]  # type: ignore[index]
        origin = rnd.choice(villages) if villages else None
        petitioner = None
        if origin is None:
            return
        still_open = [p for cid0, p in self.open_by_village[origin] if self.state(desk, cid0)[0] in
                      ("registered", "accepted", "in_handling", "extended")]
        if still_open and rnd.random() < 0.6:  # 越级: the petitioner of a case still open at the village
            petitioner = rnd.choice(still_open)
        cid, _, _ = self.register(desk, origin=origin, petitioner=petitioner)
        if petitioner:
            self.facts.skip_level_cases.append(cid)
        desk.handled.add(cid)
        yield 600
        yield from self.upper_case(desk, cid)

    # ---- set pieces ----

    def accusation(self, desk: Desk) -> Story:
        """A 检举控告 case with a named reporter: hidden from coordinators without the permission."""
        a = ACCUSATION
        reporter = self.person(desk.client.node)
        reporter.update(name=a["reporter"][0], address=a["reporter"][1])
        cid = desk.client.new_case(
            {"title": a["title"], "category": "accusation", "subject": "official_conduct", "channel": "letter",
             "summary": a["summary"], "demands": a["demands"], "people_count": 1},
            [{"role": "petitioner", **reporter},
             {"role": "respondent", "name": a["accused"], "organisation": "东村村委会"}])
        self.facts.accusation_case = cid
        yield 0.2 * DAY
        self.visit(desk, cid, "home", f"与举报人{a['reporter'][0]}面谈，核实举报线索，已告知保密。")
        self.accept(desk, cid)
        yield 1.5 * DAY
        desk.client.report_up(cid, self.parent(desk), "涉及村干部，上报镇纪委")

    def shared_case(self, a: Desk, b: Desk) -> Story:
        """Both 东村 laptops edit one case offline; the grid worker declines it after it went up."""
        cid = a.client.new_case(
            {"title": "两户交界处灌溉水渠纠纷", "category": "dispute", "subject": "land_contract", "channel": "visit",
             "summary": "王建国与李秀英因水渠改道发生争执。", "people_count": 2},
            [{"role": "petitioner", **self.person(a.client.node), "name": "王建国"},
             {"role": "respondent", **self.person(a.client.node), "name": "李秀英"}])
        self.facts.shared_case = cid
        self.sync(a)
        self.sync(b)
        yield HOUR
        a.client.edit("case", cid, {"title": "灌溉水渠改道纠纷（李明记录）"})
        b.client.edit("case", cid, {"title": "水渠纠纷（赵芳记录）"})
        self.act(a, cid, "accept")
        a.client.report_up(cid, self.parent(a), "涉及多户，上报乡镇协调")
        yield 600
        self.act(b, cid, "reject", reason="不属于本村受理范围")

    def concurrent_edit(self, a: Desk, b: Desk) -> Story:
        """Both 东村 laptops change the number of people of one of 李明's cases offline."""
        rows = a.client.replica.conn.execute(
            "SELECT id FROM cases WHERE voided=0 AND state IN ('accepted', 'in_handling') AND level='village' "
            "AND node=? ORDER BY received_at DESC LIMIT 5", (a.client.node,)).fetchall()
        known = {r[0] for r in b.client.replica.conn.execute("SELECT id FROM cases")}
        rows = [r for r in rows if r[0] in known]
        if not rows:
            return
        cid = rows[0][0]
        a.client.edit("case", cid, {"people_count": 3})
        yield 2 * HOUR
        b.client.edit("case", cid, {"people_count": 4, "demands": "尽快调处，赔偿损失"})

    def stuck_case(self, village: Desk, town: Desk, county: Desk) -> Story:
        """A case nobody moves on: the sweep reports it up twice, then it is overdue and a backlog."""
        cid, _, _ = self.register(village, matter=MATTERS[4])
        town.handled.add(cid)  # neither the township's desk nor the county's takes it up
        county.handled.add(cid)
        self.facts.stuck_case = cid
        yield 0.3 * DAY
        self.accept(village, cid)
        self.visit(village, cid, "walk", "走访双方，分歧较大。")
        yield 3 * DAY
        if self.mine(village, cid):
            self.mediate(village, cid, False)
            self.note(village, cid, "双方均不让步，拟请镇里协调土地流转合同问题。")

    def current_case(self, desk: Desk) -> Story:
        """李明's case of this week: visited, accepted, a first mediation suspended, the next one planned;
        the grid worker and he change its number of people offline (a conflict for the mediator's guide)."""
        p = self.person(desk.client.node)
        p.update(name="张建国")
        r = self.person(desk.client.node)
        r.update(name="刘秀英")
        cid = desk.client.new_case(
            {"title": "宅基地边界纠纷", "category": "dispute", "subject": "neighbour", "channel": "visit",
             "summary": "张建国反映邻居刘秀英翻建院墙时向其宅基地一侧多砌约半米，双方多次争吵。",
             "demands": "恢复原界址，拆除越界部分", "people_count": 2},
            [{"role": "petitioner", **p}, {"role": "respondent", **r}])
        self.facts.current_case = cid
        yield 0.1 * DAY
        self.visit(desk, cid, "home", "上门察看现场，新墙基确有越过原界桩的迹象，双方情绪激动。", "张建国家")
        yield 0.2 * DAY
        self.accept(desk, cid)
        yield 1 * DAY
        self.visit(desk, cid, "home", "到刘秀英家了解情况，其称按老宅基证砌墙，同意调解。", "刘秀英家")
        yield 0.3 * DAY
        desk.client.add_record("mediation", cid, {
            "kind": "people", "mediator": desk.display, "held_at": self.now(), "place": "村调解室",
            "outcome": "suspended", "facts": "双方对原界桩位置说法不一，需查阅宅基地档案。"})
        self.note(desk, cid, "已请镇国土所调取两户宅基地档案，档案到后再约双方调解。")
        # the grid worker has it too; both change the number of people offline: a conflict on 李明's laptop
        grid = self.desks[GRID_WORKER]
        self.sync(desk)
        self.sync(grid)
        yield HOUR
        desk.client.edit("case", cid, {"people_count": 3})
        self.clock.advance(40 * 60)  # within one step: neither laptop syncs in between
        grid.client.edit("case", cid, {"people_count": 4, "demands": "尽快调处，恢复原界址"})

    def parent(self, desk: Desk) -> str:
        return str(self.store.node(desk.client.node)["parent"])  # type: ignore[index]

    def desk_of(self, node: str) -> Desk:
        return next(d for d in self.desks if d.client.node == node)


def build_county(root: Path, *, cases: int = 25, days: int = 75, seed: int = 2026, out: Any = sys.stdout,
                 passphrase: str, server_url: str, jurisdiction: list[dict[str, str]]
                 ) -> tuple[ServerStore, list[FieldClient], Facts]:
    """The county of the module docstring in ``root`` (which must be empty)."""
    t0 = time.perf_counter()
    say: Callable[[str], None] = lambda s: print(s, file=out, flush=True)  # noqa: E731
    c = County(root, cases=cases, days=days, seed=seed, out=out, passphrase=passphrase, server_url=server_url,
               jurisdiction=jurisdiction)
    rnd = c.rnd
    for spec in COUNTY_LAPTOPS:
        c.enroll(spec)
    say(f"▶ 县服务器已建立，{len(c.desks)} 台笔记本已注册 (county server set up; {len(c.desks)} laptops enrolled) "
        f"{time.perf_counter() - t0:.1f} s")
    villages = [d for d in c.desks if d.client.level == "village"]
    for desk in villages:
        n = cases if desk.index - 1 != GRID_WORKER else max(1, cases // 3)
        for _ in range(n):
            t = at_work(rnd.uniform(c.start + 0.3 * DAY, c.end - 0.2 * DAY), rnd)
            c.play(c.village_case(desk), t)
    for desk in c.desks:
        if desk.client.level == "township":
            for _ in range(max(1, cases // 10)):
                c.play(c.walk_in(desk), at_work(rnd.uniform(c.start + 20 * DAY, c.end - DAY), rnd))
        c.play(c.sync_loop(desk), c.start + rnd.uniform(0.5, 1.5) * DAY, office=False)
    c.play(c.sweep_loop(), c.start + 60, office=False)
    a, b = c.desks[0], c.desks[GRID_WORKER]
    c.play(c.stuck_case(c.desks[6], c.desks[3], c.desks[-1]), at_work(c.start + 2 * DAY, rnd))
    c.play(c.shared_case(a, b), at_work(c.end - min(12, days / 3) * DAY, rnd))
    c.play(c.accusation(a), at_work(c.end - min(20, days / 2) * DAY, rnd))
    c.play(c.current_case(a), at_work(c.end - min(6, days / 4) * DAY, rnd))
    for k in (1, 2):
        c.play(c.concurrent_edit(a, b), at_work(c.end - (k * 5 + 3) * DAY, rnd))

    say(f"▶ {days} 天的基层工作：登记、走访、调解、告知、上报，每晚同步，县服务器夜间时限巡查 "
        f"(playing {days} days of casework; laptops sync, the server sweeps every night) …")

    def progress(t: float) -> None:
        n_cases = c.store.conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
        n_ops = c.store.max_op_seq()
        day = int((t - c.start) / DAY)
        say(f"  第 {day:>3}/{days} 天 (day): {n_cases:>4} 件案件 (cases) 已到县服务器, {n_ops:>6} 条操作 (ops), "
            f"{c.syncs:>4} 次同步 (syncs), {time.perf_counter() - t0:5.1f} s")

    c.run(progress)
    c.clock.t = c.end
    say("▶ 最后一轮同步与时限巡查 (a last round of syncs and the sweep at now) …")
    from sync_server.sweep import Sweeper

    for _ in range(2):
        for desk in c.desks:
            c.sync(desk)
    Sweeper(c.svc, c.rules).sweep(c.store.now_ms())
    for desk in c.desks:
        c.sync(desk)
    c.facts.seconds = time.perf_counter() - t0
    return c.store, [d.client for d in c.desks], c.facts


