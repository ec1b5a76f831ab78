"""Every command explains itself (--help, in Chinese) and is documented in docs/cli.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from field_client.cli import build_parser, command_paths, main, subparsers

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
CJK = re.compile(r"[\u4e00-\u9fff]")
PATHS = command_paths()
GROUPS = sorted({p[:1] for p in PATHS if len(p) > 1})


def _description(path: tuple[str, ...]) -> str:
    parser = build_parser()
    for name in path:
        parser = subparsers(parser)[name]
    return parser.description or ""


def test_the_command_tree_has_the_commands_the_design_names() -> None:
    for path in [("init",), ("case", "new"), ("case", "list"), ("case", "show"), ("case", "transition"),
                 ("visit", "add"), ("mediation", "add"), ("notice", "add"), ("status",), ("serve",)]:
        assert path in PATHS


@pytest.mark.parametrize("path", PATHS + GROUPS, ids=lambda p: " ".join(p))
def test_every_command_has_help_that_states_its_purpose_in_chinese(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    purpose = _description(path).splitlines()[0]
    assert CJK.search(purpose), f"{path} has no Chinese description"
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert purpose in out
    assert "用法" in out and "--help" in out


def test_the_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in {p[0] for p in PATHS}:
        assert re.search(rf"^\s+{re.escape(name)}\s", out, re.M), name


def test_version_prints_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("field-client ")


def _documented() -> dict[tuple[str, ...], str]:
    """Each ``### `field-client ...` `` heading of docs/cli.md and the text under it."""
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^### `field-client ([a-z -]+)`\s*$", text, flags=re.M)
    return {tuple(parts[i].split()): parts[i + 1] for i in range(1, len(parts), 2)}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p))
def test_every_command_is_documented_with_an_example(path: tuple[str, ...]) -> None:
    documented = _documented()
    assert path in documented, f"docs/cli.md has no section for field-client {' '.join(path)}"
    example = re.search(r"```console\n\$ field-client " + re.escape(" ".join(path)) + r"\b", documented[path])
    assert example, f"the section for field-client {' '.join(path)} has no example"


def test_docs_name_no_command_that_does_not_exist() -> None:
    assert sorted(set(_documented()) - set(PATHS)) == []
