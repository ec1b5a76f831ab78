"""A demo of what exists: village laptops working offline, then meeting.

``python -m field_client.demo [--data DIR] [--no-serve]`` (what ``make run`` starts until
the county server exists) makes three village laptops (real devices: keys under a
passphrase, encrypted replicas), records a realistic fortnight of casework on each
offline, including two laptops editing the same case and a village closing a case that
had already gone up to the township, then lets every laptop exchange its ops with the
others (opened with the sender's data key, sealed with the receiver's: the same path
sync takes through the server). It prints what each laptop holds, checks that all of
them converged (same op-set digest, same cases, same conflicts), and serves laptop 1's
web UI on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from field_client.store import FieldClient

PASSPHRASE = "minqing-demo"
T0 = 1_795_000_000.0  # 2026-11-18, China time mid-morning
VILLAGES = [("330102001", "东村", "li.ming"), ("330102002", "西村", "zhao.fang"), ("330102003", "南村", "chen.jun")]
TOWNSHIP = "330102"
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


@dataclass
class Clock:
    """A demo clock that the script advances, so the history spans days."""

    t: float = T0

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
        client.add_record("visit", cid, {"kind": rnd.choice(["home", "walk"]), "visited_at": _iso(clock),
                                          "visitor": client.user, "summary": "上门了解情况，做好记录。"})
        if rnd.random() < 0.85:
            client.transition(cid, "accept")
            client.add_record("notice", cid, {"kind": "acceptance", "served_at": _iso(clock)[:10]})
            client.transition(cid, "start")
        if category == "dispute" and rnd.random() < 0.6:
            clock.advance(rnd.randint(3600, 3 * 86400))
            agreed = rnd.random() < 0.7
            client.add_record("mediation", cid, {
                "kind": "people", "mediator": client.user, "held_at": _iso(clock), "place": "村调解室",
                "outcome": "agreement" if agreed else "no_agreement",
                "agreement_form": rnd.choice(["written", "oral"]) if agreed else None,
                "terms": "双方同意按原界址重新立界，费用各半。" if agreed else None,
                "performance": "十日内完成立界" if agreed else None,
                "remedies_told": not agreed,
            })
            if agreed and rnd.random() < 0.6:
                client.transition(cid, "close_by_agreement")
        if rnd.random() < 0.15 and "escalate" in client.case_detail(cid)["allowed_actions"]:
            client.report_up(cid, TOWNSHIP, "村级难以化解，上报乡镇")
        if rnd.random() < 0.3:
            client.add_record("note", cid, {"text": "已电话联系当事人，约定下周再谈。", "written_at": _iso(clock)})
    return ids


def _iso(clock: Clock) -> str:
    from field_client.store import now_iso

    return now_iso(clock)


def exchange(src: FieldClient, dst: FieldClient) -> int:
    """Give dst every op src holds that dst lacks: opened with src's key, sealed with dst's."""
    have = {op_id for op_id, _ in dst.replica.op_pairs()}
    ops = [dst.sealer.seal_op(src.sealer.open_op(op)) for _, op in src.replica.ops() if op.op_id not in have]
    if ops:
        dst.replica.apply(ops, allow_sealed=True)
    return len(ops)


def build(root: Path, *, cases: int = 12, seed: int = 2026, out=sys.stdout) -> list[FieldClient]:
    """Make the laptops, their offline work, the shared cases with their conflicts; exchange."""
    rnd = random.Random(seed)
    clock = Clock()
    laptops = [
        FieldClient.init(root / f"laptop{i + 1}", PASSPHRASE, node=code, user=user, node_name=name, clock=clock)
        for i, (code, name, user) in enumerate(VILLAGES)
    ]
    print("▶ 三台村级笔记本离线登记、走访、调解 (three village laptops work offline) …", file=out)
    for lap in laptops:
        record_fortnight(lap, clock, rnd, cases)
    # A neighbour matter reported at 东村 that the 西村 mediator also works on.
    a, b = laptops[0], laptops[1]
    shared = a.new_case(
        {"title": "两村交界处灌溉水渠纠纷", "category": "dispute", "subject": "land_contract", "channel": "visit",
         "summary": "东村王建国与西村李秀英因水渠改道发生争执。"},
        [{"role": "petitioner", **_person(rnd)}, {"role": "respondent", **_person(rnd)}],
    )
    exchange(a, b)
    clock.advance(3600)
    a.edit("case", shared, {"title": "灌溉水渠改道纠纷（东村）"})   # both edit offline:
    b.edit("case", shared, {"title": "水渠纠纷（西村版本）"})       # a concurrent edit
    a.transition(shared, "accept")
    a.report_up(shared, TOWNSHIP, "涉及两村，上报乡镇协调")
    clock.advance(600)
    # 西村, not yet knowing the case went up, declines it offline: after the exchange the
    # fold keeps this transition but refuses it (a village acting on a township case).
    b.transition(shared, "reject", reason="不属于本村受理范围")
    exchange(a, b)
    print("▶ 笔记本相互交换操作记录 (laptops exchange their ops) …", file=out)
    for _ in range(2):
        for src in laptops:
            for dst in laptops:
                if src is not dst:
                    exchange(src, dst)
    return laptops


def report(laptops: list[FieldClient], out=sys.stdout) -> bool:
    digests = {lap.replica.digest() for lap in laptops}
    snapshots = [lap.replica.conflicts() for lap in laptops]
    for i, lap in enumerate(laptops, 1):
        n_cases = lap.replica.conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
        open_c = len(lap.replica.conflicts(status="open"))
        print(f"  笔记本{i} {lap.keys.info.get('node_name')} 设备 {lap.device_id}: "
              f"{lap.replica.op_count()} 条操作, {n_cases} 个案件, {open_c} 个待处理冲突, "
              f"摘要 {lap.replica.digest()[:24]}…", file=out)
    same = len(digests) == 1 and all(s == snapshots[0] for s in snapshots)
    print(("✔ 所有笔记本一致 (all laptops converged)" if same else "✘ 笔记本不一致 (laptops differ)"), file=out)
    return same


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m field_client.demo",
        description="演示：三台村级笔记本离线工作后交换数据并收敛 (demo: offline laptops converge)",
    )
    p.add_argument("--data", help="演示数据目录 (demo folder; default: a new temporary folder)")
    p.add_argument("--cases", type=int, default=12, help="每台笔记本的案件数 (cases per laptop)")
    p.add_argument("--no-serve", action="store_true", help="只生成数据，不启动网页 (do not serve the web UI)")
    p.add_argument("--port", type=int, default=8731, help="网页端口 (web UI port on 127.0.0.1)")
    args = p.parse_args(argv)
    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="minqing-demo-"))
    if root.exists() and any(root.iterdir()):
        if not (root / "laptop1" / "device.json").exists():
            print(f"✘ {root} 不是空目录，也不是演示目录；不会改动它 (not empty, not a demo folder)", file=sys.stderr)
            return 2
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    laptops = build(root, cases=args.cases)
    ok = report(laptops)
    for lap in laptops:
        lap.close()
    print(f"\n演示数据: {root}\n每台笔记本的口令 (passphrase): {PASSPHRASE}")
    if args.no_serve:
        return 0 if ok else 1
    try:
        from field_client.web import serve
    except ImportError:
        print("本地网页尚未提供 (the local web UI is not available in this build)")
        return 0 if ok else 1
    print("▶ 启动笔记本1的本地网页 (serving laptop 1's web UI); Ctrl-C 停止")
    serve(str(root / "laptop1"), host="127.0.0.1", port=args.port, open_browser=False)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
