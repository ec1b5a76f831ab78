"""One laptop's sync, as a process of its own, so the fault harness can SIGKILL it anywhere.

``python -m tests.faults.worker DATA URL SKEW_MS`` (passphrase in ``MINQING_PASSPHRASE``):
opens the field client in ``DATA`` with its clock ``SKEW_MS`` off the machine's, prints
``ready``, runs ``SyncAgent.sync()`` against ``URL`` (the fault proxy) with two retries
(0.4 s, then 0.8 s apart: a restarted server is back by then), prints one JSON line
``{"ok": true, "pushed": ..., "pulled": ..., "duplicates": ...}`` or ``{"ok": false,
"code": ...}`` and exits 0, or 3 when the sync failed.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    data, url, skew_ms = argv[0], argv[1], int(argv[2])
    from field_client.store import FieldClient
    from field_client.sync import HttpTransport, SyncAgent, SyncError

    def clock() -> float:
        return time.time() + skew_ms / 1000

    client = FieldClient.open(data, os.environ["MINQING_PASSPHRASE"], clock=clock)
    transport = HttpTransport(url, timeout=(3.0, 20.0))
    agent = SyncAgent(client, transport, retries=2, backoff_s=0.4)
    print("ready", flush=True)
    try:
        report = agent.sync()
    except SyncError as exc:
        print(json.dumps({"ok": False, "code": exc.code}), flush=True)
        return 3
    finally:
        transport.session.close()
        client.close()
    print(json.dumps({"ok": True, "pushed": report.pushed_envelopes, "pushed_ops": report.pushed_ops,
                      "pulled": report.pulled_ops, "duplicates": report.duplicates,
                      "quarantined": len(report.quarantined)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
