"""The field client's local web UI: a Flask app on 127.0.0.1, for one mediator's laptop.

``create_app(data_dir)`` builds the app; ``serve(data_dir)`` runs it with waitress on
127.0.0.1 (``field-client serve``). The unlocked ``FieldClient`` lives in this process;
the browser only holds a session cookie (HttpOnly, SameSite=Strict) naming the unlocked
session, and a per-session CSRF token that every POST form carries.

Pages (all rendered on the server, no JavaScript, no CDN)::

    GET       /                             the caseload when unlocked, else the unlock page
    GET POST  /unlock                       passphrase form; POST unlocks
    POST      /lock                         closes the client, forgets every session
    GET       /lang/<zh|en>                 sets the language cookie, back to ?next=
    GET       /cases                        my caseload (filter state/category/level; sort by due)
    GET POST  /cases/new                    register a case with its parties (two or more)
    GET       /cases/<id>                   the case: facts, parties, deadlines, actions, timeline
    GET POST  /cases/<id>/<entity>/new      visit, mediation, notice, note, evaluation,
                                            leader assignment, party
    GET POST  /cases/<id>/transition/<act>  one state-machine action (only those allowed)
    POST      /cases/<id>/conflicts/<cid>   resolve a conflict (choose a value / keep current)

Forms: typed text becomes values through ``field_client.forms.coerce`` (shared with the
CLI); the store's own validation errors through ``forms.explain``.

Language: English msgids in the code and templates; ``translations/zh/LC_MESSAGES/
messages.po`` holds the Chinese, read at start-up with Babel (no compiled ``.mo`` to go
stale). Chinese is the default; the ``minqing_lang`` cookie picks English. Labels of
enums come from ``schema.enums`` (``.zh`` / ``.en``), of fields from ``schema.entities``
(``zh``) and ``FIELD_EN`` here.

Errors: form errors are shown inline next to the field, in the page's language, with
everything typed kept. Every other error becomes a page with a sentence and a stable
code (``ERROR_MESSAGES``); no traceback ever reaches the browser (it goes to the log
with a reference number shown on the page).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import sqlite3
import threading
import webbrowser
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from babel.messages.pofile import read_po
from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from markupsafe import Markup
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from conflict.replica import translate_sqlite
from field_client import forms, keystore
from field_client.cli_text import rule_name
from field_client.errors import InputInvalid, NotFound
from field_client.store import FieldClient, now_iso
from schema import enums as E
from schema.entities import ENTITIES
from schema.errors import MinqingError, OpInvalid
from schema.lifecycle import NEEDS_DECISION, NEEDS_NODE, NEXT_LEVEL
from schema.masking import MASKERS
from schema.obligations import CHINA
from schema.rules import RULE_DEFS, START_EVENTS, Rules

log = logging.getLogger("field_client.web")

HERE = Path(__file__).parent
LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
LANG_COOKIE = "minqing_lang"
SESSION_COOKIE = "minqing_field_session"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_PARTIES = 20


def N_(msgid: str) -> str:
    """Mark a string for extraction; it is translated where it is shown (``_``)."""
    return msgid


# ---------------------------------------------------------------------------
# Language: a small gettext catalogue read from the .po files
# ---------------------------------------------------------------------------


class Catalogue:
    """Translations by language, read from ``<dir>/<lang>/LC_MESSAGES/messages.po``.

    English is the language of the msgids, so it needs no file. Fuzzy or empty entries
    are not used (the msgid shows); ``tests/field_client/test_web_i18n.py`` fails when a
    string in a template or in this module has no Chinese.
    """

    def __init__(self, directory: Path, domain: str = "messages") -> None:
        self.messages: dict[str, dict[str, str]] = {"en": {}}
        for po in sorted(directory.glob(f"*/LC_MESSAGES/{domain}.po")):
            with po.open("rb") as fh:
                catalog = read_po(fh)
            self.messages[po.parent.parent.name] = {
                str(m.id): str(m.string)
                for m in catalog
                if m.id and isinstance(m.id, str) and m.string and not m.fuzzy
            }

    def gettext(self, lang: str, msgid: str) -> str:
        return self.messages.get(lang, {}).get(msgid) or msgid


def lang() -> str:
    """The language of this request (``zh`` unless the cookie asks for English)."""
    return str(g.get("lang", DEFAULT_LANG))


def _(msgid: str, **kw: Any) -> str:
    """Translate ``msgid`` into the request's language, then fill ``%(name)s`` slots."""
    text = current_app.extensions["minqing_catalogue"].gettext(lang(), msgid)
    return text % kw if kw else text


# English labels of fields (the Chinese ones are ``FieldSpec.zh``), by entity then name.
FIELD_EN: dict[str, dict[str, str]] = {
    "case": {
        "case_no": "Case no.", "title": "Matter", "category": "Category",
        "subject": "Type of matter", "channel": "Channel", "origin_node": "Origin village",
        "received_at": "Received", "first_receiver": "First receiver",
        "summary": "What was reported", "demands": "Demands", "people_count": "Number of people",
        "simplified": "Simplified handling", "not_public": "Mediation not public",
        "related_case": "Related case", "tags": "Tags", "level": "Handling level",
        "node": "Handling unit",
    },
    "party": {
        "role": "Role", "name": "Name", "id_number": "ID number", "phone": "Phone",
        "address": "Address", "organisation": "Organisation",
    },
    "visit": {
        "kind": "Kind of visit", "visited_at": "Time", "visitor": "Visitor", "place": "Place",
        "summary": "What happened",
    },
    "mediation": {
        "kind": "Kind of mediation", "mediator": "Mediator", "held_at": "Held at",
        "place": "Place", "outcome": "Outcome", "agreement_form": "Agreement form",
        "facts": "Facts and disputed points", "terms": "Agreed terms",
        "performance": "How and when the terms are performed",
        "performance_due": "Performance due by", "remedies_told": "Other remedies explained",
        "not_public": "Not public", "parties": "Parties present",
    },
    "notice": {
        "kind": "Kind of notice", "served_at": "Date served", "number": "Document no.",
        "summary": "Summary",
    },
    "leader_assignment": {
        "leader": "Responsible leader", "assigned_at": "Assigned on", "handler": "Dedicated handler",
        "team": "Working team", "plan": "Resolution plan", "response_plan": "Response plan",
        "progress": "Progress", "ended_at": "Ended on", "handed_over_to": "Handed over to",
    },
    "evaluation": {"rating": "Rating", "evaluated_at": "Evaluated at", "comment": "Comment"},
    "note": {"text": "Note", "written_at": "Written at"},
    "alert": {
        "kind": "Kind", "raised_at": "Raised at", "rule": "Deadline rule", "due": "Due",
        "start_event": "Counted from", "start": "Start", "message": "Message", "related_case": "Related case",
        "related_op": "Related record", "withdrawn_at": "Withdrawn at", "withdrawn_reason": "Why withdrawn",
    },
}

