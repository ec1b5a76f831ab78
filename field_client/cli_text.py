"""What ``field-client`` says to people: its message table and its text layouts.

``say(lang, key, **values)`` picks a sentence from ``MESSAGES`` (Chinese, or English with
``lang="en"``). ``render_table``, ``render_case`` and ``render_conflicts`` lay out what
the store returns for a terminal; Chinese characters count as two columns.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from field_client import forms
from schema.entities import ENTITIES, FieldSpec
from schema.enums import (
    LEVEL_ORDER,
    Action,
    AlertKind,
    Colour,
    ConflictKind,
    Decision,
    LabeledEnum,
    Level,
    ObligationState,
    State,
)
from schema.obligations import CHINA
from schema.rules import RULE_DEFS, START_EVENTS, Rules

MESSAGES: dict[str, tuple[str, str]] = {
    # command line
    "usage": ("{message}。用 {prog} --help 查看用法。", "{message}. See {prog} --help."),
    "prompt": ("口令 (passphrase): ", "Passphrase: "),
    "prompt_again": ("再输入一次口令 (again): ", "Passphrase again: "),
    "passphrase_mismatch": ("两次输入的口令不一样，什么也没有做。", "The two passphrases differ; nothing was done."),
    "passphrase_missing": (
        "需要口令：请设置环境变量 MINQING_PASSPHRASE，或用 --passphrase-file 指定口令文件，或在终端里运行以便输入口令。",
        "A passphrase is needed: set MINQING_PASSPHRASE, pass --passphrase-file FILE, or run in a terminal to type it.",
    ),
    "passphrase_file": ("读不了口令文件 {path}（{why}）。", "Cannot read the passphrase file {path} ({why})."),
    "passphrase_short": ("口令至少要 8 个字符，什么也没有做。", "The passphrase needs at least 8 characters; nothing was done."),
    "interrupted": ("已取消。", "Cancelled."),
    "io": ("无法读写 {path}（{why}）。请检查文件夹和磁盘空间。", "Cannot read or write {path} ({why}). Check the folder and the free disk space."),
    "internal": (
        "程序出了意外的错误（{what}）。请把这句话告诉县里的 IT。",
        "An unexpected fault in the program ({what}). Please tell county IT this sentence.",
    ),
    # errors from below, by code
    "client.not_initialised": (
        "{data} 里还没有本机设备。请先运行 field-client init 建立。",
        "There is no device in {data} yet. Run field-client init first.",
    ),
    "client.already_initialised": (
        "{data} 里已经有设备或数据，不会覆盖；什么也没有改动。",
        "{data} already holds a device or data; it was not overwritten and nothing changed.",
    ),
    "already_initialised": (
        "{data} 里已经有一台设备，不会覆盖；什么也没有改动。",
        "A device already exists in {data}; it was not overwritten and nothing changed.",
    ),
    "client.wrong_passphrase": ("口令不对，什么也没有改动。请检查后再试。", "Wrong passphrase; nothing was changed. Check it and try again."),
    "client.keyfile_damaged": (
        "密钥文件 {path} 已损坏，无法读取。请不要删除它，联系县里的 IT。",
        "The key file {path} is damaged and cannot be read. Do not delete it; ask county IT.",
    ),
    "replica.damaged": (
        "数据文件 {path} 已损坏（或不是民情的数据文件），程序没有改动它。请从备份恢复，或联系县里的 IT。",
        "The data file {path} is damaged (or is not a Minqing data file); it was not changed. Restore a backup or ask county IT.",
    ),
    "replica.missing": ("缺少数据文件 {path}。请联系县里的 IT。", "The data file {path} is missing. Ask county IT."),
    "replica.busy": ("数据文件正被另一个程序使用，请稍后再试。", "The data file is in use by another program; try again in a moment."),
    "replica.error": ("读写数据文件 {path} 时出错（{why}）。请联系县里的 IT。", "A database error on {path} ({why}). Ask county IT."),
    # input
    "not_saved": ("没有保存：{what}。", "Not saved: {what}."),
    "party_n": ("第 {n} 位当事人的{msg}", "party {n}: {msg}"),
    "bad_choice": ("{what} 的值“{value}”不是可选的值。可选：{choices}。", "{what}: {value!r} is not one of: {choices}."),
    "bad_pair": ("“{item}”应写成 字段=值。", "{item!r} should be written field=value."),
    "case_not_found": ("本机找不到案件“{ref}”。用 field-client case list 查看本机的案件。",
                       "No case {ref!r} on this laptop. See field-client case list."),
    "case_ambiguous": ("“{ref}”对应不止一件案件，请写完整的案件编号。", "{ref!r} matches more than one case; give the full case number."),
    "reason_required": ("请写明理由", "a reason is required"),
    "tag_nothing": ("请用 --add 或 --remove 指定标记", "give --add or --remove"),
    "tag_absent": ("案件没有这些标记：{tags}", "the case does not have these tags: {tags}"),
    "bad_days": ("延期天数应为 1 到 {max} 的整数。", "The days of extension must be a whole number from 1 to {max}."),
    "needs_node": ("“{action}”需要用 --to-node 写明接收单位的代码。", "{action} needs --to-node, the receiving unit's code."),
    "needs_decision": ("出具意见需要用 --decision 写明处理意见：{choices}。", "A decision needs --decision: {choices}."),
    "bad_port": ("端口“{port}”不对，应为 0 到 65535 的整数。", "Port {port!r} must be a whole number from 0 to 65535."),
    "no_web": ("这个版本还没有本机网页界面（field_client.web），请先用命令行。",
               "The local web UI (field_client.web) is not in this version yet; use the command line."),
    # transitions
    "not_allowed": (
        "案件 {no} 现在是“{state}”，不能“{action}”。现在可以做的：{allowed}。",
        "Case {no} is {state}; it cannot {action} now. Allowed now: {allowed}.",
    ),
    "level_too_low": (
        "案件 {no} 已在{level}办理，本机（{mine}）不能再推进它的流程。",
        "Case {no} is handled at {level} level; this laptop ({mine}) can no longer move it.",
    ),
    "nothing": ("无", "none"),
    "action_word": ("操作", "action"),
    # done
    "initialised": (
        "已在 {data} 建立本机：设备 {device}，单位 {node}（{level}），使用人 {user}。请记住口令：忘了口令，数据就打不开了。",
        "Set up in {data}: device {device}, unit {node} ({level}), user {user}. Remember the passphrase: without it the data cannot be opened.",
    ),
    "case_created": ("已登记案件 {no}：{title}（当事人 {n} 位）。", "Registered case {no}: {title} ({n} parties)."),
    "edited": ("已修改案件 {no} 的 {fields}。", "Changed {fields} of case {no}."),
    "unchanged": ("案件 {no} 没有改动：新值和现在的一样。", "Case {no} is unchanged: the new values equal the current ones."),
    "moved": ("案件 {no}：{action}。现在是“{state}”，{level}（{node}）。", "Case {no}: {action}. Now {state}, {level} level ({node})."),
    "voided": ("案件 {no} 已作废（记录仍然保留）。", "Case {no} is voided (its records are kept)."),
    "case_is_void": ("案件 {no} 已作废（理由：{reason}），不能再流转。", "Case {no} is voided (reason: {reason}); it takes no further step."),
    "already_voided": ("案件 {no} 已经作废过了（理由：{reason}）。", "Case {no} is already voided (reason: {reason})."),
    "tagged": ("案件 {no} 的标记：{tags}。", "Tags of case {no}: {tags}."),
    "added": ("已为案件 {no} 添加{what}。", "Added a {what} to case {no}."),
    "remedies_hint": (
        "提示：未达成协议时，应告知当事人其他救济途径（仲裁、行政、诉讼等，人民调解法第26条）；告知后可用 --remedies-told 记下。",
        "Hint: when there is no agreement, tell the parties their other remedies (People's Mediation Law Art. 26); record it with --remedies-told.",
    ),
    "resolved": ("已解决冲突 {id}（案件 {no}）。", "Resolved conflict {id} (case {no})."),
    "conflict_not_found": ("没有编号为“{id}”的未解决冲突。用 field-client conflict list 查看。",
                           "No open conflict {id!r}. See field-client conflict list."),
    "conflict_ambiguous": ("“{id}”对应不止一个冲突，请多写几位。", "{id!r} matches several conflicts; give more characters."),
    "resolve_how": ("请用 --value 写明采用的值，或用 --keep-current 保留现在的值（冲突 {id}）。",
                    "Give --value V to choose a value, or --keep-current to keep the current one (conflict {id})."),
    "resolve_no_value": ("这个冲突是一次无效的流转，不需要 --value；用 --keep-current 或不加参数确认即可。",
                         "This conflict is a refused transition: no --value; confirm it with --keep-current or nothing."),
    "no_cases": ("本机还没有案件。用 field-client case new 登记一件。", "No cases on this laptop yet. Register one with field-client case new."),
    "no_conflicts": ("没有未解决的冲突。", "No open conflicts."),
    "list_headers": ("预警|案件编号|事由|状态|层级|下一期限|期限依据|冲突",
                     "warning|case no.|title|state|level|next due|rule|conflicts"),
    "list_total": ("共 {n} 件。", "{n} case(s)."),
    "voided_mark": ("（已作废）", " (voided)"),
    "server_answers": ("服务器可连通", "the server answers"),
    "server_silent": ("服务器连不上", "the server does not answer"),
    "server_unknown": ("未检查", "not checked"),
    "enrolled": ("✔ 已注册到县服务器 {url}，本机单位 {node}，辖区 {n} 个单位", "✔ enrolled with {url}; unit {node}; {n} units in scope"),
    "synced": ("✔ 同步完成：上传 {envelopes} 批 {ops} 条，重复确认 {dups} 批，收到 {pulled} 条，隔离 {held} 条",
               "✔ synced: sent {envelopes} batch(es) with {ops} op(s), {dups} repeat ack(s), received {pulled}, held {held}"),
    "held_op": ("  ! 被服务器隔离：{op} {code} {message}", "  ! held by the server: {op} {code} {message}"),
    "exported": ("✔ 已写出 {n} 个文件到 {folder}（交给乡镇或县里导入）", "✔ wrote {n} file(s) to {folder} (carry them to the township or county)"),
    "imported": ("✔ 已导入回复：收到 {pulled} 条记录，隔离 {held} 条", "✔ answer imported: {pulled} record(s) received, {held} held"),
    "progress": ("{stage}：{done}/{total}", "{stage}: {done}/{total}"),
    "erased": ("本机已被吊销，本地数据已按县服务器指令清除。", "this laptop was revoked; its data was erased on the server's order."),
    "not_enrolled": ("尚未注册（还没有连到县服务器）", "not enrolled (not yet paired with the county server)"),
    "never_synced": ("从未同步（本机的记录都还在本机）", "never (everything recorded is still only on this laptop)"),
    "status": (
        "设备：{device_id}\n单位：{node} {node_name}（{level}）\n使用人：{user}\n数据文件夹：{data}\n"
        "待上传的记录：{pending_ops} 条（共 {ops} 条）\n案件：{cases} 件\n未解决的冲突：{open_conflicts} 个\n"
        "县服务器：{server}（{answers}）\n上次同步：{last_sync}\n与服务器的时钟差：{offset}",
        "device: {device_id}\nunit: {node} {node_name} ({level})\nuser: {user}\ndata folder: {data}\n"
        "records waiting to upload: {pending_ops} (of {ops})\ncases: {cases}\nopen conflicts: {open_conflicts}\n"
        "county server: {server} ({answers})\nlast sync: {last_sync}\nclock offset to the server: {offset}",
    ),
    # case show
    "sec_parties": ("当事人", "Parties"),
    "sec_visits": ("走访记录", "Visits"),
    "sec_mediations": ("调解记录", "Mediations"),
    "sec_notices": ("告知书/文书", "Notices"),
    "sec_notes": ("备注", "Notes"),
    "sec_evaluations": ("满意度评价", "Evaluations"),
    "sec_leader_assignments": ("领导包案", "Leader assignments"),
    "sec_deadlines": ("期限", "Deadlines"),
    "sec_alerts": ("县级督办记录", "County alerts"),
    "colour_line": ("预警：{colour}", "warning colour: {colour}"),
    "backlog": ("积案：有办理时限已超期未办结", "backlog case: a limit passed unmet"),
    "flag_clock_skew": ("设备 {device} 的时钟偏差约 {minutes} 分钟，其录入的时间已按同步时钟校正",
                        "the clock of device {device} was off by about {minutes} minutes; the times typed on it were corrected"),
    "flag_group": ("群体访（{n} 人）", "group petition ({n} people)"),
    "flag_repeat": ("重复信访", "repeat petition"),
    "flag_reopened": ("办结后重新办理", "reopened after closing"),
    "flag_final": ("已终结", "final: the matter is concluded"),
    "flag_engine_error": ("本机无法计算此案的办理期限，请告知县里的 IT",
                          "the due dates of this case could not be worked out on this laptop; please tell county IT"),
    "kind_duty": ("办理时限", "duty"),
    "kind_window": ("可申请（异议）期间", "window"),
    "ob_late": ("逾期完成", "late"),
    "ob_done": ("{when} 完成", "done {when}"),
    "ended_escalated": ("已由上级提级办理，本时限终止", "ended: the case was taken up a level"),
    "ended_closed": ("案件已办结或终止，本时限终止", "ended: the case was closed"),
    "ended_extended": ("超过期限后才延期，本时限仍算超期", "ended: extended only after the limit had passed"),
    "ended_reopened": ("案件已重新办理，本时限终止", "ended: the case was reopened"),
    "ended_voided": ("案件已作废，本时限终止", "ended: the case was voided"),
    "ob_estimated": ("估算：该年节假日安排尚未公布", "estimated: that year's holidays are not published yet"),
    "alert_withdrawn": ("【已于 {when} 撤销：{reason}】", "[withdrawn {when}: {reason}]"),
    "sec_actions": ("可以做的操作", "Allowed actions"),
    "sec_conflicts": ("冲突", "Conflicts"),
    "sec_timeline": ("经过（时间线）", "Timeline"),
    "state": ("状态", "state"),
    "level": ("层级", "level"),
    "decision": ("处理意见", "decision"),
    "extended": ("已延期", "extended"),
    "days": ("{n} 天", "{n} days"),
    "voided_by": ("【已作废】理由：{reason}", "[voided] reason: {reason}"),
    "due_from": ("自{event} {start} 起算", "from {event} on {start}"),
    "overdue": ("已超期 {n} 天", "overdue by {n} days"),
    "overdue_short": (" 超期", " late"),
    "due_left": ("还剩 {n} 天", "{n} days left"),
    "due_today": ("今天到期", "due today"),
    "no_actions_level": ("无：案件已在{level}办理，本机（{mine}）不能再推进", "none: the case is at {level} level, above this laptop ({mine})"),
    "none": ("无", "none"),
    "conflict_hint": (
        "用 field-client conflict resolve {id} --value 值 或 --keep-current 解决",
        "resolve with field-client conflict resolve {id} --value V or --keep-current",
    ),
    "conflict_hint_transition": ("用 field-client conflict resolve {id} 确认", "confirm with field-client conflict resolve {id}"),
    "resolved_status": ("已解决", "resolved"),
    "refused": ("未生效：{reason}", "not applied: {reason}"),
}

VERBS: dict[str, tuple[str, str]] = {
    "create": ("新建", "new"),
    "set": ("修改", "changed"),
    "void": ("作废", "voided"),
    "resolve": ("解决冲突", "conflict resolved"),
    "add": ("加上", "added"),
    "remove": ("去掉", "removed"),
}
HEADLINE_FIELDS = ("role", "name", "kind", "outcome", "rating", "leader")

# why the state machine refused a transition where it landed (schema.lifecycle codes)
REFUSALS: dict[str, tuple[str, str]] = {
    "transition.level_too_low": ("案件已由上一级办理，这一级不能再推进", "the case was already handled at a higher level"),
    "transition.not_allowed_from_state": ("案件当时的状态不允许这一步", "the case's state at that time did not allow this step"),
    "transition.already_extended": ("案件已经延期过一次", "the case had already been extended once"),
    "transition.case_voided": ("案件已作废", "the case had been voided"),
    "transition.already_top_level": ("案件已在县级，不能再上报", "the case was already at county level"),
    "transition.unknown_action": ("不认识这个操作", "unknown action"),
}

# the events a deadline counts from: Chinese from schema.rules.START_EVENTS, English here
EVENT_EN: dict[str, str] = {
    "received": "receipt", "routed": "routing or assignment", "accepted": "acceptance", "reopened": "reopening",
    "decision_served": "the decision served", "review_requested": "the review request",
    "review_decided": "the review decision", "rereview_requested": "the re-review request",
    "agreement": "the mediation agreement", "reported_up": "report-up to this level", "closed": "closing",
    "last_progress": "the last progress entry (or assignment)",
}


def event_text(event: str, lang: str) -> str:
    return EVENT_EN.get(event, event) if lang == "en" else START_EVENTS.get(event, event)


def rule_name(rule_id: str | None, rules: Rules, lang: str) -> str:
    """A deadline rule's name with this county's figure: 村级办理时限(3日) / Village handles
    before reporting up (3 days). Shared with the web UI."""
    if not rule_id:
        return ""
    rule = rules.rules.get(rule_id)
    if rule is None:
        return rule_id
    if lang != "en":
        return rule.zh
    name = re.sub(r"\s*\([^)]*\)$", "", RULE_DEFS[rule_id].en)
    unit = "working day" if rule.counted == "working" else "day"
    every = "every " if rule_id == "leader_progress" else ""
    return f"{name[:1].upper()}{name[1:]} ({every}{rule.days} {unit}{'s' if rule.days != 1 else ''})"


def flag_line(flag: Mapping[str, Any], lang: str) -> str:
    """A flag of schema.obligations.case_status as a phrase."""
    kind = str(flag.get("flag"))
    if kind == "clock_skew":
        return say(lang, "flag_clock_skew", device=str(flag.get("device", ""))[:8], minutes=abs(int(flag.get("skew_minutes") or 0)))
    if kind == "group":
        return say(lang, "flag_group", n=flag.get("people") or "")
    if f"flag_{kind}" in MESSAGES:
        return say(lang, f"flag_{kind}")
    return kind


def say(lang: str, key: str, **values: Any) -> str:
    zh, en = MESSAGES[key]
    return (en if lang == "en" else zh).format(**values)


def enum_text(enum: type[StrEnum], value: Any, lang: str, *, code: bool = False) -> str:
    """An enum value's label (``受理``); with ``code``, the value too (``受理(accept)``)."""
    if value is None:
        return ""
    try:
        m = enum(value)
    except ValueError:
        return str(value)
    text = m.label(lang) if isinstance(m, LabeledEnum) else str(m.value)
    if not code or text == m.value:
        return text
    return f"{text} ({m.value})" if lang == "en" else f"{text}({m.value})"


