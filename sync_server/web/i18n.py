"""Language of the coordinator web: Chinese by default, English on request.

English msgids in the code and templates; ``translations/zh/LC_MESSAGES/messages.po``
holds the Chinese, read at start-up with Babel (no compiled ``.mo`` to go stale).
The ``minqing_lang`` cookie picks English. Labels of enums come from ``schema.enums``
(``.zh`` / ``.en``), of fields from ``schema.entities`` (``zh``) and ``FIELD_EN`` here.
``tests/sync_server/test_web_i18n.py`` fails when a string has no Chinese.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po
from flask import current_app, g

from schema import enums as E
from schema.entities import ENTITIES
from schema.rules import RULE_DEFS, START_EVENTS, Rules

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
LANG_COOKIE = "minqing_lang"
CATALOGUE_KEY = "minqing_coord_catalogue"


def N_(msgid: str) -> str:
    """Mark a string for extraction; it is translated where it is shown (``_``)."""
    return msgid


class Catalogue:
    """Translations by language from ``<dir>/<lang>/LC_MESSAGES/messages.po`` (English: the msgids)."""

    def __init__(self, directory: Path) -> None:
        self.messages: dict[str, dict[str, str]] = {"en": {}}
        for po in sorted(directory.glob("*/LC_MESSAGES/messages.po")):
            with po.open("rb") as fh:
                catalog = read_po(fh)
            self.messages[po.parent.parent.name] = {
                str(m.id): str(m.string) for m in catalog
                if m.id and isinstance(m.id, str) and m.string and not m.fuzzy
            }

    def gettext(self, lang: str, msgid: str) -> str:
        return self.messages.get(lang, {}).get(msgid) or msgid


def lang() -> str:
    return str(g.get("lang", DEFAULT_LANG))


def _(msgid: str, **kw: Any) -> str:
    """Translate into the request's language, then fill ``%(name)s`` slots."""
    text = current_app.extensions[CATALOGUE_KEY].gettext(lang(), msgid)
    return text % kw if kw else text


FIELD_EN: dict[str, dict[str, str]] = {
    "case": {
        "case_no": "Case no.", "title": "Matter", "category": "Category", "subject": "Type of matter",
        "channel": "Channel", "origin_node": "Origin", "received_at": "Received",
        "first_receiver": "First receiver", "summary": "What was reported", "demands": "Demands",
        "people_count": "Number of people", "simplified": "Simplified handling",
        "not_public": "Mediation not public", "related_case": "Related case", "tags": "Tags",
        "level": "Handling level", "node": "Handling unit",
    },
    "party": {"role": "Role", "name": "Name", "id_number": "ID number", "phone": "Phone",
              "address": "Address", "organisation": "Organisation"},
    "visit": {"kind": "Kind of visit", "visited_at": "Time", "visitor": "Visitor", "place": "Place",
              "summary": "What happened"},
    "mediation": {"kind": "Kind of mediation", "mediator": "Mediator", "held_at": "Held at", "place": "Place",
                  "outcome": "Outcome", "agreement_form": "Agreement form",
                  "facts": "Facts and disputed points", "terms": "Agreed terms",
                  "performance": "How and when the terms are performed",
                  "performance_due": "Performance due by", "remedies_told": "Other remedies explained",
                  "not_public": "Not public", "parties": "Parties present"},
    "notice": {"kind": "Kind of notice", "served_at": "Date served", "number": "Document no.",
               "summary": "Summary"},
    "leader_assignment": {"leader": "Responsible leader", "assigned_at": "Assigned on",
                          "handler": "Dedicated handler", "team": "Working team", "plan": "Resolution plan",
                          "response_plan": "Response plan", "progress": "Progress", "ended_at": "Ended on",
                          "handed_over_to": "Handed over to"},
    "evaluation": {"rating": "Rating", "evaluated_at": "Evaluated at", "comment": "Comment"},
    "note": {"text": "Note", "written_at": "Written at"},
    "alert": {"kind": "Kind", "raised_at": "Raised at", "rule": "Deadline rule", "due": "Due",
              "start_event": "Counted from", "start": "Start", "message": "Message",
              "related_case": "Related case", "related_op": "Related record", "withdrawn_at": "Withdrawn at",
              "withdrawn_reason": "Why withdrawn"},
}

ENTITY_EN: dict[str, str] = {
    "case": "Case", "party": "Party", "visit": "Visit", "mediation": "Mediation", "notice": "Notice",
    "leader_assignment": "Leader assignment", "evaluation": "Evaluation", "note": "Note",
    "alert": "County alert",
}

START_EVENT_EN: dict[str, str] = {
    "received": "Receipt", "routed": "Routing or assignment", "accepted": "Acceptance",
    "reopened": "Reopening", "decision_served": "Decision served", "review_requested": "Review requested",
    "review_decided": "Review decided", "rereview_requested": "Re-review requested",
    "agreement": "Mediation agreement", "reported_up": "Reported up to this level", "closed": "Closing",
    "last_progress": "Last progress entry (or assignment)",
}

ENUMS: dict[str, type[StrEnum]] = {
    "state": E.State, "level": E.Level, "category": E.Category, "subject": E.Subject,
    "channel": E.Channel, "action": E.Action, "decision": E.Decision, "op_kind": E.OpKind,
    "conflict": E.ConflictKind, "tag": E.CaseTag, "role": E.PartyRole, "colour": E.Colour,
    "obligation_state": E.ObligationState, "alert_kind": E.AlertKind, "rating": E.Rating,
    "notice_kind": E.NoticeKind, "visit_kind": E.VisitKind, "mediation_kind": E.MediationKind,
    "outcome": E.MediationOutcome,
}


def field_label(entity: str, name: str) -> str:
    if lang() == "en":
        return FIELD_EN.get(entity, {}).get(name, name)
    spec = ENTITIES[entity].field_map.get(name) if entity in ENTITIES else None
    return spec.zh if spec is not None else name


def entity_label(entity: str) -> str:
    if lang() == "en":
        return ENTITY_EN.get(entity, entity)
    return ENTITIES[entity].zh if entity in ENTITIES else entity


def enum_label(enum: type[StrEnum] | str, value: Any, lg: str | None = None) -> str:
    """The label of ``value`` in the request's language, or ``lg`` (the raw value if unknown)."""
    cls = ENUMS[enum] if isinstance(enum, str) else enum
    member = cls._value2member_map_.get(value)
    if not isinstance(member, E.LabeledEnum):
        return str(value if value is not None else "")
    text = member.label(lg or lang())
    return text[:1].upper() + text[1:]


def rule_label(rule_id: str | None, rules: Rules | None) -> str:
    """A deadline rule's name with this county's figure."""
    if not rule_id:
        return ""
    if rules is not None and rule_id in rules.rules:
        rule = rules.rules[rule_id]
        if lang() != "en":
            return rule.zh
        base = RULE_DEFS[rule_id].en.split(" (")[0]
        unit = "working days" if rule.counted == "working" else "days"
        every = "every " if rule_id == "leader_progress" else ""
        return f"{base[:1].upper()}{base[1:]} ({every}{rule.days} {unit})"
    d = RULE_DEFS.get(rule_id)
    if d is None:
        return rule_id
    return d.zh if lang() != "en" else d.en[:1].upper() + d.en[1:]


def start_event_label(event: str | None) -> str:
    if not event:
        return ""
    if lang() == "en":
        return START_EVENT_EN.get(event, event)
    return START_EVENTS.get(event, event)
