"""Every sync-server command has --help and is documented in docs/server-cli.md; refusals are sentences."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sync_server.cli import build_parser, main

DOC = (Path(__file__).resolve().parents[2] / "docs" / "server-cli.md").read_text(encoding="utf-8")


def command_paths() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            paths.append(prefix)
        for action in subs:
            for name, child in action.choices.items():
                walk(child, (*prefix, name))

    walk(build_parser(), ())
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_help_and_is_documented(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip()
    assert f"sync-server {' '.join(path)}" in DOC


def test_a_missing_data_folder_is_a_sentence_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "list", "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "sync-server init" in err and "Traceback" not in err


def test_a_bad_jurisdiction_file_names_its_lines_and_imports_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "srv"
    assert main(["init", "--data", str(data)]) == 0
    csv = tmp_path / "j.csv"
    csv.write_text("code,name,level,parent\n3301,县,county,\n330101,,township,3301\n33010101,村,hamlet,330101\n",
                   encoding="utf-8")
    capsys.readouterr()
    assert main(["jurisdiction", "import", str(csv), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "line 4" in err
    assert main(["jurisdiction", "list", "--data", str(data), "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
