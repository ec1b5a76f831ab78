"""The demo county that ``make run`` starts: ``sync-server demo [--data DIR] [--no-serve]``.

It builds a county server (keys, a jurisdiction of three townships and twelve villages),
four real field laptops (keys under a passphrase, encrypted replicas) enrolled with
one-time codes, and a realistic fortnight of offline casework on each, including two
东村 laptops editing the same case and one of them declining a case the other had
already reported up to the township. The laptops then sync through the server's real
sync API (sealed, signed envelopes; in-process, no network needed), and the demo checks
that every laptop holds exactly the ops of its jurisdiction that the server holds, and
that the conflicts are the same everywhere. Then it serves the county server's API and
laptop 1's web UI on 127.0.0.1.

The demo drives both sides, so it imports ``field_client``: it plays the laptops.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from field_client.store import FieldClient, now_iso
from field_client.sync import SyncAgent, WsgiTransport
from sync_server.app import create_app
from sync_server.jurisdiction import import_nodes
from sync_server.service import SyncService
from sync_server.store import ServerStore

PASSPHRASE = "minqing-demo"
WEB_PASSWORD = "minqing-demo-web"  # the county web's demo logins (DEMO_USERS)
DEMO_USERS = [  # (username, role, may see reporters' identities, name)
    ("coord", "coordinator", False, "县协调员"),
    ("secret", "coordinator", True, "县协调员(保密权限)"),
    ("audit", "auditor", False, "信息技术审计员"),
    ("admin", "admin", False, "系统管理员"),
]
SERVER_PORT = 8730
UI_PORT = 8731
T0_DAYS_AGO = 16  # the demo fortnight ends about now, so some deadlines are near or past
COUNTY = ("330102", "示范县")
TOWNSHIPS = [("330102100", "东镇"), ("330102200", "西镇"), ("330102300", "南镇")]
VILLAGE_NAMES = ["东村", "西村", "南村", "北村"]
LAPTOPS = [  # (node, name, user)
    ("330102101", "东镇东村", "li.ming"),
    ("330102101", "东镇东村(网格员)", "zhao.fang"),
    ("330102203", "西镇南村", "chen.jun"),
    ("330102100", "东镇代办站", "wu.gang"),
]
TOWNSHIP = "330102100"
SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = ["建国", "秀英", "桂兰", "志强", "海燕", "晓明", "玉梅", "德华", "春生", "丽娟"]
MATTERS = [
    ("宅基地边界纠纷", "dispute", "neighbour"),
    ("拖欠农民工工资", "complaint", "wage_arrears"),
    ("土地承包经营权纠纷", "dispute", "land_contract"),
    ("征地补偿款分配", "complaint", "land_requisition"),
    ("养殖场异味扰民", "complaint", "environment"),
    ("赡养老人纠纷", "dispute", "family"),
    ("村务公开建议", "suggestion", "other"),
    ("反映村干部优亲厚友", "accusation", "official_conduct"),
]


def jurisdiction_rows() -> list[dict[str, str]]:
    rows = [{"code": COUNTY[0], "name": COUNTY[1], "level": "county", "parent": ""}]
    for code, name in TOWNSHIPS:
        rows.append({"code": code, "name": name, "level": "township", "parent": COUNTY[0]})
        for i, village in enumerate(VILLAGE_NAMES, 1):
            rows.append({"code": f"{code[:-1]}{i}", "name": f"{name}{village}", "level": "village", "parent": code})
    return rows


@dataclass
class Clock:
    """A demo clock that the script advances, so the history spans days."""

    t: float = field(default_factory=lambda: time.time() - T0_DAYS_AGO * 86400)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def _id_number(rnd: random.Random) -> str:
    body = f"330102{rnd.randint(1950, 2000)}{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}{rnd.randint(0, 999):03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(c) * w for c, w in zip(body, weights, strict=True))
    return body + "10X98765432"[total % 11]


def _person(rnd: random.Random) -> dict[str, str]:
    return {
        "name": rnd.choice(SURNAMES) + rnd.choice(GIVEN),
        "id_number": _id_number(rnd),
        "phone": f"1{rnd.choice('3578')}{rnd.randint(0, 999999999):09d}",
        "address": f"{rnd.choice(['东', '西', '南', '北'])}组{rnd.randint(1, 60)}号",
    }


def record_fortnight(client: FieldClient, clock: Clock, rnd: random.Random, n_cases: int) -> list[str]:
    """A realistic two weeks of one laptop's offline work; returns the case ids."""
    ids = []
    for _ in range(n_cases):
        clock.advance(rnd.randint(1800, 6 * 3600))
        title, category, subject = rnd.choice(MATTERS)
        petitioner = {"role": "petitioner", **_person(rnd)}
        respondent = {"role": "respondent", **_person(rnd)}
        cid = client.new_case(
            {"title": title, "category": category, "subject": subject,
             "channel": rnd.choice(["visit", "phone", "screening", "letter"]),
             "summary": f"{petitioner['name']}反映：{title}，请求协调解决。",
             "people_count": rnd.choice([1, 1, 1, 2, 6])},
            [petitioner, respondent] if category == "dispute" else [petitioner],
        )
        ids.append(cid)
        clock.advance(rnd.randint(600, 86400))
        client.add_record("visit", cid, {"kind": rnd.choice(["home", "walk"]), "visited_at": now_iso(clock),
                                          "visitor": client.user, "summary": "上门了解情况，做好记录。"})
        if rnd.random() < 0.85:
            client.transition(cid, "accept")
            client.add_record("notice", cid, {"kind": "acceptance", "served_at": now_iso(clock)[:10]})
            client.transition(cid, "start")
        if category == "dispute" and rnd.random() < 0.6:
            clock.advance(rnd.randint(3600, 3 * 86400))
            agreed = rnd.random() < 0.7
            client.add_record("mediation", cid, {
                "kind": "people", "mediator": client.user, "held_at": now_iso(clock), "place": "村调解室",
                "outcome": "agreement" if agreed else "no_agreement",
                "agreement_form": rnd.choice(["written", "oral"]) if agreed else None,
                "terms": "双方同意按原界址重新立界，费用各半。" if agreed else None,
                "performance": "十日内完成立界" if agreed else None,
                "remedies_told": not agreed,
            })
            if agreed and rnd.random() < 0.6:
                client.transition(cid, "close_by_agreement")
        if rnd.random() < 0.15 and "escalate" in client.case_detail(cid)["allowed_actions"]:
            client.report_up(cid, _parent(client), "村级难以化解，上报乡镇")
        if rnd.random() < 0.3:
            client.add_record("note", cid, {"text": "已电话联系当事人，约定下周再谈。", "written_at": now_iso(clock)})
    return ids


