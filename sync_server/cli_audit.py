"""``sync-server`` commands of the IT officer (docs/audit.md, docs/server-cli.md):

    audit verify | audit devices | audit report     the proof that work arrived intact
    backup DEST | restore SRC                        a consistent copy while serving, and back
    device reenroll OLD | device history ID          a restored laptop's new identity; lifecycle events

``register`` adds them to the parser ``sync_server.cli.build_parser`` builds. Refusals
are MinqingErrors with a stable code: ``cli.main`` prints the sentence (exit 2) or the
JSON error body.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

DEFAULT_PORT = 8730


def _emit(args: argparse.Namespace, data: Any, text: Callable[[], str], csv_text: Callable[[], str] | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, indent=1, default=str))
    elif csv_text is not None and getattr(args, "csv", False):
        sys.stdout.write(csv_text())
    else:
        print(text())


def _store(args: argparse.Namespace) -> Any:
    from sync_server.store import ServerStore

    return ServerStore(args.data)


class _Progress:
    """Progress lines on stderr, at most one a second (and the last)."""

    LABELS = {"chain": "校验哈希链 (hash chain)", "rebuild": "打开信封并重建 (open envelopes, rebuild)"}

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.last = 0.0
        self.t0 = time.monotonic()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if self.quiet or total <= 0 or (done < total and now - self.last < 1.0):
            return
        if total < 2000 and now - self.t0 < 2.0:  # a short run needs no progress
            return
        self.last = now
        pct = 100 * done / total
        print(f"  {self.LABELS.get(stage, stage)}: {done}/{total} ({pct:.0f}%), {now - self.t0:.1f} s",
              file=sys.stderr, flush=True)


# ---- audit ----


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from sync_server.audit import verify
    from sync_server.service import SyncService

    store = _store(args)
    try:
        report = verify(SyncService(store), progress=_Progress(quiet=args.quiet))
    finally:
        store.close()

    def text() -> str:
        lines = [f"账本 (ledger): {report['entries']} 条 (entries), {report['seconds']} s",
                 f"  哈希链 (hash chain):        {'✔ 完好 (intact)' if report['chain_ok'] else '✘ 损坏 (BROKEN)'}",
                 f"  签名与解密 (signatures, decryption): {'✔ 全部通过 (all pass)' if report['envelopes_ok'] else '✘ 失败 (FAILED)'}",
                 f"  重建对比 (rebuilt vs live): {'✔ 一致 (equal)' if report['state_equal'] else '✘ 不一致 (DIFFERS)'}",
                 f"  实时摘要 (live digest):    {report['live_digest']}",
                 f"  重建摘要 (rebuilt digest): {report['rebuilt_digest']}"]
        bad = report["first_bad"]
        if bad:
            where = f"{bad.get('kind', '?')} {bad.get('device', '?')} #{bad.get('device_seq', '?')}, {bad.get('received', '-')}"
            lines.append(f"✘ 第一处问题在账本第 {bad['ledger_seq']} 条 (first bad entry: {bad['ledger_seq']}; {where}): "
                         f"{bad['reason']}")
        elif not report["state_equal"]:
            lines.append(f"✘ 不一致的表 (tables differing): {', '.join(report['tables_differing']) or 'op digest'}")
        lines += [f"  ! {w}" for w in report["warnings"]]
        lines.append("✔ 审计通过 (audit passed)" if report["ok"] else "✘ 审计未通过 (audit FAILED)")
        return "\n".join(lines)

    _emit(args, report, text)
    return 0 if report["ok"] else 1


def _ms(ms: int | None) -> str:
    from sync_server.audit import _when

    return _when(ms)[:16].replace("T", " ") if ms else "-"


def cmd_audit_devices(args: argparse.Namespace) -> int:
    from sync_server.audit import devices, devices_csv

    store = _store(args)
    try:
        rows = devices(store)
    finally:
        store.close()

    def text() -> str:
        if not rows:
            return "(没有设备 / no devices)"
        out = []
        for d in rows:
            gaps = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in d["gaps"]) or "无 none"
            offset = f"{d['clock_offset_ms'] / 1000:+.1f} s" if d["clock_offset_ms"] is not None else "-"
            out.append(f"{d['device_id']}  {d['node']} {d['node_name']}  {d['user'] or '-'}  [{d['status']}]"
                       + (f" → {d['replaced_by']}" if d["replaced_by"] else ""))
            out.append(f"  版本 (app) {d['app_version'] or '-'} | 最后联系 (last contact) {_ms(d['last_contact_ms'])} | "
                       f"时钟差 (clock offset) {offset}")
            out.append(f"  已收到 (received) {d['envelopes']} 批, 最后序号 (last seq) {d['last_seq']} | "
                       f"缺号 (gaps) {gaps}")
            out.append(f"  拒收 (refused) {d['refused']} {_codes(d['refused_by_code'])}| 隔离 (quarantined) "
                       f"{d['quarantined']} {_codes(d['quarantined_by_code'])}| 待同步案件 (cases awaiting its sync) "
                       f"{d['awaiting_sync']}" + (f" | 替换了 (replaces) {', '.join(d['replaces'])}" if d["replaces"] else "")
                       + (f" | 换钥 (keys rotated) {d['keys_rotated']}" if d["keys_rotated"] else ""))
        return "\n".join(out)

    _emit(args, rows, text, lambda: devices_csv(rows))
    return 0


def _codes(counts: dict[str, int]) -> str:
    return ("(" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ") ") if counts else ""


def cmd_audit_report(args: argparse.Namespace) -> int:
    from sync_server.audit import DAY_MS, METRIC_KEYS, parse_day, report, report_csv

    since = parse_day(args.since)
    until = parse_day(args.until, "--until") + DAY_MS if args.until else None
    store = _store(args)
    try:
        rep = report(store, since, until)
    finally:
        store.close()
    heads = ("收到 envelopes", "合并 ops merged", "隔离 held", "放行 released", "拒收 refused",
             "冲突 conflicts", "解决 resolved")

    def table(rows: list[dict[str, Any]], key: str) -> list[str]:
        lines = [f"{key:<18}" + "".join(f"{h:>17}" for h in heads)]
        for r in rows:
            lines.append(f"{r[key]:<18}" + "".join(f"{r[k]:>17}" for k in METRIC_KEYS))
        return lines

    def text() -> str:
        t = rep["totals"]
        lines = [f"审计报告 (audit report) {rep['since']} — {rep['until'] or '今天 today'}",
                 "合计 (totals): " + ", ".join(f"{k} {t[k]}" for k in METRIC_KEYS)]
        if rep["refused_by_code"]:
            lines.append("拒收原因 (refused by reason): " + ", ".join(f"{k} {v}" for k, v in rep["refused_by_code"].items()))
        if rep["quarantined_by_code"]:
            lines.append("隔离原因 (quarantined by reason): "
                         + ", ".join(f"{k} {v}" for k, v in rep["quarantined_by_code"].items()))
        lines += ["", "按日 (per day)", *table(rep["by_day"], "day"), "", "按设备 (per device)",
                  *table(rep["by_device"], "device")]
        return "\n".join(lines)

    _emit(args, rep, text, lambda: report_csv(rep))
    return 0


# ---- backup and restore ----


def cmd_backup(args: argparse.Namespace) -> int:
    from sync_server.backup import backup

    result = backup(args.data, args.dest)
    head = result["ledger_head"]
    _emit(args, result, lambda: (
        f"✔ 已备份到 (backed up to) {result['dest']}: {result['bytes']:,} 字节 (bytes), {result['seconds']} s\n"
        f"  账本 (ledger) 第 {head['ledger_seq']} 条 {head['hash'][:16]}…, 操作摘要 (op digest) {result['op_digest'][:24]}…\n"
        f"  含服务器私钥，请妥善保管 (it holds the server's private keys: keep it locked away)"))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from sync_server.backup import restore

    result = restore(args.src, args.data, force=args.force)
    _emit(args, result, lambda: "\n".join(filter(None, [
        f"✔ 已从 {result['from']} 恢复到 {result['data']} (restored), 账本 (ledger) 第 "
        f"{result['ledger_head']['ledger_seq']} 条",
        f"  原有内容已移到 (previous content moved to) {result['moved_aside']}" if result["moved_aside"] else "",
        "  下一步 (next): sync-server audit verify; 然后启动服务，笔记本同步时会补发服务器缺少的数据 "
        "(then serve: laptops resend what the server lost when they sync)"])))
    return 0


# ---- device lifecycle ----


def cmd_device_reenroll(args: argparse.Namespace) -> int:
    from sync_server.lifecycle import create_reenroll_code
    from sync_server.service import SyncService

    svc = SyncService(_store(args))
    url = args.url or svc.store.meta("public_url") or f"http://127.0.0.1:{DEFAULT_PORT}"
    code = create_reenroll_code(svc, args.device, url=url, hours=args.hours)
    _emit(args, {"ok": True, "code": code, "replaces": args.device, "hours": args.hours}, lambda: (
        f"重新注册码 (re-enrollment code) 替换设备 (replacing) {args.device}, {args.hours:g} 小时内有效 (valid "
        f"{args.hours:g} h):\n\n{code}\n\n在从备份恢复的笔记本上运行 (on the restored laptop run): "
        f"field-client reenroll --code <code>"))
    return 0


def cmd_device_history(args: argparse.Namespace) -> int:
    from sync_server.errors import NotFound
    from sync_server.lifecycle import events, retired_keys

    store = _store(args)
    try:
        dev = store.device(args.device)
        if dev is None:
            raise NotFound(f"没有这台设备 {args.device} (no such device)")
        rows = events(store.conn, args.device)
        keys = retired_keys(store.conn, args.device)
    finally:
        store.close()
    data = {"ok": True, "device": args.device, "status": dev["status"], "replaced_by": dev["replaced_by"],
            "enrolled_ms": dev["enrolled_ms"], "revoked_ms": dev["revoked_ms"], "events": rows,
            "retired_keys": [{"until_seq": k["until_seq"], "retired_ms": k["retired_ms"]} for k in keys]}
    _emit(args, data, lambda: "\n".join(
        [f"{args.device} [{dev['status']}] 注册于 (enrolled) {_ms(dev['enrolled_ms'])}"]
        + [f"  {_ms(e['at_ms'])}  {e['kind']:<10} {json.dumps(e['detail'], ensure_ascii=False)}" for e in rows]
        + ([f"  已吊销 (revoked) {_ms(dev['revoked_ms'])}"] if dev["revoked_ms"] else [])))
    return 0


# ---- registration ----


def register(sub: Any, add: Callable[..., argparse.ArgumentParser], *, devices: Any) -> None:
    """Add the commands to ``sync-server``'s parser (``add`` is cli.build_parser's helper)."""
    ap = sub.add_parser("audit", help="审计：账本校验、设备、报表 (audit: verify, devices, report)",
                        description="审计：账本校验、设备、报表 (audit: verify, devices, report)")
    asub = ap.add_subparsers(dest="sub", metavar="SUBCOMMAND")
    sp = add(asub, "verify", "校验账本哈希链、每个信封的签名和解密，并由账本重建与实时状态比对；"
                             "通过退出码 0，否则 1 (verify the ledger: chain, signatures, rebuild vs live; exit 0 or 1)",
             cmd_audit_verify)
    sp.add_argument("--quiet", action="store_true", help="不显示进度 (no progress on stderr)")
    sp = add(asub, "devices", "每台设备：版本、最后联系、序号缺口、时钟差、拒收、隔离、待同步案件 "
                              "(per device: version, contact, gaps, clock offset, refusals, quarantine, cases awaiting sync)",
             cmd_audit_devices)
    sp.add_argument("--csv", action="store_true", help="CSV 输出 (CSV output)")
    sp = add(asub, "report", "按日、按设备统计：收到、合并、拒收原因、冲突、隔离 "
                             "(per day and device: received, merged, refused by reason, conflicts, quarantine)",
             cmd_audit_report)
    sp.add_argument("--since", required=True, metavar="DATE", help="开始日期，如 2026-11-01 (from this day, China time)")
    sp.add_argument("--until", metavar="DATE", help="结束日期（含）(to this day, inclusive; default today)")
    sp.add_argument("--csv", action="store_true", help="CSV 输出 (CSV output)")

    sp = add(sub, "backup", "服务运行时做一致的备份：数据库、密钥、规则 (a consistent copy while serving: database, keys, rules)",
             cmd_backup)
    sp.add_argument("dest", metavar="DEST", help="备份目录，须为新的或空的 (backup folder: new or empty)")
    sp = add(sub, "restore", "从备份恢复；不覆盖运行中或非空的数据目录，除非 --force "
                             "(restore a backup; refuses a running or non-empty data folder without --force)",
             cmd_restore)
    sp.add_argument("src", metavar="SRC", help="备份目录 (backup folder)")
    sp.add_argument("--force", action="store_true",
                    help="数据目录非空时也恢复，原内容移到旁边 (replace a non-empty data folder; its content is kept aside)")

    sp = add(devices, "reenroll", "为从旧备份恢复的笔记本生成重新注册码：新设备编号，旧编号关闭 "
                                  "(a code for a laptop restored from an old copy: new device id, the old one closed)",
             cmd_device_reenroll)
    sp.add_argument("device", help="旧设备编号 (the old device id)")
    sp.add_argument("--hours", type=float, default=72, help="有效小时数 (hours the code stays valid; default 72)")
    sp.add_argument("--url", help="笔记本连接的地址 (server address to put in the code)")
    sp = add(devices, "history", "设备的注册、换钥、替换、吊销记录 (a device's lifecycle: enrolled, rotated, replaced, revoked)",
             cmd_device_history)
    sp.add_argument("device", help="设备编号 (device id)")
