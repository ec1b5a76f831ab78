"""Typed text in, op values out; op errors in, sentences per field out.

The CLI and the local web UI both receive what a person typed as text. This module is
the one place that turns that text into the values of a ``create`` or ``set`` op, and
turns validation errors into one sentence per field, Chinese by default (``lang="en"``
for English), naming the field by its ``zh`` label from ``schema.entities``.

The API (all pure, no I/O):

``coerce(entity, raw, *, partial=False, lang="zh") -> (values, errors)``
    ``raw`` maps field names (or their Chinese labels: ``{"姓名": "张三"}``) to typed
    text. Returns the op values (typed: ``int``, ``bool``, ISO dates, enum values, lists
    for set fields) and ``{field: message}`` for everything wrong, all at once. Empty
    text means "not given". Enum fields take the value, the Chinese or English label, or
    a clear part of the label (``矛盾纠纷``, ``dispute``, ``信访人``). Dates take
    ``2026-11-22``, ``2026/11/22`` or ``2026年11月22日``; a datetime without an offset is
    China time. A set field takes one text, items separated by ``,``, ``、``, ``;`` or new
    lines. Messages are ``"标签：问题"`` (``"label: problem"`` in English). With ``partial=False`` (a new record) required fields must
    be present, except the ones ``FieldClient`` fills itself (``AUTOMATIC``); with
    ``partial=True`` (an edit) only what is given is checked, and fields that only a
    transition or a tag command may change are refused.

``explain(exc, entity, *, lang="zh") -> dict[str, str]``
    The ``details`` of an ``OpInvalid`` (or ``OpsRejected``) as ``{field: message}``.
    An error that names no field is under the key ``"_"``.

``label(entity, name, lang="zh")``, ``enum_member(enum, text)`` and ``choices(enum, lang)``
are the helpers both use; the CLI and the web UI may call them too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from enum import StrEnum
from functools import cache
from typing import Any

from schema.entities import ENTITIES, FieldSpec
from schema.enums import AgreementForm, Decision, LabeledEnum, MediationOutcome
from schema.errors import OpInvalid, OpsRejected
from schema.obligations import CHINA
from schema.validation import MSG_NULL, MSG_REQUIRED, MSG_TYPE, MSG_UNKNOWN, values_schema

# Fields FieldClient.new_case fills itself; a form need not ask for them.
AUTOMATIC: dict[str, frozenset[str]] = {
    "case": frozenset({"case_no", "origin_node", "received_at", "first_receiver", "level", "node"}),
}

# Labels of values that are not entity fields (transition values, errors without a field).
OTHER_LABELS: dict[str, tuple[str, str]] = {
    "action": ("操作", "action"),
    "state": ("状态", "state"),
    "to_node": ("接收单位", "receiving unit"),
    "decision": ("处理意见", "decision"),
    "days": ("延期天数", "days of extension"),
    "reason": ("理由", "reason"),
    "value": ("值", "value"),
    "items": ("项目", "items"),
    "_": ("记录", "record"),
}

TRUE_WORDS = frozenset({"1", "true", "yes", "y", "t", "是", "对", "有", "真"})
FALSE_WORDS = frozenset({"0", "false", "no", "n", "f", "否", "不", "无", "假"})
SET_SPLIT = re.compile(r"[,，、;；\n]+")
CN_DATE = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]?")
NUM_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")


def _say(lang: str, zh: str, en: str) -> str:
    return en if lang == "en" else zh


def _find_spec(entity: str, name: str) -> FieldSpec | None:
    spec = ENTITIES.get(entity)
    if spec is not None and name in spec.field_map:
        return spec.field_map[name]
    for other in ENTITIES.values():  # an op of another entity in the same batch
        if name in other.field_map:
            return other.field_map[name]
    return None


def label(entity: str, name: str, lang: str = "zh") -> str:
    """The label of a field for people: its ``zh`` label, or its name in English."""
    spec = _find_spec(entity, name)
    if spec is not None:
        return _say(lang, spec.zh, name.replace("_", " "))
    zh, en = OTHER_LABELS.get(name, (name, name))
    return _say(lang, zh, en)


@cache
def _aliases(enum: type[StrEnum]) -> dict[str, str]:
    """Every text that names exactly one member (value, name, labels, parts of labels)."""
    seen: dict[str, set[str]] = {}
    for m in enum:
        names = {m.value, m.name.lower()}
        if isinstance(m, LabeledEnum):
            names |= {m.zh, m.en.lower()}
            parts = [p.strip() for p in re.split(r"[/()（）]", m.zh) if p.strip()]
            names |= set(parts)
            names |= {p[:-1] for p in parts if p.endswith("级") and len(p) >= 2}
        for n in names:
            seen.setdefault(n.lower(), set()).add(m.value)
    return {text: next(iter(vals)) for text, vals in seen.items() if len(vals) == 1}


def enum_member(enum: type[StrEnum], text: str) -> StrEnum | None:
    """The member ``text`` names (value, name, or label in either language), or None."""
    value = _aliases(enum).get(text.strip().lower())
    return enum(value) if value is not None else None


def choices(enum: type[StrEnum], lang: str = "zh") -> str:
    """The members of an enum as a list people can read: ``矛盾纠纷(dispute)、...``."""
    if lang == "en":
        return ", ".join(
            f"{m.value} ({m.en})" if isinstance(m, LabeledEnum) and m.en != m.value else m.value
            for m in enum
        )
    return "、".join(f"{m.zh}({m.value})" if isinstance(m, LabeledEnum) else m.value for m in enum)


# ---- text -> typed values ----


def _parse_date(text: str) -> str | None:
    t = text.strip()
    m = CN_DATE.fullmatch(t) or NUM_DATE.fullmatch(t)
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3])).isoformat()
    except ValueError:
        return None


def _parse_datetime(text: str) -> str | None:
    t = text.strip()
    m = CN_DATE.match(t) or NUM_DATE.match(t)
    if m:
        day = _parse_date(m[0])
        if day is None:
            return None
        rest = t[m.end() :].strip().lstrip("T").strip()
        clock = re.fullmatch(r"(\d{1,2})[:：](\d{2})(?:[:：](\d{2}))?(.*)", rest)
        if clock:
            rest = f"{int(clock[1]):02d}:{clock[2]}:{clock[3] or '00'}{clock[4].strip()}"
        t = f"{day}T{rest}" if rest else day
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=CHINA)
    return when.isoformat(timespec="seconds")


def _format_hint(f: FieldSpec, lang: str) -> str:
    """What a value of this field's kind should look like."""
    if f.kind == "int":
        rng = ""
        if f.minimum is not None and f.maximum is not None:
            rng = _say(lang, f"（{f.minimum} 到 {f.maximum}）", f" ({f.minimum} to {f.maximum})")
        return _say(lang, f"请填整数{rng}", f"must be a whole number{rng}")
    if f.kind == "bool":
        return _say(lang, "请填“是”或“否”", "must be yes or no")
    if f.kind == "date":
        return _say(lang, "日期请写成 2026-11-22 的样子", "write the date like 2026-11-22")
    if f.kind == "datetime":
        return _say(lang, "时间请写成 2026-11-22 09:30 的样子", "write the time like 2026-11-22 09:30")
    if f.kind == "idnum":
        return _say(lang, "应为 15 位或 18 位（最后一位可以是 X）", "must have 15 or 18 characters (the last may be X)")
    if f.kind == "phone":
        return _say(
            lang,
            "不是有效的号码（手机号 11 位，座机如 0571-12345678）",
            "not a phone number: 11 digits for a mobile, or like 0571-12345678",
        )
    if f.kind == "ref":
        return _say(lang, "应为 32 位编号", "must be a 32-character id")
    if f.kind == "enum" and f.enum is not None:
        return _say(lang, f"请从这些里选：{choices(f.enum, lang)}", f"choose one of: {choices(f.enum, lang)}")
    if f.kind == "set" and f.enum is not None:
        return _say(lang, f"可选：{choices(f.enum, lang)}", f"choose from: {choices(f.enum, lang)}")
    return _say(lang, "类型不对", "wrong type")


