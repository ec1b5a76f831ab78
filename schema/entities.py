"""The entities of a case and their fields, as data.

One ``EntitySpec`` per entity type; each field is a ``FieldSpec``. Validation
(``schema.validation``), the replica's tables (``conflict.replica``) and the forms of the
field client are all derived from this table, so a field is declared once.

Field kinds:
  ``str``     short text (``max_len``)        ``text``    free text (statements, terms)
  ``int``     integer (``minimum``/``maximum``) ``bool``   true/false
  ``date``    ``YYYY-MM-DD``                   ``datetime`` ISO 8601 with a UTC offset
  ``enum``    one value of ``enum``            ``idnum``   resident ID number (15 or 18)
  ``phone``   mobile or landline number        ``ref``     an entity id (32 hex)
  ``set``     an add-wins set of strings, changed only by ``add``/``remove`` ops

``personal`` fields identify or describe a person (names, ID numbers, phones, addresses,
statements). On a laptop they are encrypted at rest; DOMAIN.md "Confidentiality".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from schema import enums as E


@dataclass(frozen=True)
class FieldSpec:
    """One field of an entity."""

    name: str
    kind: str
    zh: str
    required: bool = False  # must be present in the create op
    personal: bool = False  # encrypted at rest on laptops, masked on screen
    enum: type[StrEnum] | None = None
    max_len: int = 200
    minimum: int | None = None
    maximum: int | None = None
    create_only: bool = False  # given at create, afterwards changed only by transitions
    immutable: bool = False  # given at the first create, never changed (scope and numbering)


@dataclass(frozen=True)
class EntitySpec:
    """One entity type: its name, table, Chinese label and fields."""

    name: str
    table: str
    zh: str
    fields: tuple[FieldSpec, ...]
    field_map: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "field_map", {f.name: f for f in self.fields})

    @property
    def set_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.kind == "set")

    @property
    def personal_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.personal)


F = FieldSpec

CASE = EntitySpec(
    "case",
    "cases",
    "案件",
    (
        F("case_no", "str", "案件编号", required=True, max_len=64, immutable=True),
        F("title", "str", "事由", required=True, personal=True, max_len=200),
        F("category", "enum", "类别", required=True, enum=E.Category),
        F("subject", "enum", "事项类型", required=True, enum=E.Subject),
        F("channel", "enum", "来源渠道", required=True, enum=E.Channel),
        F("origin_node", "str", "来源村(社区)", required=True, max_len=32, immutable=True),
        F("received_at", "datetime", "收件时间", required=True),
        F("first_receiver", "str", "首接人", required=True, max_len=64, immutable=True),
        F("summary", "text", "反映内容", personal=True, max_len=20000),
        F("demands", "text", "诉求", personal=True, max_len=20000),
        F("people_count", "int", "人数", minimum=1, maximum=100000),
        F("simplified", "bool", "简易办理"),
        F("not_public", "bool", "不公开调解"),
        F("related_case", "ref", "关联案件"),
        F("tags", "set", "标记", enum=E.CaseTag),
        # lifecycle: given at create, afterwards moved only by transition ops
        F("level", "enum", "办理层级", required=True, enum=E.Level, create_only=True),
        F("node", "str", "办理单位", required=True, max_len=32, create_only=True),
    ),
)

PARTY = EntitySpec(
    "party",
    "parties",
    "当事人",
    (
        F("role", "enum", "角色", required=True, enum=E.PartyRole),
        F("name", "str", "姓名", required=True, personal=True, max_len=100),
        F("id_number", "idnum", "身份证号", personal=True),
        F("phone", "phone", "电话", personal=True),
        F("address", "str", "住址", personal=True, max_len=300),
        F("organisation", "str", "单位", max_len=200),
    ),
)

VISIT = EntitySpec(
    "visit",
    "visits",
    "走访记录",
    (
        F("kind", "enum", "类型", required=True, enum=E.VisitKind),
        F("visited_at", "datetime", "时间", required=True),
        F("visitor", "str", "走访人", required=True, max_len=100),
        F("place", "str", "地点", max_len=200),
        F("summary", "text", "情况记录", personal=True, max_len=20000),
    ),
)

MEDIATION = EntitySpec(
    "mediation",
    "mediations",
    "调解记录",
    (
        F("kind", "enum", "调解类型", required=True, enum=E.MediationKind),
        F("mediator", "str", "调解员", required=True, max_len=100),
        F("held_at", "datetime", "调解时间", required=True),
        F("place", "str", "地点", max_len=200),
        F("outcome", "enum", "结果", required=True, enum=E.MediationOutcome),
        F("agreement_form", "enum", "协议形式", enum=E.AgreementForm),
        F("facts", "text", "事实与争议", personal=True, max_len=20000),
        F("terms", "text", "协议内容", personal=True, max_len=20000),
        F("performance", "text", "履行方式与期限", personal=True, max_len=5000),
        F("performance_due", "date", "履行期限"),
        F("remedies_told", "bool", "已告知其他救济途径"),
        F("not_public", "bool", "不公开"),
        F("parties", "set", "参加当事人"),
    ),
)

NOTICE = EntitySpec(
    "notice",
    "notices",
    "告知书/文书",
    (
        F("kind", "enum", "文书类型", required=True, enum=E.NoticeKind),
        F("served_at", "date", "送达日期", required=True),
        F("number", "str", "文号", max_len=64),
        F("summary", "text", "内容摘要", personal=True, max_len=20000),
    ),
)

LEADER_ASSIGNMENT = EntitySpec(
    "leader_assignment",
    "leader_assignments",
    "领导包案",
    (
        F("leader", "str", "包案领导", required=True, max_len=100),
        F("assigned_at", "date", "包案日期", required=True),
        F("handler", "str", "专人负责", required=True, max_len=100),
        F("team", "set", "工作专班"),
        F("plan", "text", "化解方案", max_len=20000),
        F("response_plan", "text", "应急预案", max_len=20000),
        F("progress", "text", "进展", max_len=20000),
        F("ended_at", "date", "离任/结束日期"),
        F("handed_over_to", "str", "交接给", max_len=100),
    ),
)

EVALUATION = EntitySpec(
    "evaluation",
    "evaluations",
    "满意度评价",
    (
        F("rating", "enum", "评价", required=True, enum=E.Rating),
        F("evaluated_at", "datetime", "评价时间", required=True),
        F("comment", "text", "意见", personal=True, max_len=5000),
    ),
)

NOTE = EntitySpec(
    "note",
    "notes",
    "备注",
    (
        F("text", "text", "内容", required=True, personal=True, max_len=20000),
        F("written_at", "datetime", "时间", required=True),
    ),
)

ALERT = EntitySpec(
    "alert",
    "alerts",
    "督办记录",
    (
        F("kind", "enum", "类型", required=True, enum=E.AlertKind),
        F("raised_at", "datetime", "发出时间", required=True),
        F("rule", "str", "时限规则", max_len=64),
        F("due", "datetime", "期限"),
        F("start_event", "str", "起算事件", max_len=64),
        F("start", "datetime", "起算时间"),
        F("message", "text", "说明", max_len=5000),
        F("related_case", "ref", "关联案件"),
        F("related_op", "str", "相关操作", max_len=32),
        F("withdrawn_at", "datetime", "撤销时间"),
        F("withdrawn_reason", "text", "撤销原因", max_len=5000),
    ),
)
"""Written only by the county server (its sweep); a laptop's op on an alert is quarantined."""

SERVER_ONLY_ENTITIES: frozenset[str] = frozenset({"alert"})

ENTITIES: dict[str, EntitySpec] = {
    s.name: s
    for s in (CASE, PARTY, VISIT, MEDIATION, NOTICE, LEADER_ASSIGNMENT, EVALUATION, NOTE, ALERT)
}

# Columns the fold keeps on the case row besides its fields (moved by transitions only).
CASE_LIFECYCLE_COLUMNS: tuple[str, ...] = (
    "state",
    "level",
    "node",
    "decision",
    "extended_days",
    "reopened",
    "accepted_at",
    "decided_at",
    "closed_at",
    "state_since",
    "level_since",
)
