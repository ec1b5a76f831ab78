"""Screenshots of the main pages of the demo county, for docs/ (``docs/screenshots/``).

    .venv/bin/python -m tests.browser.screens docs/screenshots [--data demo-data]

Builds the demo county of ``make run`` (or reuses ``--data`` when it holds one), serves
it on 127.0.0.1 (free ports) exactly as ``make run`` does, drives Debian's
``/usr/bin/chromium`` with Playwright (never a downloaded browser) and saves one PNG per
page, 1280 pixels wide, at most ``MAX_HEIGHT`` tall. Chinese text needs a CJK font
(``apt-get install fonts-noto-cjk``). Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import struct
import sys
import tempfile
import threading
import zlib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.browser.conftest import CHROMIUM, LAUNCH_ARGS

WIDTH = 1280
HEIGHT = 800
MAX_HEIGHT = 1500

# (file name, what it shows): the pages the first-hour guides link to
PAGES = [
    ("laptop-1-caseload.png", "笔记本：我的案件 (laptop: my caseload)"),
    ("laptop-2-case.png", "笔记本：一个案件 (laptop: a case)"),
    ("laptop-3-new-case.png", "笔记本：登记新案件 (laptop: register a case)"),
    ("county-1-login.png", "县代办中心：登录 (county web: log in)"),
    ("county-2-caseload.png", "县代办中心：全县案件 (county caseload)"),
    ("county-3-case.png", "县代办中心：案件页 (a case, with deadlines and escalations)"),
    ("county-4-conflicts.png", "县代办中心：待处理冲突 (the conflict queue)"),
    ("county-5-board.png", "县代办中心：一图 (warnings at a glance)"),
    ("county-6-report.png", "县代办中心：月报 (the monthly report)"),
    ("county-7-case-confidential.png", "县代办中心：检举控告案件，无保密权限 (a reporter hidden)"),
    ("audit-1-devices.png", "审计：设备 (audit: devices)"),
    ("audit-2-report.png", "审计：同步报告 (audit: sync report)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def recompress(path: Path) -> None:
    """Re-deflate a PNG's image data at level 9 (Chromium writes it fast, not small)."""
    data = path.read_bytes()
    pos, head, idat, tail = 8, [], b"", []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IDAT":
            idat += body
        elif idat:
            tail.append((kind, body))
        else:
            head.append((kind, body))
    packed = zlib.compress(zlib.decompress(idat), 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    out = data[:8] + b"".join(chunk(k, b) for k, b in head) + chunk(b"IDAT", packed)
    out += b"".join(chunk(k, b) for k, b in tail)
    if len(out) < len(data):
        path.write_bytes(out)


def shot(page: Any, path: Path) -> None:
    page.wait_for_load_state("load")
    height = min(int(page.evaluate("document.documentElement.scrollHeight")), MAX_HEIGHT)
    page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": WIDTH, "height": height})
    recompress(path)
    print(f"  {path} ({path.stat().st_size // 1024} KB)", flush=True)


def last_month(end_iso: str) -> str:
    first = date.fromisoformat(end_iso[:10]).replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def take(out_dir: Path, root: Path) -> None:
    from playwright.sync_api import sync_playwright

    from sync_server import demo

    marker = json.loads((root / demo.MARKER).read_text(encoding="utf-8"))
    facts = marker["facts"]
    laptop_case = facts["current_case"]  # 李明's case of this week, in handling
    month = last_month(datetime.fromtimestamp(facts["end"], demo.CHINA_TZ).isoformat())
    undo_log = demo._log_to(root / "server.log")  # the request log to the demo's file, not this terminal
    args = argparse.Namespace(port=free_port(), ui_port=free_port(), laptop=1, data=str(root))
    ready, stop = threading.Event(), threading.Event()
    banner = io.StringIO()
    server = threading.Thread(target=demo.serve, args=(root, args, marker, banner),
                              kwargs={"ready": ready.set, "stop": stop}, daemon=True)
    server.start()
    if not ready.wait(60):
        raise SystemExit("the demo servers did not start")
    web, ui = f"http://127.0.0.1:{args.port}", f"http://127.0.0.1:{args.ui_port}"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
            try:
                ctx = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, locale="zh-CN")
                ctx.set_default_timeout(30_000)
                page = ctx.new_page()
                # the mediator's laptop
                page.goto(ui + "/unlock")
                page.fill("#passphrase", demo.PASSPHRASE)
                page.click("button[type=submit]")
                page.wait_for_url("**/cases")
                shot(page, out_dir / "laptop-1-caseload.png")
                page.goto(f"{ui}/cases/{laptop_case}")
                shot(page, out_dir / "laptop-2-case.png")
                page.goto(ui + "/cases/new")
                shot(page, out_dir / "laptop-3-new-case.png")
                # the county coordinator
                page.goto(web + "/web/login")
                page.fill("#username", "coord")
                page.fill("#password", demo.WEB_PASSWORD)
                shot(page, out_dir / "county-1-login.png")
                page.click("#login-submit")
                page.wait_for_url("**/web/cases")
                shot(page, out_dir / "county-2-caseload.png")
                page.goto(f"{web}/web/cases/{facts['stuck_case']}")
                shot(page, out_dir / "county-3-case.png")
                page.goto(web + "/web/conflicts")
                shot(page, out_dir / "county-4-conflicts.png")
                page.goto(web + "/web/board")
                shot(page, out_dir / "county-5-board.png")
                page.goto(f"{web}/web/report?month={month}")
                shot(page, out_dir / "county-6-report.png")
                page.goto(f"{web}/web/cases/{facts['accusation_case']}")
                shot(page, out_dir / "county-7-case-confidential.png")
                page.click("#logout")
                # IT: the auditor
                page.goto(web + "/web/login")
                page.fill("#username", "audit")
                page.fill("#password", demo.WEB_PASSWORD)
                page.click("#login-submit")
                page.wait_for_load_state("load")
                page.goto(web + "/web/audit/devices")
                shot(page, out_dir / "audit-1-devices.png")
                page.goto(web + "/web/audit/report")
                shot(page, out_dir / "audit-2-report.png")
                ctx.close()
            finally:
                browser.close()
    finally:
        stop.set()
        server.join(30)
        undo_log()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.browser.screens", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="where the PNGs go, e.g. docs/screenshots")
    p.add_argument("--data", type=Path, help="a demo folder to reuse (default: build one in a temporary folder)")
    args = p.parse_args(argv)
    if not CHROMIUM.exists():
        print("✘ needs Debian's chromium at /usr/bin/chromium (apt-get install chromium fonts-noto-cjk)", file=sys.stderr)
        return 2
    from sync_server import demo

    with tempfile.TemporaryDirectory(prefix="minqing-screens-") as tmp:
        root = args.data or Path(tmp) / "demo-data"
        code = demo.main(["--data", str(root), "--no-serve"])
        if code != 0:
            return code
        take(args.out, root)
    missing = [name for name, _ in PAGES if not (args.out / name).exists()]
    if missing:
        print(f"✘ missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"✔ {len(PAGES)} screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
