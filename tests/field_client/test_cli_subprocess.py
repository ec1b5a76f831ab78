"""The installed ``field-client`` program, run as a person runs it (a real process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.field_client.conftest import PASSPHRASE

VENV_SCRIPT = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "field-client"


def _program() -> list[str]:
    if VENV_SCRIPT.exists():
        return [str(VENV_SCRIPT)]
    found = shutil.which("field-client")
    return [found] if found else [sys.executable, "-m", "field_client.cli"]


def _run(*argv: str, data: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "MINQING_PASSPHRASE": PASSPHRASE, "MINQING_DATA": str(data), **(env or {})}
    return subprocess.run([*_program(), *argv], capture_output=True, text=True, encoding="utf-8",
                          env=full_env, stdin=subprocess.DEVNULL, timeout=60)


def test_the_program_registers_and_lists_a_case(tmp_path: Path) -> None:
    data = tmp_path / "laptop"
    r = _run("init", "--node", "V001", "--user", "wangli", data=data)
    assert r.returncode == 0 and "已在" in r.stdout, r.stderr
    r = _run("--json", "case", "new", "--title", "宅基地边界纠纷", "--category", "矛盾纠纷", "--subject", "邻里纠纷",
             "--channel", "来访", "--party", "role=信访人,name=张三丰", data=data)
    assert r.returncode == 0, r.stderr
    case_no = json.loads(r.stdout)["case_no"]
    r = _run("case", "list", data=data)
    assert r.returncode == 0 and case_no in r.stdout and "已登记" in r.stdout


def test_mistakes_exit_2_with_a_sentence_and_no_traceback(tmp_path: Path) -> None:
    data = tmp_path / "laptop"
    r = _run("case", "list", data=data)
    assert r.returncode == 2 and "field-client init" in r.stderr and "Traceback" not in r.stderr
    assert _run("init", "--node", "V001", "--user", "wangli", data=data).returncode == 0
    r = _run("case", "show", "nothing", data=data, env={"MINQING_PASSPHRASE": "wrong-passphrase"})
    assert r.returncode == 2 and "口令不对" in r.stderr and "Traceback" not in r.stderr
    r = _run("case", "show", "nothing", "--json", data=data)
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "client.not_found"


def test_no_passphrase_without_a_terminal_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MINQING_PASSPHRASE"}
    r = subprocess.run([*_program(), "--data", str(tmp_path / "x"), "init", "--node", "V1", "--user", "u"],
                       capture_output=True, text=True, encoding="utf-8", env=env,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 2 and "MINQING_PASSPHRASE" in r.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX locale")
def test_help_prints_chinese_even_under_the_c_locale(tmp_path: Path) -> None:
    r = _run("case", "new", "--help", data=tmp_path, env={"LC_ALL": "C", "LANG": "C"})
    assert r.returncode == 0, r.stderr
    assert "登记一件新案件" in r.stdout