ENTITY_EN: dict[str, str] = {
    "case": "Case", "party": "Party", "visit": "Visit", "mediation": "Mediation",
    "notice": "Notice", "leader_assignment": "Leader assignment", "evaluation": "Evaluation",
    "note": "Note", "alert": "County alert",
}


def field_label(entity: str, name: str) -> str:
    spec = ENTITIES[entity].field_map.get(name)
    if lang() == "en":
        return FIELD_EN.get(entity, {}).get(name, name)
    return spec.zh if spec is not None else name


def entity_label(entity: str) -> str:
    if lang() == "en":
        return ENTITY_EN.get(entity, entity)
    return ENTITIES[entity].zh if entity in ENTITIES else entity


ENUM_BY_NAME: dict[str, type[StrEnum]] = {
    "state": E.State, "level": E.Level, "category": E.Category, "subject": E.Subject,
    "channel": E.Channel, "action": E.Action, "decision": E.Decision, "kind_op": E.OpKind,
    "conflict": E.ConflictKind, "tag": E.CaseTag, "role": E.PartyRole, "colour": E.Colour,
    "obligation_state": E.ObligationState, "alert_kind": E.AlertKind,
}


def enum_label(enum: type[StrEnum] | str, value: Any) -> str:
    """The label of ``value`` in the request's language (the raw value if unknown)."""
    cls = ENUM_BY_NAME[enum] if isinstance(enum, str) else enum
    member = cls._value2member_map_.get(value)
    if not isinstance(member, E.LabeledEnum):
        return str(value)
    text = member.label(lang())
    return text[:1].upper() + text[1:]  # English labels are lower case in schema.enums


def enum_options(cls: type[StrEnum]) -> list[tuple[str, str]]:
    return [(m.value, enum_label(cls, m.value)) for m in cls]


# ---------------------------------------------------------------------------
# Errors: stable code -> a sentence for people (translated where shown)
# ---------------------------------------------------------------------------

ERROR_MESSAGES: dict[str, str] = {
    "client.wrong_passphrase": N_("The passphrase is not right. Nothing was changed; please try again."),
    "client.keyfile_damaged": N_(
        "This laptop's key file (device.json) is damaged and cannot be read, so the data "
        "cannot be unlocked. Do not delete the data folder; ask the county IT staff for help."
    ),
    "client.not_initialised": N_(
        "There is no device in this data folder yet. Set it up first with: field-client init"
    ),
    "client.not_found": N_("That case or record is not on this laptop."),
    "client.transition_not_allowed": N_(
        "This step is not allowed from where the case now stands. Nothing was changed."
    ),
    "client.input": N_("Some of what was entered is not acceptable. Nothing was changed."),
    "replica.damaged": N_(
        "The case database on this laptop is damaged or is not a Minqing database, so it "
        "cannot be opened. It has not been changed. Ask the county IT staff to restore it "
        "from a backup."
    ),
    "replica.missing": N_(
        "The case database file (replica.db) is missing from the data folder. Ask the county IT staff."
    ),
    "replica.busy": N_("The case database is in use by another program. Please try again in a moment."),
    "replica.error": N_("The case database could not do what was asked. Nothing was changed. Please try again."),
    "web.csrf": N_(
        "This form has expired or did not come from this page, so it was not saved. "
        "Go back, reload the page and try again."
    ),
    "web.locked": N_("The laptop is locked. Unlock it with the passphrase."),
    "web.internal": N_(
        "Something went wrong inside the program. Nothing you typed is lost from the records "
        "already saved. Please tell the county IT staff the code and reference below."
    ),
    "http.400": N_("The request could not be understood."),
    "http.403": N_("This is not allowed."),
    "http.404": N_("There is no such page."),
    "http.405": N_("This page cannot be used that way."),
    "http.413": N_("What was sent is too large."),
}


def error_message(code: str, status: int = 500) -> str:
    msgid = ERROR_MESSAGES.get(code) or ERROR_MESSAGES.get(f"http.{status}") or ERROR_MESSAGES["web.internal"]
    return _(msgid)


class CsrfRefused(HTTPException):
    """A POST without the session's CSRF token."""

    code = 400
    description = "csrf"


# ---------------------------------------------------------------------------
# Form fields: what each form asks, how a field is drawn, how typed text becomes values
# ---------------------------------------------------------------------------

FORM_FIELDS: dict[str, tuple[str, ...]] = {
    "case": ("title", "category", "subject", "channel", "received_at", "people_count",
             "summary", "demands", "tags", "simplified", "not_public"),
    "party": ("role", "name", "id_number", "phone", "address", "organisation"),
    "visit": ("kind", "visited_at", "visitor", "place", "summary"),
    "mediation": ("kind", "mediator", "held_at", "place", "parties", "outcome", "agreement_form",
                  "facts", "terms", "performance", "performance_due", "remedies_told", "not_public"),
    "notice": ("kind", "served_at", "number", "summary"),
    "note": ("written_at", "text"),
    "evaluation": ("rating", "evaluated_at", "comment"),
    "leader_assignment": ("leader", "handler", "assigned_at", "team", "plan", "response_plan", "progress"),
}

# The records a case page offers to add, in order, with the button's text.
RECORD_ACTIONS: tuple[tuple[str, str], ...] = (
    ("visit", N_("Record a visit")),
    ("mediation", N_("Record a mediation")),
    ("notice", N_("Record a notice served")),
    ("note", N_("Add a note")),
    ("evaluation", N_("Record an evaluation")),
    ("leader_assignment", N_("Assign a leader")),
    ("party", N_("Add a party")),
)

