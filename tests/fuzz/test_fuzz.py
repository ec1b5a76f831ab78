"""Bounded hostile input inside ``make test``: a real ``sync-server serve`` with enrolled
laptops (``tests.fuzz.lab``), every part of ``python -m tests.fuzz`` with small numbers
and a fixed seed. Each asserts no 5xx, every refusal with a documented code, no parser
crash and nothing altered or replayed taken; a failure prints the part's report."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fuzz import api, hostile, parsers, runner, signed
from tests.fuzz.codes import documented, refusal_problem
from tests.fuzz.lab import Lab, lab
from tests.fuzz.tally import Part, Tally

SEED = 8  # issue 8; make fuzz draws a new seed each run
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fuzz_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with lab(tmp_path_factory.mktemp("fuzz")) as L:
        yield L


def clean(part: Part) -> None:
    t = Tally({part.name: part})
    assert part.tried > 0, t.report()
    assert part.failed == 0, t.report()


def test_schemathesis_reaches_every_operation_of_the_document(fuzz_lab: Lab) -> None:
    part = Part("api: schemathesis")
    labels = api.run(part, fuzz_lab.url, examples=4, seed=SEED)
    with requests.Session() as s:
        doc = s.get(fuzz_lab.url + "/api/v1/openapi.json", timeout=30).json()
    assert set(labels) == {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops}
    clean(part)


def test_signed_envelopes_reach_past_the_door(fuzz_lab: Lab) -> None:
    part = Part("api: signed envelopes")
    signed.run(part, fuzz_lab, examples=8, seed=SEED, first_seq=5000)
    clean(part)
    assert part.accepted > 0, "no generated change set got past the signature check"


def test_the_parsers_against_the_running_server_s_keys(fuzz_lab: Lab) -> None:
    for name, fn in (("parser: envelope", parsers.envelope_parser), ("parser: server import", parsers.server_import),
                     ("parser: laptop import", parsers.laptop_import)):
        part = Part(name)
        fn(part, fuzz_lab, examples=10, seed=SEED)
        clean(part)


def test_crafted_hostile_requests(fuzz_lab: Lab) -> None:
    part = Part("hostile: http")
    hostile.http_cases(part, fuzz_lab, examples=4, seed=SEED, light=True)
    clean(part)
    for code in ("sync.too_large", "envelope.too_large", "envelope.truncated", "envelope.bad_signature",
                 "sync.seq_reused", "sync.device_revoked", "sync.unknown_device", "envelope.wrong_recipient",
                 "sync.method_not_allowed", "enroll.code_used"):
        assert part.refusals[code] > 0, (code, dict(part.refusals))
    assert not part.notes["unexpected code"], Tally({part.name: part}).report()


def test_crafted_hostile_bundles(fuzz_lab: Lab) -> None:
    part = Part("hostile: bundles")
    hostile.bundle_cases(part, fuzz_lab, examples=4, seed=SEED)
    clean(part)
    assert part.refusals["sync.bad_answer"] > 0 and part.refusals["envelope.truncated"] > 0


# ---- the instrument itself ----


def test_a_5xx_or_an_undocumented_code_fails_the_run() -> None:
    part = Part("x")
    part.http("a", 500, "application/json", b'{"ok": false, "error": {"code": "sync.internal", "message": "m", '
                                              b'"details": null}}')
    assert part.server_errors == 1 and not Tally({"x": part}).ok
    part = Part("y")
    part.http("b", 400, "application/json", b'{"ok": false, "error": {"code": "sync.made_up", "message": "m", '
                                            b'"details": null}}')
    part.http("c", 400, "text/html", b"<h1>Bad Request</h1>")
    assert part.uncoded == 2 and not Tally({"y": part}).ok
    part = Part("z")
    part.http("d", 400, "application/json", b'{"ok": false, "error": {"code": "envelope.truncated", "message": "m", '
                                            b'"details": null}}')
    assert part.failed == 0 and part.refusals["envelope.truncated"] == 1


def test_the_documented_codes_are_read_from_docs() -> None:
    d = documented()
    assert {"envelope.truncated", "sync.too_large", "sync.seq_reused", "sync.bad_answer"} <= d.exact
    assert "enroll.anything" in d and "sync.anything" not in d and "made_up" not in d
    assert refusal_problem(413, "application/json", b'{"ok": false, "error": {"code": "sync.too_large", '
                                                     b'"message": "m", "details": {}}}') == ("sync.too_large", None)


def test_the_command_line() -> None:
    out = subprocess.run([sys.executable, "-m", "tests.fuzz", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--examples" in out.stdout and "--seed" in out.stdout, out.stderr
    assert runner.main(["--parts", "nothing"]) == 2
    assert runner.main(["--examples", "0"]) == 2
