"""The demo county that ``make run`` starts: ``sync-server demo [--data demo-data]``.

``main`` builds, unless the folder already holds a finished demo of the same settings
(then it is reused; ``--fresh`` rebuilds), the county of ``sync_server.demo_county``: a
county server with three townships and twelve villages, seventeen enrolled laptops (a
laptop in every village, two in 东镇东村, one in each township station and one at the
county's petition office) and about three hundred cases with 75 days of history
that reached the server through its real sync API. Then it serves, on 127.0.0.1 only,
the county server (sync API, the coordinator's web at /web/, the auditor's pages at
/web/audit/) and one laptop's web UI, prints the addresses and every demo login, and
stops both on Ctrl-C.

``build`` is the small county the tests use (``tests/sync_server/coord_support.py``):
four laptops and a fortnight of work, with the same shared 东村 case and conflicts.

The demo drives both sides, so it imports ``field_client``: it plays the laptops.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from field_client.store import FieldClient, now_iso
from field_client.sync import SyncAgent, WsgiTransport
from sync_server.app import create_app
from sync_server.demo_county import COUNTY_LAPTOPS, Clock, build_county
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
CHINA_TZ = timezone(timedelta(hours=8))
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
            if agreed and rnd.random() < 0.6 and "close_by_agreement" in client.case_detail(cid)["allowed_actions"]:
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
    clock = Clock(time.time() - T0_DAYS_AGO * 86400)  # the script advances it, so the history spans days
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
        print(f"  笔记本{i:<2} {lap.keys.info.get('node_name')} {lap.user} 设备 {lap.device_id}: {len(have)} 条操作, "
              f"{n_cases} 个案件, {open_c} 个待处理冲突 {'✔' if same else '✘ 与服务器不一致'}", file=out)
    server_conflicts = {c["id"] for c in store.replica.conflicts()}
    for lap in laptops:
        ok = ok and {c["id"] for c in lap.replica.conflicts()} <= server_conflicts
    print(f"  县服务器 (server): {len(server_ops)} 条操作, 摘要 {store.replica.digest()[:24]}…", file=out)
    print("✔ 每台笔记本与服务器在其辖区内完全一致 (every laptop matches the server within its scope)" if ok
          else "✘ 有笔记本与服务器不一致 (a laptop differs from the server)", file=out)
    return ok


OPEN_STATES = ("registered", "routed", "accepted", "in_handling", "extended", "decided", "review_requested",
               "rereview_requested")


def summary(store: ServerStore) -> dict[str, Any]:
    """What the county holds, counted on the server: the figures ``make run`` prints."""
    q = store.conn.execute
    nodes = {r[0]: (r[1], r[2], r[3]) for r in q("SELECT code, name, level, parent FROM nodes")}
    townships = sorted(c for c, (_, level, _) in nodes.items() if level == "township")
    villages = sorted(c for c, (_, level, _) in nodes.items() if level == "village")
    open_sql = "c.voided = 0 AND c.state IN (" + ", ".join(f"'{s}'" for s in OPEN_STATES) + ")"
    by_village = dict(q("SELECT origin_node, COUNT(*) FROM cases WHERE voided = 0 GROUP BY origin_node").fetchall())
    towns = []
    for t in townships:
        mine = [v for v in villages if nodes[v][2] == t]
        marks = ", ".join("?" * (len(mine) + 1))
        row = q(f"SELECT COUNT(*), SUM({open_sql}), SUM({open_sql} AND s.overdue = 1), "
                f"SUM({open_sql} AND s.colour IN ('orange', 'red')) FROM cases c "
                f"LEFT JOIN case_status s ON s.case_id = c.id WHERE c.voided = 0 AND c.origin_node IN ({marks})",
                [*mine, t]).fetchone()
        towns.append({"code": t, "name": nodes[t][0], "villages": len(mine), "cases": row[0] or 0,
                      "open": row[1] or 0, "overdue": row[2] or 0, "orange_red": row[3] or 0})
    colours = dict(q(f"SELECT s.colour, COUNT(*) FROM cases c JOIN case_status s ON s.case_id = c.id "
                     f"WHERE {open_sql} GROUP BY s.colour").fetchall())
    return {
        "townships": len(townships), "villages": len(villages),
        "villages_with_cases": sum(1 for v in villages if by_village.get(v)),
        "cases": q("SELECT COUNT(*) FROM cases WHERE voided = 0").fetchone()[0],
        "voided": q("SELECT COUNT(*) FROM cases WHERE voided = 1").fetchone()[0],
        "open": q(f"SELECT COUNT(*) FROM cases c WHERE {open_sql}").fetchone()[0],
        "overdue": q(f"SELECT COUNT(*) FROM cases c JOIN case_status s ON s.case_id = c.id "
                     f"WHERE {open_sql} AND s.overdue = 1").fetchone()[0],
        "backlog": q(f"SELECT COUNT(*) FROM cases c JOIN case_status s ON s.case_id = c.id "
                     f"WHERE {open_sql} AND s.backlog = 1").fetchone()[0],
        "colours": {c: colours.get(c, 0) for c in ("red", "orange", "yellow", "blue", "green")},
        "by_level": dict(q("SELECT level, COUNT(*) FROM cases WHERE voided = 0 GROUP BY level").fetchall()),
        "by_state": dict(q("SELECT state, COUNT(*) FROM cases WHERE voided = 0 GROUP BY state").fetchall()),
        "visits": q("SELECT COUNT(*) FROM visits").fetchone()[0],
        "mediations": q("SELECT COUNT(*) FROM mediations").fetchone()[0],
        "notices": q("SELECT COUNT(*) FROM notices").fetchone()[0],
        "alerts": dict(q("SELECT kind, COUNT(*) FROM alerts GROUP BY kind").fetchall()),
        "conflicts_open": len(store.replica.conflicts(status="open")),
        "devices": q("SELECT COUNT(*) FROM devices WHERE status = 'active'").fetchone()[0],
        "ops": store.max_op_seq(),
        "by_township": towns,
    }


def print_summary(s: dict[str, Any], out: Any = sys.stdout) -> None:
    c = s["colours"]
    lines = [
        f"▶ 演示县 (demo county): {s['townships']} 个乡镇 (townships), {s['villages']} 个村 (villages), "
        f"{s['devices']} 台笔记本 (laptops), {s['cases']} 件案件 (cases), {s['ops']} 条操作 (ops)",
        f"  走访 {s['visits']} 次 (visits), 调解 {s['mediations']} 次 (mediations), 告知书/文书 {s['notices']} 份 (notices), "
        f"超期上报 {s['alerts'].get('escalated', 0)} 件 (escalated by the sweep)",
        f"  在办 {s['open']} 件 (open): 红 {c['red']} 橙 {c['orange']} 黄 {c['yellow']} 蓝 {c['blue']} 绿 {c['green']}; "
        f"超期 {s['overdue']} 件 (overdue), 积案 {s['backlog']} 件 (backlog); 待处理冲突 {s['conflicts_open']} 个 "
        f"(open conflicts)",
    ]
    for t in s["by_township"]:
        lines.append(f"  {t['name']}: {t['villages']} 个村, {t['cases']} 件, 在办 {t['open']}, 超期 {t['overdue']}")
    print("\n".join(lines), file=out, flush=True)


# ---- make run ----

DEMO_VERSION = 4  # bump when the county changes: an older folder is rebuilt, not reused
MARKER = "demo.json"
LOCK = "demo.lock"
UI_LAPTOP = 1  # 东镇东村, 李明 (li.ming): the mediator of docs/first-hour-mediator.md
ROLES_ZH = {"coord": "协调员 (coordinator)", "secret": "协调员，可看检举控告人身份 (coordinator with the confidential permission)",
            "audit": "审计员 (auditor, IT)", "admin": "管理员 (administrator: accounts)"}


@contextmanager
def _folder_lock(root: Path) -> Iterator[None]:
    """One ``sync-server demo`` per folder: a second one is refused, not allowed to rebuild under the first."""
    import fcntl

    fh = open(root / LOCK, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DemoRefused(f"✘ 另一个演示正在使用 {root} (another `make run` is using this folder; stop it first)") from None
        yield
    finally:
        fh.close()


class DemoRefused(Exception):
    """A sentence for the person at the keyboard; exit 2."""


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"version": DEMO_VERSION, "cases": args.cases, "days": args.days, "seed": args.seed}


def _reusable(root: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if any(marker.get(k) != v for k, v in _settings(args).items()):
        return None
    if not (root / "server" / "server.db").exists():
        return None
    return dict(marker)


def _scratch(root: Path) -> Path:
    """Where to build: memory (/dev/shm) when there is room, then moved into ``root``.

    The build commits thousands of small transactions on eighteen databases; on a disk
    each waits for fsync, which alone can triple the time. Nothing in the data names its
    folder, so it can be moved afterwards.
    """
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 1 << 30:
            return Path(tempfile.mkdtemp(prefix="minqing-demo-", dir=shm))
    except OSError:
        pass
    return root


def _clear(root: Path) -> None:
    for child in root.iterdir():
        if child.name == LOCK:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _check_ports(ports: list[int]) -> None:
    import socket

    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise DemoRefused(f"✘ 端口 {port} 已被占用：另一个 make run 还在运行吗？(port {port} on 127.0.0.1 is in use; "
                                  f"is another `make run` running? stop it, or use --port/--ui-port)") from None


def _log_to(path: Path, *, quiet: bool = False, undo: Callable[[], None] | None = None) -> Callable[[], None]:
    """Send the server's JSON-line log to ``path`` (not the terminal; with ``quiet`` only
    warnings and errors); returns the undo. ``undo`` is a previous call's, undone first."""
    import logging

    from sync_server import ops_log

    if undo is not None:
        undo()
    logger = logging.getLogger(ops_log.LOGGER)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    handler.setFormatter(ops_log.JsonFormatter())
    handler._minqing_json = True  # type: ignore[attr-defined]  # configure_logging keeps it
    old = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(old[0])
        logger.propagate = old[1]
    return undo


