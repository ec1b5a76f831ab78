"""The application factory: ``create_app(data_dir, test_config=None)`` (Flask tutorial style).

One blueprint per concern; a store per request in ``g``, closed on teardown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from sync_server import api, ops_log
from sync_server.envelope_limits import MAX_BODY


def _rules(data_dir: Path) -> Any:
    from schema.rules import default_rules, load_rules_file
    from sync_server.store import RULES_FILE

    path = data_dir / RULES_FILE
    return load_rules_file(path) if path.exists() else default_rules()


def create_app(data_dir: str | Path, test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask("sync_server")
    app.config.update(DATA_DIR=str(data_dir), MAX_CONTENT_LENGTH=MAX_BODY, JSON_AS_ASCII=False)
    if test_config:
        app.config.update(test_config)
    if "RULES" not in app.config:  # the county's rules: a bad file stops the start, naming its line
        app.config["RULES"] = _rules(Path(data_dir))
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.register_blueprint(api.bp)
    app.teardown_appcontext(api.close_store)
    api.register_errors(app)
    ops_log.init_app(app)  # request ids, JSON-line logs, /healthz, /metrics (docs/audit.md)
    from sync_server import web

    web.init_app(app)  # the county coordinator's pages under /web (docs/coordinator.md)
    from sync_server import audit_web

    audit_web.init_app(app)  # the auditor's pages under /web/audit (docs/audit.md)
    return app