def _convert(f: FieldSpec, text: str, lang: str) -> tuple[Any, str | None]:
    """(typed value, None) or (None, problem)."""
    t = text.strip()
    if f.kind == "str":
        return t, None
    if f.kind == "text":
        return text.strip(), None
    if f.kind == "int":
        if re.fullmatch(r"[+-]?\d+", t):
            return int(t), None
        return None, _format_hint(f, lang)
    if f.kind == "bool":
        if t.lower() in TRUE_WORDS:
            return True, None
        if t.lower() in FALSE_WORDS:
            return False, None
        return None, _format_hint(f, lang)
    if f.kind == "date":
        day = _parse_date(t)
        return (day, None) if day else (None, _format_hint(f, lang))
    if f.kind == "datetime":
        when = _parse_datetime(t)
        return (when, None) if when else (None, _format_hint(f, lang))
    if f.kind == "enum":
        assert f.enum is not None
        m = enum_member(f.enum, t)
        if m is None:
            return None, _say(lang, f"“{t}”不是可选的值。", f"{t!r} is not one of the choices. ") + _format_hint(f, lang)
        return m.value, None
    if f.kind == "idnum":
        return re.sub(r"\s+", "", t).upper(), None
    if f.kind == "phone":
        p = re.sub(r"\s+", "", t)
        return (p.replace("-", "") if p.startswith("1") else p), None
    if f.kind == "ref":
        return t.lower(), None
    if f.kind == "set":
        items = [i.strip() for i in SET_SPLIT.split(text) if i.strip()]
        if f.enum is None:
            return items, None
        out, bad = [], []
        for item in items:
            m = enum_member(f.enum, item)
            if m is None:
                bad.append(item)
            else:
                out.append(m.value)
        if bad:
            return None, _say(lang, f"不认识“{'、'.join(bad)}”。", f"unknown {bad}. ") + _format_hint(f, lang)
        return out, None
    return t, None


