"""``field-client`` commands for the county's IT officer (docs/cli.md, docs/audit.md):

    verify        does the server hold what this laptop holds? (op ids and stamps only)
    reenroll      a laptop restored from an old copy becomes a new device (IT's code)
    rotate-keys   new keys for this device, recorded by the server first

``register`` adds them to the tree ``field_client.cli.build_parser`` builds; each command
takes the same ``Ctx`` as the others, so errors, ``--json`` and ``--lang`` behave alike.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from field_client import keystore

MESSAGES: dict[str, tuple[str, str]] = {
    "in_sync": ("✔ 本机与县服务器一致：{ops} 条操作，摘要 {digest}",
                "✔ this laptop and the county server agree: {ops} op(s), digest {digest}"),
    "differs": ("✘ 本机与县服务器不一致（本机 {mine} 条，服务器本辖区 {theirs} 条，{days} 天的记录有差别）",
                "✘ this laptop and the county server differ (here {mine} op(s), the server's scope {theirs}; "
                "{days} day(s) differ)"),
    "missing_server": ("服务器缺少本机的 {n} 条：{reasons}", "the server lacks {n} op(s) of this laptop: {reasons}"),
    "missing_laptop": ("本机缺少服务器的 {n} 条（运行 field-client sync 取回）",
                       "this laptop lacks {n} op(s) the server holds (field-client sync fetches them)"),
    "stamps_differ": ("{n} 条操作两边的时间戳不同", "{n} op(s) carry different stamps on each side"),
    "reason_pending": ("待上传 {n}", "pending {n}"),
    "reason_sent": ("已打包未确认 {n}", "packed, not acknowledged {n}"),
    "reason_acknowledged": ("服务器曾确认但已丢失（下次同步补发）{n}", "acknowledged once, lost by the server (resent next sync) {n}"),
    "reason_held": ("被隔离 {n}", "held in quarantine {n}"),
    "reason_other": ("其他设备或服务器所写 {n}", "written elsewhere {n}"),
    "more": ("  ……还有 {n} 条", "  ... and {n} more"),
    "truncated": ("（服务器只列出了部分差异，同步后再核对一次）", "(the server listed part of the differences; verify again after a sync)"),
    "reenrolled": ("✔ 已重新注册：新设备编号 {new}（替换 {old}，旧编号已在第 {closed} 批关闭）；{resend} 条未确认的记录将在下次同步时以新编号发送。",
                   "✔ re-enrolled: new device id {new} (replacing {old}, whose sequence closed at {closed}); "
                   "{resend} unacknowledged op(s) go out under the new id at the next sync."),
    "rotated": ("✔ 已更换密钥：设备 {device}，新签名密钥指纹 {fp}，从第 {seq} 批起使用。",
                "✔ keys rotated: device {device}, new signing key {fp}, used from batch {seq} on."),
}


def say(lang: str, key: str, **values: Any) -> str:
    zh, en = MESSAGES[key]
    return (en if lang == "en" else zh).format(**values)


@contextmanager
def _unlocked(ctx: Any) -> Iterator[tuple[Any, str]]:
    """The unlocked client and its passphrase (rotation and re-enrollment rewrap the keys)."""
    from field_client.store import FieldClient

    keystore.read_info(ctx.data)
    passphrase = ctx.passphrase()
    client = FieldClient.open(ctx.data, passphrase)
    try:
        yield client, passphrase
    finally:
        client.close()


def _agent(ctx: Any, client: Any, server: str | None = None) -> Any:
    from field_client.sync import HttpTransport, SyncAgent

    return SyncAgent(client, HttpTransport(server) if server else None)


def cmd_verify(ctx: Any, a: argparse.Namespace) -> int:
    from field_client.verify import SHOW, verify

    with _unlocked(ctx) as (client, _):
        result = verify(_agent(ctx, client, a.server))
    lang = ctx.lang
    if result["in_sync"]:
        return int(ctx.done(say(lang, "in_sync", ops=result["laptop_ops"], digest=result["laptop_digest"][:24] + "…"),
                            result))
    lines = [say(lang, "differs", mine=result["laptop_ops"], theirs=result["server_ops"],
                 days=result["days_differing"])]
    missing = result["missing_on_server"]
    if missing:
        sep = "，" if lang == "zh" else ", "
        reasons = sep.join(say(lang, f"reason_{k}", n=v) for k, v in sorted(result["missing_on_server_by_reason"].items()))
        lines.append(say(lang, "missing_server", n=len(missing), reasons=reasons))
        lines += [f"  {m['op_id']}  {m['stamp']}  {m['why']}" + (f" ({m['code']})" if m.get("code") else "")
                  for m in missing[:SHOW]]
        if len(missing) > SHOW:
            lines.append(say(lang, "more", n=len(missing) - SHOW))
    lacking = result["missing_on_laptop"]
    if lacking:
        lines.append(say(lang, "missing_laptop", n=len(lacking)))
        lines += [f"  {m['op_id']}  {m['stamp']}" for m in lacking[:SHOW]]
        if len(lacking) > SHOW:
            lines.append(say(lang, "more", n=len(lacking) - SHOW))
    if result["stamps_differ"]:
        lines.append(say(lang, "stamps_differ", n=len(result["stamps_differ"])))
    if result["truncated"]:
        lines.append(say(lang, "truncated"))
    return int(ctx.done("\n".join(lines), result))


def cmd_reenroll(ctx: Any, a: argparse.Namespace) -> int:
    from field_client.lifecycle import reenroll

    with _unlocked(ctx) as (client, passphrase):
        result = reenroll(_agent(ctx, client), passphrase, a.code)
    return int(ctx.done(say(ctx.lang, "reenrolled", new=result["device_id"], old=result["replaces"],
                            closed=result["closed_seq"], resend=result["resend"]), result))


def cmd_rotate_keys(ctx: Any, a: argparse.Namespace) -> int:
    from field_client.lifecycle import rotate_keys

    with _unlocked(ctx) as (client, passphrase):
        result = rotate_keys(_agent(ctx, client, a.server), passphrase)
    return int(ctx.done(say(ctx.lang, "rotated", device=result["device_id"], fp=result["fingerprint"],
                            seq=result["first_seq"]), result))


def register(top: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands under ``field-client`` (``leaf`` is cli.build_parser's helper)."""
    p = leaf(top, ("verify",), "核对本机与县服务器的记录是否一致，列出两边缺少的操作（只有编号和时间戳，不含个人信息）",
             "check that the county server holds what this laptop holds, listing what either side lacks "
             "(op ids and stamps only, no personal data)", cmd_verify)
    p.add_argument("--server", help="临时改用的服务器地址 (use this server address instead)")
    p = leaf(top, ("reenroll",), "从旧备份恢复的笔记本用 IT 给的重新注册码换成新设备编号，未确认的记录以新编号重发",
             "a laptop restored from an old copy becomes a new device with IT's re-enrollment code; "
             "unacknowledged records are resent under the new id", cmd_reenroll)
    p.add_argument("--code", required=True, help="重新注册码，以 MQ1. 开头 (the re-enrollment code, starting MQ1.)")
    p = leaf(top, ("rotate-keys",), "更换本机的加密和签名密钥（县服务器先登记新密钥）",
             "make new encryption and signing keys for this laptop (the county server records them first)",
             cmd_rotate_keys)
    p.add_argument("--server", help="临时改用的服务器地址 (use this server address instead)")
