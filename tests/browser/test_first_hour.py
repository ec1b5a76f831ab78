"""The mediator's first hour (docs/first-hour-mediator.md), walked in a real browser.

A small demo county is built as ``make run`` builds it (``sync-server demo``: 3 cases a
village, 40 days) and served as it serves it (``demo.serve``: the county server and 李明's
laptop web UI on 127.0.0.1, free ports). Debian's headless Chromium then does what the
guide tells the mediator, by the labels the guide names: unlock with the passphrase,
filter 办理中 + 村级 and open this week's 宅基地边界纠纷 (the one with 有冲突), record a
visit and see it at the foot of 办理经过 with 待同步 1, record a mediation with an
agreement, close by agreement, register the 调解协议书 and see the new deadlines, settle
the conflict, then run step 8's sync command as written (with the demo's folder): 待同步
goes back to 0 and the county web shows the visit. If a label, a command or a promised
result of the guide changes, this fails; fix the guide with it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from sync_server import demo
from sync_server.cli import build_parser
from tests.browser.screens import free_port

pytestmark = pytest.mark.browser

SMALL = ["--cases", "3", "--days", "40"]
VISIT_NOTE = "再次上门，双方同意本周五在村调解室调解"
TERMS = "刘秀英在月底前拆除越界部分，按原界桩重砌"


class County:
    def __init__(self, root: Path, web: str, ui: str, facts: dict[str, Any]) -> None:
        self.root, self.web, self.ui, self.facts = root, web, ui, facts


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    root = tmp_path_factory.mktemp("first-hour") / "demo-data"
    port, ui_port = free_port(), free_port()
    args = build_parser().parse_args(["demo", "--data", str(root), "--port", str(port),
                                      "--ui-port", str(ui_port), *SMALL])
    out = io.StringIO()
    assert demo.main(["--data", str(root), "--no-serve", *SMALL], out=out) == 0, out.getvalue()
    marker = json.loads((root / "demo.json").read_text(encoding="utf-8"))
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=demo.serve, args=(root, args, marker, out),
                              kwargs={"ready": ready.set, "stop": stop}, name="first-hour-demo", daemon=True)
    thread.start()
    try:
        assert ready.wait(30), out.getvalue()
        yield County(root, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}", marker["facts"])
    finally:
        stop.set()
        thread.join(timeout=20)
        assert not thread.is_alive(), "the demo servers did not stop"


def pending(page: Any, n: int) -> None:
    """右上角 待同步 N."""
    expect(page.locator("#pending")).to_have_text(re.compile(rf"^\s*待同步\s*{n}\s*$"))


def last_timeline_entry(page: Any) -> Any:
    return page.locator("#timeline li").last


def test_the_mediators_first_hour_unlock_find_record_close_and_sync(page: Any, county: County) -> None:
    t0 = time.perf_counter()
    case_id = county.facts["current_case"]

    # 0. 打开网页: 口令 minqing-demo, 解锁; 锁定 and English at the top right
    page.goto(county.ui + "/")
    page.get_by_label("口令").fill(demo.PASSPHRASE)
    page.get_by_role("button", name="解锁").click()
    page.wait_for_url(re.compile(r"/cases$"))
    expect(page.locator("h1")).to_contain_text("我的案件")
    expect(page.get_by_role("button", name="锁定")).to_be_visible()
    expect(page.get_by_role("link", name="English")).to_be_visible()
    pending(page, 0)

    # 2. 「状态」办理中、「层级」村级、筛选; 宅基地边界纠纷, 标记「有冲突」; 点事由打开
    page.get_by_label("状态").select_option(label="办理中")
    page.get_by_label("层级").select_option(label="村级")
    page.get_by_role("button", name="筛选").click()
    row = page.locator("#case-list tbody tr", has_text="宅基地边界纠纷").filter(has_text="有冲突")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("村级办理时限(7日)")
    row.get_by_role("link", name="宅基地边界纠纷").click()
    page.wait_for_url(re.compile(rf"/cases/{case_id}$"))
    for heading in ("案件情况", "当事人", "待处理的冲突", "办理经过", "办理期限", "办理流转", "记录"):
        expect(page.get_by_role("heading", name=re.compile(rf"^{heading}(\s|$)"))).to_be_visible()
    expect(page.locator("#parties")).to_contain_text("张建国")
    expect(page.locator("#parties")).to_contain_text("刘秀英")
    expect(page.get_by_role("link", name="显示完整身份证号和电话")).to_be_visible()
    expect(page.locator("#deadlines")).to_contain_text("村级办理时限(7日)")

    # 3. 记录走访: 上门, 刘秀英家; 保存 → at the foot of 办理经过, 待同步 1
    page.get_by_role("link", name="记录走访").click()
    page.get_by_label("类型").select_option(label="上门")
    page.get_by_label("地点").fill("刘秀英家")
    page.get_by_label("情况记录").fill(VISIT_NOTE)
    page.get_by_role("button", name="保存").click()
    page.wait_for_url(re.compile(rf"/cases/{case_id}"))
    expect(last_timeline_entry(page)).to_contain_text("走访记录")
    expect(last_timeline_entry(page)).to_contain_text(VISIT_NOTE)
    pending(page, 1)

    # 4. 记录调解: 人民调解, 村调解室, both parties, 达成协议, 书面协议 …; 调解结案 → 已办结
    page.get_by_role("link", name="记录调解").click()
    page.get_by_label("调解类型").select_option(label="人民调解")
    page.get_by_label("地点").fill("村调解室")
    page.get_by_label("张建国（信访人/申请人）").check()
    page.get_by_label("刘秀英（被反映人/被申请人）").check()
    page.get_by_label("结果").select_option(label="达成协议")
    page.get_by_label("协议形式").select_option(label="书面协议")
    page.get_by_label("事实与争议").fill("刘秀英翻建院墙越过原界桩约半米。")
    page.get_by_label("协议内容").fill(TERMS)
    page.get_by_label("履行方式与期限").fill("刘秀英自行拆除重砌，村调委会验收。")
    page.get_by_label("履行期限").fill((date.today() + timedelta(days=20)).isoformat())
    expect(page.get_by_label("已告知其他救济途径")).to_be_visible()  # for 未达成协议
    page.get_by_role("button", name="保存").click()
    page.wait_for_url(re.compile(rf"/cases/{case_id}"))
    expect(last_timeline_entry(page)).to_contain_text("调解记录")
    expect(last_timeline_entry(page)).to_contain_text(TERMS)

    page.locator("#actions").get_by_role("link", name="调解结案").click()
    page.get_by_role("button", name="确认：调解结案").click()
    page.wait_for_url(re.compile(rf"/cases/{case_id}"))
    expect(page.locator("#case-state")).to_have_text("已办结")

    # 5. 登记送达文书 → 调解协议书 (送达日期 today by default) → the two new deadlines
    page.get_by_role("link", name="登记送达文书").click()
    page.get_by_label("文书类型").select_option(label="调解协议书")
    page.get_by_role("button", name="保存").click()
    page.wait_for_url(re.compile(rf"/cases/{case_id}"))
    expect(page.locator("#deadlines")).to_contain_text("办结后回访(15日)")
    expect(page.locator("#deadlines")).to_contain_text("申请司法确认期(30日)")

    # 5 (the guide's section 5). 待处理的冲突: the two 人数, pick one, 确定
    conflict = page.locator("#conflicts .conflict-open")
    expect(conflict).to_have_count(1)
    expect(conflict).to_contain_text("人数")
    expect(conflict).to_contain_text("保留当前值")
    conflict.locator("label.choice", has_text="li.ming").locator("input").check()
    conflict.get_by_role("button", name="确定").click()
    page.wait_for_url(re.compile(rf"/cases/{case_id}"))
    expect(page.locator("#conflicts .conflict-open")).to_have_count(0)
    pending(page, 5)  # visit, mediation, close, notice, resolution

    # 8. 同步: the command of the guide, with the demo's folder, while the page is open
    field_client = Path(sys.executable).parent / "field-client"
    cmd = [str(field_client)] if field_client.exists() else [sys.executable, "-m", "field_client.cli"]
    done = subprocess.run([*cmd, "--data", str(county.root / "laptop1"), "sync"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "MINQING_PASSPHRASE": demo.PASSPHRASE})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✔ 同步完成" in done.stdout
    page.reload()
    pending(page, 0)
    expect(page.locator("#case-state")).to_have_text("已办结")

    # … and the county sees it (docs/first-hour-coordinator.md: the case page's timeline)
    page.goto(county.web + "/web/login")
    page.get_by_label("用户名").fill("coord")
    page.get_by_label("密码").fill(demo.WEB_PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/web/cases"))
    page.goto(f"{county.web}/web/cases/{case_id}")
    expect(page.locator("main")).to_contain_text(VISIT_NOTE)
    expect(page.locator("main")).to_contain_text("已办结")

    # bounded: the walk itself (the county is built once, in the fixture)
    assert time.perf_counter() - t0 < 40