def _field_name(entity: str, key: str) -> str | None:
    spec = ENTITIES[entity]
    if key in spec.field_map:
        return key
    for f in spec.fields:
        if key.strip() == f.zh:
            return f.name
    return None


def coerce(
    entity: str, raw: Mapping[str, str], *, partial: bool = False, lang: str = "zh"
) -> tuple[dict[str, Any], dict[str, str]]:
    """Typed text -> (op values, {field: message}); see the module docstring."""
    spec = ENTITIES[entity]
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    unknown: dict[str, str] = {}
    for key, text in raw.items():
        name = _field_name(entity, key)
        if name is None:
            known = _say(lang, "、", ", ").join(
                _say(lang, f"{f.zh}({f.name})", f.name) for f in spec.fields if not f.create_only
            )
            unknown[key] = _say(
                lang, f"{spec.zh}没有“{key}”这一项。可以填：{known}", f"a {entity} has no field {key!r}; known: {known}"
            )
            continue
        f = spec.field_map[name]
        if partial and (f.create_only or f.kind == "set"):
            problems[name] = _say(
                lang,
                "不能直接修改（层级和办理单位随流转改变，标记要单独添加或去掉）",
                "cannot be edited (level and node change by transitions, tags are added or removed)",
            )
            continue
        if text is None or str(text).strip() == "":
            if partial and f.required:
                problems[name] = _say(lang, "不能为空", "may not be empty")
            elif partial and f.kind in ("str", "text"):
                values[name] = ""
            continue
        value, problem = _convert(f, str(text), lang)
        if problem is not None:
            problems[name] = problem
        else:
            values[name] = value
    if not partial:
        for f in spec.fields:
            if f.required and f.name not in values and f.name not in problems and f.name not in AUTOMATIC.get(entity, ()):
                problems[f.name] = _say(lang, "必须填写", "is required")
        if (
            entity == "mediation"
            and values.get("outcome") == MediationOutcome.AGREEMENT
            and not values.get("agreement_form")
            and "agreement_form" not in problems
        ):
            problems["agreement_form"] = _agreement_form(lang)
    checkable = {k: v for k, v in values.items() if k not in problems and not (partial and v == "")}
    errors = values_schema(entity, "create", False, False).validate(checkable, partial=True)
    for name, msgs in errors.items():
        problems.setdefault(name, _problem(_find_spec(entity, name), _flatten(msgs), lang))
    messages = {name: _sentence(entity, name, problem, lang) for name, problem in problems.items()}
    return ({k: v for k, v in values.items() if k not in problems}, {**unknown, **messages})


def _agreement_form(lang: str) -> str:
    return _say(
        lang,
        f"达成协议时必须写明（{choices(AgreementForm, lang)}）",
        f"an agreement must say whether it is {choices(AgreementForm, lang)}",
    )


# ---- errors -> sentences ----


def _flatten(msgs: Any) -> list[str]:
    if isinstance(msgs, dict):
        return [m for v in msgs.values() for m in _flatten(v)]
    if isinstance(msgs, list | tuple):
        return [m for v in msgs for m in _flatten(v)]
    return [str(msgs)]


def _numbers(msg: str) -> list[str]:
    return re.findall(r"-?\d+", msg)