HELP: dict[tuple[str, str], str] = {
    ("party", "id_number"): N_("18 characters; the last may be X. Shown masked after saving."),
    ("party", "phone"): N_("Mobile (11 digits) or area code and number, e.g. 0571-12345678."),
    ("mediation", "parties"): N_("Tick the parties who took part."),
    ("mediation", "agreement_form"): N_("Needed when the outcome is an agreement."),
    ("mediation", "performance"): N_("Who does what, how, and by when."),
    ("mediation", "remedies_told"): N_(
        "With no agreement, tell the parties their other remedies (People's Mediation Law Art. 26)."
    ),
    ("leader_assignment", "team"): N_("Names separated by commas."),
    ("case", "people_count"): N_("Five or more people is a group petition."),
}

WIDGETS = {
    "str": "text", "text": "textarea", "int": "number", "bool": "checkbox", "date": "date",
    "datetime": "datetime-local", "enum": "select", "idnum": "text", "phone": "tel", "ref": "text",
    "set": "checkboxes",
}


@dataclass
class FormField:
    """One input of a form as the template draws it."""

    name: str  # the input's name (with any prefix)
    field: str  # the entity's field
    label: str
    widget: str
    required: bool = False
    value: Any = ""  # text typed, or a list for check-boxes
    error: str | None = None
    options: list[tuple[str, str]] = dc_field(default_factory=list)
    help: str = ""
    max_len: int | None = None
    minimum: int | None = None
    maximum: int | None = None

    @property
    def id(self) -> str:
        return "f-" + self.name

    @property
    def wide(self) -> bool:
        return self.widget in ("textarea", "checkboxes")


def _set_options(entity: str, name: str, party_options: list[tuple[str, str]]) -> list[tuple[str, str]]:
    spec = ENTITIES[entity].field_map[name]
    if spec.enum is not None:
        return enum_options(spec.enum)
    if (entity, name) == ("mediation", "parties"):
        return party_options
    return []


def build_fields(
    entity: str,
    raw: Mapping[str, Any],
    errors: Mapping[str, str],
    *,
    prefix: str = "",
    party_options: list[tuple[str, str]] | None = None,
) -> list[FormField]:
    """The inputs of ``entity``'s form with what was typed (``raw``) and errors by field."""
    out = []
    getlist = getattr(raw, "getlist", None)
    for name in FORM_FIELDS[entity]:
        spec = ENTITIES[entity].field_map[name]
        widget = WIDGETS[spec.kind]
        if (entity, name) == ("leader_assignment", "team"):
            widget = "text"
        key = prefix + name
        if widget == "checkboxes":
            value: Any = list(getlist(key)) if getlist else list(raw.get(key) or [])
        else:
            value = raw.get(key, "")
        options: list[tuple[str, str]] = []
        if spec.kind == "enum" and spec.enum is not None:
            options = enum_options(spec.enum)
        elif widget == "checkboxes":
            options = _set_options(entity, name, party_options or [])
        help_id = HELP.get((entity, name))
        out.append(
            FormField(
                name=key, field=name, label=field_label(entity, name), widget=widget,
                required=spec.required, value=value, error=errors.get(name), options=options,
                help=_(help_id) if help_id else "",
                max_len=spec.max_len if spec.kind in ("str", "text") else None,
                minimum=spec.minimum, maximum=spec.maximum,
            )
        )
    return out


