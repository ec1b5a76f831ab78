"""Enumerations of the domain, each member with its Chinese and English label.

Values are stable English identifiers (they travel in ops); labels are for people.
See ``docs/glossary.md`` for the terms and DOMAIN.md for their meaning.
"""

from __future__ import annotations

from enum import StrEnum


class LabeledEnum(StrEnum):
    """A string enum whose members carry ``zh`` and ``en`` labels."""

    zh: str
    en: str

    def __new__(cls, value: str, zh: str, en: str) -> LabeledEnum:
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.zh = zh
        obj.en = en
        return obj

    def label(self, lang: str = "zh") -> str:
        """The label in ``lang`` ("zh" or "en"); Chinese by default."""
        return self.en if lang == "en" else self.zh

    @classmethod
    def values(cls) -> list[str]:
        return [m.value for m in cls]


class Category(LabeledEnum):
    """信访事项类别 (信访工作条例 Arts. 29-31)."""

    SUGGESTION = "suggestion", "建议意见类", "suggestion"
    ACCUSATION = "accusation", "检举控告类", "report or accusation"  # confidential reporter
    COMPLAINT = "complaint", "申诉求决类", "complaint or demand"
    DISPUTE = "dispute", "矛盾纠纷", "civil dispute (mediation)"


class Subject(LabeledEnum):
    """事由 / 纠纷类型."""

    LAND_REQUISITION = "land_requisition", "征地补偿", "land requisition"
    DEMOLITION = "demolition", "拆迁安置", "demolition and resettlement"
    LAND_CONTRACT = "land_contract", "土地承包", "land contracting"
    WAGE_ARREARS = "wage_arrears", "拖欠工资(两拖欠)", "wage arrears"
    NEIGHBOUR = "neighbour", "邻里纠纷", "neighbour dispute"
    FAMILY = "family", "婚姻家庭", "marriage and family"
    ENVIRONMENT = "environment", "环境污染", "environment"
    PROPERTY_DAMAGE = "property_damage", "损害赔偿", "damage compensation"
    MEDICAL = "medical", "医疗纠纷", "medical dispute"
    SOCIAL_SECURITY = "social_security", "社会保障", "social security"
    OFFICIAL_CONDUCT = "official_conduct", "干部作风", "conduct of officials"
    OTHER = "other", "其他", "other"


class Channel(LabeledEnum):
    """来源渠道."""

    VISIT = "visit", "来访", "in person"
    LETTER = "letter", "来信", "letter"
    ONLINE = "online", "网上信访", "online"
    PHONE = "phone", "电话", "telephone"
    SCREENING = "screening", "排查发现", "found by screening"


class Level(LabeledEnum):
    """办理层级: where a case is handled (村 → 乡镇 → 县)."""

    VILLAGE = "village", "村级", "village"
    TOWNSHIP = "township", "乡镇级", "township"
    COUNTY = "county", "县级", "county"


LEVEL_ORDER: dict[str, int] = {Level.VILLAGE: 0, Level.TOWNSHIP: 1, Level.COUNTY: 2}


class State(LabeledEnum):
    """案件状态 (statutory flow, DOMAIN.md "The case and its life")."""

    REGISTERED = "registered", "已登记", "registered"
    ROUTED = "routed", "已转送/交办", "routed"
    ACCEPTED = "accepted", "已受理", "accepted"
    NOT_ACCEPTED = "not_accepted", "不予受理", "not accepted"
    IN_HANDLING = "in_handling", "办理中", "in handling"
    EXTENDED = "extended", "已延期", "extended"
    DECIDED = "decided", "已出具处理意见", "decision issued"
    CLOSED = "closed", "已办结", "closed"
    REVIEW_REQUESTED = "review_requested", "复查中", "review requested"
    REVIEW_DECIDED = "review_decided", "已复查", "review decided"
    REREVIEW_REQUESTED = "rereview_requested", "复核中", "re-review requested"
    FINAL = "final", "已终结", "final"


class Action(LabeledEnum):
    """流转动作: what a transition op asks the state machine to do."""

    ROUTE = "route", "转送/交办", "route"
    ACCEPT = "accept", "受理", "accept"
    REJECT = "reject", "不予受理", "not accept"
    START = "start", "开始办理", "start handling"
    EXTEND = "extend", "延期办理", "extend"
    DECIDE = "decide", "出具处理意见", "issue decision"
    CLOSE = "close", "办结", "close"
    CLOSE_BY_AGREEMENT = "close_by_agreement", "调解结案", "close by mediation agreement"
    REQUEST_REVIEW = "request_review", "申请复查", "request review"
    DECIDE_REVIEW = "decide_review", "复查决定", "decide review"
    REQUEST_REREVIEW = "request_rereview", "申请复核", "request re-review"
    DECIDE_REREVIEW = "decide_rereview", "复核决定(终结)", "decide re-review (final)"
    FINALIZE = "finalize", "终结", "finalize"
    ESCALATE = "escalate", "上报", "report up"
    REOPEN = "reopen", "重新办理", "reopen"


class Decision(LabeledEnum):
    """处理意见."""

    SUPPORT = "support", "支持", "support"
    EXPLAIN = "explain", "解释说明", "explain"
    NOT_SUPPORT = "not_support", "不予支持", "not support"


class PartyRole(LabeledEnum):
    """当事人角色."""

    PETITIONER = "petitioner", "信访人/申请人", "petitioner"
    RESPONDENT = "respondent", "被反映人/被申请人", "respondent"
    OTHER = "other", "其他当事人", "other party"


