"""The county's rules as data: deadlines, colour thresholds, backlog, freshness (docs/deadlines.md).

``RULE_DEFS`` is the catalogue of DOMAIN.md's deadline table: for each rule its statutory
or local default, how it counts (calendar or working days), its source, whether it is a
duty (the office must act; overdue when it does not) or a window (someone *may* act until
it closes), and the event it starts from. A county's TOML file (``county_rules.toml`` is
the default) sets the figures; ``load_rules`` reads it and refuses a bad file with the
line and the reason (``RulesInvalid``, code ``rules.invalid``).

Statutory limits bind: a county may shorten an office's statutory limit, never lengthen
it, and cannot touch a petitioner's window at all. Pure: no I/O except ``load_rules_file``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from schema.errors import MinqingError
from schema.workdays import WorkCalendar


class RulesInvalid(MinqingError):
    code = "rules.invalid"


@dataclass(frozen=True)
class RuleDef:
    """One deadline of DOMAIN.md's table."""

    id: str
    zh: str
    en: str
    days: int
    counted: str  # "calendar" | "working"
    kind: str  # "duty" | "window"
    statutory: bool
    source: str
    start_event: str  # what the days are counted from (schema.obligations names it)
    escalates: bool = False  # overdue -> the sweep reports the case one level up


RULE_DEFS: dict[str, RuleDef] = {
    r.id: r
    for r in (
        RuleDef("register_route", "登记转送", "register and route (15 days)", 15, "calendar", "duty", True,
                "信访工作条例 第22条", "received"),
        RuleDef("receipt_notice", "书面告知", "written notice of receipt (15 days)", 15, "calendar", "duty",
                True, "信访工作条例 第23条", "received"),
        RuleDef("objection_window", "职责异议期", "objection that the matter is not ours (5 working days)",
                5, "working", "window", True, "信访工作条例 第23条第3款", "routed"),
        RuleDef("handle_decide", "受理后办结", "handle and decide after acceptance (60 days)", 60, "calendar",
                "duty", True, "信访工作条例 第34条", "accepted"),
        RuleDef("review_request_window", "申请复查期", "petitioner may request review (30 days)", 30,
                "calendar", "window", True, "信访工作条例 第35条", "decision_served"),
        RuleDef("review_decide", "复查决定", "review decision (30 days)", 30, "calendar", "duty", True,
                "信访工作条例 第35条", "review_requested"),
        RuleDef("rereview_request_window", "申请复核期", "petitioner may request re-review (30 days)", 30,
                "calendar", "window", True, "信访工作条例 第36条", "review_decided"),
        RuleDef("rereview_decide", "复核决定", "re-review decision (30 days)", 30, "calendar", "duty", True,
                "信访工作条例 第36条", "rereview_requested"),
        RuleDef("judicial_confirmation_window", "申请司法确认期",
                "parties may apply for judicial confirmation (30 days)", 30, "calendar", "window", True,
                "人民调解法 第33条", "agreement"),
        RuleDef("mediation_conclude", "调解期限", "people's mediation concludes (about 1 month)", 30,
                "calendar", "duty", False, "司法部 人民调解工作规定 (practice)", "accepted"),
        RuleDef("simplified_accept", "简易办理受理", "simplified handling: accept (3 working days)", 3,
                "working", "duty", False, "国家信访局 简易办理办法 (practice)", "received"),
        RuleDef("simplified_answer", "简易办理答复", "simplified handling: answer (10 working days)", 10,
                "working", "duty", False, "国家信访局 简易办理办法 (practice)", "accepted"),
        RuleDef("village_handling", "村级办理时限", "village handles before reporting up (7 days)", 7,
                "calendar", "duty", False, "本县规定 (local)", "received", escalates=True),
        RuleDef("township_handling", "乡镇办理时限", "township handles before reporting up (15 days)", 15,
                "calendar", "duty", False, "本县规定 (local)", "reported_up", escalates=True),
        RuleDef("follow_up", "办结后回访", "follow-up visit after closing (15 days)", 15, "calendar", "duty",
                False, "本县规定 (local)", "closed"),
        RuleDef("leader_progress", "包案进展", "leader-assigned case: progress entry (every 7 days)", 7,
                "calendar", "duty", False, "本县规定 (local)", "last_progress"),
    )
}