def coerce_form(entity: str, raw: Mapping[str, Any], *, prefix: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    """What was typed into ``entity``'s form -> (values for the store, errors by field).

    The text-to-values rules are ``field_client.forms.coerce`` (shared with the CLI);
    this adds what only a form has: check-boxes (a ticked box sends "1", a set sends one
    value per box) and the web's own rule that an agreement records its terms.
    """
    text: dict[str, str] = {}
    getlist = getattr(raw, "getlist", None)
    for name in FORM_FIELDS[entity]:
        spec = ENTITIES[entity].field_map[name]
        key = prefix + name
        if spec.kind == "set":
            items = list(getlist(key)) if getlist else list(raw.get(key) or [])
            text[name] = "\n".join(str(i) for i in items)
        else:
            text[name] = str(raw.get(key) or "")
    values, errors = forms.coerce(entity, text, lang=lang())
    if entity == "mediation" and values.get("outcome") == "agreement" and not values.get("terms"):
        errors.setdefault("terms", _("Please record the agreed terms."))
    return values, errors


def explain(exc: OpInvalid, entity: str) -> dict[str, str]:
    """The store's validation error as {field: sentence}; ``""`` when it names no field."""
    out = forms.explain(exc, entity, lang=lang())
    if "_" in out:
        out[""] = out.pop("_")
    return out


def _is_blank_party(raw: Mapping[str, Any], prefix: str) -> bool:
    return not any(str(raw.get(prefix + n) or "").strip() for n in FORM_FIELDS["party"] if n != "role")


# ---------------------------------------------------------------------------
# Showing values
# ---------------------------------------------------------------------------


def fmt_dt(value: Any) -> str:
    """ISO date-time -> ``2026-11-22 09:30`` in China time (dates pass through)."""
    if not value:
        return ""
    text = str(value)
    if len(text) == 10:
        return text
    try:
        return datetime.fromisoformat(text).astimezone(CHINA).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text


def _input_dt(value: str) -> str:
    """ISO date-time -> the ``datetime-local`` input's ``YYYY-MM-DDTHH:MM``."""
    return datetime.fromisoformat(value).astimezone(CHINA).strftime("%Y-%m-%dT%H:%M")


def show_value(entity: str, name: str, value: Any, *, unmask: bool = False,
               party_names: Mapping[str, str] | None = None) -> str:
    """A stored value as a person reads it: labels for enums, 是/否, dates, masks."""
    if value is None or value == "" or value == []:
        return ""
    spec = ENTITIES[entity].field_map.get(name) if entity in ENTITIES else None
    if spec is None:
        return str(value)
    if spec.kind == "enum" and spec.enum is not None:
        return enum_label(spec.enum, value)
    if spec.kind == "bool":
        return _("Yes") if value in (True, 1, "1") else _("No")
    if spec.kind == "datetime":
        return fmt_dt(value)
    if spec.kind == "set":
        items = value if isinstance(value, list) else [value]
        if spec.enum is not None:
            return "、".join(enum_label(spec.enum, i) for i in items)
        if (entity, name) == ("mediation", "parties") and party_names is not None:
            return "、".join(party_names.get(str(i), _("(unknown party)")) for i in items)
        return "、".join(map(str, items))
    if name in MASKERS and not unmask and isinstance(value, str):
        return str(MASKERS[name](value))
    return str(value)


REFUSALS: dict[str, str] = {
    "transition.level_too_low": N_("the case was already handled at a higher level"),
    "transition.not_allowed_from_state": N_("the case's state did not allow it"),
    "transition.already_extended": N_("the case had already been extended once"),
    "transition.already_top_level": N_("the case is already at county level"),
    "transition.case_voided": N_("the case had been voided"),
    "transition.unknown_action": N_("this program does not know that step"),
}


def refusal(code: str | None) -> str:
    """Why a transition did not take effect, as a phrase."""
    msgid = REFUSALS.get(str(code))
    return _(msgid) if msgid else str(code or "")


# English names of the deadline rules (the Chinese ones are ``schema.rules.RULE_DEFS``), the
# figure in brackets replaced by this county's (``rule_label``).
RULE_EN: dict[str, str] = {rid: d.en for rid, d in RULE_DEFS.items()}

# English names of the events a deadline counts from (the Chinese: ``schema.rules.START_EVENTS``).
START_EVENT_EN: dict[str, str] = {
    "received": "Receipt", "routed": "Routing or assignment", "accepted": "Acceptance",
    "reopened": "Reopening", "decision_served": "Decision served", "review_requested": "Review requested",
    "review_decided": "Review decided", "rereview_requested": "Re-review requested",
    "agreement": "Mediation agreement", "reported_up": "Reported up to this level", "closed": "Closing",
    "last_progress": "Last progress entry (or assignment)",
}

# How a duty ended without being met (``Obligation.ended``).
ENDED: dict[str, str] = {
    "escalated": N_("ended: the case was taken up a level"),
    "closed": N_("ended: the case was closed"),
    "extended": N_("ended: extended only after the limit had passed"),
    "reopened": N_("ended: the case was reopened"),
    "voided": N_("ended: the case was voided"),
}

OBLIGATION_KINDS: dict[str, str] = {
    "duty": N_("Duty of the office"),
    "window": N_("Window to act"),
}


def rule_label(rule_id: str | None, rules: Rules) -> str:
    """A rule's name with this county's figure: 村级办理时限(3日) / Village handles before reporting up (3 days)."""
    return rule_name(rule_id, rules, lang())


def start_event_label(event: str) -> str:
    if lang() == "en":
        return START_EVENT_EN.get(event, event)
    return START_EVENTS.get(event, event)


def flag_text(flag: Mapping[str, Any]) -> str:
    """A flag of ``case_status`` (clock skew, group, repeat, reopened, final) as a phrase."""
    kind = flag.get("flag")
    if kind == "clock_skew":
        return _("The clock of device %(device)s was off by about %(minutes)s minutes; "
                 "the times typed on it were corrected.", device=str(flag.get("device", ""))[:8],
                 minutes=abs(int(flag.get("skew_minutes") or 0)))
    if kind == "group":
        return _("Group petition (%(n)s people)", n=flag.get("people") or "")
    if kind == "repeat":
        return _("Repeat petition")
    if kind == "reopened":
        return _("Reopened after closing")
    if kind == "final":
        return _("Final: the matter is concluded")
    if kind == "engine_error":
        return _("The due dates of this case could not be worked out on this laptop; please tell the county IT staff.")
    return str(kind)


def obligation_rows(obligations: Iterable[Mapping[str, Any]], rules: Rules) -> list[dict[str, Any]]:
    """The case's obligations as the case page lists them."""
    out = []
    for o in obligations:
        notes = []
        if o.get("late"):
            notes.append(_("late"))
        if o.get("met_at"):
            notes.append(_("done %(when)s", when=fmt_dt(o["met_at"])))
        ended = ENDED.get(str(o.get("ended")))
        if ended:
            notes.append(_(ended))
        if o.get("estimated"):
            notes.append(_("estimated: that year's holidays are not published yet"))
        out.append({
            **o, "label": rule_label(o["rule"], rules), "event": start_event_label(o["start_event"]),
            "kind_label": _(kind) if (kind := OBLIGATION_KINDS.get(o["kind"])) else o["kind"],
            "state_label": enum_label("obligation_state", o["state"]), "notes": notes,
            "css": f"ob-{o['state']}" + (" ob-late" if o.get("late") else ""),
        })
    return out


@dataclass
class TimelineEntry:
    """One op of the case, as the timeline shows it."""

    when: str
    author: str
    entity: str
    kind: str
    title: str
    rows: list[tuple[str, str, bool]]  # label, value, wide (free text gets its own line)
    refused: str | None
    css: str


# Shown under "the matter" already; the registration entry of the timeline leaves them out.
CASE_FACTS_ONLY = frozenset({"case_no", "origin_node", "first_receiver", "level", "node", "summary", "demands"})


def timeline_entries(detail: Mapping[str, Any], *, unmask: bool, rules: Rules | None = None) -> list[TimelineEntry]:
    """The case's ops as the timeline shows them (a rule named by an op: ``rule_label``)."""

    def rule_name(rule_id: Any) -> str:
        return rule_label(str(rule_id), rules) if rules is not None else str(rule_id)

    party_names = {p["id"]: p.get("name") or "" for p in detail.get("parties", [])}
    withdrawn = {a["id"] for a in detail.get("alerts", []) if a.get("withdrawn_at")}
    out = []
    for op in detail["timeline"]:
        entity, kind, values = op["entity"], op["kind"], op["values"] or {}
        rows: list[tuple[str, str, bool]] = []
        if kind == "transition":
            title = _("Step: %(action)s", action=enum_label("action", values.get("action")))
            if values.get("to_node"):
                rows.append((_("To unit"), str(values["to_node"]), False))
            if values.get("decision"):
                rows.append((_("Decision"), enum_label("decision", values["decision"]), False))
            if values.get("days"):
                rows.append((_("Days"), str(values["days"]), False))
            if values.get("reason"):
                rows.append((_("Reason"), str(values["reason"]), True))
            if values.get("rule"):
                rows.append((_("Rule"), rule_name(values["rule"]), False))
        elif kind == "void":
            title = _("%(what)s voided", what=entity_label(entity))
            rows.append((_("Reason"), str(values.get("reason", "")), True))
        elif kind == "resolve":
            title = _("Conflict resolved (%(what)s)", what=entity_label(entity))
            if values.get("field"):
                rows.append((field_label(entity, values["field"]),
                             show_value(entity, values["field"], values.get("value"), unmask=unmask,
                                        party_names=party_names), False))
        elif kind in ("add", "remove"):
            name = str(values.get("field", ""))
            title = (_("Added to %(what)s", what=field_label(entity, name)) if kind == "add"
                     else _("Removed from %(what)s", what=field_label(entity, name)))
            rows.append((field_label(entity, name),
                         show_value(entity, name, values.get("items", []), unmask=unmask, party_names=party_names),
                         False))
        else:
            if kind == "create":
                title = _("Case registered") if entity == "case" else entity_label(entity)
            else:
                title = _("%(what)s changed", what=entity_label(entity))
            spec = ENTITIES.get(entity)
            order = [f.name for f in spec.fields] if spec else list(values)
            for name in order:
                if name not in values or (entity == "case" and kind == "create" and name in CASE_FACTS_ONLY):
                    continue
                text = show_value(entity, name, values[name], unmask=unmask, party_names=party_names)
                if entity == "alert" and name == "rule":
                    text = rule_name(values[name])
                elif entity == "alert" and name == "start_event":
                    text = start_event_label(str(values[name]))
                if text:
                    wide = spec is not None and spec.field_map[name].kind == "text"
                    rows.append((field_label(entity, name), text, wide))
        out.append(TimelineEntry(
            when=fmt_dt(op["occurred_at"]), author=op["author"], entity=entity, kind=kind,
            title=title, rows=rows, refused=op.get("refused"),
            css=f"tl-{entity} tl-{kind}" + (" tl-withdrawn" if entity == "alert" and kind == "create"
                                             and op["entity_id"] in withdrawn else ""),
        ))
    return out


# ---------------------------------------------------------------------------
# The unlocked client, shared by the server's threads
# ---------------------------------------------------------------------------


class Holder:
    """The process's unlocked FieldClient (or none), the sessions that may use it, a lock."""

    def __init__(self, data_dir: Path, clock: Callable[[], float] | None) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.client: FieldClient | None = None
        self.sessions: set[str] = set()
        self.lock = threading.RLock()

    def unlock(self, passphrase: str) -> str:
        """Open the client (WrongPassphrase and friends pass through); a new session id."""
        with self.lock:
            if self.client is None:
                kw = {"clock": self.clock} if self.clock is not None else {}
                self.client = FieldClient.open(self.data_dir, passphrase, **kw)
            else:
                keystore.unlock(self.data_dir, passphrase)  # a second browser proves it too
            sid = secrets.token_urlsafe(24)
            self.sessions.add(sid)
            return sid

    def is_unlocked(self, sid: str | None) -> bool:
        return self.client is not None and sid is not None and sid in self.sessions

    def lock_all(self) -> None:
        with self.lock:
            self.sessions.clear()
            if self.client is not None:
                self.client.close()
                self.client = None


def holder() -> Holder:
    h: Holder = current_app.extensions["minqing"]
    return h


def client() -> FieldClient:
    c: FieldClient | None = g.get("client")
    if c is None:
        raise RuntimeError("no unlocked client in this request")
    return c


def needs_unlock(view: Callable[..., Any]) -> Callable[..., Any]:
    """Run the view with the unlocked client (under the lock), or send to the unlock page."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        h = holder()
        with h.lock:
            if not h.is_unlocked(session.get("sid")):
                if request.method == "POST":
                    flash(error_message("web.locked"), "error")
                return redirect(url_for("web.unlock", next=_safe_next(request.full_path)))
            g.client = h.client
            return view(*args, **kwargs)

    return wrapper


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host, no ``//``)."""
    if not target:
        return ""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return ""
    return target.rstrip("?")


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def csrf_field() -> Markup:
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(csrf_token())


# ---------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------

bp = Blueprint("web", __name__)


@bp.route("/")
def index() -> Response:
    if holder().is_unlocked(session.get("sid")):
        return redirect(url_for("web.cases"))
    return redirect(url_for("web.unlock"))


@bp.route("/unlock", methods=["GET", "POST"])
def unlock() -> Any:
    h = holder()
    nxt = _safe_next(request.values.get("next"))
    if request.method == "GET" and h.is_unlocked(session.get("sid")):
        return redirect(nxt or url_for("web.cases"))
    device: dict[str, Any] | None = None
    problem: tuple[str, str] | None = None  # (code, sentence) that stops unlocking altogether
    try:
        device = keystore.read_info(h.data_dir)
    except MinqingError as exc:
        problem = (exc.code, error_message(exc.code))
    error = None
    status = 200
    if request.method == "POST" and problem is None:
        passphrase = request.form.get("passphrase", "")
        if not passphrase:
            error, status = _("Please enter the passphrase."), 422
        else:
            try:
                sid = h.unlock(passphrase)
            except MinqingError as exc:
                log.info("unlock refused: %s", exc.code)
                if exc.code == "client.wrong_passphrase":
                    error, status = error_message(exc.code), 403
                else:
                    problem, status = (exc.code, error_message(exc.code)), 503
            else:
                session.clear()
                session["sid"] = sid
                csrf_token()
                return redirect(nxt or url_for("web.cases"))
    elif problem is not None:
        status = 503
    return render_template("unlock.html", device=device, error=error, problem=problem, next=nxt), status


@bp.route("/lock", methods=["POST"])
def lock() -> Response:
    holder().lock_all()
    session.clear()
    flash(_("Locked. Enter the passphrase to continue."), "ok")
    return redirect(url_for("web.unlock"))


@bp.route("/lang/<code>")
def set_lang(code: str) -> Response:
    target = _safe_next(request.args.get("next")) or url_for("web.index")
    resp = redirect(target)
    if code in LANGS:
        resp.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, httponly=True, samesite="Strict")
    return resp