def _parent(client: FieldClient) -> str:
    """The laptop's next level up, as the server told it at enrollment."""
    return str(json.loads(client.meta("server") or "{}")["ancestors"][0]["code"])


def build(root: Path, *, cases: int = 12, seed: int = 2026, out: Any = sys.stdout) -> tuple[ServerStore, list[FieldClient]]:
    """The county server and its laptops, their offline work, then sync through the server."""
    rnd = random.Random(seed)
    clock = Clock()
    store = ServerStore.init(root / "server", clock=clock)
    store.set_meta("public_url", f"http://127.0.0.1:{SERVER_PORT}")
    import_nodes(store, jurisdiction_rows())
    svc = SyncService(store)
    transport = WsgiTransport(create_app(root / "server", {"MINQING_CLOCK": clock}))
    laptops = []
    for i, (node, name, user) in enumerate(LAPTOPS, 1):
        level = store.node(node)["level"]  # type: ignore[index]
        lap = FieldClient.init(root / f"laptop{i}", PASSPHRASE, node=node, level=level, user=user,
                               node_name=name, clock=clock)
        code = svc.create_enroll_code(node, url=f"http://127.0.0.1:{SERVER_PORT}", hours=24 * 60)
        SyncAgent(lap, transport).enroll(code)
        laptops.append(lap)
    print("▶ 县服务器已建立，四台笔记本已注册 (county server set up; four laptops enrolled)", file=out)
    print("▶ 村级笔记本离线登记、走访、调解 (village laptops work offline) …", file=out)
    for lap in laptops[:3]:
        record_fortnight(lap, clock, rnd, cases)
    a, b = laptops[0], laptops[1]
    shared = a.new_case(
        {"title": "两户交界处灌溉水渠纠纷", "category": "dispute", "subject": "land_contract", "channel": "visit",
         "summary": "王建国与李秀英因水渠改道发生争执。"},
        [{"role": "petitioner", **_person(rnd)}, {"role": "respondent", **_person(rnd)}],
    )
    for lap in (a, b):
        SyncAgent(lap, transport).sync()
    clock.advance(3600)
    a.edit("case", shared, {"title": "灌溉水渠改道纠纷（李明记录）"})  # both edit offline:
    b.edit("case", shared, {"title": "水渠纠纷（赵芳记录）"})  # a concurrent edit
    a.transition(shared, "accept")
    a.report_up(shared, TOWNSHIP, "涉及多户，上报乡镇协调")
    clock.advance(600)
    # the grid worker, not yet knowing the case went up, declines it offline: the fold keeps
    # this transition but refuses it (a village acting on a township case)
    b.transition(shared, "reject", reason="不属于本村受理范围")
    print("▶ 各笔记本通过县服务器同步 (laptops sync through the county server) …", file=out)
    for _ in range(2):
        for lap in laptops:
            SyncAgent(lap, transport).sync()
    # the county's deadline sweep as of the demo's "now", then one more sync to bring its
    # warnings, overdue marks and escalations to the laptops (docs/deadlines.md)
    from sync_server.sweep import Sweeper

    rules = store.rules()
    Sweeper(SyncService(store, rules=rules), rules).sweep(store.now_ms())
    alerts = store.conn.execute("SELECT kind, COUNT(*) FROM alerts GROUP BY kind ORDER BY kind").fetchall()
    colours = store.conn.execute("SELECT colour, COUNT(*) FROM case_status GROUP BY colour ORDER BY colour").fetchall()
    print(f"▶ 县服务器时限巡查 (deadline sweep, also run after each merge): 督办记录 alerts "
          f"{', '.join(f'{k} {n}' for k, n in alerts) or '-'}; 预警颜色 colours "
          f"{', '.join(f'{c} {n}' for c, n in colours)}", file=out)
    for lap in laptops:
        SyncAgent(lap, transport).sync()
    return store, laptops


