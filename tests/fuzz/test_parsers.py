"""Hypothesis on the parsers: the envelope reader, the server's bundle import and the
laptop's. Each input is taken, or refused with the project's own error carrying a code
that docs/ documents; never another exception. (``test_fuzz.py`` runs the same
strategies, counted rather than shrunk, against a real server.)"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schema import envelope as env
from schema.errors import MinqingError
from schema.validation import partition_ops
from sync_server.bundles import import_folder
from tests.fuzz import craft as c
from tests.fuzz.codes import documented
from tests.fuzz.conftest import Site
from tests.fuzz.parsers import EDITS, answer_payloads_for, edit, framed

BOUNDED = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])
OTHER_DEVICE = "0123456789abcdef"


def refused_with_a_documented_code(exc: MinqingError) -> None:
    assert exc.code in documented(), f"{exc.code!r} ({exc.message}) is not documented in docs/"


def open_all(site: Site, data: bytes) -> None:
    keys = {site.device: site.laptop.keys.ed25519.public_key()}
    sealed = env.open(data, recipient_key=site.keys.x25519, sender_key=keys.get)
    if sealed.header["type"] == "changeset":
        env.changeset_from(sealed)


def bytes_inputs(site: Site) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=300), framed(), EDITS.map(lambda e: edit(site.envelope, e)))


@BOUNDED
@given(data=st.data())
def test_the_envelope_reader_takes_or_refuses_any_bytes(site: Site, data: st.DataObject) -> None:
    raw = data.draw(bytes_inputs(site))
    try:
        open_all(site, raw)
    except env.EnvelopeError as exc:
        refused_with_a_documented_code(exc)
    else:
        assert raw == site.envelope, "an altered envelope was taken"


@BOUNDED
@given(data=st.data())
def test_signed_envelopes_with_any_header_and_payload(site: Site, data: st.DataObject) -> None:
    payload = data.draw(c.JSON | st.builds(lambda ops: {"device": site.device, "seq": 1, "schema_version": 1,
                                                        "ops": ops}, c.mutated_ops(site.raw_ops)))
    header = data.draw(c.header_overrides())
    kind = data.draw(st.sampled_from(["changeset", "request", "answer"]))
    raw = c.craft(payload, signing_key=site.laptop.keys.ed25519, recipient=site.keys.x25519.public_key(),
                  sender=site.device, seq=1, type=kind, header=header)
    try:
        open_all(site, raw)
    except MinqingError as exc:
        assert isinstance(exc, env.EnvelopeError)
        refused_with_a_documented_code(exc)


@BOUNDED
@given(data=st.data())
def test_partition_ops_sorts_any_list_into_good_and_coded_bad(site: Site, data: st.DataObject) -> None:
    ops = data.draw(st.lists(c.JSON, max_size=4) | c.mutated_ops(site.raw_ops))
    good, bad = partition_ops(ops)
    assert len(good) + len(bad) == len(ops)
    for _, err in bad:
        assert err.code.startswith("op."), err.code
        refused_with_a_documented_code(err)


def _folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="minqing-fuzz-test-"))


@BOUNDED
@given(data=st.data())
def test_the_server_bundle_import_reports_every_file_and_never_raises(site: Site, data: st.DataObject) -> None:
    files = data.draw(st.lists(bytes_inputs(site) | st.builds(
        lambda ops, header: c.craft({"device": site.device, "seq": 10**6, "schema_version": 1, "ops": ops},
                                    signing_key=site.laptop.keys.ed25519, recipient=site.keys.x25519.public_key(),
                                    sender=site.device, seq=10**6, header=header),
        c.mutated_ops(site.raw_ops), c.header_overrides()), min_size=1, max_size=3))
    folder = _folder()
    try:
        for i, raw in enumerate(files):
            (folder / f"mq-{site.device}-{i:08d}.mqe").write_bytes(raw)
        with site.service() as svc:
            report = import_folder(svc, folder, carrier="test")
        assert report.files == len(files)
        assert report.merged + report.duplicates + report.requests + len(report.refused) == len(files)
        for r in report.refused:
            assert r["code"] in documented(), r
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@BOUNDED
@given(data=st.data())
def test_the_laptop_bundle_import_takes_or_refuses_with_a_code(site: Site, data: st.DataObject) -> None:
    signed_answer = st.builds(
        lambda payload, header: c.craft(payload, signing_key=site.keys.ed25519,
                                        recipient=site.laptop.keys.x25519.public_key(), sender=site.keys.node_id,
                                        seq=0, type="answer", header=header),
        answer_payloads_for(site.raw_ops), c.header_overrides())
    files = data.draw(st.lists(bytes_inputs(site) | signed_answer, min_size=1, max_size=2))
    folder = _folder()
    try:
        for i, raw in enumerate(files):
            (folder / f"mq-answer-{site.device}-{i + 1:06d}.mqe").write_bytes(raw)
        try:
            site.agent.import_bundle(folder)
        except MinqingError as exc:
            refused_with_a_documented_code(exc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