def _filters() -> dict[str, str]:
    out = {}
    for name, cls in (("state", E.State), ("category", E.Category), ("level", E.Level)):
        value = request.args.get(name, "")
        if value in cls.values():
            out[name] = value
    return out


PER_PAGE = 100  # cases per caseload page


@bp.route("/cases")
@needs_unlock
def cases() -> str:
    c = client()
    filters = _filters()
    sort = "received" if request.args.get("sort") == "received" else "due"
    include_voided = request.args.get("voided") == "1"
    page_arg = request.args.get("page", "1")
    page = int(page_arg) if page_arg.isdigit() and int(page_arg) > 0 else 1
    rows, total = c.list_cases_page(page=page, per_page=PER_PAGE, state=filters.get("state"),
                                    category=filters.get("category"), level=filters.get("level"),
                                    sort=sort, include_voided=include_voided)
    pages = max(1, -(-total // PER_PAGE))
    page = min(page, pages)
    rules = c.rules()
    for row in rows:
        row["due_label"] = rule_label(row["next_rule"], rules)
    return render_template(
        "cases.html", rows=rows, filters=filters, sort=sort, include_voided=include_voided,
        total=total, page=page, pages=pages,
        page_args={**filters, **({"sort": sort} if sort != "due" else {}), **({"voided": "1"} if include_voided else {})},
        states=enum_options(E.State), categories=enum_options(E.Category), levels=enum_options(E.Level),
    )


def _now_input(c: FieldClient) -> str:
    return _input_dt(now_iso(c.clock))


def _today(c: FieldClient) -> str:
    return now_iso(c.clock)[:10]


@bp.route("/cases/new", methods=["GET", "POST"])
@needs_unlock
def new_case() -> Any:
    c = client()
    if request.method == "GET":
        raw: MultiDict[str, Any] = MultiDict({"received_at": _now_input(c), "people_count": "1"})
        n_parties = 2
        raw["p0-role"] = E.PartyRole.PETITIONER.value
        raw["p1-role"] = E.PartyRole.RESPONDENT.value
        return _render_new_case(raw, {}, [{} for _i in range(n_parties)], n_parties)
    form = request.form
    n_parties = max(2, min(MAX_PARTIES, _int(form.get("n_parties"), 2)))
    if "add_party" in form:
        n_parties = min(MAX_PARTIES, n_parties + 1)
        return _render_new_case(form, {}, [{} for _i in range(n_parties)], n_parties)
    values, errors = coerce_form("case", form)
    parties: list[dict[str, Any]] = []
    party_errors: list[dict[str, str]] = []
    for i in range(n_parties):
        prefix = f"p{i}-"
        if _is_blank_party(form, prefix):
            party_errors.append({})
            continue
        pv, pe = coerce_form("party", form, prefix=prefix)
        party_errors.append(pe)
        if not pe:
            parties.append(pv)
    general: list[str] = []
    if not parties and not any(party_errors):
        general.append(_("Register at least one party (the petitioner)."))
    if errors or any(party_errors) or general:
        return _render_new_case(form, errors, party_errors, n_parties, general=general, status=422)
    try:
        case_id = c.new_case(values, parties)
    except OpInvalid as exc:
        return _render_new_case(form, explain(exc, "case"), party_errors, n_parties,
                                general=[_first_sentence(exc)], status=422)
    flash(_("Case registered: %(no)s", no=c._case_row(case_id)["case_no"]), "ok")
    return redirect(url_for("web.case", case_id=case_id))


def _int(text: Any, default: int) -> int:
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return default


def _first_sentence(exc: MinqingError) -> str:
    return error_message(exc.code, 422) if exc.code in ERROR_MESSAGES else error_message("client.input")


def _render_new_case(raw: Mapping[str, Any], errors: Mapping[str, str], party_errors: list[dict[str, str]],
                     n_parties: int, *, general: Iterable[str] = (), status: int = 200) -> Any:
    case_fields = build_fields("case", raw, errors)
    party_blocks = [
        build_fields("party", raw, party_errors[i] if i < len(party_errors) else {}, prefix=f"p{i}-")
        for i in range(n_parties)
    ]
    return render_template("new_case.html", fields=case_fields, party_blocks=party_blocks,
                           n_parties=n_parties, general=list(general), max_parties=MAX_PARTIES), status


@bp.route("/cases/<case_id>")
@needs_unlock
def case(case_id: str) -> str:
    c = client()
    unmask = request.args.get("show") == "1"
    detail = c.case_detail(case_id, unmask=unmask)
    row = detail["case"]
    rules = c.rules()
    obligations = obligation_rows(detail["obligations"], rules)
    status = detail["status"]
    flags = [flag_text(f) for f in status["flags"]]
    if status["backlog"]:
        flags.append(_("Backlog case: a limit passed unmet"))
    alerts = [{**a, "kind_label": enum_label("alert_kind", a.get("kind")),
               "rule_label": rule_label(a.get("rule"), rules) if a.get("rule") else ""}
              for a in detail["alerts"] if not a.get("voided")]
    party_names = {p["id"]: p.get("name") or "" for p in detail["parties"]}
    conflicts = []
    for cf in detail["conflicts"]:
        entity = cf["entity"]
        choices = [
            {
                "op_id": v["op_id"],
                "value": (enum_label("action", v["value"]) if cf["kind"] == "invalid_transition"
                          else show_value(entity, cf["field"] or "", v["value"], unmask=unmask,
                                          party_names=party_names)),
                "author": v["author"], "when": fmt_dt(v["occurred_at"]),
            }
            for v in cf["values"]
        ]
        current = ""
        if cf["kind"] == "concurrent_edit" and cf["field"]:
            rec = c.replica.get(entity, cf["entity_id"])
            if rec is not None:
                opened = c.show(entity, rec, unmask=unmask)
                current = show_value(entity, cf["field"], opened.get(cf["field"]), unmask=unmask,
                                     party_names=party_names)
        conflicts.append({**cf, "choices": choices, "current": current,
                          "what": entity_label(entity),
                          "field_label": field_label(entity, cf["field"]) if cf["field"] else ""})
    level_blocked = not detail["allowed_actions"] and E.LEVEL_ORDER.get(row["level"], 0) > E.LEVEL_ORDER.get(c.level, 0)
    return render_template(
        "case.html", case=row, detail=detail, unmask=unmask, obligations=obligations, status=status,
        flags=flags, alerts=alerts,
        conflicts=conflicts, timeline=timeline_entries(detail, unmask=unmask, rules=rules),
        record_actions=RECORD_ACTIONS, allowed=detail["allowed_actions"], level_blocked=level_blocked,
        case_fields=[n for n in ("category", "subject", "channel", "received_at", "first_receiver",
                                 "origin_node", "people_count", "simplified", "not_public")],
        text_fields=[n for n in ("summary", "demands")],
    )


def _party_options(c: FieldClient, case_id: str) -> list[tuple[str, str]]:
    detail_parties = c.case_detail(case_id)["parties"]
    return [
        (p["id"], f"{p.get('name') or ''}（{enum_label('role', p.get('role'))}）")
        for p in detail_parties if not p.get("voided")
    ]


RECORD_DEFAULTS: dict[str, Callable[[FieldClient], dict[str, str]]] = {
    "visit": lambda c: {"visited_at": _now_input(c), "visitor": c.user},
    "mediation": lambda c: {"held_at": _now_input(c), "mediator": c.user, "kind": E.MediationKind.PEOPLE.value},
    "notice": lambda c: {"served_at": _today(c)},
    "note": lambda c: {"written_at": _now_input(c)},
    "evaluation": lambda c: {"evaluated_at": _now_input(c)},
    "leader_assignment": lambda c: {"assigned_at": _today(c)},
    "party": lambda c: {},
}


@bp.route("/cases/<case_id>/<entity>/new", methods=["GET", "POST"])
@needs_unlock
def new_record(case_id: str, entity: str) -> Any:
    if entity not in RECORD_DEFAULTS:
        raise NotFound("no such record type", code="client.not_found")
    c = client()
    case_row = c.show("case", c._case_row(case_id))
    party_options = _party_options(c, case_id) if entity == "mediation" else []
    if request.method == "GET":
        raw: Mapping[str, Any] = MultiDict(RECORD_DEFAULTS[entity](c))
        errors: dict[str, str] = {}
        status = 200
    else:
        raw = request.form
        values, errors = coerce_form(entity, raw)
        if entity == "mediation":
            known = {pid for pid, _label in party_options}
            if any(p not in known for p in values.get("parties", [])):
                errors["parties"] = _("Choose one of the listed options.")
        status = 422
        if not errors:
            try:
                c.add_record(entity, case_id, values)
            except OpInvalid as exc:
                errors = explain(exc, entity) or {"": _first_sentence(exc)}
            else:
                flash(_("Saved: %(what)s", what=entity_label(entity)), "ok")
                return redirect(url_for("web.case", case_id=case_id) + "#timeline")
    fields = build_fields(entity, raw, errors, party_options=party_options)
    general = [errors[""]] if "" in errors else []
    title = _(dict(RECORD_ACTIONS)[entity])
    return render_template("record_form.html", case=case_row, entity=entity, fields=fields,
                           title=title, general=general), status


TRANSITION_EXTRAS = ("to_node", "decision", "days", "reason")


def _transition_errors(action: str, form: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    to_node = str(form.get("to_node") or "").strip()
    if action in NEEDS_NODE:
        if not to_node:
            errors["to_node"] = _("Please fill in %(label)s.", label=_("the unit code"))
        elif len(to_node) > 32:
            errors["to_node"] = _("At most %(n)s characters.", n=32)
        else:
            values["to_node"] = to_node
    if action in NEEDS_DECISION:
        decision = str(form.get("decision") or "")
        if decision not in E.Decision.values():
            errors["decision"] = _("Please choose %(label)s.", label=_("the decision"))
        else:
            values["decision"] = decision
    if action == E.Action.EXTEND:
        days = str(form.get("days") or "").strip()
        if not re.fullmatch(r"\d{1,2}", days) or not 1 <= int(days) <= 30:
            errors["days"] = _("Must be between %(min)s and %(max)s.", min=1, max=30)
        else:
            values["days"] = int(days)
    reason = str(form.get("reason") or "").strip()
    if len(reason) > 2000:
        errors["reason"] = _("At most %(n)s characters.", n=2000)
    elif reason:
        values["reason"] = reason
    return values, errors


@bp.route("/cases/<case_id>/transition/<action>", methods=["GET", "POST"])
@needs_unlock
def transition(case_id: str, action: str) -> Any:
    c = client()
    case_row = c.show("case", c._case_row(case_id))
    allowed = c.case_detail(case_id)["allowed_actions"]
    if action not in allowed:
        flash(error_message("client.transition_not_allowed"), "error")
        return redirect(url_for("web.case", case_id=case_id))
    errors: dict[str, str] = {}
    raw: Mapping[str, Any] = request.form if request.method == "POST" else MultiDict(
        {"days": "30"} if action == E.Action.EXTEND else {})
    status = 200
    if request.method == "POST":
        values, errors = _transition_errors(action, request.form)
        status = 422
        if not errors:
            try:
                c.transition(case_id, action, **values)
            except InputInvalid as exc:
                flash(error_message(exc.code if exc.code in ERROR_MESSAGES else "client.input"), "error")
                return redirect(url_for("web.case", case_id=case_id))
            except OpInvalid as exc:
                errors = explain(exc, "case") or {"reason": _first_sentence(exc)}
            else:
                flash(_("Done: %(action)s", action=enum_label("action", action)), "ok")
                return redirect(url_for("web.case", case_id=case_id))
    next_level = NEXT_LEVEL.get(case_row["level"])
    return render_template(
        "transition.html", case=case_row, action=action, raw=raw, errors=errors,
        needs_node=action in NEEDS_NODE, needs_decision=action in NEEDS_DECISION,
        needs_days=action == E.Action.EXTEND, decisions=enum_options(E.Decision),
        next_level=enum_label("level", next_level) if next_level else "",
    ), status


@bp.route("/cases/<case_id>/conflicts/<conflict_id>", methods=["POST"])
@needs_unlock
def resolve(case_id: str, conflict_id: str) -> Response:
    c = client()
    detail = c.case_detail(case_id)
    match = [cf for cf in detail["conflicts"] if cf["id"] == conflict_id and cf["status"] == "open"]
    if not match:
        flash(_("That conflict is no longer open; nothing was changed."), "error")
        return redirect(url_for("web.case", case_id=case_id))
    cf = match[0]
    choice = request.form.get("choice", "")
    if cf["kind"] != "concurrent_edit":
        c.resolve(conflict_id)
    elif choice == "keep":
        c.resolve(conflict_id, keep_current=True)
    else:
        chosen = [v for v in cf["values"] if v["op_id"] == choice]
        if not chosen:
            flash(_("Choose one of the values, or keep the current one."), "error")
            return redirect(url_for("web.case", case_id=case_id) + "#conflicts")
        c.resolve(conflict_id, chosen[0]["value"])
    flash(_("Conflict resolved."), "ok")
    return redirect(url_for("web.case", case_id=case_id) + "#conflicts")


# ---------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------


def _render_error(status: int, code: str, message: str, ref: str | None = None) -> Response:
    try:
        body = render_template("error.html", status=status, code=code, message=message, ref=ref)
    except Exception:  # the error page itself failed: plain text, still no traceback
        log.exception("error page failed")
        body = f"出错了 / Error {status} ({code})"
    resp = make_response(body, status)
    return resp


def register_error_handlers(app: Flask) -> None:
    """Every error becomes a page with a sentence and a code; tracebacks go to the log."""

    @app.errorhandler(CsrfRefused)
    def on_csrf(exc: CsrfRefused) -> Response:
        return _render_error(400, "web.csrf", error_message("web.csrf"))

    @app.errorhandler(HTTPException)
    def on_http(exc: HTTPException) -> Response:
        status = exc.code or 500
        return _render_error(status, f"http.{status}", error_message(f"http.{status}", status))

    @app.errorhandler(sqlite3.Error)
    def on_sqlite(exc: sqlite3.Error) -> Response:
        err = translate_sqlite(exc, str(holder().data_dir / "replica.db"))
        log.error("database error: %s", exc)
        return _render_error(503, err.code, error_message(err.code))

    @app.errorhandler(MinqingError)
    def on_minqing(exc: MinqingError) -> Response:
        status = 404 if isinstance(exc, NotFound) else 503 if exc.code.startswith("replica.") else 400
        log.warning("refused: %s %s", exc.code, exc.message)
        return _render_error(status, exc.code, error_message(exc.code, status))

    @app.errorhandler(Exception)
    def on_unexpected(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return on_http(exc)
        ref = secrets.token_hex(4)
        log.exception("unexpected error, reference %s", ref)
        return _render_error(500, "web.internal", error_message("web.internal"), ref=ref)


def create_app(data_dir: str | os.PathLike[str], *, test_config: Mapping[str, Any] | None = None) -> Flask:
    """The local web UI over the device in ``data_dir`` (locked until the passphrase is given).

    ``test_config`` overrides Flask config; ``MINQING_CLOCK`` (a function returning
    seconds) sets the client's clock.
    """
    app = Flask(__name__, template_folder="templates", static_folder="static")
    app.config.update(
        SECRET_KEY=os.urandom(32),  # a new key per run: a restart locks every browser out
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=False,  # plain http on 127.0.0.1
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        TRUSTED_HOSTS=["127.0.0.1", "localhost", "::1", "[::1]"],
        TEMPLATES_AUTO_RELOAD=False,
        MINQING_CLOCK=None,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["minqing"] = Holder(Path(data_dir), app.config["MINQING_CLOCK"])
    app.extensions["minqing_catalogue"] = Catalogue(HERE / "translations")

    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda s: current_app.extensions["minqing_catalogue"].gettext(lang(), s),
        ngettext=lambda s, p, n: current_app.extensions["minqing_catalogue"].gettext(lang(), s if n == 1 else p),
        newstyle=True,
    )
    app.jinja_env.globals.update(
        csrf_field=csrf_field, field_label=field_label, entity_label=entity_label,
        enum_label=enum_label, show_value=show_value, fmt_dt=fmt_dt, lang=lang, refusal=refusal,
    )
    app.jinja_env.filters["dt"] = fmt_dt

    @app.before_request
    def before() -> None:
        cookie = request.cookies.get(LANG_COOKIE)
        g.lang = cookie if cookie in LANGS else DEFAULT_LANG
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.form.get("csrf_token", "")
            expected = session.get("csrf", "")
            if not (sent and expected and hmac.compare_digest(str(sent), str(expected))):
                raise CsrfRefused()

    @app.context_processor
    def header() -> dict[str, Any]:
        h = holder()
        info: dict[str, Any] = {"unlocked": False, "pending": None, "device": None}
        if h.is_unlocked(session.get("sid")):
            with h.lock:
                c = h.client
                if c is not None:
                    try:
                        info.update(unlocked=True, pending=c.pending_count(), device=c.keys.info)
                    except (sqlite3.Error, MinqingError):
                        log.warning("header: cannot read the pending count")
        nxt = request.full_path if request.method == "GET" else url_for("web.index")
        info["lang_names"] = {"zh": "中文", "en": "English"}  # each in its own language
        info["lang_links"] = {code: url_for("web.set_lang", code=code, next=_safe_next(nxt)) for code in LANGS}
        return info

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        if not request.path.startswith("/static/"):
            resp.headers["Cache-Control"] = "no-store"  # pages hold personal data
        resp.headers["Content-Language"] = "zh-CN" if lang() == "zh" else "en"
        return resp

    app.register_blueprint(bp)
    register_error_handlers(app)
    return app


def serve(data_dir: str, host: str = "127.0.0.1", port: int = 0, open_browser: bool = True) -> None:
    """Serve the UI with waitress on 127.0.0.1, print the address, open the browser; Ctrl-C stops."""
    from waitress import create_server

    if host not in LOOPBACK:
        raise InputInvalid(
            f"本地网页只能在本机地址上运行 (the local web UI serves 127.0.0.1 only, not {host!r})",
            code="client.input",
            details={"host": host},
        )
    if not keystore.exists(data_dir):
        keystore.read_info(data_dir)  # raises NotInitialised with its sentence
    app = create_app(data_dir)
    server = create_server(app, host=host, port=port, threads=4, ident="minqing-field")
    shown = "127.0.0.1" if host == "localhost" else host
    url = f"http://{shown}:{server.effective_port}/"
    print(f"民情现场端网页已启动 (the field client UI is running): {url}", flush=True)
    print("在浏览器中打开上面的地址；按 Ctrl-C 停止 (open it in a browser; Ctrl-C stops)", flush=True)
    if open_browser:
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:
        print("已停止 (stopped)", flush=True)
    finally:
        server.close()
        app.extensions["minqing"].lock_all()


__all__ = ["create_app", "serve", "coerce_form", "explain", "Catalogue"]