CODE_PROBLEMS: dict[str, tuple[str, str]] = {
    "op.missing_value": ("必须填写", "is required"),
    "op.not_settable": ("不能直接修改", "cannot be edited directly"),
    "op.unknown_field": ("没有这一项", "is not a field of this record"),
    "op.wrong_type": ("类型不对", "wrong type"),
    "op.bad_value": ("取值无效", "invalid value"),
    "op.unknown_action": ("不认识这个操作", "unknown action"),
}


def _problem(f: FieldSpec | None, msgs: list[str], lang: str, *, code: str = "op.bad_value") -> str:
    """One marshmallow (or schema) message about a field, said for people; a message we do
    not know is said by its error ``code``."""
    msg = msgs[0] if msgs else ""
    if f is not None and f.kind in ("phone", "ref") and msgs:
        return _format_hint(f, lang)
    if f is not None and f.kind == "idnum":
        if any("校验" in m for m in msgs) and not any("格式" in m for m in msgs):
            return _say(lang, "最后一位校验码不对，请核对号码", "the check digit is wrong; please check the number")
        return _format_hint(f, lang)
    if msg == MSG_REQUIRED:
        return _say(lang, "必须填写", "is required")
    if msg == MSG_UNKNOWN:
        return _say(lang, "没有这一项", "is not a field of this record")
    if msg in (MSG_TYPE, MSG_NULL) or msg.startswith("Not a valid") or msg.startswith("String does not match"):
        return _format_hint(f, lang) if f is not None else _say(lang, "类型不对", "wrong type")
    if msg.startswith("Must be one of"):
        if f is not None and f.enum is not None:
            return _format_hint(f, lang)
        return _say(lang, "不是可选的值", "is not one of the choices")
    if msg.startswith("Shorter than minimum"):
        return _say(lang, "不能为空", "may not be empty")
    if msg.startswith("Longer than maximum") or msg.startswith("Length must be between"):
        most = _numbers(msg)[-1]
        return _say(lang, f"不能为空，也不能超过 {most} 个字", f"must be 1 to {most} characters long")
    if msg.startswith("Must be greater") or msg.startswith("Must be less"):
        n = _numbers(msg)
        rng = "–".join(n)
        return _say(lang, f"超出范围（{rng}）", f"out of range ({rng})")
    if " / " in msg:
        zh, en = msg.split(" / ", 1)
        return _say(lang, zh, en)
    zh, en = CODE_PROBLEMS.get(code, ("取值无效", "invalid value"))
    return _say(lang, zh, en)


def _sentence(entity: str, name: str, problem: str, lang: str) -> str:
    return _say(lang, f"{label(entity, name, lang)}：{problem}", f"{label(entity, name, lang)}: {problem}")




def _field_key(path: str) -> str:
    name = path.removeprefix("values.").removeprefix("value.")
    return name.split(".", 1)[0] or "_"


def explain(exc: OpInvalid | OpsRejected, entity: str, *, lang: str = "zh") -> dict[str, str]:
    """An OpInvalid's (or OpsRejected's) details as ``{field: sentence}``."""
    out: dict[str, str] = {}
    details = exc.details
    if isinstance(details, list):  # OpsRejected: one entry per bad op
        for item in details:
            if isinstance(item, Mapping):
                inner = OpInvalid(str(item.get("message", "")), code=str(item.get("code")), details=item.get("details"))
                for k, v in explain(inner, entity, lang=lang).items():
                    out.setdefault(k, v)
        return out or {"_": _general(exc, lang)}
    if isinstance(details, Mapping):
        for path, msgs in details.items():
            if not str(path).startswith("values"):
                continue
            name = _field_key(str(path))
            if name == "agreement_form" and exc.code == "op.missing_value":
                problem = _agreement_form(lang)
            elif name == "decision" and exc.code == "op.missing_value":
                problem = _say(lang, f"请从这些里选：{choices(Decision, lang)}", f"choose one of: {choices(Decision, lang)}")
            else:
                problem = _problem(_find_spec(entity, name), _flatten(msgs), lang, code=exc.code)
            out[name] = _sentence(entity, name, problem, lang)
    return out or {"_": _general(exc, lang)}


def _general(exc: Exception, lang: str) -> str:
    code = getattr(exc, "code", "op.invalid")
    return _say(
        lang,
        f"这条记录不符合要求（{code}），没有保存",
        f"the record was refused ({code}): {getattr(exc, 'message', str(exc))}",
    )


__all__ = ["AUTOMATIC", "choices", "coerce", "enum_member", "explain", "label"]
