"""Helpers for the web UI tests: a device made once per session, a page reader, a clock.

Used by ``tests/field_client/test_web*.py`` (Flask test client) and ``tests/browser/``.
"""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from field_client.store import FieldClient
from schema.obligations import CHINA

PASSPHRASE = "correct horse 1"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=CHINA).timestamp()
NODE, USER, NODE_NAME = "v001", "wangli", "东村"
CJK = re.compile(r"[\u3400-\u9fff]")


def id_number(body17: str) -> str:
    """A resident ID number with its check digit."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body17 + "10X98765432"[sum(int(c) * w for c, w in zip(body17, weights, strict=True)) % 11]


GOOD_ID = id_number("33010219800101123")
GOOD_ID_2 = id_number("33010219751230004")
BAD_ID = GOOD_ID[:-1] + ("0" if GOOD_ID[-1] != "0" else "1")  # check digit wrong


class Clock:
    """A clock tests move by hand."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_device_template(root: Path) -> Path:
    """A device (keys + replica) to copy for each test: scrypt runs once, not per test."""
    d = root / "device"
    FieldClient.init(d, PASSPHRASE, node=NODE, user=USER, node_name=NODE_NAME, clock=lambda: T0).close()
    return d


def copy_device(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


def case_values(**over: Any) -> dict[str, Any]:
    return {"title": "宅基地边界纠纷", "category": "dispute", "subject": "neighbour", "channel": "visit", **over}


def two_parties() -> list[dict[str, Any]]:
    return [
        {"role": "petitioner", "name": "张建国", "id_number": GOOD_ID, "phone": "13812345678", "address": "东组3号"},
        {"role": "respondent", "name": "李秀英", "id_number": GOOD_ID_2, "phone": "13998765432"},
    ]


class Page:
    """A response read the way the tests need: fields, errors, visible text."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.status = response.status_code
        self.text = response.get_data(as_text=True)
        self.location = response.headers.get("Location", "")

    def value(self, name: str) -> str:
        """What an input, textarea or select named ``name`` holds."""
        t = self.text
        m = re.search(rf'<textarea[^>]*name="{re.escape(name)}"[^>]*>(.*?)</textarea>', t, re.S)
        if m:
            return html.unescape(m.group(1))
        m = re.search(rf'<select[^>]*name="{re.escape(name)}"[^>]*>(.*?)</select>', t, re.S)
        if m:
            sel = re.search(r'<option value="([^"]*)" selected>', m.group(1))
            return html.unescape(sel.group(1)) if sel else ""
        m = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*>', t)
        if not m:
            raise AssertionError(f"no field {name!r} on the page")
        v = re.search(r'value="([^"]*)"', m.group(0))
        return html.unescape(v.group(1)) if v else ""

    def checked(self, name: str) -> list[str]:
        return [
            html.unescape(v)
            for v in re.findall(rf'<input type="checkbox" name="{re.escape(name)}" value="([^"]*)" checked>', self.text)
        ]

    def error(self, name: str) -> str | None:
        m = re.search(rf'<p class="error" id="f-{re.escape(name)}-error">(.*?)</p>', self.text, re.S)
        return html.unescape(m.group(1)).strip() if m else None

    def errors(self) -> dict[str, str]:
        return {
            k: html.unescape(v).strip()
            for k, v in re.findall(r'<p class="error" id="f-([^"]+)-error">(.*?)</p>', self.text, re.S)
        }

    def ids(self, prefix: str) -> list[str]:
        return re.findall(rf'id="{re.escape(prefix)}([^"]+)"', self.text)

    def visible(self) -> str:
        """The page's text as a person sees it (tags, styles and attribute values dropped)."""
        t = re.sub(r"<(script|style)\b.*?</\1>", " ", self.text, flags=re.S)
        t = re.sub(r"<[^>]+>", " ", t)
        return re.sub(r"\s+", " ", html.unescape(t)).strip()


class UI:
    """A person at the browser: the Flask test client plus the session's CSRF token."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def csrf(self) -> str:
        with self.client.session_transaction() as s:
            return str(s.get("csrf", ""))

    def get(self, url: str, **kw: Any) -> Page:
        return Page(self.client.get(url, **kw))

    def post(self, url: str, data: Mapping[str, Any] | None = None, *, token: bool = True,
             follow: bool = False) -> Page:
        body = dict(data or {})
        if token:
            body["csrf_token"] = self.csrf()
        return Page(self.client.post(url, data=body, follow_redirects=follow))

    def unlock(self, passphrase: str = PASSPHRASE) -> Page:
        self.get("/unlock")
        return self.post("/unlock", {"passphrase": passphrase})
