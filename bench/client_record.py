"""Bench: ops recorded through the field client's own API against the replica's raw apply.

The issue: *"`make bench` records 10,000 ops through the client's own API and prints the
rate beside the replica's raw apply rate from the same run (the cost of encryption and
validation, as a ratio)"*.

* **Client** (timed). A fresh ``FieldClient`` (``FieldClient.init``: keys, replica, WAL,
  ``synchronous=FULL``) and a ``bench.fieldwork.Mediator`` doing a village's casework
  through the API until ``n_ops`` ops are recorded: ``new_case`` with 2-3 parties,
  ``add_record`` (visits, mediations, notes, notices), ``edit``, ``transition``,
  ``set_tags``. Each call is its own transaction, as a person does it. The time is the
  sum of the API calls alone (``perf_counter`` around each call).
* **Baseline, same transactions** (timed). The same ops read back from that client's
  op log (so sealed: personal fields encrypted) applied to a fresh ``Replica`` in the
  same directory with ``Replica.apply(ops, allow_sealed=True)``, one ``apply`` per client
  call (one op for a visit, 3-4 for a new case...): the same number of transactions.
* **Baseline, batches of 500** (timed). The same ops, ``apply`` in batches of 500 (how
  the replica bench and a sync session apply them).

Rounds alternate which side runs first (round 1 must record first: the baselines replay
its ops). Ratios are client ops/s ÷ baseline ops/s, the median of the rounds' ratios.
After the rounds, an untimed diagnostic round with timers wrapped around the client's
steps says where the client's time goes.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import workload as W
from bench.fieldwork import Mediator, SimClock
from conflict.replica import OP_COLUMNS, Replica, row_to_op
from field_client import keystore
from field_client import store as fc_store
from field_client.store import FieldClient
from schema.ops import Op

PASSPHRASE = "bench passphrase"
NODE = "330102101"
BATCH = 500
START = datetime(2026, 1, 5, 8, 0, tzinfo=W.CST).timestamp()


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"  {msg}", file=sys.stderr, flush=True)


def _new_client(path: Path) -> tuple[FieldClient, SimClock]:
    clock = SimClock(START)
    client = FieldClient.init(path, PASSPHRASE, node=NODE, user="wangli", node_name="东村", clock=clock)
    return client, clock


def _record(path: Path, n_ops: int, seed: int, progress: bool,
            prof: cProfile.Profile | None = None) -> tuple[FieldClient, Mediator, float]:
    """A fresh client; the mediator records ``n_ops`` ops; (client, mediator, wall seconds)."""
    client, clock = _new_client(path)
    med = Mediator(client, seed, clock)
    step = max(1, n_ops // 5)
    marks = {"next": step}
    t0 = time.perf_counter()

    def tick(done: int) -> None:
        if progress and done >= marks["next"]:
            marks["next"] += step
            api = sum(c[2] for c in med.calls if c[1])
            print(f"  client  : {done:>7}/{n_ops} ops  {done / api:8.0f} ops/s (API time)",
                  file=sys.stderr, flush=True)

    if prof is not None:
        prof.enable()
    med.work(n_ops, tick)
    if prof is not None:
        prof.disable()
    return client, med, time.perf_counter() - t0


def _op_log(client: FieldClient) -> list[Op]:
    cols = ", ".join(OP_COLUMNS)
    return [row_to_op(r) for r in client.replica.conn.execute(f"SELECT {cols} FROM ops ORDER BY seq")]


def _groups(ops: Sequence[Op], calls: Sequence[tuple[str, int, float]]) -> list[list[Op]]:
    """The op log cut as the client's transactions were (calls that recorded nothing dropped)."""
    out: list[list[Op]] = []
    i = 0
    for _, n, _ in calls:
        if n:
            out.append(list(ops[i : i + n]))
            i += n
    assert i == len(ops), (i, len(ops))
    return out