class VisitKind(LabeledEnum):
    """走访类型."""

    RECEPTION = "reception", "接访", "reception"
    WALK = "walk", "走访", "walk-round visit"
    HOME = "home", "上门", "home visit"
    FOLLOW_UP = "follow_up", "回访", "follow-up visit"


class MediationKind(LabeledEnum):
    """调解类型."""

    PEOPLE = "people", "人民调解", "people's mediation"
    ADMINISTRATIVE = "administrative", "行政调解", "administrative mediation"
    JUDICIAL = "judicial", "司法调解", "judicial mediation"


class MediationOutcome(LabeledEnum):
    """调解结果 (人民调解法 Arts. 26-30)."""

    AGREEMENT = "agreement", "达成协议", "agreement"
    NO_AGREEMENT = "no_agreement", "未达成协议", "no agreement"
    SUSPENDED = "suspended", "中止", "suspended"


class AgreementForm(LabeledEnum):
    """协议形式."""

    WRITTEN = "written", "书面协议", "written"
    ORAL = "oral", "口头协议", "oral"


class NoticeKind(LabeledEnum):
    """告知单 / 文书."""

    ROUTE = "route", "转送/交办告知", "notice of routing"
    ACCEPTANCE = "acceptance", "受理告知书", "acceptance notice"
    NON_ACCEPTANCE = "non_acceptance", "不予受理告知书", "non-acceptance notice"
    NOT_REACCEPTED = "not_reaccepted", "不再受理告知书", "not-re-accepted notice"
    EXTENSION = "extension", "延长办理期限告知书", "extension notice"
    DECISION = "decision", "处理意见书", "decision"
    REVIEW_OPINION = "review_opinion", "复查意见书", "review opinion"
    REREVIEW_OPINION = "rereview_opinion", "复核意见书", "re-review opinion"
    MEDIATION_AGREEMENT = "mediation_agreement", "调解协议书", "mediation agreement"
    SETTLEMENT = "settlement", "和解协议书", "settlement"
    REMINDER_LETTER = "reminder_letter", "提醒函", "reminder letter"
    WARNING_NOTICE = "warning_notice", "警示单", "warning notice"


class Rating(LabeledEnum):
    """满意度评价."""

    SATISFIED = "satisfied", "满意", "satisfied"
    BASICALLY_SATISFIED = "basically_satisfied", "基本满意", "basically satisfied"
    UNSATISFIED = "unsatisfied", "不满意", "unsatisfied"


class OpKind(LabeledEnum):
    """操作类型: what an op does to its entity."""

    CREATE = "create", "新建", "create"
    SET = "set", "修改字段", "set fields"
    TRANSITION = "transition", "流转", "transition"
    VOID = "void", "作废", "void"
    RESOLVE = "resolve", "处理冲突", "resolve conflict"
    ADD = "add", "加入集合", "add to set"
    REMOVE = "remove", "移出集合", "remove from set"


class ConflictKind(LabeledEnum):
    """冲突类型."""

    CONCURRENT_EDIT = "concurrent_edit", "并发修改", "concurrent edit"
    INVALID_TRANSITION = "invalid_transition", "无效流转", "invalid transition"


class Colour(LabeledEnum):
    """五色预警: a case's warning colour (DOMAIN.md "Warnings"; thresholds in the county rules)."""

    GREEN = "green", "绿色", "green"
    BLUE = "blue", "蓝色", "blue"
    YELLOW = "yellow", "黄色", "yellow"
    ORANGE = "orange", "橙色", "orange"
    RED = "red", "红色", "red"


COLOUR_ORDER: dict[str, int] = {"green": 0, "blue": 1, "yellow": 2, "orange": 3, "red": 4}


class ObligationState(LabeledEnum):
    """时限状态: where one obligation of a case stands at a given time."""

    PENDING = "pending", "未到期", "pending"
    MET = "met", "已完成", "met"
    OVERDUE = "overdue", "已超期", "overdue"
    AWAITING_SYNC = "awaiting_sync", "待同步确认", "awaiting sync"
    WITHDRAWN = "withdrawn", "已撤销", "withdrawn"
    LAPSED = "lapsed", "已届满", "lapsed (a window closed unused)"


class AlertKind(LabeledEnum):
    """督办记录类型: what the county server's sweep recorded on a case (server ops only)."""

    WARNING = "warning", "临期预警", "deadline warning"
    OVERDUE = "overdue", "超期", "overdue"
    ESCALATED = "escalated", "超期上报", "escalated on deadline"
    FOLLOW_UP_REQUIRED = "follow_up_required", "需回访", "follow-up visit required"
    REPEAT = "repeat", "重复信访", "repeat petition"
    SKIP_LEVEL = "skip_level", "越级访", "skip-level petition"
    FINAL_REFILED = "final_refiled", "已终结事项再次信访", "petition on a finalised matter"
    CLOCK_SKEW = "clock_skew", "设备时钟偏差", "device clock skew"


class CaseTag(LabeledEnum):
    """案件标记 (an add-wins set on the case)."""

    REPEAT = "repeat", "重复信访", "repeat petition"
    GROUP = "group", "群体访", "group petition"
    SKIP_LEVEL = "skip_level", "越级访", "skip-level petition"
    LITIGATION = "litigation", "涉法涉诉(诉访分离)", "belongs to legal procedure"
    KEY = "key", "重点关注", "key case"
    HARD = "hard", "疑难复杂", "hard case"