def build_demo(root: Path, args: argparse.Namespace, out: Any = sys.stdout) -> dict[str, Any]:
    """Build the county into ``root`` (empty but for the lock); returns the marker written last."""
    work = _scratch(root)
    if work != root:
        print(f"▶ 在内存中生成，完成后移到 {root} (building in memory, {work}, then moving it) …", file=out, flush=True)
    t0 = time.perf_counter()
    try:
        store, laptops, facts = build_county(work, cases=args.cases, days=args.days, seed=args.seed, out=out,
                                             passphrase=PASSPHRASE, server_url=f"http://127.0.0.1:{args.port}",
                                             jurisdiction=jurisdiction_rows())
    except BaseException:
        if work != root:
            shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        print("▶ 核对每台笔记本与县服务器 (checking each laptop against the server):", file=out, flush=True)
        ok = report(store, laptops, out=out)
        add_demo_users(store)
        figures = summary(store)
    finally:
        store.close()
        for lap in laptops:
            lap.close()
    if work != root:
        for child in sorted(work.iterdir()):
            shutil.move(str(child), str(root / child.name))
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - t0
    marker = {**_settings(args), "ok": ok, "built_at": datetime.now(CHINA_TZ).isoformat(timespec="seconds"),
              "build_seconds": round(seconds, 1), "laptops": len(laptops), "facts": facts.as_dict(),
              "summary": figures}
    (root / MARKER).write_text(json.dumps(marker, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"▶ 演示县生成完毕，用时 {seconds:.1f} 秒 (demo county built in {seconds:.1f} s)", file=out, flush=True)
    return marker


def banner(root: Path, args: argparse.Namespace, marker: dict[str, Any], out: Any = sys.stdout) -> None:
    """The addresses and every demo login."""
    node, unit, user, display, _ = COUNTY_LAPTOPS[args.laptop - 1]
    web = f"http://127.0.0.1:{args.port}"
    rule = "═" * 78
    lines = [
        rule,
        " 民情演示县已启动 (the Minqing demo county is running), 只在本机 (127.0.0.1 only)",
        f"  县代办中心网页 (county coordinator web) {web}/web/",
        f"  审计页面 (IT audit pages)               {web}/web/audit/",
        f"  县服务器同步接口 (sync API)              {web}/api/v1/ping",
        f"  笔记本网页 (laptop web UI)              http://127.0.0.1:{args.ui_port}/   "
        f"{unit} {display} ({user}), 笔记本{args.laptop}",
        f"    笔记本口令 (laptop passphrase): {PASSPHRASE}",
        f"  网页登录 (web logins), 密码都是 (password for all): {WEB_PASSWORD}",
    ]
    lines += [f"    {name:<7} {ROLES_ZH[name]}" for name, *_ in DEMO_USERS]
    lines += [
        f"  其他笔记本 (the other {marker.get('laptops', 17) - 1} laptops), 例如 (e.g.): "
        f"MINQING_PASSPHRASE={PASSPHRASE} .venv/bin/field-client --data {root}/laptop4 case list",
        f"  服务器日志 (server log): {root}/server.log   第一小时 (first hour): docs/first-hour-*.md",
        " 按 Ctrl-C 停止两个服务 (Ctrl-C stops both)",
        rule,
    ]
    print("\n".join(lines), file=out, flush=True)


def point_laptops_at(root: Path, url: str) -> int:
    """Point every demo laptop's pinned server address at ``url``; how many changed.

    A laptop keeps the address it enrolled with. A demo built for one ``--port`` and served
    on another would otherwise send the guide's ``field-client … sync`` to a port nobody
    listens on (连不上服务器). Only that address changes, not the pinned keys; no
    passphrase is needed (``client_meta`` is not encrypted).
    """
    from conflict.replica import Replica
    from field_client.store import REPLICA_FILE

    changed = 0
    for folder in sorted(root.glob("laptop*")):
        if not (folder / REPLICA_FILE).exists():
            continue
        replica = Replica(folder / REPLICA_FILE, create=False)
        try:
            row = replica.conn.execute("SELECT value FROM client_meta WHERE key='server'").fetchone()
            info = json.loads(row[0]) if row else None
            if not info or info.get("url") == url:
                continue
            info["url"] = url
            with replica.transaction():
                replica.conn.execute("UPDATE client_meta SET value=? WHERE key='server'",
                                     (json.dumps(info, ensure_ascii=False),))
            changed += 1
        finally:
            replica.close()
    return changed


def serve(root: Path, args: argparse.Namespace, marker: dict[str, Any], out: Any = sys.stdout,
          ready: Callable[[], None] | None = None, stop: threading.Event | None = None) -> int:
    """Serve the county server and one laptop's UI on 127.0.0.1 until Ctrl-C (or ``stop``)."""
    import signal

    from waitress import create_server

    from field_client.web import create_app as create_ui
    from sync_server.ops_log import serving_lock
    from sync_server.sweep import SweepTimer

    server_dir = root / "server"
    stop = stop or threading.Event()
    with serving_lock(server_dir):
        store = ServerStore(server_dir)
        rules = store.rules()
        with store.transaction():
            store.set_meta("public_url", f"http://127.0.0.1:{args.port}")
        store.close()
        point_laptops_at(root, f"http://127.0.0.1:{args.port}")
        api_app = create_app(server_dir)
        ui_app = create_ui(root / f"laptop{args.laptop}")
        try:
            api = create_server(api_app, host="127.0.0.1", port=args.port, threads=4, ident="minqing")
            ui = create_server(ui_app, host="127.0.0.1", port=args.ui_port, threads=4, ident="minqing-field")
        except OSError as exc:
            raise DemoRefused(f"✘ 无法监听端口 (cannot listen on 127.0.0.1): {exc}") from None
        timer = SweepTimer(server_dir, rules)  # the deadline sweep now, then every few minutes, as in serve
        timer.start()
        threads = [threading.Thread(target=s.run, name=f"demo-{name}", daemon=True)
                   for name, s in (("api", api), ("ui", ui))]
        for t in threads:
            t.start()
        banner(root, args, marker, out)
        if ready is not None:
            ready()
        old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, also when started in the background
                old[sig] = signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            for s in (api, ui):
                try:
                    s.close()
                    s.task_dispatcher.shutdown()
                except Exception:  # noqa: BLE001 - closing what is already half closed
                    pass
            timer.stop()
            ui_app.extensions["minqing"].lock_all()
            api_app.extensions["minqing_coord_stores"].close_all()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            print("\n▶ 已停止县服务器和笔记本网页 (both servers stopped)", file=out, flush=True)
    return 0 if marker.get("ok", True) else 1


def main(argv: list[str] | None = None, *, out: Any = sys.stdout) -> int:
    """``sync-server demo ARGV`` (its options are defined with the other commands, in ``sync_server.cli``)."""
    from sync_server.cli import build_parser

    return run(build_parser().parse_args(["demo", *(argv or [])]), out=out)


def run(args: argparse.Namespace, *, out: Any = sys.stdout) -> int:
    root = Path(args.data)
    if not 1 <= args.laptop <= 17:
        print("✘ --laptop 应在 1 到 17 之间 (--laptop is 1-17)", file=sys.stderr)
        return 2
    if root.exists() and any(c.name != LOCK for c in root.iterdir()) and not (root / "server" / "server.db").exists():
        print(f"✘ {root} 不是空目录，也不是演示目录；不会改动它 (not empty, not a demo folder; left alone)", file=sys.stderr)
        return 2
    root.mkdir(parents=True, exist_ok=True)
    try:
        with _folder_lock(root):
            if not args.no_serve:
                _check_ports([args.port, args.ui_port])
            marker = None if args.fresh else _reusable(root, args)
            if marker is not None:
                print(f"▶ 沿用 {root} 中已有的演示县 (reusing the demo built {marker['built_at']}: "
                      f"{marker['summary']['cases']} 件案件 cases); 要重建请加 --fresh 或删除该目录 "
                      f"(to rebuild: --fresh, or delete the folder)", file=out, flush=True)
            elif any(c.name != LOCK for c in root.iterdir()):
                print(f"▶ 重建演示县：清空 {root} (rebuilding the demo: clearing {root})", file=out, flush=True)
                _clear(root)
            undo = _log_to(root / "server.log", quiet=marker is None)  # the build's own requests are not logged
            try:
                if marker is None:
                    marker = build_demo(root, args, out)
                    undo = _log_to(root / "server.log", undo=undo)
                print_summary(marker["summary"], out)
                if args.no_serve:
                    print(f"演示数据 (demo data): {root}; 笔记本口令 (laptop passphrase): {PASSPHRASE}; "
                          f"网页密码 (web password): {WEB_PASSWORD}", file=out)
                    return 0 if marker.get("ok") else 1
                return serve(root, args, marker, out)
            finally:
                undo()
    except DemoRefused as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\n▶ 已中断；下次运行会重建 (interrupted; the next run rebuilds)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
