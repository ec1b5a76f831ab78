"""One laptop's sync, as a process of its own, so the fault harness can SIGKILL it anywhere.

``python -m tests.faults.worker DATA URL SKEW_MS [PULL_LIMIT]`` (passphrase in
``MINQING_PASSPHRASE``):
opens the field client in ``DATA`` with its clock ``SKEW_MS`` off the machine's, prints
``ready``, runs ``SyncAgent.sync()`` against ``URL`` (the fault proxy) with two retries
(0.4 s, then 0.8 s apart: a restarted server is back by then), prints one JSON line
``{"ok": true, "pushed": ..., "pulled": ..., "duplicates": ...}`` or ``{"ok": false,
"code": ...}`` and exits 0, or 3 when the sync failed. With ``PULL_LIMIT`` the pull asks for
that many ops per answer instead of the agent's 300 (``SyncAgent.sync`` step by step:
push, pull, push again what the pull's answer showed lost), so answers stop at the limit
often and a pull takes many requests.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    data, url, skew_ms = argv[0], argv[1], int(argv[2])
    pull_limit = int(argv[3]) if len(argv) > 3 else None
    from field_client.store import FieldClient
    from field_client.sync import HttpTransport, SyncAgent, SyncError

    def clock() -> float:
        return time.time() + skew_ms / 1000

    client = FieldClient.open(data, os.environ["MINQING_PASSPHRASE"], clock=clock)
    transport = HttpTransport(url, timeout=(3.0, 20.0))
    agent = SyncAgent(client, transport, retries=2, backoff_s=0.4)
    print("ready", flush=True)
    try:
        if pull_limit is None:
            report = agent.sync()
        else:
            report = agent.pull(agent.push(), limit=pull_limit)
            if agent.unacked():
                report = agent.push(report)
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
