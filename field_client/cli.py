"""``field-client``: the command line of the village laptop (民情 field client).

Every command goes through ``FieldClient`` (``field_client.store``); typed text becomes
op values through ``field_client.forms``; ``field_client.cli_text`` says things to people.
Messages are Chinese by default, English with ``--lang en``. ``docs/cli.md`` lists every
command with an example (``tests/field_client/test_cli_help.py`` keeps it complete).

Exit codes::

    0    done
    2    a mistake: a bad value, an unknown case, a wrong passphrase, a damaged file.
         One sentence on stderr, or with --json {"ok": false, "error": {...}} on stdout.
    1    a fault in the program: a sentence (never a traceback) asking to tell IT
    130  interrupted (Ctrl-C)

The passphrase comes from ``--passphrase-file FILE``, else the environment variable
``MINQING_PASSPHRASE``, else a prompt when stdin is a terminal; otherwise exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from conflict.replica import translate_sqlite
from field_client import forms, keystore
from field_client.cli_text import (
    entity_label,
    enum_text,
    render_case,
    render_conflicts,
    render_table,
    rule_name,
    say,
    short_date,
    short_time,
    when_due,
)
from field_client.errors import ClientError, NotFound
from field_client.store import REPLICA_FILE, FieldClient, now_iso
from schema import lifecycle
from schema.enums import (
    LEVEL_ORDER,
    Action,
    CaseTag,
    Category,
    Colour,
    Decision,
    Level,
    MediationOutcome,
    State,
)
from schema.errors import MinqingError, OpInvalid, OpsRejected
from schema.masking import MASKERS
from schema.obligations import CHINA

PASSPHRASE_ENV = "MINQING_PASSPHRASE"
DATA_ENV = "MINQING_DATA"
DEFAULT_DATA = "~/.minqing"


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("minqing")
    except Exception:  # not installed: running from a checkout
        return "0.0.0"


# ---------------------------------------------------------------------------
# Errors the CLI raises itself (already said in the chosen language)
# ---------------------------------------------------------------------------


class Refusal(ClientError):
    """A mistake the CLI found itself; ``message`` is already in the person's language."""

    code = "client.input"


