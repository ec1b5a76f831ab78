"""``sync-server``: the county server's command line (docs/cli.md, docs/sync.md).

Every command has ``--help``; reading commands take ``--json``. A refusal prints one
sentence to stderr and exits 2 (with ``--json``: the error body on stdout); no
traceback reaches the person at the keyboard.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from schema.errors import MinqingError
from sync_server import __version__

CHINA = timezone(timedelta(hours=8))
DEFAULT_PORT = 8730


def _ms(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, CHINA).strftime("%Y-%m-%d %H:%M")


def _out(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, indent=1, default=str))
    else:
        print(text())


def _store(args: argparse.Namespace) -> Any:
    from sync_server.store import ServerStore

    return ServerStore(args.data)


def _service(args: argparse.Namespace) -> Any:
    from sync_server.service import SyncService

    store = _store(args)
    return SyncService(store, rules=store.rules())


def _password(prompt: str) -> str:
    env = os.environ.get("MINQING_PASSWORD")
    if env:
        return env
    if not sys.stdin.isatty():
        raise MinqingError("请通过环境变量 MINQING_PASSWORD 提供密码 (set MINQING_PASSWORD; no terminal to ask)",
                           code="cli.no_password")
    first = getpass.getpass(prompt)
    if getpass.getpass("再输一次 (again): ") != first:
        raise MinqingError("两次输入的密码不一致 (the passwords differ)", code="cli.password_mismatch")
    return first


# ---- commands ----

def cmd_init(args: argparse.Namespace) -> int:
    from sync_server.store import ServerStore

    store = ServerStore.init(args.data)
    store.set_meta("public_url", args.url)
    msg = [f"✔ 服务器数据目录已建立 (server initialised): {args.data}", f"  服务器节点 (node id): {store.keys.node_id}",
           f"  对外地址 (address for enrollment codes): {args.url}"]
    if args.admin:
        from sync_server.users import add_user

        with store.transaction():
            add_user(store.conn, args.admin, _password(f"管理员 {args.admin} 的密码 (password): "), role="admin",
                     now_ms=store.now_ms(), confidential=True)
        msg.append(f"  管理员 (administrator): {args.admin}")
    store.close()
    _out(args, {"ok": True, "data": args.data, "node_id": store.keys.node_id}, lambda: "\n".join(msg))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from waitress import serve

    from sync_server.app import create_app
    from sync_server.store import ServerStore

    store = ServerStore(args.data)  # fails early, with a sentence, on a bad folder
    rules = store.rules()  # and on a bad rules file, naming the line and the reason
    store.close()
    from sync_server.ops_log import hold_serving_lock

    hold_serving_lock(args.data)  # one server per folder; restore refuses a served folder (docs/audit.md)
    app = create_app(args.data)
    timer = None
    if not args.no_sweep:
        from sync_server.sweep import SweepTimer

        timer = SweepTimer(args.data, rules)
        timer.start()
    print(f"▶ 县服务器运行于 (county server on) http://{args.host}:{args.port}  Ctrl-C 停止", flush=True)
    if timer is not None:
        print(f"  时限巡查每 {rules.sweep_interval_minutes} 分钟一次 (deadline sweep every "
              f"{rules.sweep_interval_minutes} min)", flush=True)
    try:
        serve(app, host=args.host, port=args.port, threads=4, ident="minqing")
    finally:
        if timer is not None:
            timer.stop()
    return 0


def _parse_now(text: str | None) -> int | None:
    if text is None:
        return None
    from schema.obligations import ms_of

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise MinqingError(f"--now 应为 ISO 时间，如 2026-11-22T09:00+08:00 (bad --now {text!r})",
                           code="cli.bad_time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=CHINA)  # a time without an offset is China time
    return ms_of(value.isoformat())


def cmd_sweep(args: argparse.Namespace) -> int:
    from sync_server.service import SyncService
    from sync_server.sweep import Sweeper

    store = _store(args)
    rules = store.rules()
    now = _parse_now(args.now) or store.now_ms()
    sweeper = Sweeper(SyncService(store, rules=rules), rules)

    def progress(done: int, total: int) -> None:
        if not args.json and total > 200 and sys.stderr.isatty():
            print(f"\r  巡查 (sweeping) {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    report = sweeper.sweep(now, progress=progress)
    store.close()
    d = report.to_dict()

    def text() -> str:
        lines = [f"✔ 时限巡查完成 (sweep done) @ {d['now']}: 检查 {d['cases']} 件 (cases examined; "
                 f"{d['due']} 到期 due, {d['unswept']} 新变动 changed), 写入 {d['ops_written']} 条 (ops written), "
                 f"{d['duration_ms']:.0f} ms"]
        lines += [f"  {k}: {v}" for k, v in d["by_kind"].items()]
        return "\n".join(lines)

    _out(args, {"ok": True, **d}, text)
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    from schema.rules import load_rules_file

    if args.file:
        rules = load_rules_file(args.file)
    else:
        store = _store(args)
        rules = store.rules()
        store.close()
    data = {"ok": True, "county": rules.county,
            "rules": {r.id: {"days": r.days, "counted": r.counted, "enabled": r.enabled, "label": r.zh}
                      for r in rules.rules.values()}}
    _out(args, data, lambda: "✔ 规则文件有效 (the rules are valid)\n" + "\n".join(
        f"  {r.id:30} {r.zh}{'' if r.enabled else '  (停用 disabled)'}" for r in rules.rules.values()))
    return 0


def cmd_jurisdiction_import(args: argparse.Namespace) -> int:
    from sync_server.jurisdiction import import_file

    store = _store(args)
    result = import_file(store, args.file)
    _out(args, {"ok": True, **result},
         lambda: f"✔ 导入 {result['imported']} 个单位，其中新增 {result['new']} 个 (imported {result['imported']}, new {result['new']})")
    return 0


def cmd_jurisdiction_list(args: argparse.Namespace) -> int:
    nodes = _store(args).nodes_list()
    _out(args, nodes, lambda: "\n".join(f"{n['code']:<14} {n['level']:<9} {n['name']}  ← {n['parent'] or '-'}"
                                        for n in nodes) or "(空 / empty)")
    return 0


def cmd_device_add(args: argparse.Namespace) -> int:
    svc = _service(args)
    url = args.url or svc.store.meta("public_url") or f"http://127.0.0.1:{DEFAULT_PORT}"
    code = svc.create_enroll_code(args.node, url=url, user=args.user, hours=args.hours)
    _out(args, {"ok": True, "code": code, "node": args.node, "hours": args.hours},
         lambda: f"一次性注册码 (one-time enrollment code), {args.hours:g} 小时内有效 (valid for {args.hours:g} h):\n\n{code}\n\n"
                 f"在笔记本上运行 (on the laptop run): field-client enroll --code <code>")
    return 0


def cmd_device_list(args: argparse.Namespace) -> int:
    devices = _store(args).devices()
    for d in devices:
        d.pop("x25519", None)
        d.pop("ed25519", None)

    def text() -> str:
        lines = [f"{'设备 device':<18}{'单位 node':<12}{'状态 status':<10}{'最后联系 last contact':<20}{'序号 seq':>8}"]
        for d in devices:
            lines.append(f"{d['device_id']:<18}{d['node']:<12}{d['status']:<10}{_ms(d['last_contact_ms']):<20}{d['last_seq']:>8}")
        return "\n".join(lines)

    _out(args, devices, text)
    return 0


def cmd_device_revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    dev = store.device(args.device)
    if dev is None:
        from sync_server.errors import NotFound

        raise NotFound(f"没有这台设备 {args.device} (no such device)")
    with store.transaction():
        store.conn.execute("UPDATE devices SET status='revoked', revoked_ms=?, revoked_reason=? WHERE device_id=?",
                           (store.now_ms(), args.reason, args.device))
    _out(args, {"ok": True, "device": args.device},
         lambda: f"✔ 已吊销 {args.device}；它下次联系时会收到清除数据的指令 (revoked; it will be told to erase its data)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from sync_server.bundles import import_folder

    report = import_folder(_service(args), args.folder)
    _out(args, {"ok": not report.refused, **report.__dict__},
         lambda: (f"文件 {report.files} 个: 合并 {report.merged}, 重复 {report.duplicates}, 请求 {report.requests}, "
                  f"拒收 {len(report.refused)}; 应用操作 {report.applied_ops}, 隔离 {report.quarantined}\n"
                  + "".join(f"  ✘ {r['file']}: {r['code']} {r['message']}\n" for r in report.refused)))
    return 0 if not report.refused else 1


def cmd_export_for(args: argparse.Namespace) -> int:
    from sync_server.bundles import export_for

    paths = export_for(_service(args), args.device, args.folder)
    _out(args, {"ok": True, "files": [str(p) for p in paths]},
         lambda: f"✔ 写出 {len(paths)} 个回复文件 (wrote {len(paths)} answer file(s)) 到 {args.folder}")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    report = _service(args).rebuild_report()

    def text() -> str:
        lines = [f"账本 (ledger): {report['chain_entries']} 条, 链 {'完好 (intact)' if report['chain_ok'] else '损坏 (BROKEN)'}"]
        if not report["chain_ok"]:
            lines.append(f"  第一处损坏 (first bad entry): {report['chain_first_bad']}: {report['chain_reason']}")
        lines.append(f"实时摘要 (live digest):    {report['live_digest']}")
        lines.append(f"重建摘要 (rebuilt digest): {report['rebuilt_digest']}")
        lines.append("✔ 由账本重建的状态与实时状态一致 (rebuilt state equals the live state)" if report["equal"]
                     else f"✘ 不一致 (differs): {', '.join(report['tables_differing']) or 'digest'}")
        return "\n".join(lines)

    _out(args, report, text)
    return 0 if report["equal"] and report["chain_ok"] else 1


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    rows = _store(args).quarantined(None if args.all else "held")
    _out(args, rows, lambda: "\n".join(
        f"#{q['id']:<5} {q['status']:<9} {q['code']:<22} {q['device'] or '-':<17} {q['message']}" for q in rows)
        or "隔离区为空 (nothing held)")
    return 0


def cmd_quarantine_release(args: argparse.Namespace) -> int:
    n = _service(args).release(args.ids, by=args.by)
    _out(args, {"ok": True, "released": n}, lambda: f"✔ 已放行 {n} 条 (released {n}) 并记入账本 (recorded in the ledger)")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from sync_server.users import add_user

    store = _store(args)
    with store.transaction():
        user = add_user(store.conn, args.username, _password(f"{args.username} 的密码 (password): "), role=args.role,
                        now_ms=store.now_ms(), display_name=args.name or "", confidential=args.confidential)
    _out(args, {"ok": True, **user}, lambda: f"✔ 已创建用户 {args.username} ({args.role})")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from sync_server.users import list_users

    users = list_users(_store(args).conn)
    _out(args, users, lambda: "\n".join(f"{u['username']:<16} {u['role']:<12} 保密权限={'有' if u['confidential'] else '无'}"
                                        for u in users) or "(无用户 / none)")
    return 0


# ---- parser ----

def cmd_demo(args: argparse.Namespace) -> int:
    from sync_server import demo

    return demo.run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sync-server", description="民情 县服务器 (Minqing county server)")
    p.add_argument("--version", action="version", version=f"sync-server {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(parent: Any, name: str, help_text: str, func: Callable[[argparse.Namespace], int],
            data: bool = True, json_flag: bool = True) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_text, description=help_text)
        if data:
            sp.add_argument("--data", default=os.environ.get("MINQING_SERVER_DATA", "server-data"),
                            help="服务器数据目录 (server data folder; env MINQING_SERVER_DATA)")
        if json_flag:
            sp.add_argument("--json", action="store_true", help="机器可读输出 (machine-readable output)")
        sp.set_defaults(func=func)
        return sp

    sp = add(sub, "init", "建立服务器数据目录、密钥和首个管理员 (create the data folder, keys, first admin)", cmd_init)
    sp.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", help="笔记本连接的地址 (address laptops use)")
    sp.add_argument("--admin", help="首个管理员用户名 (first administrator's username)")

    sp = add(sub, "serve", "运行县服务器 (run the county server)", cmd_serve, json_flag=False)
    sp.add_argument("--host", default="127.0.0.1", help="监听地址 (listen address; default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"端口 (port; default {DEFAULT_PORT})")
    sp.add_argument("--no-sweep", action="store_true", help="不运行定时时限巡查 (no timed deadline sweep)")

    sp = add(sub, "sweep", "时限巡查：预警、超期、上报、回访、撤销 (run the deadline sweep)", cmd_sweep)
    sp.add_argument("--now", help="按此时间巡查，ISO 8601，无时区按北京时间 (sweep as of this time)")

    rp = sub.add_parser("rules", help="县级时限规则 (the county's deadline rules)",
                        description="县级时限规则 (the county's deadline rules)")
    rsub = rp.add_subparsers(dest="sub", metavar="SUBCOMMAND")
    sp = add(rsub, "check", "检查规则文件 (check a rules file; default: the data folder's rules.toml)",
             cmd_rules_check)
    sp.add_argument("file", nargs="?", help="规则文件 (rules file; TOML)")

    jp = sub.add_parser("jurisdiction", help="辖区 (jurisdiction tree)", description="辖区 (jurisdiction tree)")
    jsub = jp.add_subparsers(dest="sub", metavar="SUBCOMMAND")
    sp = add(jsub, "import", "从 CSV 导入辖区 code,name,level,parent (import the tree from CSV)", cmd_jurisdiction_import)
    sp.add_argument("file", help="CSV 文件 (CSV file, UTF-8)")
    add(jsub, "list", "列出辖区 (list the tree)", cmd_jurisdiction_list)

    dp = sub.add_parser("device", help="笔记本设备 (laptops)", description="笔记本设备 (laptops)")
    dsub = dp.add_subparsers(dest="sub", metavar="SUBCOMMAND")
    sp = add(dsub, "add", "生成一次性注册码 (make a one-time enrollment code)", cmd_device_add)
    sp.add_argument("--node", required=True, help="设备所属单位代码 (the laptop's node code)")
    sp.add_argument("--user", help="使用人 (the person who will use it)")
    sp.add_argument("--hours", type=float, default=72, help="有效小时数 (hours the code stays valid; default 72)")
    sp.add_argument("--url", help="笔记本连接的地址 (server address to put in the code)")
    add(dsub, "list", "列出设备 (list devices)", cmd_device_list)
    sp = add(dsub, "revoke", "吊销设备 (revoke a device; it will be told to erase its data)", cmd_device_revoke)
    sp.add_argument("device", help="设备编号 (device id)")
    sp.add_argument("--reason", default="revoked", help="原因 (reason)")

    sp = add(sub, "import", "导入U盘带来的数据包 (merge bundle files from a folder)", cmd_import)
    sp.add_argument("folder", help="数据包所在目录 (folder with mq-*.mqe files)")
    sp = add(sub, "export-for", "为某台设备写出回复数据包 (write answer files for one device)", cmd_export_for)
    sp.add_argument("device", help="设备编号 (device id)")
    sp.add_argument("folder", help="写入目录 (folder to write to)")
    add(sub, "rebuild", "由账本重建并与实时状态比对 (rebuild from the ledger and compare)", cmd_rebuild)

    qp = sub.add_parser("quarantine", help="隔离区 (held ops)", description="隔离区 (held ops)")
    qsub = qp.add_subparsers(dest="sub", metavar="SUBCOMMAND")
    sp = add(qsub, "list", "列出被隔离的操作 (list held ops)", cmd_quarantine_list)
    sp.add_argument("--all", action="store_true", help="包括已放行的 (include released)")
    sp = add(qsub, "release", "放行被隔离的操作 (release held ops into the merge)", cmd_quarantine_release)
    sp.add_argument("ids", type=int, nargs="+", help="隔离编号 (quarantine ids)")
    sp.add_argument("--by", default=getpass.getuser(), help="放行人 (who releases)")

    up = sub.add_parser("user", help="用户 (people who log in)", description="用户 (people who log in)")
    usub = up.add_subparsers(dest="sub", metavar="SUBCOMMAND")
    sp = add(usub, "add", "创建用户，密码取自 MINQING_PASSWORD 或提示输入 (create a user)", cmd_user_add)
    sp.add_argument("username", help="用户名 (username)")
    sp.add_argument("--role", required=True, choices=["coordinator", "auditor", "admin"], help="角色 (role)")
    sp.add_argument("--name", help="姓名 (display name)")
    sp.add_argument("--confidential", action="store_true", help="可查看检举控告人身份 (may see reporters' identities)")
    add(usub, "list", "列出用户 (list users)", cmd_user_list)
    sp = sub.add_parser("demo", help="演示县：县服务器、十七台笔记本、七十五天的案件，并启动服务 (build and serve the demo county)",
                        description="演示县：县服务器、十七台笔记本、七十五天的案件，并在本机启动服务 "
                                    "(build, or reuse, the demo county and serve it on 127.0.0.1)")
    sp.add_argument("--data", default="demo-data", help="演示数据目录 (demo folder; default demo-data)")
    sp.add_argument("--cases", type=int, default=25,
                    help="每台村级笔记本登记的案件数 (cases each village laptop registers; default %(default)s)")
    sp.add_argument("--days", type=int, default=75, help="模拟的天数，截止到现在 (days of history up to now; default %(default)s)")
    sp.add_argument("--seed", type=int, default=2026, help="随机种子 (random seed; default %(default)s)")
    sp.add_argument("--fresh", action="store_true", help="即使已有演示数据也重建 (rebuild even if the folder holds a demo)")
    sp.add_argument("--no-serve", action="store_true", help="只生成数据，不启动服务 (build only; do not serve)")
    sp.add_argument("--port", type=int, default=DEFAULT_PORT, help="县服务器端口 (county server port; default %(default)s)")
    sp.add_argument("--ui-port", type=int, default=DEFAULT_PORT + 1,
                    help="笔记本网页端口 (laptop web UI port; default %(default)s)")
    sp.add_argument("--laptop", type=int, default=1,
                    help="网页显示哪台笔记本，1-17 (which laptop the web UI serves; default 1: 东镇东村 li.ming)")
    sp.set_defaults(func=cmd_demo)

    # audit, backup, restore, device lifecycle (docs/audit.md)
    from sync_server.cli_audit import register

    register(sub, add, devices=dsub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args))
    except MinqingError as exc:
        if getattr(args, "json", False):
            print(json.dumps(exc.to_dict(), ensure_ascii=False, default=str))
        else:
            print(f"✘ {exc.message}", file=sys.stderr)
            if isinstance(exc.details, list):
                for line in exc.details[:20]:
                    print(f"  {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `sync-server device list | head`: the reader has all it wanted
        _quiet_stdout()
        return 0
    except Exception as exc:  # noqa: BLE001 - the last guard: a sentence, never a traceback
        print(f"✘ 意外错误，请把这句话告诉 IT (unexpected error): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests)
        pass


if __name__ == "__main__":
    raise SystemExit(main())
