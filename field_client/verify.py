"""``field-client verify``: does the server hold what this laptop holds, for its scope?
(docs/sync.md "Verify", docs/audit.md).

The laptop sends, in a signed request envelope sealed to the server, its op-set digest
and one digest per day of stamps (``conflict.digest``: over op ids and stamps only, never
values). The server compares with the ops of the device's scope and answers, sealed to
the device, with its own digest and the (op id, stamp) pairs of the days that differ,
plus the device's ops it holds in quarantine. The laptop works out what is missing on
either side and why; nothing personal crosses the wire, and the lists shown name op ids
and stamps only.

Why an op of the laptop may be missing on the server:

``pending``       not yet sent (still in the outbox)
``sent``          sent, not yet acknowledged
``acknowledged``  the server acknowledged it once and no longer has it (a restore): the
                  next ``field-client sync`` resends it
``held``          the server holds it in quarantine (with the reason's code)
``other``         authored elsewhere (another laptop, the server) and received here
"""

from __future__ import annotations

from typing import Any

from conflict.digest import bucket_digests, op_digest
from schema import envelope as env

BUCKET_MS = 86_400_000  # one day of stamp time per digest
SHOW = 50  # op ids listed per side in the text output


def _bucket(stamp: str, bucket_ms: int) -> int:
    return int(stamp[:18]) // bucket_ms * bucket_ms


def verify(agent: Any) -> dict[str, Any]:
    """Compare this laptop's op set with the server's for its scope (see the module docstring)."""
    client = agent.client
    conn = client.replica.conn
    pairs = client.replica.op_pairs()
    buckets = bucket_digests(pairs, BUCKET_MS)
    server_x, _, _ = agent._server_keys()
    request = env.seal(
        {"device": client.device_id, "sent_ms": int(client.clock() * 1000),
         "verify": {"digest": op_digest(pairs), "bucket_ms": BUCKET_MS,
                    "buckets": {str(k): v for k, v in buckets.items()}}},
        type="request", sender=client.device_id, seq=0, signing_key=client.keys.ed25519, recipient=server_x)
    answer = agent._open_answer(agent._exchange("/api/v1/verify", request))
    v = answer.get("verify") or {}
    differing = {int(b) for b in v.get("buckets_differing", [])}
    theirs = {str(p[0]): str(p[1]) for p in v.get("pairs", [])}
    mine = {op_id: stamp for op_id, stamp in pairs if _bucket(stamp, BUCKET_MS) in differing}
    held = {str(h.get("op_id")): str(h.get("code")) for h in v.get("held", [])}

    me = {client.device_id, *client.keys.info.get("previous_device_ids", [])}
    outbox = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
        "SELECT o.op_id, o.acked, p.seq, g.acked_ms FROM outbox o LEFT JOIN packed p ON p.op_id = o.op_id "
        "LEFT JOIN outgoing g ON g.seq = p.seq")}
    authors = dict(conn.execute("SELECT op_id, device FROM ops WHERE op_id IN (SELECT value FROM json_each(?))",
                                (_json_list(sorted(set(mine) - set(theirs))),)))

    def why(op_id: str) -> str:
        if op_id in held:
            return "held"
        if authors.get(op_id) not in me:
            return "other"
        acked, seq, _ = outbox.get(op_id, (1, None, None))
        if not acked:
            return "sent" if seq is not None else "pending"
        return "acknowledged"

    missing_on_server = [{"op_id": i, "stamp": mine[i], "why": why(i), **({"code": held[i]} if i in held else {})}
                         for i in sorted(set(mine) - set(theirs), key=lambda k: mine[k])]
    missing_here = [{"op_id": i, "stamp": theirs[i]} for i in sorted(set(theirs) - set(mine), key=lambda k: theirs[k])]
    stamps_differ = [{"op_id": i, "here": mine[i], "server": theirs[i]}
                     for i in sorted(set(mine) & set(theirs)) if mine[i] != theirs[i]]
    digest = op_digest(pairs)
    counts: dict[str, int] = {}
    for m in missing_on_server:
        counts[m["why"]] = counts.get(m["why"], 0) + 1
    return {
        "in_sync": digest == v.get("digest") and not differing,
        "device_id": client.device_id,
        "laptop_digest": digest,
        "server_digest": v.get("digest"),
        "laptop_ops": len(pairs),
        "server_ops": v.get("ops"),
        "days_differing": len(differing),
        "missing_on_server": missing_on_server,
        "missing_on_server_by_reason": counts,
        "missing_on_laptop": missing_here,
        "stamps_differ": stamps_differ,
        "truncated": bool(v.get("truncated")),
    }


def _json_list(items: list[str]) -> str:
    import json

    return json.dumps(items)
