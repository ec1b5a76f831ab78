"""The demo county that `make run` starts.

* the small county the coordinator tests use (``demo.build``): laptops that converge
  through the server, both conflict kinds;
* the whole county of ``make run`` (``sync-server demo``), built small (3 cases a village,
  40 days): 3 townships and 12 villages each with cases, every role logs in, visits,
  mediations, notices, escalations by the sweep, overdue cases, open conflicts, a
  reporter hidden from a coordinator without the permission, every laptop equal to the
  server within its scope; a second run reuses the folder; served for real on
  127.0.0.1 and stopped by Ctrl-C (SIGINT); served on another port than it was built for,
  its laptops still sync (step 8 of docs/first-hour-mediator.md).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from field_client.store import FieldClient
from sync_server import demo
from sync_server.demo_county import COUNTY_LAPTOPS
from sync_server.service import SyncService
from sync_server.store import ServerStore

SMALL = ["--cases", "3", "--days", "40"]


def test_demo_laptops_match_the_server_and_surface_both_kinds_of_conflict(tmp_path: Path) -> None:
    out = io.StringIO()
    store, laptops = demo.build(tmp_path, cases=4, out=out)
    try:
        assert demo.report(store, laptops, out=out) is True
        conflicts = store.replica.conflicts(status="open")
        kinds = {c["kind"]: c for c in conflicts}
        assert set(kinds) == {"concurrent_edit", "invalid_transition"}
        assert kinds["invalid_transition"]["reason"] == "transition.level_too_low"
        assert kinds["concurrent_edit"]["field"] == "title"
        # the township laptop never saw the case offline; it arrived with its whole history
        township = laptops[3]
        detail = township.case_detail(kinds["concurrent_edit"]["case_id"])
        titles = {v["value"] for c in detail["conflicts"] for v in c["values"] if c["field"] == "title"}
        assert titles == {"灌溉水渠改道纠纷（李明记录）", "水渠纠纷（赵芳记录）"}
        # the 西镇 laptop sees none of 东镇's cases
        assert laptops[2].replica.conflicts() == []
        assert store.replica.verify_rebuild() == []
    finally:
        store.close()
        for lap in laptops:
            lap.close()


def test_demo_refuses_a_folder_that_is_not_its_own(tmp_path: Path) -> None:
    keep = tmp_path / "precious.txt"
    keep.write_text("do not delete", encoding="utf-8")
    assert demo.main(["--data", str(tmp_path), "--no-serve"]) == 2
    assert keep.read_text(encoding="utf-8") == "do not delete"


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("demo") / "demo-data"
    out = io.StringIO()
    t0 = time.perf_counter()
    assert demo.main(["--data", str(root), "--no-serve", *SMALL], out=out) == 0, out.getvalue()
    printed = out.getvalue()
    assert time.perf_counter() - t0 < 120, printed
    yield root, printed


def test_the_county_has_three_townships_twelve_villages_and_cases_in_every_village(county: tuple[Path, str]) -> None:
    root, printed = county
    marker = json.loads((root / "demo.json").read_text(encoding="utf-8"))
    s = marker["summary"]
    assert marker["ok"] is True and marker["laptops"] == len(COUNTY_LAPTOPS) == 17
    assert (s["townships"], s["villages"], s["villages_with_cases"]) == (3, 12, 12)
    assert [t["villages"] for t in s["by_township"]] == [4, 4, 4]
    assert all(t["cases"] >= 12 for t in s["by_township"])
    assert s["cases"] >= 12 * 3 and s["devices"] == 17
    assert s["visits"] > s["cases"] and s["mediations"] > 0 and s["notices"] > s["cases"] / 2
    assert s["alerts"].get("escalated", 0) > 0  # reported up by the deadline sweep
    assert s["overdue"] > 0 and s["colours"]["orange"] + s["colours"]["red"] > 0
    assert s["backlog"] > 0 and s["conflicts_open"] > 0
    assert {"village", "township", "county"} <= set(s["by_level"])
    # progress while building, then the figures
    assert "第" in printed and "天 (day)" in printed and "12 个村 (villages)" in printed
    assert "✔ 每台笔记本与服务器在其辖区内完全一致" in printed


def test_every_laptop_matches_the_server_within_its_scope(county: tuple[Path, str]) -> None:
    root, _ = county
    store = ServerStore(root / "server")
    laptops = [FieldClient.open(root / f"laptop{i}", demo.PASSPHRASE) for i in range(1, len(COUNTY_LAPTOPS) + 1)]
    try:
        assert demo.report(store, laptops, out=io.StringIO()) is True
        svc = SyncService(store)
        for lap, (node, *_rest) in zip(laptops, COUNTY_LAPTOPS, strict=True):
            assert lap.node == node
            n_cases = lap.replica.conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
            assert n_cases == len(svc.scope_cases(node)) > 0
        kinds = {c["kind"] for c in store.replica.conflicts(status="open")}
        assert kinds == {"concurrent_edit", "invalid_transition"}
        # 李明's case of this week (the mediator's guide): in handling, with a conflict over the people count
        current = json.loads((root / "demo.json").read_text(encoding="utf-8"))["facts"]["current_case"]
        detail = laptops[0].case_detail(current)
        assert detail["case"]["state"] == "in_handling" and detail["case"]["level"] == "village"
        assert [c["field"] for c in detail["conflicts"] if c["status"] == "open"] == ["people_count"]
        # the case nobody moved on: reported up twice by the sweep, overdue and a backlog at the county
        stuck = json.loads((root / "demo.json").read_text(encoding="utf-8"))["facts"]["stuck_case"]
        assert store.conn.execute("SELECT level FROM cases WHERE id=?", (stuck,)).fetchone()[0] == "county"
        assert store.conn.execute("SELECT COUNT(*) FROM alerts WHERE case_id=? AND kind='escalated'",
                                  (stuck,)).fetchone()[0] == 2
        assert store.conn.execute("SELECT overdue, backlog FROM case_status WHERE case_id=?",
                                  (stuck,)).fetchone() == (1, 1)
    finally:
        store.close()
        for lap in laptops:
            lap.close()


def test_every_role_logs_in_and_the_reporter_is_hidden_without_the_permission(county: tuple[Path, str]) -> None:
    from sync_server.app import create_app
    from tests.sync_server.coord_support import Browser

    root, _ = county
    facts = json.loads((root / "demo.json").read_text(encoding="utf-8"))["facts"]
    accusation = facts["accusation_case"]
    reporter = "孙晓梅"
    app = create_app(root / "server", {"TESTING": True})
    try:
        pages = {"coordinator": "/web/cases", "auditor": "/web/audit/devices", "admin": "/web/accounts"}
        for username, role, confidential, _name in demo.DEMO_USERS:
            b = Browser(app.test_client())
            assert b.login(username, demo.WEB_PASSWORD).status_code == 302, username
            b.text(pages[role])
            if role == "coordinator":
                page = b.text(f"/web/cases/{accusation}")
                assert (reporter in page) is confidential, username
                if not confidential:
                    assert "（保密）" in page
                assert "东镇" in b.text("/web/board")
                assert b.text("/web/conflicts").count('class="conflict') > 0
    finally:
        app.extensions["minqing_coord_stores"].close_all()


def test_a_second_run_reuses_the_folder_and_says_so(county: tuple[Path, str]) -> None:
    root, _ = county
    before = json.loads((root / "demo.json").read_text(encoding="utf-8"))["built_at"]
    out = io.StringIO()
    t0 = time.perf_counter()
    assert demo.main(["--data", str(root), "--no-serve", *SMALL], out=out) == 0
    assert time.perf_counter() - t0 < 10
    assert "沿用" in out.getvalue() and "reusing" in out.getvalue()
    assert json.loads((root / "demo.json").read_text(encoding="utf-8"))["built_at"] == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_make_run_serves_both_on_127_0_0_1_prints_the_logins_and_stops_on_ctrl_c(county: tuple[Path, str]) -> None:
    root, _ = county
    port, ui_port = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "sync_server.cli", "demo", "--data", str(root), *SMALL,
           "--port", str(port), "--ui-port", str(ui_port)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[2])
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "Ctrl-C" in text, text
        for want in (f"http://127.0.0.1:{port}/web/", f"http://127.0.0.1:{port}/web/audit/",
                     f"http://127.0.0.1:{ui_port}/", demo.PASSPHRASE, demo.WEB_PASSWORD,
                     "coord", "secret", "audit", "admin"):
            assert want in text, want
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/web/login", timeout=10) as r:
            assert r.status == 200 and "登录" in r.read().decode("utf-8")
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/unlock", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/ping", timeout=10) as r:
            assert json.loads(r.read())["ok"] is True
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, text + rest
        assert "已停止" in rest and "stopped" in rest
        for p in (port, ui_port):  # both ports are free again (nobody listens; closed connections may linger)
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_a_demo_served_on_another_port_than_it_was_built_for_still_syncs(county: tuple[Path, str]) -> None:
    """The laptops pin the server's address at enrollment; serving moves it to ``--port``."""
    from sync_server.cli import build_parser

    root, _ = county
    port, ui_port = _free_port(), _free_port()
    args = build_parser().parse_args(["demo", "--data", str(root), *SMALL, "--port", str(port),
                                      "--ui-port", str(ui_port)])
    marker = json.loads((root / "demo.json").read_text(encoding="utf-8"))
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=demo.serve, args=(root, args, marker, io.StringIO()),
                              kwargs={"ready": ready.set, "stop": stop}, daemon=True)
    thread.start()
    try:
        assert ready.wait(30)
        done = subprocess.run([sys.executable, "-m", "field_client.cli", "--data", str(root / "laptop1"), "sync"],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "MINQING_PASSPHRASE": demo.PASSPHRASE})
        assert done.returncode == 0, done.stdout + done.stderr
        assert "✔ 同步完成" in done.stdout
    finally:
        stop.set()
        thread.join(timeout=20)
    assert demo.point_laptops_at(root, f"http://127.0.0.1:{port}") == 0  # every laptop already points there
