"""A county for the coordinator web's tests, built once per session and copied per test.

``build_county(root)``: the demo county of ``sync_server.demo`` (a real server, four
enrolled laptops that worked offline and synced through the real sync API, the deadline
sweep, a concurrent edit of one case's title and a refused transition), plus, recorded
on 东村's laptop and synced the same way:

* an accusation (检举控告) whose reporter is ``REPORTER`` (named in the summary too) and
  whose respondent is ``ACCUSED``;
* a leader assignment (``LEADER``) and a satisfied evaluation on other cases;

and four accounts (``PASSWORD`` for all): ``coord`` (coordinator), ``secret`` (coordinator
with the confidential permission), ``audit`` (auditor), ``admin`` (administrator).

``County.copy(dest)`` gives a test its own folder; ``County.app()`` the server's Flask app
on it, with the county's clock; ``County.laptop(i)`` opens laptop ``i`` (1-4).
"""

from __future__ import annotations

import html
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from field_client.store import FieldClient, now_iso
from field_client.sync import SyncAgent, WsgiTransport
from sync_server import demo
from sync_server.app import create_app
from sync_server.users import add_user
from sync_server.web import db as web_db

PASSWORD = "county-password-1"
REPORTER = "欧阳明月"
REPORTER_PHONE = "13912345678"
ACCUSED = "钱多多"
ACCUSATION_SUMMARY = f"{REPORTER}举报：村会计钱多多挪用低保补助款。"
ACCUSATION_TITLE = f"{REPORTER}举报村会计挪用补助款"
LEADER = "张副县长"
USERS = {"coord": ("coordinator", False), "secret": ("coordinator", True), "audit": ("auditor", False),
         "admin": ("admin", False)}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def _id_number(body17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body17 + "10X98765432"[sum(int(c) * w for c, w in zip(body17, weights, strict=True)) % 11]


REPORTER_ID = _id_number("33010219850505123")


def build_county(root: Path) -> Path:
    """The county of the module's docstring in ``root``; returns ``root``."""
    store, laptops = demo.build(root, cases=8, seed=2026, out=io.StringIO())
    clock = store.clock
    transport = WsgiTransport(create_app(root / "server", {"MINQING_CLOCK": clock}))
    lap = laptops[0]
    clock.advance(3600)
    accusation = lap.new_case(
        {"title": ACCUSATION_TITLE, "category": "accusation", "subject": "official_conduct", "channel": "letter",
         "summary": ACCUSATION_SUMMARY, "demands": "请求查处"},
        [{"role": "petitioner", "name": REPORTER, "id_number": REPORTER_ID, "phone": REPORTER_PHONE,
          "address": "东组8号"},
         {"role": "respondent", "name": ACCUSED, "phone": "13700001111"}],
    )
    lap.add_record("visit", accusation, {"kind": "home", "visited_at": now_iso(clock), "visitor": lap.user,
                                         "summary": f"与{REPORTER}面谈，核实举报线索。"})
    others = [r[0] for r in lap.replica.conn.execute(
        "SELECT id FROM cases WHERE category != 'accusation' ORDER BY case_no")]
    lap.add_record("leader_assignment", others[0], {"leader": LEADER, "assigned_at": now_iso(clock)[:10],
                                                     "handler": "李明", "plan": "包案化解，每周报告进展。"})
    lap.add_record("evaluation", others[1], {"rating": "satisfied", "evaluated_at": now_iso(clock)})
    SyncAgent(lap, transport).sync()
    for other in laptops[1:]:
        SyncAgent(other, transport).sync()
    with store.transaction():
        for name, (role, confidential) in USERS.items():
            add_user(store.conn, name, PASSWORD, role=role, now_ms=store.now_ms(), confidential=confidential,
                     display_name=name)
    (root / "clock.json").write_text(json.dumps({"t": clock.t, "accusation": accusation}))
    store.close()
    for lap_ in laptops:
        lap_.close()
    return root


@dataclass
class County:
    root: Path

    @property
    def info(self) -> dict[str, Any]:
        return dict(json.loads((self.root / "clock.json").read_text()))

    @property
    def accusation(self) -> str:
        return str(self.info["accusation"])

    def copy(self, dest: Path) -> County:
        shutil.copytree(self.root, dest)
        web_db.forget_tables()
        return County(dest)

    def clock(self) -> Clock:
        return Clock(self.info["t"])

    def app(self, clock: Clock | None = None, **config: Any) -> Any:
        return create_app(self.root / "server", {"MINQING_CLOCK": clock or self.clock(), "TESTING": True, **config})

    def laptop(self, i: int, clock: Clock | None = None) -> FieldClient:
        return FieldClient.open(self.root / f"laptop{i}", demo.PASSPHRASE, clock=clock or self.clock())


def close_app(app: Any) -> None:
    app.extensions["minqing_coord_stores"].close_all()


class Browser:
    """The Flask test client with the page's CSRF token at hand."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.token = ""

    def get(self, url: str, **kw: Any) -> Any:
        resp = self.client.get(url, **kw)
        m = CSRF.search(resp.get_data(as_text=True)) if resp.mimetype == "text/html" else None
        if m:
            self.token = m.group(1)
        return resp

    def post(self, url: str, data: dict[str, Any] | None = None, *, token: bool = True, **kw: Any) -> Any:
        form = dict(data or {})
        if token:
            form.setdefault("csrf_token", self.token)
        return self.client.post(url, data=form, **kw)

    def login(self, username: str, password: str = PASSWORD) -> Any:
        self.get("/web/login")
        resp = self.post("/web/login", {"username": username, "password": password})
        if resp.status_code == 302:
            self.get("/web/", follow_redirects=True)  # the landing page's form token
        return resp

    def text(self, url: str) -> str:
        resp = self.get(url)
        assert resp.status_code == 200, (url, resp.status_code, resp.get_data(as_text=True)[:2000])
        return html.unescape(resp.get_data(as_text=True))


_TEMPLATE: list[Path] = []


def county_template() -> County:
    """The county, built once per test process (in a temporary folder removed at exit)."""
    if not _TEMPLATE:
        import atexit
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="minqing-coord-county-"))
        atexit.register(shutil.rmtree, tmp, True)
        _TEMPLATE.append(build_county(tmp / "county"))
    return County(_TEMPLATE[0])
