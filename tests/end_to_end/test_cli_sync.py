"""The laptop's sync commands, driven as a person would: enroll, sync, status, export, import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.end_to_end.conftest import VILLAGE_1, Server

CLI = [sys.executable, "-m", "field_client.cli"]


def fc(data: Path, *args: str, check: bool = True) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "MINQING_PASSPHRASE": "password123"}
    p = subprocess.run([*CLI, "--data", str(data), "--json", *args], capture_output=True, text=True,
                       timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert "Traceback" not in p.stderr, p.stderr
    doc = json.loads(p.stdout)
    if check:
        assert p.returncode == 0 and doc["ok"] is True, (p.returncode, p.stdout, p.stderr)
    return doc  # type: ignore[no-any-return]


def test_two_laptops_meet_through_the_cli_online_and_by_usb(server: Server, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for data, user in ((a, "li"), (b, "wang")):
        fc(data, "init", "--node", VILLAGE_1, "--user", user)
        fc(data, "enroll", "--code", server.enroll_code(VILLAGE_1))
    fc(a, "case", "new", "--title", "宅基地边界纠纷", "--category", "dispute", "--subject", "neighbour",
       "--channel", "visit", "--party", "role=petitioner,name=张三丰,phone=13812345678")
    assert fc(a, "status")["pending_ops"] == 2
    synced = fc(a, "sync")
    assert synced["pushed_ops"] == 2 and synced["quarantined"] == []
    status = fc(a, "status")
    assert status["pending_ops"] == 0 and status["server_answers"] is True and status["last_sync"]

    # b receives it online; then works offline and goes by USB
    assert fc(b, "sync")["pulled_ops"] == 2
    [case] = fc(b, "case", "list")["cases"]
    assert case["title"] == "宅基地边界纠纷"
    stick = tmp_path / "usb"
    fc(b, "note", "add", case["case_no"], "--text", "已电话联系当事人")
    files = fc(b, "export", str(stick))["files"]
    assert len(files) == 2  # one change set and one request
    server.cli("import", str(stick))
    device_b = fc(b, "status")["device_id"]
    server.cli("export-for", device_b, str(stick))
    imported = fc(b, "import", str(stick))
    assert fc(b, "status")["pending_ops"] == 0, imported
    # a sees b's note after its next sync
    assert fc(a, "sync")["pulled_ops"] == 1


def test_a_wrong_code_is_a_sentence_and_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "x"
    fc(data, "init", "--node", VILLAGE_1, "--user", "li")
    doc = fc(data, "enroll", "--code", "MQ1.not-a-code", check=False)
    assert doc["ok"] is False and doc["error"]["code"] == "enroll.bad_code"
