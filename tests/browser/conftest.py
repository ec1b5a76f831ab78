"""Browser tests: the real server on 127.0.0.1 driven by Debian's headless Chromium.

Chromium comes from Debian (``apt-get install chromium``; ``.ci/run`` installs it when
missing), never from Playwright's download. The tests are skipped, with that reason,
only when ``/usr/bin/chromium`` is absent, and never under ``CI=true``, where that fails. Screenshots go to ``test-output/screenshots/``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from field_client.store import FieldClient
from field_client.web import create_app
from tests.field_client.web_support import NODE, NODE_NAME, PASSPHRASE, USER

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--lang=zh-CN",  # date and time inputs drawn as on a Chinese laptop
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):  # CI installs it (.ci/run): a missing browser there is a failure, not a skip
            pytest.fail("CI=true but /usr/bin/chromium is missing: .ci/run should have installed it")
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[str]:
    """The web UI served for real on 127.0.0.1 (a random port) over a fresh device."""
    data = tmp_path / "data"
    FieldClient.init(data, PASSPHRASE, node=NODE, user=USER, node_name=NODE_NAME).close()
    app = create_app(data)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="web-under-test", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        app.extensions["minqing"].lock_all()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport=VIEWPORT, locale="zh-CN")
    context.set_default_timeout(10_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