class UsageError(Exception):
    """argparse found the command line malformed."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.message = message
        self.prog = prog


# ---------------------------------------------------------------------------
# argparse in Chinese
# ---------------------------------------------------------------------------

USAGE_PATTERNS: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"the following arguments are required: (.*)"), "缺少必填参数：{0}", "missing required arguments: {0}"),
    (re.compile(r"unrecognized arguments: (.*)"), "无法识别的参数：{0}", "unrecognized arguments: {0}"),
    (re.compile(r"argument (.+?): invalid choice: (.*?) \(choose from (.*)\)"), "参数 {0} 的值 {1} 无效，可选：{2}", "argument {0}: invalid choice {1} (choose from {2})"),
    (re.compile(r"argument (.+?): expected one argument"), "参数 {0} 后面要跟一个值", "argument {0} needs a value"),
    (re.compile(r"argument (.+?): not allowed with argument (.+)"), "参数 {0} 不能和 {1} 一起用", "argument {0} cannot be used with {1}"),
    (re.compile(r"one of the arguments (.*) is required"), "需要以下参数之一：{0}", "one of these is required: {0}"),
    (re.compile(r"ambiguous option: (\S+) could match (.*)"), "选项 {0} 有歧义，可能是：{1}", "option {0} is ambiguous: {1}"),
]


def _usage_sentence(message: str, prog: str, lang: str) -> str:
    for pattern, zh, en in USAGE_PATTERNS:
        m = pattern.fullmatch(message)
        if m:
            message = (en if lang == "en" else zh).format(*m.groups())
            break
    return say(lang, "usage", message=message, prog=prog)


class ZhHelpFormatter(argparse.RawDescriptionHelpFormatter):
    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, prefix if prefix is not None else "用法 (usage): ")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that speaks Chinese and raises instead of exiting on a mistake."""

    def __init__(self, *args: Any, lang: str = "zh", add_help: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", ZhHelpFormatter if lang != "en" else argparse.RawDescriptionHelpFormatter)
        parents = kwargs.pop("parents", [])
        kwargs["add_help"] = False  # our own -h, with a Chinese line
        super().__init__(*args, **kwargs)
        self.lang = lang
        if lang != "en":
            self._positionals.title = "位置参数 (positional arguments)"
            self._optionals.title = "选项 (options)"
        if add_help:
            self.add_argument("-h", "--help", action="help", help="显示这段帮助 (show this help)")
        for parent in parents:  # as argparse does, but after the titles are set: one options group
            self._add_container_actions(parent)
            self._defaults.update(parent._defaults)

    def error(self, message: str) -> Any:
        raise UsageError(message, self.prog)


def _common(lang: str) -> Parser:
    """Options every command takes, before or after its name."""
    p = Parser(lang=lang, add_help=False)
    s = argparse.SUPPRESS
    p.add_argument("--data", metavar="DIR", default=s,
                   help=f"数据文件夹 (data folder; default ${DATA_ENV}, else {DEFAULT_DATA})")
    p.add_argument("--lang", choices=("zh", "en"), default=s, help="提示语言 (language of messages; default zh)")
    p.add_argument("--json", action="store_true", default=s, help="输出 JSON (machine-readable output)")
    p.add_argument("--passphrase-file", metavar="FILE", default=s,
                   help=f"从文件读口令 (read the passphrase from FILE; else ${PASSPHRASE_ENV}, else a prompt)")
    return p


def build_parser(lang: str = "zh") -> Parser:
    """The whole command tree; ``command_paths`` lists its leaves."""
    common = _common(lang)
    root = Parser(
        prog="field-client",
        lang=lang,
        parents=[common],
        description="民情 村级客户端：在没有网络的笔记本上登记、办理案件\n"
        "(Minqing field client: record and handle cases on an offline laptop)",
        epilog="每个命令都可以加 --help 查看说明 (every command takes --help)。文档 (docs): docs/cli.md",
    )
    root.add_argument("--version", action="version", version=f"field-client {version()}",
                      help="显示版本 (show the version)")
    top = root.add_subparsers(dest="command", metavar="命令 (command)", title="命令 (commands)",
                              required=True, parser_class=Parser)

    def leaf(sub: Any, path: tuple[str, ...], zh: str, en: str, func: Callable[..., int]) -> Parser:
        p: Parser = sub.add_parser(path[-1], lang=lang, parents=[common], help=f"{zh} ({en})",
                                   description=f"{zh}\n({en})")
        p.set_defaults(func=func)
        return p

    def group(name: str, zh: str, en: str) -> Any:
        p: Parser = top.add_parser(name, lang=lang, help=f"{zh} ({en})", description=f"{zh}\n({en})")
        return p.add_subparsers(dest="sub", metavar="子命令 (subcommand)", title="子命令 (subcommands)",
                                required=True, parser_class=Parser)

    # init
    p = leaf(top, ("init",), "在这台笔记本上建立本机设备（密钥和数据文件）",
             "set up this laptop: keys and the data file", cmd_init)
    p.add_argument("--node", required=True, help="本单位代码，如村代码 (your unit's code, e.g. the village code)")
    p.add_argument("--user", required=True, help="使用人登录名 (the person's login name)")
    p.add_argument("--level", default="village", help="层级：village 村级 | township 乡镇级 | county 县级 (default village)")
    p.add_argument("--node-name", default="", metavar="名称", help="单位名称，如 东村 (the unit's name)")

    # case ...
    case = group("case", "案件：登记、查看、修改、流转", "cases: register, view, edit, move")
    p = leaf(case, ("case", "new"), "登记一件新案件（信访事项或矛盾纠纷）", "register a new case", cmd_case_new)
    p.add_argument("--title", required=True, help="事由 (title)")
    p.add_argument("--category", required=True, help="类别 (category)：" + forms.choices(Category))
    p.add_argument("--subject", required=True, help="事项类型，如 邻里纠纷 / neighbour (subject)")
    p.add_argument("--channel", required=True, help="来源渠道，如 来访 / visit (channel)")
    p.add_argument("--summary", help="反映内容 (what was reported)")
    p.add_argument("--demands", help="诉求 (demands)")
    p.add_argument("--people-count", metavar="N", help="人数 (number of people)")
    p.add_argument("--received", metavar="TIME", help="收件时间，默认现在 (received at; default now)")
    p.add_argument("--simplified", action="store_true", help="简易办理 (simplified handling)")
    p.add_argument("--not-public", action="store_true", help="不公开调解 (mediation not public)")
    p.add_argument("--tag", action="append", default=[], help="标记，可重复 (a tag; repeatable)：" + forms.choices(CaseTag))
    p.add_argument("--party", action="append", default=[], metavar="角色=...,姓名=...",
                   help="当事人，可重复 (a party; repeatable): role=petitioner,name=张三,id_number=...,phone=...,address=...")

    p = leaf(case, ("case", "list"), "列出本机的案件，按下一个期限排序", "list the cases on this laptop by next due date", cmd_case_list)
    p.add_argument("--state", help="只看这个状态 (only this state)，如 已受理 / accepted")
    p.add_argument("--category", help="只看这个类别 (only this category)")
    p.add_argument("--level", help="只看这个层级 (only this level)：村级 / 乡镇级 / 县级")
    p.add_argument("--all", action="store_true", help="包括已作废的案件 (include voided cases)")

    p = leaf(case, ("case", "show"), "查看一件案件的全部情况", "show everything about one case", cmd_case_show)
    p.add_argument("ref", metavar="REF", help="案件编号、id 或其唯一的开头/结尾 (case number, id, or a unique part)")
    p.add_argument("--unmask", action="store_true", help="显示完整的身份证号和电话 (show full ID numbers and phones)")

    p = leaf(case, ("case", "edit"), "修改案件的字段", "edit fields of a case", cmd_case_edit)
    p.add_argument("ref", metavar="REF", help="案件 (the case)")
    p.add_argument("changes", metavar="字段=值", nargs="+", help="如 title=新事由 或 事由=新事由 (field=value)")

    p = leaf(case, ("case", "transition"), "推进案件流程（受理、开始办理、办结等）",
             "move a case through its steps (accept, start, close, ...)", cmd_case_transition)
    p.add_argument("ref", metavar="REF", help="案件 (the case)")
    p.add_argument("action", metavar="ACTION", help="操作，如 受理 / accept (the action)")
    p.add_argument("--to-node", metavar="N", help="转送或上报到的单位代码 (receiving unit, for route/escalate)")
    p.add_argument("--decision", metavar="D", help="处理意见：支持 / 解释说明 / 不予支持 (for decide*)")
    p.add_argument("--days", metavar="N", help="延期天数，最多 30 (days of extension, at most 30)")
    p.add_argument("--reason", metavar="R", help="理由 (reason)")

    p = leaf(case, ("case", "report-up"), "上报：把案件交给上一级办理", "report the case up one level", cmd_case_report_up)
    p.add_argument("ref", metavar="REF", help="案件 (the case)")
    p.add_argument("--to-node", metavar="N", required=True, help="上一级单位代码 (the receiving unit's code)")
    p.add_argument("--reason", metavar="R", help="理由 (reason)")

    p = leaf(case, ("case", "void"), "作废一件案件（记录保留，注明理由）", "void a case (kept, with a reason)", cmd_case_void)
    p.add_argument("ref", metavar="REF", help="案件 (the case)")
    p.add_argument("--reason", metavar="R", required=True, help="作废理由 (reason)")

    p = leaf(case, ("case", "tag"), "给案件加上或去掉标记", "add or remove tags of a case", cmd_case_tag)
    p.add_argument("ref", metavar="REF", help="案件 (the case)")
    p.add_argument("--add", metavar="T", action="append", default=[], help="加上标记 (add a tag)：" + forms.choices(CaseTag))
    p.add_argument("--remove", metavar="T", action="append", default=[], help="去掉标记 (remove a tag)")

    # records appended to a case
    visit = group("visit", "走访记录", "visits")
    p = leaf(visit, ("visit", "add"), "记一次走访、上门、接访或回访", "record a visit", cmd_visit_add)
    p.add_argument("ref", metavar="REF", help="案件 (the case)")
    p.add_argument("--kind", required=True, help="类型：接访 / 走访 / 上门 / 回访 (kind)")
    p.add_argument("--visitor", help="走访人，默认本机使用人 (visitor; default this laptop's user)")
    p.add_argument("--at", metavar="TIME", help="时间，默认现在，如 2026-11-22 09:30 (when; default now)")
    p.add_argument("--place", help="地点 (place)")
    p.add_argument("--summary", help="情况记录 (what happened)")

    mediation = group("mediation", "调解记录", "mediation sessions")
    p = leaf(mediation, ("mediation", "add"), "记一次调解及其结果", "record a mediation session", cmd_mediation_add)
    p.add_argument("ref", metavar="REF", help="案件 (the case)")
    p.add_argument("--kind", required=True, help="调解类型：人民调解 / 行政调解 / 司法调解 (kind)")
    p.add_argument("--mediator", help="调解员，默认本机使用人 (mediator; default this laptop's user)")
    p.add_argument("--outcome", required=True, help="结果：达成协议 / 未达成协议 / 中止 (outcome)")
    p.add_argument("--form", help="协议形式：书面 written / 口头 oral (agreement form)")
    p.add_argument("--terms", help="协议内容 (agreed terms)")
    p.add_argument("--performance", help="履行方式与期限 (how and when it is performed)")
    p.add_argument("--due", metavar="DATE", help="履行期限，如 2026-12-31 (performance due date)")
    p.add_argument("--facts", help="事实与争议 (facts and disputed points)")
    p.add_argument("--place", help="地点 (place)")
    p.add_argument("--at", metavar="TIME", help="调解时间，默认现在 (when; default now)")
    p.add_argument("--not-public", action="store_true", help="当事人要求不公开 (not public, Art. 23)")
    p.add_argument("--remedies-told", action="store_true", help="已告知其他救济途径 (other remedies told, Art. 26)")

    notice = group("notice", "告知书和文书", "notices")
    p = leaf(notice, ("notice", "add"), "记一份已送达的告知书或文书", "record a notice served", cmd_notice_add)
    p.add_argument("ref", metavar="REF", help="案件 (the case)")
    p.add_argument("--kind", required=True, help="文书类型，如 受理告知书 / acceptance (kind)")
    p.add_argument("--served", metavar="DATE", required=True, help="送达日期 (date served)")
    p.add_argument("--number", help="文号 (document number)")
    p.add_argument("--summary", help="内容摘要 (summary)")

    note = group("note", "备注", "notes")
    p = leaf(note, ("note", "add"), "给案件加一条备注", "add a note to a case", cmd_note_add)
    p.add_argument("ref", metavar="REF", help="案件 (the case)")
    p.add_argument("--text", required=True, help="内容 (the note)")

    evaluation = group("evaluation", "满意度评价", "satisfaction ratings")
    p = leaf(evaluation, ("evaluation", "add"), "记录当事人的满意度评价", "record a satisfaction rating", cmd_evaluation_add)
    p.add_argument("ref", metavar="REF", help="案件 (the case)")
    p.add_argument("--rating", required=True, help="评价：满意 / 基本满意 / 不满意 (rating)")
    p.add_argument("--comment", help="意见 (comment)")

    leader = group("leader", "领导包案", "leader assignment")
    p = leaf(leader, ("leader", "assign"), "为疑难案件指定包案领导和专人", "assign a responsible leader", cmd_leader_assign)
    p.add_argument("ref", metavar="REF", help="案件 (the case)")
    p.add_argument("--leader", required=True, help="包案领导 (the responsible leader)")
    p.add_argument("--handler", required=True, help="专人负责 (the dedicated handler)")
    p.add_argument("--team", metavar="NAME", action="append", default=[], help="工作专班成员，可重复 (team member; repeatable)")
    p.add_argument("--plan", help="化解方案 (resolution plan)")
    p.add_argument("--response-plan", help="应急预案 (response plan)")
    p.add_argument("--date", metavar="DATE", help="包案日期，默认今天 (date; default today)")

    conflict = group("conflict", "冲突：两台设备改了同一处", "conflicts between devices")
    p = leaf(conflict, ("conflict", "list"), "列出未解决的冲突", "list open conflicts", cmd_conflict_list)
    p.add_argument("--unmask", action="store_true", help="显示完整的身份证号和电话 (show full ID numbers and phones)")
    p = leaf(conflict, ("conflict", "resolve"), "解决一个冲突：选定一个值或保留现在的值",
             "resolve a conflict: choose a value or keep the current one", cmd_conflict_resolve)
    p.add_argument("id", metavar="ID", help="冲突编号或其开头 (the conflict id or its start)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--value", metavar="V", help="采用这个值 (use this value)")
    how.add_argument("--keep-current", action="store_true", help="保留现在显示的值 (keep the value shown now)")

    p = leaf(top, ("status",), "查看本机状态：设备、待上传记录、案件、冲突、同步、服务器、时钟差",
             "this laptop's state: device, pending records, cases, conflicts, sync, server, clock offset", cmd_status)
    p.add_argument("--offline", action="store_true", help="不检查服务器是否可连通 (do not check whether the server answers)")

    # sync
    p = leaf(top, ("enroll",), "用县里给的一次性注册码把本机注册到县服务器",
             "enroll this laptop with the county server using a one-time code", cmd_enroll)
    p.add_argument("--code", required=True, help="注册码，以 MQ1. 开头 (the enrollment code, starting MQ1.)")
    p = leaf(top, ("sync",), "与县服务器同步：上传本机记录，下载辖区新记录（断线可续传）",
             "sync with the county server: send this laptop's records, receive new ones (resumes after a cut)", cmd_sync)
    p.add_argument("--server", help="临时改用的服务器地址 (use this server address instead, e.g. via a proxy)")
    p = leaf(top, ("export",), "把待上传的记录写到文件夹（U盘），由他人带到乡镇或县里",
             "write pending records to a folder (USB stick) for someone to carry", cmd_export)
    p.add_argument("folder", help="目标文件夹 (folder to write to)")
    p = leaf(top, ("import",), "导入县里写给本机的回复文件（U盘带回）",
             "take in the county's answer files for this laptop (brought back on USB)", cmd_import)
    p.add_argument("folder", help="回复文件所在文件夹 (folder holding the answer files)")

    # verify, reenroll, rotate-keys: the county IT officer's commands (docs/audit.md)
    from field_client.cli_ops import register as register_ops

    register_ops(top, leaf)

    p = leaf(top, ("serve",), "打开本机网页界面（只在本机 127.0.0.1）", "open the local web UI (127.0.0.1 only)", cmd_serve)
    p.add_argument("--host", default="127.0.0.1", help="地址 (address; default 127.0.0.1)")
    p.add_argument("--port", default="0", help="端口，0 表示自动选择 (port; 0 picks a free one)")
    p.add_argument("--no-browser", action="store_true", help="不自动打开浏览器 (do not open a browser)")
    return root


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The commands directly under ``parser``, by name."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def command_paths(parser: argparse.ArgumentParser | None = None) -> list[tuple[str, ...]]:
    """Every leaf command, e.g. ``("case", "new")``, in the order ``--help`` shows them."""
    out: list[tuple[str, ...]] = []
    for name, sub in subparsers(parser or build_parser()).items():
        below = command_paths(sub)
        out += [(name, *rest) for rest in below] if below else [(name,)]
    return out


# ---------------------------------------------------------------------------
# The context a command runs in
# ---------------------------------------------------------------------------


@dataclass
class Ctx:
    lang: str
    json: bool
    data: Path
    passphrase_file: str | None
    entity: str = "case"  # what the command records, to explain op errors

    def say(self, key: str, **kw: Any) -> str:
        return say(self.lang, key, **kw)

    def done(self, text: str, payload: Mapping[str, Any]) -> int:
        if self.json:
            _print(json.dumps({"ok": True, **payload}, ensure_ascii=False, indent=2, default=str))
        else:
            _print(text)
        return 0

    def note(self, text: str) -> None:
        """A hint for the person (stderr, so --json output stays clean)."""
        print(text, file=sys.stderr)

    def passphrase(self, *, confirm: bool = False) -> str:
        if self.passphrase_file:
            try:
                text = Path(self.passphrase_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise Refusal(self.say("passphrase_file", path=self.passphrase_file, why=exc.strerror or exc),
                              code="client.passphrase_file") from exc
            return (text.splitlines() or [""])[0]
        env = os.environ.get(PASSPHRASE_ENV)
        if env:
            return env
        if sys.stdin is not None and sys.stdin.isatty():
            first = getpass.getpass(self.say("prompt"))
            if confirm and getpass.getpass(self.say("prompt_again")) != first:
                raise Refusal(self.say("passphrase_mismatch"), code="client.passphrase_mismatch")
            return first
        raise Refusal(self.say("passphrase_missing"), code="client.passphrase_missing")

    @contextmanager
    def client(self) -> Iterator[FieldClient]:
        keystore.read_info(self.data)  # no device, or a damaged key file: say so before asking
        c = FieldClient.open(self.data, self.passphrase())
        try:
            yield c
        finally:
            c.close()

    def refuse(self, errors: Mapping[str, str]) -> Refusal:
        """``client.input``: every wrong field in one sentence, and by field in ``details``."""
        sep = "; " if self.lang == "en" else "；"
        return Refusal(self.say("not_saved", what=sep.join(errors.values())), code="client.input",
                       details=dict(errors))


def _print(text: str) -> None:
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `field-client case list | head`
        pass


# ---------------------------------------------------------------------------
# Helpers shared by commands
# ---------------------------------------------------------------------------


def _case(ctx: Ctx, c: FieldClient, ref: str) -> dict[str, Any]:
    """The case row a person means by ``ref`` (number, id, or a unique part)."""
    ref = ref.strip()
    if not ref:
        raise Refusal(ctx.say("case_not_found", ref=ref), code="client.not_found")
    try:
        case_id = c.find_case(ref)
    except NotFound as exc:
        many = isinstance(exc.details, dict) and exc.details.get("matches", 0) > 1
        raise Refusal(ctx.say("case_ambiguous" if many else "case_not_found", ref=ref),
                      code="client.not_found", details={"ref": ref}) from exc
    row = c.replica.get("case", case_id)
    assert row is not None
    return row


def _coerce(ctx: Ctx, entity: str, raw: Mapping[str, str | None], *, partial: bool = False) -> dict[str, Any]:
    ctx.entity = entity
    given = {k: v for k, v in raw.items() if v is not None}
    values, errors = forms.coerce(entity, given, partial=partial, lang=ctx.lang)
    if errors:
        raise ctx.refuse(errors)
    return values


def _enum(ctx: Ctx, enum: Any, text: str, what: str) -> str:
    m = forms.enum_member(enum, text)
    if m is None:
        raise Refusal(ctx.say("bad_choice", what=what, value=text, choices=forms.choices(enum, ctx.lang)),
                      code="client.input", details={what: text})
    return str(m.value)


def _yes(flag: bool) -> str | None:
    return "true" if flag else None


def _split_pairs(text: str) -> list[str]:
    """``a=1,b=2`` -> ``["a=1", "b=2"]``; a comma not followed by ``key=`` stays in the value."""
    return [p for p in re.split(r"[,，](?=\s*\w+\s*=)", text) if p.strip()]


def _pairs(ctx: Ctx, items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise Refusal(ctx.say("bad_pair", item=item), code="client.input", details={"item": item})
        out[key.strip()] = value
    return out


def _mask_conflicts(conflicts: list[dict[str, Any]], unmask: bool) -> list[dict[str, Any]]:
    if unmask:
        return conflicts
    for c in conflicts:
        mask = MASKERS.get(c.get("field") or "")
        if mask is not None:
            for v in c["values"]:
                if isinstance(v.get("value"), str):
                    v["value"] = mask(v["value"])
    return conflicts


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def cmd_init(ctx: Ctx, a: argparse.Namespace) -> int:
    level = _enum(ctx, Level, a.level, "--level")
    if keystore.exists(ctx.data):
        raise Refusal(ctx.say("already_initialised", data=ctx.data), code="client.already_initialised")
    passphrase = ctx.passphrase(confirm=True)
    if len(passphrase) < 8:
        raise Refusal(ctx.say("passphrase_short"), code="client.input", details={"passphrase": "too short"})
    with FieldClient.init(ctx.data, passphrase, node=a.node.strip(), level=level, user=a.user.strip(),
                          node_name=a.node_name.strip()) as c:
        return ctx.done(
            ctx.say("initialised", data=ctx.data, device=c.device_id, node=c.node,
                    level=enum_text(Level, c.level, ctx.lang), user=c.user),
            {"device_id": c.device_id, "node": c.node, "level": c.level, "user": c.user, "data": str(ctx.data)},
        )


def cmd_case_new(ctx: Ctx, a: argparse.Namespace) -> int:
    raw = {
        "title": a.title, "category": a.category, "subject": a.subject, "channel": a.channel,
        "summary": a.summary, "demands": a.demands, "people_count": a.people_count,
        "received_at": a.received, "simplified": _yes(a.simplified), "not_public": _yes(a.not_public),
        "tags": ",".join(a.tag) or None,
    }
    ctx.entity = "case"
    values, errors = forms.coerce("case", {k: v for k, v in raw.items() if v is not None}, lang=ctx.lang)
    parties = []
    for i, spec in enumerate(a.party, 1):
        pv, perr = forms.coerce("party", _pairs(ctx, _split_pairs(spec)), lang=ctx.lang)
        parties.append(pv)
        for name, msg in perr.items():
            errors[f"party{i}.{name}"] = ctx.say("party_n", n=i, msg=msg)
    if errors:
        raise ctx.refuse(errors)
    with ctx.client() as c:
        case_id = c.new_case(values, parties)
        row = c.replica.get("case", case_id) or {}
        return ctx.done(
            ctx.say("case_created", no=row.get("case_no"), title=row.get("title"), n=len(parties)),
            {"id": case_id, "case_no": row.get("case_no")},
        )


def cmd_case_list(ctx: Ctx, a: argparse.Namespace) -> int:
    state = _enum(ctx, State, a.state, "--state") if a.state else None
    category = _enum(ctx, Category, a.category, "--category") if a.category else None
    level = _enum(ctx, Level, a.level, "--level") if a.level else None
    with ctx.client() as c:
        rows = c.list_cases(state=state, category=category, level=level, include_voided=a.all, limit=100_000)
        now = datetime.fromtimestamp(c.clock(), CHINA)
        rules = c.rules()
    if ctx.json:
        return ctx.done("", {"cases": rows})
    if not rows:
        return ctx.done(ctx.say("no_cases"), {})
    table = [
        [
            enum_text(Colour, r["colour"], ctx.lang),
            r["case_no"],
            r["title"] + (ctx.say("voided_mark") if r["voided"] else ""),
            enum_text(State, r["state"], ctx.lang),
            enum_text(Level, r["level"], ctx.lang),
            short_date(r["next_due"]) + when_due(r["next_due"], now, ctx.lang, short=True) if r["next_due"] else "—",
            rule_name(r["next_rule"], rules, ctx.lang),
            str(r["open_conflicts"] or ""),
        ]
        for r in rows
    ]
    text = render_table(ctx.say("list_headers").split("|"), table, clip_at={2: 28}) + "\n" + ctx.say("list_total", n=len(rows))
    return ctx.done(text, {})


def cmd_case_show(ctx: Ctx, a: argparse.Namespace) -> int:
    with ctx.client() as c:
        row = _case(ctx, c, a.ref)
        detail = c.case_detail(row["id"], unmask=a.unmask)
        _mask_conflicts(detail["conflicts"], a.unmask)
        now = datetime.fromtimestamp(c.clock(), CHINA)
        device_level = c.level
        rules = c.rules()
    if ctx.json:
        return ctx.done("", detail)
    return ctx.done(render_case(detail, ctx.lang, now=now, device_level=device_level, rules=rules), {})


def cmd_case_edit(ctx: Ctx, a: argparse.Namespace) -> int:
    values = _coerce(ctx, "case", _pairs(ctx, a.changes), partial=True)
    with ctx.client() as c:
        row = _case(ctx, c, a.ref)
        op = c.edit("case", row["id"], values)
        labels = "、".join(forms.label("case", k, ctx.lang) for k in values)
        text = ctx.say("edited", no=row["case_no"], fields=labels) if op else ctx.say("unchanged", no=row["case_no"])
        return ctx.done(text, {"id": row["id"], "op_id": op.op_id if op else None, "changed": sorted(values) if op else []})


def _transition(ctx: Ctx, a: argparse.Namespace, action_text: str) -> int:
    ctx.entity = "case"
    action = _enum(ctx, Action, action_text, ctx.say("action_word"))
    extra: dict[str, Any] = {"reason": (a.reason or "").strip() or None}
    with ctx.client() as c:
        row = _case(ctx, c, a.ref)
        allowed = lifecycle.actions_for(row, c.level)
        if action not in allowed:
            details = {"action": action, "state": row["state"], "level": row["level"], "allowed": allowed}
            if row["voided"]:
                message = ctx.say("case_is_void", no=row["case_no"], reason=row["void_reason"])
            elif not allowed and LEVEL_ORDER.get(row["level"], 0) > LEVEL_ORDER.get(c.level, 0):
                message = ctx.say("level_too_low", no=row["case_no"], level=enum_text(Level, row["level"], ctx.lang),
                                  mine=enum_text(Level, c.level, ctx.lang))
            else:
                message = ctx.say(
                    "not_allowed", no=row["case_no"], state=enum_text(State, row["state"], ctx.lang),
                    action=enum_text(Action, action, ctx.lang),
                    allowed=("、" if ctx.lang == "zh" else ", ").join(enum_text(Action, x, ctx.lang, code=True) for x in allowed)
                    or ctx.say("nothing"),
                )
            raise Refusal(message, code="client.transition_not_allowed", details=details)
        if action in lifecycle.NEEDS_NODE:
            if not (a.to_node or "").strip():
                raise Refusal(ctx.say("needs_node", action=enum_text(Action, action, ctx.lang)),
                              code="client.input", details={"to_node": "required"})
            extra["to_node"] = a.to_node.strip()
        if action in lifecycle.NEEDS_DECISION:
            if not a.decision:
                raise Refusal(ctx.say("needs_decision", choices=forms.choices(Decision, ctx.lang)),
                              code="client.input", details={"decision": "required"})
            extra["decision"] = _enum(ctx, Decision, a.decision, "--decision")
        if action == Action.EXTEND and a.days:
            days = a.days.strip()
            if not days.isdigit() or not 1 <= int(days) <= lifecycle.MAX_EXTENSION_DAYS:
                raise Refusal(ctx.say("bad_days", max=lifecycle.MAX_EXTENSION_DAYS), code="client.input",
                              details={"days": a.days})
            extra["days"] = int(days)
        op = c.transition(row["id"], action, **extra)
        after = c.replica.get("case", row["id"]) or row
        return ctx.done(
            ctx.say("moved", no=row["case_no"], action=enum_text(Action, action, ctx.lang),
                    state=enum_text(State, after["state"], ctx.lang), level=enum_text(Level, after["level"], ctx.lang),
                    node=after["node"]),
            {"id": row["id"], "op_id": op.op_id, "state": after["state"], "level": after["level"], "node": after["node"]},
        )


def cmd_case_transition(ctx: Ctx, a: argparse.Namespace) -> int:
    return _transition(ctx, a, a.action)


def cmd_case_report_up(ctx: Ctx, a: argparse.Namespace) -> int:
    return _transition(ctx, a, Action.ESCALATE.value)


def cmd_case_void(ctx: Ctx, a: argparse.Namespace) -> int:
    reason = a.reason.strip()
    if not reason:
        raise ctx.refuse({"reason": ctx.say("reason_required")})
    with ctx.client() as c:
        row = _case(ctx, c, a.ref)
        if row["voided"]:
            raise Refusal(ctx.say("already_voided", no=row["case_no"], reason=row["void_reason"]),
                          code="client.already_voided")
        op = c.void("case", row["id"], reason)
        return ctx.done(ctx.say("voided", no=row["case_no"]), {"id": row["id"], "op_id": op.op_id})


def cmd_case_tag(ctx: Ctx, a: argparse.Namespace) -> int:
    if not a.add and not a.remove:
        raise ctx.refuse({"tags": ctx.say("tag_nothing")})
    add = [_enum(ctx, CaseTag, t, "--add") for t in a.add]
    remove = [_enum(ctx, CaseTag, t, "--remove") for t in a.remove]
    with ctx.client() as c:
        row = _case(ctx, c, a.ref)
        missing = [t for t in remove if t not in row["tags"]]
        if missing:
            raise ctx.refuse({"tags": ctx.say("tag_absent", tags="、".join(enum_text(CaseTag, t, ctx.lang) for t in missing))})
        ops = c.set_tags(row["id"], add=add, remove=remove)
        tags = (c.replica.get("case", row["id"]) or row)["tags"]
        shown = "、".join(enum_text(CaseTag, t, ctx.lang) for t in tags) or ctx.say("nothing")
        return ctx.done(ctx.say("tagged", no=row["case_no"], tags=shown),
                        {"id": row["id"], "op_ids": [op.op_id for op in ops], "tags": tags})


def _add_record(ctx: Ctx, a: argparse.Namespace, entity: str, raw: Mapping[str, str | None]) -> int:
    values = _coerce(ctx, entity, raw)
    with ctx.client() as c:
        row = _case(ctx, c, a.ref)
        record_id = c.add_record(entity, row["id"], values)
        return ctx.done(
            ctx.say("added", no=row["case_no"], what=entity_label(entity, ctx.lang)),
            {"id": record_id, "case_id": row["id"], "case_no": row["case_no"]},
        )


def _user(ctx: Ctx) -> str:
    return str(keystore.read_info(ctx.data).get("user") or "")


def cmd_visit_add(ctx: Ctx, a: argparse.Namespace) -> int:
    return _add_record(ctx, a, "visit", {
        "kind": a.kind, "visitor": a.visitor or _user(ctx), "visited_at": a.at or now_iso(),
        "place": a.place, "summary": a.summary,
    })


def cmd_mediation_add(ctx: Ctx, a: argparse.Namespace) -> int:
    code = _add_record(ctx, a, "mediation", {
        "kind": a.kind, "mediator": a.mediator or _user(ctx), "held_at": a.at or now_iso(),
        "place": a.place, "outcome": a.outcome, "agreement_form": a.form, "facts": a.facts,
        "terms": a.terms, "performance": a.performance, "performance_due": a.due,
        "remedies_told": _yes(a.remedies_told), "not_public": _yes(a.not_public),
    })
    if forms.enum_member(MediationOutcome, a.outcome) == MediationOutcome.NO_AGREEMENT and not a.remedies_told:
        ctx.note(ctx.say("remedies_hint"))
    return code


def cmd_notice_add(ctx: Ctx, a: argparse.Namespace) -> int:
    return _add_record(ctx, a, "notice", {
        "kind": a.kind, "served_at": a.served, "number": a.number, "summary": a.summary,
    })


def cmd_note_add(ctx: Ctx, a: argparse.Namespace) -> int:
    return _add_record(ctx, a, "note", {"text": a.text, "written_at": now_iso()})


def cmd_evaluation_add(ctx: Ctx, a: argparse.Namespace) -> int:
    return _add_record(ctx, a, "evaluation", {"rating": a.rating, "evaluated_at": now_iso(), "comment": a.comment})


def cmd_leader_assign(ctx: Ctx, a: argparse.Namespace) -> int:
    return _add_record(ctx, a, "leader_assignment", {
        "leader": a.leader, "handler": a.handler, "assigned_at": a.date or now_iso()[:10],
        "team": "\n".join(a.team) or None, "plan": a.plan, "response_plan": a.response_plan,
    })


def cmd_conflict_list(ctx: Ctx, a: argparse.Namespace) -> int:
    with ctx.client() as c:
        conflicts = _mask_conflicts(c.list_conflicts(status="open"), a.unmask)
    if ctx.json:
        return ctx.done("", {"conflicts": conflicts})
    return ctx.done(render_conflicts(conflicts, ctx.lang, with_case=True) if conflicts else ctx.say("no_conflicts"), {})


def cmd_conflict_resolve(ctx: Ctx, a: argparse.Namespace) -> int:
    prefix = a.id.strip().lower()
    with ctx.client() as c:
        matches = [x for x in c.list_conflicts(status="open") if prefix and x["id"].startswith(prefix)]
        if len(matches) != 1:
            key = "conflict_ambiguous" if matches else "conflict_not_found"
            raise Refusal(ctx.say(key, id=a.id), code="client.not_found", details={"id": a.id})
        cf = matches[0]
        ctx.entity = cf["entity"]
        if cf["kind"] == "concurrent_edit":
            if a.value is None and not a.keep_current:
                raise Refusal(ctx.say("resolve_how", id=cf["id"][:8]), code="client.input")
            value = None
            if a.value is not None:
                value = _coerce(ctx, cf["entity"], {cf["field"]: a.value}, partial=True).get(cf["field"], "")
            op = c.resolve(cf["id"], value, keep_current=a.keep_current)
        else:
            if a.value is not None:
                raise Refusal(ctx.say("resolve_no_value"), code="client.input")
            op = c.resolve(cf["id"])
        return ctx.done(ctx.say("resolved", id=cf["id"][:8], no=cf.get("case_no") or ""),
                        {"id": cf["id"], "op_id": op.op_id})


def _iso_from_ms(ms: str | None) -> str | None:
    return datetime.fromtimestamp(int(ms) / 1000, CHINA).isoformat(timespec="seconds") if ms else None


def cmd_status(ctx: Ctx, a: argparse.Namespace) -> int:
    with ctx.client() as c:
        conn = c.replica.conn
        info = {
            "device_id": c.device_id,
            "node": c.node,
            "node_name": c.keys.info.get("node_name") or "",
            "level": c.level,
            "user": c.user,
            "data": str(ctx.data),
            "pending_ops": c.pending_count(),
            "ops": c.replica.op_count(),
            "cases": int(conn.execute("SELECT COUNT(*) FROM cases WHERE voided=0").fetchone()[0]),
            "open_conflicts": int(conn.execute("SELECT COUNT(*) FROM conflicts WHERE status='open'").fetchone()[0]),
            "server": (json.loads(c.meta("server") or "null") or {}).get("url"),  # pinned at enrollment
            "last_sync": _iso_from_ms(c.meta("last_sync_ms")),  # written by field_client.sync
            "server_offset_ms": int(c.meta("server_offset_ms", "0") or 0),
            "server_answers": None,
        }
        if info["server"] and not a.offline:
            from field_client.sync import SyncAgent

            info["server_answers"] = SyncAgent(c).ping() is not None
    text = ctx.say(
        "status", **{**info, "level": enum_text(Level, info["level"], ctx.lang),
                     "server": info["server"] or ctx.say("not_enrolled"),
                     "last_sync": short_time(info["last_sync"]) if info["last_sync"] else ctx.say("never_synced"),
                     "answers": ctx.say({True: "server_answers", False: "server_silent", None: "server_unknown"}[
                         info["server_answers"]]),
                     "offset": f"{info['server_offset_ms'] / 1000:+.1f} s"},
    )
    return ctx.done(text, info)


def _agent(ctx: Ctx, c: FieldClient, *, server: str | None = None) -> Any:
    from field_client.sync import HttpTransport, SyncAgent

    def progress(stage: str, done: int, total: int) -> None:
        if not ctx.json and total:
            ctx.note(ctx.say("progress", stage={"push": "上传 push", "pull": "下载 pull"}.get(stage, stage),
                             done=done, total=total))

    return SyncAgent(c, HttpTransport(server) if server else None, progress=progress)


def cmd_enroll(ctx: Ctx, a: argparse.Namespace) -> int:
    with ctx.client() as c:
        info = _agent(ctx, c).enroll(a.code)
    return ctx.done(ctx.say("enrolled", url=info["url"], node=info["node"]["code"], n=len(info["subtree"])),
                    {"server": info["url"], "node": info["node"], "subtree": info["subtree"]})


def _held_lines(ctx: Ctx, held: list[dict[str, Any]]) -> str:
    return "".join("\n" + ctx.say("held_op", op=str(h.get("op_id"))[:8], code=h.get("code"), message=h.get("message"))
                   for h in held)


def cmd_sync(ctx: Ctx, a: argparse.Namespace) -> int:
    with ctx.client() as c:
        report = _agent(ctx, c, server=a.server).sync()
    text = ctx.say("synced", envelopes=report.pushed_envelopes, ops=report.pushed_ops, dups=report.duplicates,
                   pulled=report.pulled_ops, held=len(report.quarantined)) + _held_lines(ctx, report.quarantined)
    return ctx.done(text, report.__dict__)


def cmd_export(ctx: Ctx, a: argparse.Namespace) -> int:
    with ctx.client() as c:
        paths = _agent(ctx, c).export_bundle(a.folder)
    return ctx.done(ctx.say("exported", n=len(paths), folder=a.folder), {"files": [str(p) for p in paths]})


def cmd_import(ctx: Ctx, a: argparse.Namespace) -> int:
    with ctx.client() as c:
        report = _agent(ctx, c).import_bundle(a.folder)
    text = ctx.say("imported", pulled=report.pulled_ops, held=len(report.quarantined)) + _held_lines(ctx, report.quarantined)
    return ctx.done(text, report.__dict__)


def cmd_serve(ctx: Ctx, a: argparse.Namespace) -> int:
    port = a.port.strip()
    if not port.isdigit() or int(port) > 65535:
        raise Refusal(ctx.say("bad_port", port=a.port), code="client.input", details={"port": a.port})
    keystore.read_info(ctx.data)  # a device must exist here
    try:
        web = importlib.import_module("field_client.web")  # lazily: the CLI works without it
    except ModuleNotFoundError as exc:
        if exc.name != "field_client.web":
            raise
        raise Refusal(ctx.say("no_web"), code="client.web_missing") from exc
    serve = getattr(web, "serve", None)
    if serve is None:
        raise Refusal(ctx.say("no_web"), code="client.web_missing")
    serve(str(ctx.data), host=a.host, port=int(port), open_browser=not a.no_browser)
    return 0


# ---------------------------------------------------------------------------
# The boundary: every error becomes a sentence (or a JSON body) and an exit code
# ---------------------------------------------------------------------------


# errors from below whose sentence the message table says (with {data}, {path}, {why})
SAID_BY_CODE = frozenset({
    "client.not_initialised", "client.already_initialised", "client.wrong_passphrase",
    "client.keyfile_damaged", "replica.damaged", "replica.missing", "replica.busy", "replica.error",
})


def describe(exc: MinqingError, ctx: Ctx) -> tuple[str, Any]:
    """(sentence in the person's language, details) for any error raised on purpose."""
    if isinstance(exc, Refusal):
        return exc.message, exc.details
    if isinstance(exc, OpInvalid | OpsRejected):
        fields = forms.explain(exc, ctx.entity, lang=ctx.lang)
        sep = "; " if ctx.lang == "en" else "；"
        return ctx.say("not_saved", what=sep.join(fields.values())), fields
    if exc.code in SAID_BY_CODE:
        details = exc.details if isinstance(exc.details, dict) else {}
        default = keystore.keyfile_path(ctx.data) if exc.code.startswith("client.") else ctx.data / REPLICA_FILE
        path = details.get("path") or default
        return ctx.say(exc.code, data=ctx.data, path=path, why=details.get("sqlite", exc.message)), exc.details
    return _one_language(exc.message, ctx.lang), exc.details


def _one_language(message: str, lang: str) -> str:
    """The store's messages read "中文 (English)": keep the half the person reads."""
    m = re.fullmatch(r"(.*?[\u4e00-\u9fff].*?)\s*\(([^()]*[A-Za-z][^()]*)\)(.*)", message, re.S)
    if not m:
        return message
    return (m[2] + m[3]) if lang == "en" else (m[1] + m[3])


def _fail(ctx: Ctx, code: str, message: str, details: Any, exit_code: int) -> int:
    if ctx.json:
        body = {"ok": False, "error": {"code": code, "message": message, "details": details}}
        _print(json.dumps(body, ensure_ascii=False, indent=2, default=str))
    else:
        print(message, file=sys.stderr)
    return exit_code


def _prescan(argv: Sequence[str]) -> tuple[str, bool]:
    """--lang and --json before argparse runs (its own errors must speak the right language)."""
    lang = "zh"
    for i, arg in enumerate(argv):
        if arg == "--lang" and i + 1 < len(argv):
            lang = argv[i + 1]
        elif arg.startswith("--lang="):
            lang = arg.split("=", 1)[1]
    return ("en" if lang == "en" else "zh"), "--json" in argv


def _data_dir(a: argparse.Namespace) -> Path:
    raw = getattr(a, "data", None) or os.environ.get(DATA_ENV) or DEFAULT_DATA
    return Path(os.path.expanduser(raw))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``field-client`` with ``argv`` (default: the command line); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    lang, want_json = _prescan(args)
    ctx = Ctx(lang=lang, json=want_json, data=Path(os.path.expanduser(os.environ.get(DATA_ENV) or DEFAULT_DATA)),
              passphrase_file=None)
    try:
        parser = build_parser(lang)
        try:
            a = parser.parse_args(args)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        except UsageError as exc:
            return _fail(ctx, "cli.usage", _usage_sentence(exc.message, exc.prog, lang), None, 2)
        ctx = Ctx(lang=getattr(a, "lang", lang), json=bool(getattr(a, "json", False)), data=_data_dir(a),
                  passphrase_file=getattr(a, "passphrase_file", None))
        return int(a.func(ctx, a) or 0)
    except MinqingError as exc:
        message, details = describe(exc, ctx)
        return _fail(ctx, exc.code, message, details, 2)
    except sqlite3.Error as exc:  # a read outside the replica's own translation
        err = translate_sqlite(exc, str(ctx.data / REPLICA_FILE))
        message, details = describe(err, ctx)
        return _fail(ctx, err.code, message, details, 2)
    except OSError as exc:  # a folder that cannot be written, a disk that is full
        where = exc.filename or ctx.data
        return _fail(ctx, "client.io", ctx.say("io", path=where, why=exc.strerror or exc), {"path": str(where)}, 2)
    except KeyboardInterrupt:
        return _fail(ctx, "cli.interrupted", ctx.say("interrupted"), None, 130)
    except Exception as exc:  # a fault of ours: a sentence, never a traceback
        return _fail(ctx, "client.internal", ctx.say("internal", what=f"{type(exc).__name__}: {exc}"), None, 1)


__all__ = ["build_parser", "command_paths", "main"]


if __name__ == "__main__":
    sys.exit(main())
