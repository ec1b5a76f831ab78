"""A damaged data file or key file is reported in a sentence and left exactly as it was;
``init`` never builds over an existing device or data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from field_client.store import FieldClient
from tests.field_client.conftest import PASSPHRASE, Cli, new_case, op_count_and_digest

COMMANDS = [
    ("status",),
    ("case", "list"),
    ("case", "show", "0001"),
    ("case", "new", "--title", "t", "--category", "dispute", "--subject", "other", "--channel", "visit"),
    ("visit", "add", "0001", "--kind", "walk"),
    ("case", "transition", "0001", "accept"),
    ("conflict", "list"),
]


@pytest.fixture
def garbage(cli: Cli, cli_data: Path) -> bytes:
    """A device with a case whose replica.db has been overwritten with garbage."""
    new_case(cli)
    junk = os.urandom(16384)
    (cli_data / "replica.db").write_bytes(junk)
    return junk


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_damaged_data_file_is_reported_and_left_unchanged(
    cli: Cli, cli_data: Path, garbage: bytes, argv: tuple[str, ...]
) -> None:
    r = cli(*argv)
    assert r.code == 2 and r.out == ""
    assert r.err.strip().count("\n") == 0 and "Traceback" not in r.err
    assert "已损坏" in r.err and "replica.db" in r.err
    assert (cli_data / "replica.db").read_bytes() == garbage
    assert sorted(p.name for p in cli_data.iterdir()) == ["device.json", "replica.db"]
    body = cli("--json", *argv).json()
    assert body["error"]["code"] == "replica.damaged"


def test_a_damaged_key_file_is_reported_and_left_unchanged(cli: Cli, cli_data: Path) -> None:
    new_case(cli)
    keyfile = cli_data / "device.json"
    damaged = keyfile.read_bytes()[:-40]
    keyfile.write_bytes(damaged)
    r = cli("case", "list")
    assert r.code == 2 and "密钥文件" in r.err and "已损坏" in r.err
    assert keyfile.read_bytes() == damaged


def test_init_refuses_a_folder_that_already_holds_a_device_and_changes_nothing(cli: Cli, cli_data: Path) -> None:
    new_case(cli)
    before = {p.name: p.read_bytes() for p in cli_data.iterdir()}
    digest = op_count_and_digest(cli_data)
    r = cli("init", "--node", "V002", "--user", "zhaofang")
    assert r.code == 2 and "已经有" in r.err and "Traceback" not in r.err
    assert cli("--json", "init", "--node", "V002", "--user", "x").json()["error"]["code"] == "client.already_initialised"
    assert {p.name: p.read_bytes() for p in cli_data.iterdir()} == before
    assert op_count_and_digest(cli_data) == digest
    assert cli("case", "show", "0001").code == 0  # the old device still opens


def test_init_refuses_a_data_file_with_records_but_no_keys(cli: Cli, cli_data: Path) -> None:
    new_case(cli)
    (cli_data / "device.json").unlink()  # the keys are lost; the records are still someone's
    replica = (cli_data / "replica.db").read_bytes()
    r = cli("init", "--node", "V002", "--user", "zhaofang")
    assert r.code == 2 and "不会覆盖" in r.err
    assert not (cli_data / "device.json").exists()
    assert (cli_data / "replica.db").read_bytes() == replica


def test_init_over_a_damaged_data_file_refuses_and_leaves_it(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "fresh"
    folder.mkdir()
    junk = os.urandom(4096)
    (folder / "replica.db").write_bytes(junk)
    r = cli("init", "--node", "V002", "--user", "zhaofang", data=folder)
    assert r.code == 2 and "已损坏" in r.err
    assert (folder / "replica.db").read_bytes() == junk and not (folder / "device.json").exists()


def test_an_init_cut_short_before_the_keys_were_written_can_be_run_again(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "fresh"
    FieldClient.init(folder, PASSPHRASE, node="V002", user="zhaofang").close()
    (folder / "device.json").unlink()  # as if the laptop died between the data file and the keys
    r = cli("init", "--node", "V002", "--user", "zhaofang", data=folder)
    assert r.code == 0, r.err
    assert cli("case", "list", data=folder).code == 0


def test_init_makes_a_device_that_opens_with_its_passphrase_only(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "new" / "laptop"
    r = cli("--json", "init", "--node", "V009", "--user", "liming", "--level", "乡镇", "--node-name", "某镇", data=folder)
    assert r.code == 0, r.out
    body = r.json()
    assert body["level"] == "township" and body["node"] == "V009" and len(body["device_id"]) == 16
    assert (folder / "device.json").exists() and (folder / "replica.db").exists()
    status = cli("--json", "status", data=folder).json()
    assert status["device_id"] == body["device_id"] and status["level"] == "township"
    monkeypatch.setenv("MINQING_PASSPHRASE", "another-passphrase")
    assert cli("status", data=folder).code == 2


def test_init_refuses_a_short_passphrase_and_an_unknown_level(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = cli("init", "--node", "V009", "--user", "liming", "--level", "province", data=tmp_path / "a")
    assert r.code == 2 and "province" in r.err
    monkeypatch.setenv("MINQING_PASSPHRASE", "short")
    r = cli("init", "--node", "V009", "--user", "liming", data=tmp_path / "b")
    assert r.code == 2 and "8" in r.err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root can write anywhere")
def test_init_in_a_folder_that_cannot_be_written_is_a_sentence(cli: Cli, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        r = cli("init", "--node", "V001", "--user", "wangli", data=locked / "laptop")
    finally:
        locked.chmod(0o700)
    assert r.code == 2 and "无法读写" in r.err and "Traceback" not in r.err


def test_init_where_a_file_stands_in_the_way_is_a_sentence(cli: Cli, tmp_path: Path) -> None:
    blocker = tmp_path / "laptop"
    blocker.write_text("not a folder")
    r = cli("init", "--node", "V001", "--user", "wangli", data=blocker)
    assert r.code == 2 and "Traceback" not in r.err
    assert blocker.read_text() == "not a folder"