def add_demo_users(store: ServerStore) -> None:
    """The county web's demo logins (docs/coordinator.md), all with ``WEB_PASSWORD``."""
    from sync_server.users import add_user

    with store.transaction():
        for username, role, confidential, name in DEMO_USERS:
            add_user(store.conn, username, WEB_PASSWORD, role=role, now_ms=store.now_ms(),
                     display_name=name, confidential=confidential)


def report(store: ServerStore, laptops: list[FieldClient], out: Any = sys.stdout) -> bool:
    """Each laptop holds exactly the server's ops of its jurisdiction; conflicts agree."""
    svc = SyncService(store)
    server_ops = {op.op_id: op for _, op in store.replica.ops()}
    ok = True
    for i, lap in enumerate(laptops, 1):
        scope = svc.scope_cases(lap.node)
        want = {oid for oid, op in server_ops.items() if op.case_id in scope}
        have = {oid for oid, _ in lap.replica.op_pairs()}
        n_cases = lap.replica.conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
        open_c = len(lap.replica.conflicts(status="open"))
        same = want == have
        ok = ok and same
        print(f"  笔记本{i} {lap.keys.info.get('node_name')} {lap.user} 设备 {lap.device_id}: {len(have)} 条操作, "
              f"{n_cases} 个案件, {open_c} 个待处理冲突 {'✔' if same else '✘ 与服务器不一致'}", file=out)
    server_conflicts = {c["id"] for c in store.replica.conflicts()}
    for lap in laptops:
        ok = ok and {c["id"] for c in lap.replica.conflicts()} <= server_conflicts
    print(f"  县服务器 (server): {len(server_ops)} 条操作, 摘要 {store.replica.digest()[:24]}…", file=out)
    print("✔ 每台笔记本与服务器在其辖区内完全一致 (every laptop matches the server within its scope)" if ok
          else "✘ 有笔记本与服务器不一致 (a laptop differs from the server)", file=out)
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="sync-server demo",
        description="演示县：县服务器与四台笔记本，离线工作后经服务器同步 (demo county: server and four laptops)",
    )
    p.add_argument("--data", help="演示数据目录 (demo folder; default: a new temporary folder)")
    p.add_argument("--cases", type=int, default=12, help="每台村级笔记本的案件数 (cases per village laptop)")
    p.add_argument("--no-serve", action="store_true", help="只生成数据，不启动服务 (build only; do not serve)")
    args = p.parse_args(argv)
    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="minqing-demo-"))
    if root.exists() and any(root.iterdir()):
        if not (root / "server" / "server.db").exists():
            print(f"✘ {root} 不是空目录，也不是演示目录；不会改动它 (not empty, not a demo folder)", file=sys.stderr)
            return 2
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    store, laptops = build(root, cases=args.cases)
    ok = report(store, laptops)
    add_demo_users(store)
    store.close()
    for lap in laptops:
        lap.close()
    print(f"\n演示数据 (demo data): {root}\n笔记本口令 (laptop passphrase): {PASSPHRASE}")
    print(f"县代办中心网页登录 (county web logins), 密码 (password) {WEB_PASSWORD}: "
          "coord 协调员 (coordinator), secret 协调员含保密权限 (coordinator who may see reporters), "
          "audit 审计员 (auditor), admin 管理员 (administrator)")
    if args.no_serve:
        return 0 if ok else 1
    from waitress import create_server

    from field_client.web import serve as serve_ui

    server = create_server(create_app(root / "server"), host="127.0.0.1", port=SERVER_PORT, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    print(f"▶ 县服务器 API (county server API): http://127.0.0.1:{SERVER_PORT}/api/v1/ping")
    print(f"▶ 县代办中心网页 (county coordinator web): http://127.0.0.1:{SERVER_PORT}/web/  "
          f"用户 (user) coord / secret / audit / admin, 密码 (password) {WEB_PASSWORD}")
    print(f"▶ 笔记本1 网页 (laptop 1 web UI): http://127.0.0.1:{UI_PORT}  口令 {PASSPHRASE}   Ctrl-C 停止")
    print(f"  其他笔记本 (other laptops): field-client --data {root}/laptop2 sync | status | case list")
    try:
        serve_ui(str(root / "laptop1"), host="127.0.0.1", port=UI_PORT, open_browser=False)
    finally:
        server.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
