"""Schemathesis over every operation of ``/api/v1/openapi.json``, positive and negative data.

Each case is sent to the real server; what counts is the status and the body: no 5xx,
and every refusal is the one error body with a documented code. Schemathesis's own
conformance checks (status codes and content types the document lists, response
schemas) are run too and reported as notes: they say where the document is thinner
than the server, not that the server misbehaved.
"""

from __future__ import annotations

import warnings
from typing import Any

import requests

from tests.fuzz.run import drive
from tests.fuzz.tally import Part

TIMEOUT = 30


def operations(url: str) -> list[Any]:
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def run(part: Part, url: str, *, examples: int, seed: int | None) -> list[str]:
    """Fuzz every operation; returns the operations' labels."""
    from schemathesis import GenerationMode
    from schemathesis.checks import load_all_checks
    from schemathesis.specs.openapi import checks as oa

    load_all_checks()
    conformance = [oa.status_code_conformance, oa.content_type_conformance, oa.response_schema_conformance]
    labels = []
    with requests.Session() as session:
        for op in operations(url):
            labels.append(op.label)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                def each(case: Any, op: Any = op, mode: Any = mode) -> None:
                    what = f"{op.label} [{mode.value}] body={str(case.body)[:120]!r}"
                    resp = case.call(base_url=url, session=session, timeout=TIMEOUT)
                    ctype = (resp.headers.get("content-type") or [""])[0]
                    part.http(what, resp.status_code, ctype, resp.content)
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            case.validate_response(resp, checks=conformance)
                    except Exception as exc:  # noqa: BLE001 - schemathesis reports its findings as exceptions
                        part.note("spec conformance", f"{op.label} HTTP {resp.status_code}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")

                drive(op.as_strategy(generation_mode=mode), each, examples=examples, seed=seed)
    return labels
