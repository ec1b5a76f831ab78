"""The coordinator web's accounts: login, throttling, CSRF, cookies, roles, logout, the access log."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync_server.web import auth
from tests.sync_server.coord_support import PASSWORD, Browser, County, close_app, county_template


@pytest.fixture
def county(tmp_path: Path) -> County:
    return county_template().copy(tmp_path / "county")


@pytest.fixture
def app(county: County) -> Iterator[Any]:
    a = county.app()
    yield a
    close_app(a)


def access(county: County, action: str | None = None) -> list[tuple[Any, ...]]:
    with sqlite3.connect(county.root / "server" / "server.db") as conn:
        q = "SELECT username, action, case_id, what, detail FROM access_log"
        if action:
            return conn.execute(q + " WHERE action=? ORDER BY id", (action,)).fetchall()
        return conn.execute(q + " ORDER BY id").fetchall()


def test_a_page_needs_a_login_and_the_login_lands_on_the_caseload(app: Any) -> None:
    b = Browser(app.test_client())
    resp = b.get("/web/cases")
    assert resp.status_code == 302 and "/web/login" in resp.headers["Location"]
    assert b.get("/").headers["Location"].endswith("/web/")
    resp = b.login("coord")
    assert resp.status_code == 302
    page = b.text("/web/cases")
    assert "全县案件总览" in page and "coord" in page


def test_passwords_are_argon2id_hashes(county: County) -> None:
    with sqlite3.connect(county.root / "server" / "server.db") as conn:
        hashes = [r[0] for r in conn.execute("SELECT password_hash FROM users")]
    assert hashes and all(h.startswith("$argon2id$") and PASSWORD not in h for h in hashes)


def test_the_session_cookie_is_httponly_lax_and_secure_only_over_https(county: County) -> None:
    plain = county.app()
    try:
        b = Browser(plain.test_client())
        b.get("/web/login")
        b.post("/web/login", {"username": "coord", "password": PASSWORD})
        cookie = b.client.get_cookie(auth.SESSION_COOKIE, path="/web")
        assert cookie is not None and cookie.http_only and cookie.same_site == "Lax" and not cookie.secure
        assert cookie.path == "/web"
        with sqlite3.connect(county.root / "server" / "server.db") as conn:
            stored = [r[0] for r in conn.execute("SELECT token_hash FROM web_sessions")]
        assert cookie.value not in stored and auth.token_hash(cookie.value) in stored
    finally:
        close_app(plain)
    secure = county.app(COORD_SECURE_COOKIES=True)
    try:
        client = secure.test_client()
        b = Browser(client)
        b.get("/web/login")
        b.post("/web/login", {"username": "coord", "password": PASSWORD})
        cookie = client.get_cookie(auth.SESSION_COOKIE, path="/web")
        assert cookie is not None and cookie.secure and cookie.http_only
    finally:
        close_app(secure)


def test_a_login_posted_without_its_token_is_refused(app: Any, county: County) -> None:
    b = Browser(app.test_client())
    b.get("/web/login")
    resp = b.post("/web/login", {"username": "coord", "password": PASSWORD}, token=False)
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "web.csrf" in text and "表单已过期" in text and "Traceback" not in text
    resp = b.post("/web/login", {"username": "coord", "password": PASSWORD, "csrf_token": "forged"})
    assert resp.status_code == 400
    assert not access(county, "login")


@pytest.mark.parametrize("url,data", [
    ("/web/logout", {}),
    ("/web/conflicts/0123456789abcdef0123456789abcdef", {"choice": "x"}),
    ("/web/handover", {"leader": "x", "successor": "y"}),
])
def test_every_form_posted_without_its_token_is_refused(app: Any, county: County, url: str,
                                                        data: dict[str, str]) -> None:
    b = Browser(app.test_client())
    b.login("coord")
    resp = b.post(url, data, token=False)
    assert resp.status_code == 400 and "web.csrf" in resp.get_data(as_text=True)
    resp = b.post(url, {**data, "csrf_token": b.token[:-2] + "xx"})
    assert resp.status_code == 400
    assert [r[1] for r in access(county, "csrf_refused")] == ["csrf_refused", "csrf_refused"]
    assert b.get("/web/cases").status_code == 200  # still logged in: nothing was done


def test_ten_wrong_passwords_lock_the_login_even_for_the_right_one(app: Any, county: County) -> None:
    clock = app.config["MINQING_CLOCK"]
    b = Browser(app.test_client())
    b.get("/web/login")
    statuses = [b.post("/web/login", {"username": "coord", "password": f"wrong-{i}"}).status_code for i in range(10)]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429] * 5
    resp = b.post("/web/login", {"username": "coord", "password": PASSWORD})
    text = resp.get_data(as_text=True)
    assert resp.status_code == 429 and "密码错误次数过多" in text
    assert len(access(county, "login_failed")) == 5 and len(access(county, "login_throttled")) == 6
    clock.advance(31)  # the first lock is 30 seconds
    assert b.post("/web/login", {"username": "coord", "password": PASSWORD}).status_code == 302
    assert access(county, "login")[-1][0] == "coord"


def test_the_lock_grows_with_each_further_failure_and_is_per_address(app: Any) -> None:
    clock = app.config["MINQING_CLOCK"]
    b = Browser(app.test_client())
    b.get("/web/login")
    for _ in range(5):
        b.post("/web/login", {"username": "coord", "password": "nope"})
    clock.advance(31)
    assert b.post("/web/login", {"username": "coord", "password": "nope"}).status_code == 401  # 6th: 60 s
    clock.advance(40)
    assert b.post("/web/login", {"username": "coord", "password": PASSWORD}).status_code == 429
    other = Browser(app.test_client())
    other.get("/web/login", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    resp = other.post("/web/login", {"username": "coord", "password": PASSWORD},
                      environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert resp.status_code == 302  # another address is not locked by this one's failures
    clock.advance(30)
    assert b.post("/web/login", {"username": "coord", "password": PASSWORD}).status_code == 302


def test_logout_ends_the_session_for_good(app: Any, county: County) -> None:
    client = app.test_client()
    b = Browser(client)
    b.login("coord")
    token = client.get_cookie(auth.SESSION_COOKIE, path="/web").value
    assert b.post("/web/logout").status_code == 302
    assert b.get("/web/cases").status_code == 302
    stale = app.test_client()
    stale.set_cookie(auth.SESSION_COOKIE, token, path="/web")
    assert stale.get("/web/cases").status_code == 302  # the old cookie opens nothing
    assert [r[1] for r in access(county) if r[0] == "coord"][-2:] == ["login", "logout"]


@pytest.mark.parametrize("user,allowed,refused", [
    ("coord", ["/web/cases", "/web/conflicts", "/web/board", "/web/report"], ["/web/access-log", "/web/accounts"]),
    ("audit", ["/web/access-log"], ["/web/cases", "/web/board", "/web/accounts", "/web/export/cases.csv"]),
    ("admin", ["/web/accounts", "/web/access-log"], ["/web/cases", "/web/report"]),
])
def test_each_role_opens_its_own_pages_only(app: Any, user: str, allowed: list[str], refused: list[str]) -> None:
    b = Browser(app.test_client())
    b.login(user)
    for url in allowed:
        assert b.get(url).status_code == 200, url
    for url in refused:
        resp = b.get(url)
        assert resp.status_code == 403 and "您的账户无权打开此页面" in resp.get_data(as_text=True), url


def test_an_administrator_grants_the_permission_and_disabling_ends_sessions(app: Any, county: County) -> None:
    coord = Browser(app.test_client())
    coord.login("coord")
    admin = Browser(app.test_client())
    admin.login("admin")
    admin.get("/web/accounts")
    assert admin.post("/web/accounts", {"username": "coord", "change": "confidential_on"}).status_code == 302
    assert coord.get("/web/cases").status_code == 302  # the permission takes effect at the next login
    coord.login("coord")
    assert "保密权限" in coord.text("/web/cases")
    admin.get("/web/accounts")
    admin.post("/web/accounts", {"username": "coord", "change": "disable"})
    assert coord.get("/web/cases").status_code == 302
    assert coord.login("coord").status_code == 401
    assert [r[3] for r in access(county, "account")] == ["coord", "coord"]


def test_the_access_log_page_lists_logins_for_the_auditor(app: Any) -> None:
    Browser(app.test_client()).login("coord")
    b = Browser(app.test_client())
    b.login("audit")
    page = b.text("/web/access-log?username=coord")
    assert "登录" in page and "coord" in page
    resp = b.get("/web/export/access-log.csv?username=coord")
    assert resp.status_code == 200 and "coord" in resp.get_data(as_text=True)


def test_the_demo_logins_that_make_run_prints_work(tmp_path: Path) -> None:
    from sync_server import demo
    from sync_server.app import create_app
    from sync_server.store import ServerStore

    store = ServerStore.init(tmp_path / "server")
    try:
        demo.add_demo_users(store)
    finally:
        store.close()
    app = create_app(tmp_path / "server", {"TESTING": True})
    try:
        for username, role, confidential, _name in demo.DEMO_USERS:
            b = Browser(app.test_client())
            assert b.login(username, demo.WEB_PASSWORD).status_code == 302, username
            page = b.get("/web/", follow_redirects=True).get_data(as_text=True)
            who = page[page.index('id="who"'):].split("</span>\n")[0]
            assert ("保密权限" in who) == confidential, username
            assert {"coordinator": "协调员", "auditor": "审计员", "admin": "管理员"}[role] in who
    finally:
        close_app(app)