START_EVENTS: dict[str, str] = {
    "received": "收件",
    "routed": "转送/交办",
    "accepted": "受理",
    "reopened": "重新办理",
    "decision_served": "处理意见送达",
    "review_requested": "申请复查",
    "review_decided": "复查决定",
    "rereview_requested": "申请复核",
    "agreement": "调解协议生效",
    "reported_up": "上报至本级",
    "closed": "办结",
    "last_progress": "上次进展(或包案日期)",
}


@dataclass(frozen=True)
class Rule:
    """One rule as this county sets it."""

    id: str
    days: int
    counted: str
    enabled: bool
    definition: RuleDef

    @property
    def zh(self) -> str:
        """The rule's name with this county's figure, e.g. 村级办理时限(7日)."""
        unit = "个工作日" if self.counted == "working" else "日"
        every = "每" if self.id == "leader_progress" else ""
        return f"{self.definition.zh}({every}{self.days}{unit})"

    @property
    def kind(self) -> str:
        return self.definition.kind


@dataclass(frozen=True)
class Rules:
    """A county's rules: what ``schema.obligations`` and the server's sweep read."""

    county: str
    rules: dict[str, Rule]
    blue_within_days: int = 7
    yellow_within_days: int = 3
    red_overdue_days: int = 15
    group_size: int = 5
    backlog_open_past: tuple[str, ...] = ("handle_decide", "mediation_conclude")
    backlog_reopened_after_final: bool = True
    grace_hours: int = 72
    sweep_interval_minutes: int = 10
    warn_before_days: int = 3
    reminder_letter: bool = True
    warning_notice_after_days: int = 15
    repeat_recent_days: int = 180
    max_skew_minutes: int = 30
    calendar: WorkCalendar = field(default_factory=WorkCalendar)
    text: str = ""  # the TOML as read (laptops receive it on sync)

    def rule(self, rule_id: str) -> Rule:
        return self.rules[rule_id]

    def enabled(self, rule_id: str) -> bool:
        r = self.rules.get(rule_id)
        return r is not None and r.enabled


# ---- reading a TOML file, with the line of each refusal ----

_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*=")


def _line_index(text: str) -> dict[tuple[str, str], int]:
    """(table, key) -> line number, and (table, "") -> the header's line."""
    out: dict[tuple[str, str], int] = {}
    table = ""
    for n, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m:
            table = m.group(1).replace('"', "").replace(" ", "")
            out.setdefault((table, ""), n)
            continue
        k = _KEY.match(line)
        if k:
            parts = [p.strip() for p in k.group(1).split(".")]
            for i in range(len(parts)):  # a.b.c = 1 in [t]: ("t", "a"), ("t.a", "b"), ("t.a.b", "c")
                where = ".".join([table, *parts[:i]]).strip(".")
                out.setdefault((where, parts[i]), n)
    return out