def refusal(code: str, lang: str) -> str:
    zh, en = REFUSALS.get(code, (code, code))
    return en if lang == "en" else zh


def verb(kind: str, lang: str) -> str:
    zh, en = VERBS.get(kind, (kind, kind))
    return en if lang == "en" else zh


def entity_label(entity: str, lang: str) -> str:
    spec = ENTITIES.get(entity)
    if spec is None:
        return entity
    return entity.replace("_", " ") if lang == "en" else spec.zh


# ---- values ----


def _china(iso: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    return t.astimezone(CHINA) if t.tzinfo else t


def short_time(iso: Any) -> str:
    t = _china(str(iso))
    return t.strftime("%Y-%m-%d %H:%M") if t else str(iso)


def short_date(iso: Any) -> str:
    t = _china(str(iso))
    return t.strftime("%Y-%m-%d") if t else str(iso)


def when_due(due: str, now: datetime, lang: str, *, short: bool = False) -> str:
    t = _china(due)
    if t is None:
        return ""
    days = (t.date() - now.date()).days
    if t < now:
        late = max(1, (now.date() - t.date()).days)
        return say(lang, "overdue_short") if short else say(lang, "overdue", n=late)
    if short:
        return ""
    return say(lang, "due_today") if days == 0 else say(lang, "due_left", n=days)


def field_text(f: FieldSpec, value: Any, lang: str) -> str:
    """A stored value as people read it."""
    if f.kind == "enum" and f.enum is not None:
        return enum_text(f.enum, value, lang)
    if f.kind == "bool":
        return ("yes" if value else "no") if lang == "en" else ("是" if value else "否")
    if f.kind == "datetime":
        return short_time(value)
    if f.kind == "set":
        items = value if isinstance(value, list) else []
        sep = ", " if lang == "en" else "、"
        return sep.join(enum_text(f.enum, i, lang) if f.enum else str(i) for i in items)
    return str(value)


def _given(value: Any) -> bool:
    return value not in (None, "", [])


# ---- layouts ----


def width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def clip(text: str, most: int) -> str:
    if width(text) <= most:
        return text
    out, w = "", 0
    for ch in text:
        cw = width(ch)
        if w + cw > most - 1:
            break
        out, w = out + ch, w + cw
    return out + "…"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, clip_at: Mapping[int, int] | None = None) -> str:
    """Columns padded to their widest cell; ``clip_at`` {column: width} shortens long text."""
    limits = clip_at or {}
    cells = [[clip(str(c), limits[i]) if i in limits else str(c) for i, c in enumerate(row)] for row in rows]
    widths = [max(width(h), *(width(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c + " " * (widths[i] - width(c)) for i, c in enumerate(row)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def _record_lines(entity: str, row: Mapping[str, Any], lang: str, n: int) -> list[str]:
    spec = ENTITIES[entity]
    colon = ": " if lang == "en" else "："
    short: list[str] = []
    long: list[str] = []
    for f in spec.fields:
        if f.create_only or not _given(row.get(f.name)):
            continue
        text = f"{forms.label(entity, f.name, lang)}{colon}{field_text(f, row[f.name], lang)}"
        (long if f.kind == "text" else short).append(text)
    head = f"  {n}. " + ("；" if lang != "en" else "; ").join(short)
    lines = [head]
    lines += [f"     {t}" for t in long]
    if row.get("voided"):
        lines.append("     " + say(lang, "voided_by", reason=row.get("void_reason") or ""))
    return lines


def _section(title: str, lang: str, count: int | None = None) -> str:
    if count is None:
        return f"\n{title}"
    return f"\n{title} ({count})" if lang == "en" else f"\n{title}（{count}）"


def _due_lines(detail: Mapping[str, Any], lang: str, now: datetime, rules: Rules) -> list[str]:
    """The case's warning colour, flags, obligations and the county's alerts."""
    status = detail["status"]
    lines = [_section(say(lang, "sec_deadlines"), lang),
             "  " + say(lang, "colour_line", colour=enum_text(Colour, status["colour"], lang))]
    flags = [flag_line(f, lang) for f in status["flags"]]
    if status.get("backlog"):
        flags.append(say(lang, "backlog"))
    lines += [f"  ! {f}" for f in flags]
    if not detail["obligations"]:
        lines.append("  " + say(lang, "none"))
    for o in detail["obligations"]:
        notes = [say(lang, f"kind_{o['kind']}")]
        if o.get("met_at"):
            notes.append(say(lang, "ob_done", when=short_time(o["met_at"])))
        if o.get("late"):
            notes.append(say(lang, "ob_late"))
        if o.get("ended") and f"ended_{o['ended']}" in MESSAGES:
            notes.append(say(lang, f"ended_{o['ended']}"))
        if o.get("estimated"):
            notes.append(say(lang, "ob_estimated"))
        state = enum_text(ObligationState, o["state"], lang)
        if o["state"] == "overdue" and when_due(o["due"], now, lang):
            state = when_due(o["due"], now, lang)  # 已超期 3 天: the state and by how much
        elif o["state"] in ("pending", "awaiting_sync"):
            state += f" ({when_due(o['due'], now, lang)})" if lang == "en" else f"（{when_due(o['due'], now, lang)}）"
        lines.append(f"  {short_time(o['due'])}  {rule_name(o['rule'], rules, lang)}  {state}")
        lines.append("      " + say(lang, "due_from", event=event_text(o["start_event"], lang),
                                    start=short_time(o["start"])) + ("; " if lang == "en" else "；")
                     + ("; " if lang == "en" else "；").join(notes))
    alerts = [a for a in detail.get("alerts") or [] if not a.get("voided")]
    if alerts:
        lines.append(_section(say(lang, "sec_alerts"), lang, len(alerts)))
        for a in alerts:
            head = f"  {short_time(a.get('raised_at'))}  {enum_text(AlertKind, a.get('kind'), lang)}"
            if a.get("rule"):
                head += f"  {rule_name(a['rule'], rules, lang)}"
            if a.get("withdrawn_at"):
                head += "  " + say(lang, "alert_withdrawn", when=short_time(a["withdrawn_at"]),
                                   reason=a.get("withdrawn_reason") or "")
            lines.append(head)
            if a.get("message"):
                lines.append(f"      {a['message']}")
    return lines


def render_case(detail: Mapping[str, Any], lang: str, *, now: datetime, device_level: str,
                rules: Rules) -> str:
    c = detail["case"]
    colon = ": " if lang == "en" else "："
    lines = [f"{c['case_no']}  {c['title']}"]
    if c.get("voided"):
        lines.append("  " + say(lang, "voided_by", reason=c.get("void_reason") or ""))
    life = [
        f"{say(lang, 'state')}{colon}{enum_text(State, c['state'], lang)}",
        f"{say(lang, 'level')}{colon}{enum_text(Level, c['level'], lang)}"
        + (f" ({c['node']})" if lang == "en" else f"（{c['node']}）"),
    ]
    if c.get("decision"):
        life.append(f"{say(lang, 'decision')}{colon}{enum_text(Decision, c['decision'], lang)}")
    if c.get("extended_days"):
        life.append(f"{say(lang, 'extended')}{colon}{say(lang, 'days', n=c['extended_days'])}")
    lines.append("  " + "；".join(life) if lang != "en" else "  " + "; ".join(life))
    for f in ENTITIES["case"].fields:
        if f.create_only or f.name in ("case_no", "title") or not _given(c.get(f.name)):
            continue
        lines.append(f"  {forms.label('case', f.name, lang)}{colon}{field_text(f, c[f.name], lang)}")
    for entity in ("party", "visit", "mediation", "notice", "note", "evaluation", "leader_assignment"):
        table = ENTITIES[entity].table
        rows = detail.get(table) or []
        if not rows:
            continue
        lines.append(_section(say(lang, f"sec_{table}"), lang, len(rows)))
        for n, row in enumerate(rows, 1):
            lines += _record_lines(entity, row, lang, n)
    lines += _due_lines(detail, lang, now, rules)
    lines.append(_section(say(lang, "sec_actions"), lang))
    allowed = detail["allowed_actions"]
    if allowed:
        sep = ", " if lang == "en" else "、"
        lines.append("  " + sep.join(enum_text(Action, a, lang, code=True) for a in allowed))
    elif LEVEL_ORDER.get(c["level"], 0) > LEVEL_ORDER.get(device_level, 0):
        lines.append("  " + say(lang, "no_actions_level", level=enum_text(Level, c["level"], lang),
                                mine=enum_text(Level, device_level, lang)))
    else:
        lines.append("  " + say(lang, "none"))
    conflicts = detail.get("conflicts") or []
    if conflicts:
        lines.append(_section(say(lang, "sec_conflicts"), lang, len(conflicts)))
        lines.append(render_conflicts(conflicts, lang, with_case=False))
    timeline = detail.get("timeline") or []
    lines.append(_section(say(lang, "sec_timeline"), lang, len(timeline)))
    lines += [_timeline_line(op, lang) for op in timeline]
    return "\n".join(lines)


def render_conflicts(conflicts: Sequence[Mapping[str, Any]], lang: str, *, with_case: bool) -> str:
    lines: list[str] = []
    for cf in conflicts:
        short_id = cf["id"][:8]
        what = entity_label(cf["entity"], lang)
        if cf.get("field"):
            what += " · " + forms.label(cf["entity"], cf["field"], lang)
        head = f"  [{short_id}] {enum_text(ConflictKind, cf['kind'], lang)}  {what}"
        if with_case:
            head = f"  [{short_id}] {cf.get('case_no') or cf['case_id'][:8]}  {enum_text(ConflictKind, cf['kind'], lang)}  {what}"
        if cf.get("status") == "resolved":
            head += f"  ({say(lang, 'resolved_status')})"
        lines.append(head)
        spec = ENTITIES[cf["entity"]].field_map.get(cf.get("field") or "")
        for v in cf.get("values", []):
            value = v.get("value")
            if cf["kind"] == "invalid_transition":
                shown = enum_text(Action, value, lang)
            elif spec is not None and _given(value):
                shown = field_text(spec, value, lang)
            else:
                shown = "" if value is None else str(value)
            lines.append(f"      - {shown}    ({v.get('author')}, {short_time(v.get('occurred_at'))}, {str(v.get('device'))[:8]})")
        if cf.get("reason"):
            lines.append("      " + say(lang, "refused", reason=refusal(cf["reason"], lang)))
        if cf.get("status") == "open":
            key = "conflict_hint" if cf["kind"] == "concurrent_edit" else "conflict_hint_transition"
            lines.append("      " + say(lang, key, id=short_id))
    return "\n".join(lines)


def _timeline_line(op: Mapping[str, Any], lang: str) -> str:
    entity, kind, values = op["entity"], op["kind"], op.get("values") or {}
    colon = ": " if lang == "en" else "："
    sep = ", " if lang == "en" else "；"
    what = entity_label(entity, lang)
    spec = ENTITIES.get(entity)
    if kind == "transition":
        parts = [enum_text(Action, values.get("action"), lang)]
        for key in ("to_node", "decision", "days", "reason"):
            if _given(values.get(key)):
                shown = enum_text(Decision, values[key], lang) if key == "decision" else str(values[key])
                parts.append(f"{forms.label('case', key, lang)}{colon}{shown}")
        body = sep.join(parts)
    elif kind == "void":
        body = f"{verb(kind, lang)} {what}{sep}{forms.label(entity, 'reason', lang)}{colon}{values.get('reason', '')}"
    elif kind in ("set", "resolve") and spec is not None:
        pairs = {values["field"]: values.get("value")} if kind == "resolve" and values.get("field") else values
        written = [
            f"{forms.label(entity, k, lang)}{colon}{field_text(spec.field_map[k], v, lang) if k in spec.field_map and _given(v) else v}"
            for k, v in pairs.items() if k != "resolves"
        ]
        body = f"{verb(kind, lang)} {what}" + (f"{sep}{sep.join(written)}" if written else "")
    elif kind in ("add", "remove") and spec is not None:
        f = spec.field_map.get(str(values.get("field")))
        items = field_text(f, values.get("items", []), lang) if f else str(values.get("items"))
        body = f"{verb(kind, lang)} {forms.label(entity, str(values.get('field')), lang)}{colon}{items}"
    elif kind == "create" and spec is not None:
        heads = [field_text(spec.field_map[k], values[k], lang) for k in HEADLINE_FIELDS
                 if k in spec.field_map and _given(values.get(k)) and entity != "case"]
        body = f"{verb(kind, lang)} {what}" + (f"{colon}{' '.join(heads)}" if heads else "")
    else:
        body = f"{verb(kind, lang)} {what}"
    line = f"  {short_time(op['occurred_at'])}  {op['author']}  {body}"
    if op.get("refused"):
        line += "  【" + say(lang, "refused", reason=refusal(op["refused"], lang)) + "】"
    return line
