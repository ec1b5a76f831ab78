"""``sync-server sweep`` and the county rules file, through the real CLI and a real server.

A laptop registers a case and syncs over HTTP; the sweep run from the shell as of a later
time escalates it once (a second run writes nothing), and the laptop's next sync brings
the escalation back. A rules file that lengthens a statutory limit stops ``sweep``,
``rules check`` and ``serve`` at start, naming the line.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

from schema.obligations import CHINA
from tests.end_to_end.conftest import TOWN_E, VILLAGE_1, LaptopFactory, Server, sync_server_cmd


def later(days: float) -> str:
    return (datetime.now(CHINA) + timedelta(days=days)).isoformat(timespec="seconds")


def test_the_sweep_from_the_shell_escalates_once_and_the_laptop_learns_it(server: Server,
                                                                          laptops: LaptopFactory) -> None:
    v = laptops("v", VILLAGE_1)
    case_id = v.new_case()
    v.sync()
    inside_grace = server.cli("sweep", "--now", later(8.5)).json()  # past due, the laptop not heard from since
    assert inside_grace["ok"] is True and "transition:escalate" not in inside_grace["by_kind"]
    assert server.scalar("SELECT awaiting_sync FROM case_status WHERE case_id=?", case_id) == 1
    first = server.cli("sweep", "--now", later(12)).json()
    assert first["by_kind"]["transition:escalate"] == 1 and first["by_kind"]["alert:escalated"] == 1
    assert server.scalar("SELECT level || ' ' || node FROM cases WHERE id=?", case_id) == f"township {TOWN_E}"
    ledger = server.ledger_count()
    second = server.cli("sweep", "--now", later(12)).json()
    assert second["ops_written"] == 0 and server.ledger_count() == ledger
    text = server.cli("sweep", "--now", later(12), json_out=False).out
    assert "时限巡查完成" in text and "sweep done" in text
    v.sync()
    row = v.client.replica.conn.execute("SELECT level, node FROM cases WHERE id=?", (case_id,)).fetchone()
    assert tuple(row) == ("township", TOWN_E)


def test_a_rules_file_that_lengthens_a_statutory_limit_is_refused_at_start(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "bad-rules"
    server.stop()
    shutil.copytree(server.data, data)
    rules = data / "rules.toml"
    text = rules.read_text(encoding="utf-8")
    line = text.splitlines().index("[rules.handle_decide]           # 受理后办结并出具处理意见: 60 日, 可延长至多 30 日 (条例第34条)") + 2
    rules.write_text(text.replace("days = 60", "days = 90", 1), encoding="utf-8")
    bad = Server(data=data, port=0, log=tmp_path / "log")
    for args in (("sweep",), ("rules", "check")):
        r = bad.cli(*args, check=False)
        assert r.rc == 2
        err = r.json()["error"]
        assert err["code"] == "rules.invalid" and err["details"]["line"] == line
        assert f"rules.toml:{line}" in err["message"] and "60" in err["message"]
    plain = bad.cli("sweep", check=False, json_out=False)
    assert plain.rc == 2 and f"rules.toml:{line}" in plain.err and "Traceback" not in plain.err
    started = time.monotonic()
    p = subprocess.run([*sync_server_cmd(), "serve", "--data", str(data), "--port", "0"], capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and f"rules.toml:{line}" in p.stderr and "Traceback" not in p.stderr
    assert time.monotonic() - started < 30
    ok = bad.cli("rules", "check", str(Path(__file__).resolve().parents[2] / "schema" / "county_rules.toml")).json()
    assert ok["ok"] is True and ok["rules"]["handle_decide"]["days"] == 60


def test_serve_runs_the_sweep_on_its_timer(server: Server, laptops: LaptopFactory) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not server.scalar(
            "SELECT value FROM server_meta WHERE key='sweep_last_ms'"):
        time.sleep(0.2)
    assert server.scalar("SELECT value FROM server_meta WHERE key='sweep_last_ms'")
    assert server.scalar("SELECT value FROM server_meta WHERE key='sweep_last_error'") is None


def test_a_reader_that_stops_early_gets_no_error() -> None:
    """`sync-server … | head -1`: the pipe closes after one line; no "unexpected error", exit 0."""
    import subprocess
    import sys as _sys
    from pathlib import Path as _Path

    rules = _Path(__file__).resolve().parents[2] / "schema" / "county_rules.toml"
    code = ("import sys\nfrom sync_server.cli import main\n"
            "sys.stdout.reconfigure(line_buffering=True)\n"
            f"sys.exit(main(['rules', 'check', {str(rules)!r}]))\n")
    proc = subprocess.Popen([_sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # the first line, then the reader goes away
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, err
    assert "unexpected error" not in err and "Traceback" not in err, err
