"""The demo that `make run` starts builds real laptops that converge, with both conflict kinds."""

from __future__ import annotations

import io
from pathlib import Path

from field_client import demo


def test_demo_laptops_converge_and_surface_both_kinds_of_conflict(tmp_path: Path) -> None:
    out = io.StringIO()
    laptops = demo.build(tmp_path, cases=4, out=out)
    try:
        assert demo.report(laptops, out=out) is True
        assert len({lap.replica.digest() for lap in laptops}) == 1
        conflicts = laptops[2].replica.conflicts(status="open")
        kinds = {c["kind"]: c for c in conflicts}
        assert set(kinds) == {"concurrent_edit", "invalid_transition"}
        assert kinds["invalid_transition"]["reason"] == "transition.level_too_low"
        assert kinds["concurrent_edit"]["field"] == "title"
        # laptop 3 never saw the shared case offline, yet shows both titles from its op log
        detail = laptops[2].case_detail(kinds["concurrent_edit"]["case_id"])
        titles = {v["value"] for c in detail["conflicts"] for v in c["values"] if c["field"] == "title"}
        assert titles == {"灌溉水渠改道纠纷（东村）", "水渠纠纷（西村版本）"}
    finally:
        for lap in laptops:
            lap.close()


def test_demo_refuses_a_folder_that_is_not_its_own(tmp_path: Path) -> None:
    keep = tmp_path / "precious.txt"
    keep.write_text("do not delete", encoding="utf-8")
    assert demo.main(["--data", str(tmp_path), "--no-serve"]) == 2
    assert keep.read_text(encoding="utf-8") == "do not delete"
