"""The demo county that `make run` starts: laptops that converge through the server, both conflict kinds."""

from __future__ import annotations

import io
from pathlib import Path

from sync_server import demo


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