class _Reader:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.lines = _line_index(text)

    def fail(self, table: str, key: str, reason: str) -> RulesInvalid:
        parent, _, last = table.rpartition(".")
        full = f"{table}.{key}".strip(".")
        line = (self.lines.get((table, key)) or self.lines.get((full, ""))
                or self.lines.get((parent, last)) or self.lines.get((table, "")) or 0)
        where = f"{self.source}:{line}" if line else self.source
        return RulesInvalid(f"{where}: {reason}", details={"line": line, "table": table, "key": key,
                                                            "reason": reason, "file": self.source})

    def take_int(self, doc: dict[str, Any], table: str, key: str, default: int, lo: int, hi: int) -> int:
        if key not in doc:
            return default
        v = doc[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(table, key, f"{key} 应为整数 (must be a whole number), got {v!r}")
        if not lo <= v <= hi:
            raise self.fail(table, key, f"{key} = {v} 超出范围 (out of range {lo}..{hi})")
        return v

    def take_bool(self, doc: dict[str, Any], table: str, key: str, default: bool) -> bool:
        if key not in doc:
            return default
        v = doc[key]
        if not isinstance(v, bool):
            raise self.fail(table, key, f"{key} 应为 true 或 false (must be true or false), got {v!r}")
        return v

    def only(self, doc: dict[str, Any], table: str, allowed: set[str]) -> None:
        for key in doc:
            if key not in allowed:
                raise self.fail(table, key, f"未知的设置 {key!r} (unknown setting in [{table}]; "
                                            f"known: {', '.join(sorted(allowed))})")


def parse_rules(text: str, *, source: str = "rules.toml") -> Rules:
    """Read a county's rules from TOML text, or raise RulesInvalid naming the line and the reason."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m.group(1)) if m else 0
        raise RulesInvalid(f"{source}:{line}: TOML 语法错误 (syntax error): {exc}",
                           details={"line": line, "reason": str(exc), "file": source}) from None
    r = _Reader(text, source)
    r.only(doc, "", {"county", "rules", "colours", "backlog", "freshness", "sweep", "repeat", "clock", "calendar"})
    for name, value in doc.items():
        if not isinstance(value, dict):
            raise r.fail("", name, f"{name} 应为一个表 [{name}] (must be a table)")
    county = doc.get("county", {})
    r.only(county, "county", {"name"})
    name = county.get("name", "")
    if not isinstance(name, str):
        raise r.fail("county", "name", "name 应为文字 (must be text)")

    given = doc.get("rules", {})
    for rid in given:
        if rid not in RULE_DEFS:
            raise r.fail(f"rules.{rid}", "", f"未知的时限规则 {rid!r} (unknown rule; known: {', '.join(RULE_DEFS)})")
    rules: dict[str, Rule] = {}
    for rid, d in RULE_DEFS.items():
        table = f"rules.{rid}"
        cfg = given.get(rid, {})
        if not isinstance(cfg, dict):
            raise r.fail("rules", rid, f"[{table}] 应为一个表 (must be a table)")
        r.only(cfg, table, {"days", "enabled"})
        days = r.take_int(cfg, table, "days", d.days, 1, 366)
        enabled = r.take_bool(cfg, table, "enabled", True)
        if d.statutory:
            if not enabled:
                raise r.fail(table, "enabled", f"{d.zh} 是法定时限，不能停用 (a statutory limit cannot be "
                                               f"disabled; {d.source})")
            if d.kind == "window" and days != d.days:
                raise r.fail(table, "days", f"{d.zh} 是当事人的法定期限，不能改动 (the petitioner's statutory "
                                            f"window is {d.days} days, {d.source}; got {days})")
            if d.kind == "duty" and days > d.days:
                raise r.fail(table, "days", f"{d.zh}: {days} 日超过法定的 {d.days} 日 (exceeds the statutory "
                                            f"{d.days} days, {d.source}; a county may shorten it, not lengthen)")
        rules[rid] = Rule(rid, days, d.counted, enabled, d)

    colours = doc.get("colours", {})
    r.only(colours, "colours", {"blue_within_days", "yellow_within_days", "red_overdue_days", "group_size"})
    blue = r.take_int(colours, "colours", "blue_within_days", 7, 0, 90)
    yellow = r.take_int(colours, "colours", "yellow_within_days", 3, 0, 90)
    if yellow > blue:
        raise r.fail("colours", "yellow_within_days",
                     f"黄色阈值 {yellow} 日不应大于蓝色阈值 {blue} 日 (yellow must not exceed blue)")
    red = r.take_int(colours, "colours", "red_overdue_days", 15, 0, 365)
    group = r.take_int(colours, "colours", "group_size", 5, 2, 10000)

    backlog = doc.get("backlog", {})
    r.only(backlog, "backlog", {"open_past", "reopened_after_final"})
    open_past = backlog.get("open_past", ["handle_decide", "mediation_conclude"])
    if not isinstance(open_past, list) or not all(isinstance(x, str) for x in open_past):
        raise r.fail("backlog", "open_past", "open_past 应为规则名列表 (must be a list of rule names)")
    for x in open_past:
        if x not in RULE_DEFS or RULE_DEFS[x].kind != "duty":
            raise r.fail("backlog", "open_past", f"open_past 中的 {x!r} 不是时限义务规则 (not a duty rule)")
    reopened = r.take_bool(backlog, "backlog", "reopened_after_final", True)

    fresh = doc.get("freshness", {})
    r.only(fresh, "freshness", {"grace_hours"})
    grace = r.take_int(fresh, "freshness", "grace_hours", 72, 0, 24 * 60)

    sweep = doc.get("sweep", {})
    r.only(sweep, "sweep", {"interval_minutes", "warn_before_days", "reminder_letter", "warning_notice_after_days"})
    interval = r.take_int(sweep, "sweep", "interval_minutes", 10, 1, 24 * 60)
    warn = r.take_int(sweep, "sweep", "warn_before_days", 3, 0, 90)
    letter = r.take_bool(sweep, "sweep", "reminder_letter", True)
    notice_after = r.take_int(sweep, "sweep", "warning_notice_after_days", 15, 0, 365)

    repeat = doc.get("repeat", {})
    r.only(repeat, "repeat", {"recent_days"})
    recent = r.take_int(repeat, "repeat", "recent_days", 180, 0, 3660)

    clock = doc.get("clock", {})
    r.only(clock, "clock", {"max_skew_minutes"})
    skew = r.take_int(clock, "clock", "max_skew_minutes", 30, 1, 7 * 24 * 60)

    cal = doc.get("calendar", {})
    r.only(cal, "calendar", {"extra_holidays", "extra_workdays"})
    days_of: dict[str, list[date]] = {}
    for key in ("extra_holidays", "extra_workdays"):
        v = cal.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, date) and not hasattr(x, "hour") for x in v):
            raise r.fail("calendar", key, f"{key} 应为日期列表，如 [2026-12-31] (must be a list of dates)")
        days_of[key] = v
    both = set(days_of["extra_holidays"]) & set(days_of["extra_workdays"])
    if both:
        raise r.fail("calendar", "extra_workdays",
                     f"{sorted(both)[0]} 同时是假日和工作日 (a day cannot be both a holiday and a working day)")

    return Rules(
        county=name, rules=rules, blue_within_days=blue, yellow_within_days=yellow, red_overdue_days=red,
        group_size=group, backlog_open_past=tuple(open_past), backlog_reopened_after_final=reopened,
        grace_hours=grace, sweep_interval_minutes=interval, warn_before_days=warn, reminder_letter=letter,
        warning_notice_after_days=notice_after, repeat_recent_days=recent, max_skew_minutes=skew,
        calendar=WorkCalendar.with_overrides(days_of["extra_holidays"], days_of["extra_workdays"]), text=text,
    )


def default_rules_text() -> str:
    """The default county file shipped with Minqing (every figure at its DOMAIN.md default)."""
    return resources.files("schema").joinpath("county_rules.toml").read_text(encoding="utf-8")


def default_rules() -> Rules:
    return parse_rules(default_rules_text(), source="county_rules.toml")


def load_rules_file(path: str | Path) -> Rules:
    """Read a county's rules file; a missing or unreadable file is refused with a sentence."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesInvalid(f"找不到规则文件 {p} (rules file not found)", details={"file": str(p)}) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesInvalid(f"无法读取规则文件 {p} (cannot read rules file): {exc}", details={"file": str(p)}) from None
    return parse_rules(text, source=p.name)