def _apply(path: Path, batches: Sequence[Sequence[Op]], label: str, progress: bool) -> tuple[float, Replica]:
    replica = Replica(path)
    n = sum(len(b) for b in batches)
    done = 0
    step = max(1, n // 5)
    nxt = step
    t0 = time.perf_counter()
    for b in batches:
        replica.apply(b, allow_sealed=True)
        done += len(b)
        if progress and done >= nxt:
            nxt += step
            print(f"  {label}: {done:>7}/{n} ops  {done / (time.perf_counter() - t0):8.0f} ops/s",
                  file=sys.stderr, flush=True)
    return time.perf_counter() - t0, replica


def run(n_ops: int = 10_000, *, seed: int = 1, repeat: int = 3, progress: bool = True, profile: int = 0,
        directory: str | None = None, phases: bool = True) -> dict[str, Any]:
    """Run the bench; ``report`` prints the result."""
    keystore_n = keystore.SCRYPT_N
    rounds: list[dict[str, float]] = []
    first: dict[str, Any] = {}
    prof = cProfile.Profile() if profile else None
    try:
        keystore.SCRYPT_N = 2**12  # key-file wrapping is not what is measured: a cheaper scrypt
        for k in range(repeat):
            _say(f"round {k + 1}/{repeat}", progress)
            with tempfile.TemporaryDirectory(prefix="minqing-bench-", dir=directory) as tmp:
                rounds.append(_round(k, Path(tmp), n_ops, seed, first, progress, prof if k == 0 else None))
        phase_s: dict[str, float] = {}
        if phases:
            _say("diagnostic round (timers around the client's steps, not counted)", progress)
            with tempfile.TemporaryDirectory(prefix="minqing-bench-", dir=directory) as tmp:
                phase_s = _phases(Path(tmp), n_ops, seed)
    finally:
        keystore.SCRYPT_N = keystore_n
    counted = [r for r in rounds if not r["profiled"]] or rounds
    med = statistics.median
    result: dict[str, Any] = {
        "ops": first["ops"], "target_ops": n_ops, "seed": seed, "repeat": repeat, "rounds": rounds,
        "directory": directory or tempfile.gettempdir(),
        "calls": first["calls"], "noop_calls": first["noop_calls"], "actions": first["actions"], "transactions": first["transactions"],
        "client_s": med(r["client_s"] for r in counted),
        "client_wall_s": med(r["client_wall_s"] for r in counted),
        "same_s": med(r["same_s"] for r in counted),
        "batch_s": med(r["batch_s"] for r in counted),
        "ratio_same": med(r["ratio_same"] for r in counted),
        "ratio_batch": med(r["ratio_batch"] for r in counted),
        "same_equal": first["same_equal"], "states": first["states"], "sealed_fields": first["sealed_fields"],
        "per_action": first["per_action"], "phases": phase_s, "phase_ops": n_ops,
    }
    for key in ("client", "same", "batch"):
        result[f"{key}_ops_per_s"] = result["ops"] / result[f"{key}_s"]
    if prof is not None:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(profile)
        result["profile"] = out.getvalue()
    return result


def _round(k: int, tmp: Path, n_ops: int, seed: int, first: dict[str, Any], progress: bool,
           prof: cProfile.Profile | None) -> dict[str, float]:
    times: dict[str, float] = {"profiled": float(prof is not None)}
    keep: list[Any] = []

    def client_step() -> None:
        client, med, wall = _record(tmp / "device", n_ops, seed, progress, prof)
        # calls that recorded nothing (an edit to the value already there) are left out
        times["client_s"] = sum(c[2] for c in med.calls if c[1])
        times["client_wall_s"] = wall
        if k == 0:
            ops = _op_log(client)
            groups = _groups(ops, med.calls)
            first.update(ops=len(ops), groups=groups, calls=len(med.calls), transactions=len(groups),
                         noop_calls=sum(1 for c in med.calls if not c[1]),
                         actions=dict(Counter(a for a, n, _ in med.calls)),
                         states=dict(Counter(r[0] for r in client.replica.conn.execute("SELECT state FROM cases"))),
                         sealed_fields=sum(1 for op in ops for v in op.values.values()
                                           if isinstance(v, str) and v.startswith("enc1:")),
                         per_action=_per_action(med.calls))
            keep.append(client)
        else:
            client.close()

    def baselines() -> None:
        groups = first["groups"]
        ops = [op for g in groups for op in g]
        times["same_s"], same = _apply(tmp / "same.db", groups, "same tx ", progress)
        keep.append(same)
        times["batch_s"], batch = _apply(tmp / "batch.db", [ops[i : i + BATCH] for i in range(0, len(ops), BATCH)],
                                         "batch500", progress)
        batch.close()

    try:
        if k % 2 == 0:
            client_step()
            baselines()
        else:
            baselines()
            client_step()
        if k == 0:  # untimed check: the baseline folded the very same rows
            client, same = keep[0], keep[1]
            first["same_equal"] = client.replica.snapshot() == same.snapshot()
    finally:
        for x in keep:
            x.close()
    n = first["ops"]
    times["ratio_same"] = (n / times["client_s"]) / (n / times["same_s"])
    times["ratio_batch"] = (n / times["client_s"]) / (n / times["batch_s"])
    return times


def _per_action(calls: Sequence[tuple[str, int, float]]) -> dict[str, tuple[int, int, float]]:
    """action -> (calls, ops, median ms per call)."""
    by: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for a, n, s in calls:
        by[a].append((n, s))
    return {a: (len(v), sum(n for n, _ in v), 1000 * statistics.median(s for _, s in v)) for a, v in by.items()}


# ---- where the client's time goes (a separate, untimed round) ----

@contextmanager
def _patched(obj: Any, name: str, acc: dict[str, float], label: str) -> Iterator[None]:
    orig = getattr(obj, name)

    def timed(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return orig(*a, **kw)
        finally:
            acc[label] += time.perf_counter() - t0

    setattr(obj, name, timed)
    try:
        yield
    finally:
        setattr(obj, name, orig)


def _phases(tmp: Path, n_ops: int, seed: int) -> dict[str, float]:
    """Record the same work with timers around the client's steps; seconds by step."""
    acc: dict[str, float] = defaultdict(float)
    client, clock = _new_client(tmp / "device")
    med = Mediator(client, seed, clock)
    rep = client.replica
    commit_acc: dict[str, float] = acc

    real_tx = rep._tx

    @contextmanager
    def tx() -> Iterator[None]:
        with real_tx():
            yield
            t0 = time.perf_counter()
        commit_acc["COMMIT (WAL write, fsync)"] += time.perf_counter() - t0

    patches: list[tuple[Any, str, str]] = [
        (fc_store, "check_op", "validation in the clear (check_op)"),
        (fc_store, "make_op", "make_op (HLC, op object)"),
        (client.sealer, "seal_op", "sealing personal fields (AES-SIV)"),
        (client.sealer, "open_value", "opening sealed values (edit: current values)"),
        (rep, "apply_in_transaction", "Replica.apply_in_transaction (fold, write rows)"),
        (rep, "fold_state", "reading fold state (edit, tags)"),
        (rep, "get", "reading the case row (transition, add_record)"),
        (client, "meta", "client_meta reads (clock, running numbers, offset)"),
        (client, "_set_meta", "client_meta writes"),
    ]
    stack: list[Any] = []
    try:
        rep._tx = tx  # type: ignore[method-assign]
        for obj, name, label in patches:
            cm = _patched(obj, name, acc, label)
            cm.__enter__()
            stack.append(cm)
        med.work(n_ops)
    finally:
        for cm in reversed(stack):
            cm.__exit__(None, None, None)
        rep._tx = real_tx  # type: ignore[method-assign]
        client.close()
    total = sum(c[2] for c in med.calls if c[1])
    out = dict(sorted(acc.items(), key=lambda kv: -kv[1]))
    out["the rest (record()'s own work, outbox insert, edit/transition checks)"] = total - sum(acc.values())
    out["(total API time, timers included)"] = total
    out["(ops)"] = float(med.recorded)
    return out


# ---- printing ----

def report(r: dict[str, Any], out: Any = None) -> None:
    w = (out or sys.stdout).write
    n = r["ops"]
    w(f"client_record: {n} ops recorded through FieldClient in {r['transactions']} transactions "
      f"({r['calls']} API calls), seed {r['seed']}, median of {len(r['rounds'])} round(s), files in "
      f"{r['directory']}\n")
    w(f"  {'':<44} {'ops':>7} {'tx':>6} {'seconds':>8} {'ops/s':>8} {'client ÷':>9}\n")
    w(f"  {'client   FieldClient API, one tx per action':<44} {n:>7} {r['transactions']:>6} "
      f"{r['client_s']:>8.2f} {r['client_ops_per_s']:>8.0f}\n")
    w(f"  {'baseline Replica.apply, the same transactions':<44} {n:>7} {r['transactions']:>6} "
      f"{r['same_s']:>8.2f} {r['same_ops_per_s']:>8.0f} {r['ratio_same']:>9.3f}\n")
    nb = -(-n // BATCH)
    w(f"  {'baseline Replica.apply, batches of 500':<44} {n:>7} {nb:>6} "
      f"{r['batch_s']:>8.2f} {r['batch_ops_per_s']:>8.0f} {r['ratio_batch']:>9.3f}\n")
    w(f"  ratios (client ops/s ÷ baseline ops/s): {r['ratio_same']:.3f} against the same transactions, "
      f"{r['ratio_batch']:.3f} against batches of 500\n")
    if len(r["rounds"]) > 1:
        each = "; ".join(
            f"{x['client_s']:.2f}/{x['same_s']:.2f}/{x['batch_s']:.2f} s"
            + (" (profiled, not counted)" if x["profiled"] else "") for x in r["rounds"])
        w(f"  rounds (client / same tx / batch 500): {each}\n")
    w(f"  client wall time with the driver choosing actions: {r['client_wall_s']:.2f} s (median); "
      f"{r['noop_calls']} edit calls changed nothing and recorded no op (not counted)\n")
    acts = ", ".join(f"{a} {c} calls/{o} ops {ms:.2f} ms" for a, (c, o, ms) in
                     sorted(r["per_action"].items(), key=lambda kv: -kv[1][1]))
    w(f"  by action (calls/ops, median ms per call): {acts}\n")
    states = ", ".join(f"{s} {c}" for s, c in sorted(r["states"].items(), key=lambda kv: -kv[1]))
    w(f"  cases at the end: {states}; {r['sealed_fields']} sealed values in the op log\n")
    w(f"  the baseline's rows equal the client's (snapshot): {'yes' if r['same_equal'] else 'NO'}\n")
    if r["phases"]:
        total = r["phases"]["(total API time, timers included)"]
        w(f"  where the client's time goes (diagnostic round, {int(r['phases']['(ops)'])} ops, "
          f"{total:.2f} s with timers; steps under 0.5% not shown):\n")
        for label, s in r["phases"].items():
            if label.startswith("("):
                continue
            if s < 0.005 * total:
                continue
            w(f"    {label:<52} {s:>7.2f} s  {100 * s / total:5.1f}%\n")
    if "profile" in r:
        w("\n" + r["profile"])


def _main(argv: Sequence[str] | None = None) -> None:  # python -m bench.client_record [N]
    n = int(argv[0]) if argv else 2000
    report(run(n, repeat=1))


if __name__ == "__main__":
    _main(sys.argv[1:])

