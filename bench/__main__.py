"""Run the benchmarks: ``python -m bench [NAME ...] [--quick] [options]`` (``make bench``).

Prints the machine and the date, checks the workload generator, then runs every bench
(or the ones named: replica, client, caseload, sync, sweep, audit, coordinator, peers).
See ``bench/README.md`` for the recorded figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
from datetime import datetime

from bench import (
    audit_verify,
    caseload_page,
    client_record,
    coordinator_caseload,
    peers,
    replica_apply,
    sweep_due,
    sync_week,
    workload,
)

BENCHES = {
    "replica": "Replica.apply of a realistic op stream vs plain executemany",
    "client": "ops recorded through FieldClient's API vs Replica.apply of the same sealed ops",
    "caseload": "GET /cases for a laptop holding 5,000 cases vs the bare SQL behind it",
    "sync": "one village's week: bytes (ours, plain JSON, CouchDB-style), 2G-proxy sync time, merge rate",
    "sweep": "the deadline sweep on 100,000 and 1,000,000 cases with 1% due vs the indexed query finding them",
    "audit": "sync-server audit verify over a ledger of 100,000 envelopes vs reading and SHA-256 of the same bytes",
    "coordinator": "the county caseload page (/web/cases) on 200,000 cases vs the bare SQL for the same filter",
    "peers": "the village week side by side: our sync, PouchDB replication, Automerge, a plain SQLite insert",
}
FULL_AUDIT = 100_000
QUICK_AUDIT = 10_000
SWEEP_SIZES = [100_000, 1_000_000]
QUICK_SWEEP_SIZES = [10_000, 100_000]
FULL_OPS = 100_000
QUICK_OPS = 10_000
FULL_CLIENT_OPS = 10_000
QUICK_CLIENT_OPS = 2_000
FULL_RENDERS = 20
QUICK_RENDERS = 5
CASES = 5_000


def machine() -> str:
    try:
        nproc = len(os.sched_getaffinity(0))  # what `nproc` prints
    except AttributeError:
        nproc = os.cpu_count() or 0
    return (
        f"nproc {nproc}, Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


def load() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("benches", nargs="*", metavar="bench",
                   help=f"which benches to run (default all): {', '.join(BENCHES)}")
    p.add_argument("--quick", action="store_true",
                   help=f"replica {QUICK_OPS:,} ops instead of {FULL_OPS:,}; client {QUICK_CLIENT_OPS:,} instead "
                        f"of {FULL_CLIENT_OPS:,}; caseload {QUICK_RENDERS} renders instead of {FULL_RENDERS}; "
                        f"sync one round instead of --repeat; audit {QUICK_AUDIT:,} envelopes instead of {FULL_AUDIT:,}")
    p.add_argument("--ops", type=int, help="replica: number of ops (overrides --quick)")
    p.add_argument("--client-ops", type=int, help="client: ops to record (overrides --quick)")
    p.add_argument("--cases", type=int, default=CASES, help=f"caseload: cases on the laptop (default {CASES:,})")
    p.add_argument("--renders", type=int, help="caseload: timed renders per filter (overrides --quick)")
    p.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    p.add_argument("--repeat", type=int,
                   help="rounds on fresh files; medians are reported (default 3; sync: 1 with --quick)")
    p.add_argument("--dir", help="where to put the database files (default: the temp dir)")
    p.add_argument("--no-verify", action="store_true", help="skip verify_rebuild after round 1")
    p.add_argument("--verify", action="store_true",
                   help="coordinator: check the copied county with Replica.verify_rebuild (slow at full size)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="profile round 1's replica step (client: the client's recording; sync: the server's "
                        "merge); print the top N entries by cumtime")
    args = p.parse_args(argv)
    unknown = [b for b in args.benches if b not in BENCHES]
    if unknown:
        p.error(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    names = args.benches or list(BENCHES)
    n_ops = args.ops or (QUICK_OPS if args.quick else FULL_OPS)
    repeat = max(1, args.repeat or 3)

    print(f"minqing bench  {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(f"command: {' '.join([os.path.basename(sys.executable), '-m', 'bench', *sys.argv[1:]])}")
    print(f"before: {load()}")
    check = workload.self_check(2000, args.seed)
    print(f"workload self-check: {check['ops']} ops pass parse_op, generation is deterministic")
    print(flush=True)
    for name in names:
        if name == "replica":
            result = replica_apply.run(
                n_ops, seed=args.seed, repeat=repeat, verify=not args.no_verify,
                profile=args.profile, directory=args.dir,
            )
            replica_apply.report(result)
        elif name == "client":
            client_ops = args.client_ops or (QUICK_CLIENT_OPS if args.quick else FULL_CLIENT_OPS)
            client_record.report(client_record.run(
                client_ops, seed=args.seed, repeat=repeat, profile=args.profile, directory=args.dir))
        elif name == "caseload":
            renders = args.renders or (QUICK_RENDERS if args.quick else FULL_RENDERS)
            caseload_page.report(caseload_page.run(
                args.cases, renders=renders, seed=args.seed, directory=args.dir))
        elif name == "sync":
            rounds = args.repeat or (1 if args.quick else 3)
            sync_week.report(sync_week.run(
                seed=args.seed, repeat=max(1, rounds), profile=args.profile, directory=args.dir))
        elif name == "audit":
            audit_verify.report(audit_verify.run(QUICK_AUDIT if args.quick else FULL_AUDIT, seed=args.seed,
                                                 directory=args.dir))
        elif name == "sweep":
            sweep_due.report(sweep_due.run(QUICK_SWEEP_SIZES if args.quick else SWEEP_SIZES, directory=args.dir))
        elif name == "peers":
            rounds = args.repeat or (1 if args.quick else 3)
            peers.report(peers.run(seed=args.seed, repeat=max(1, rounds), directory=args.dir))
        elif name == "coordinator":
            renders = args.renders or (QUICK_RENDERS if args.quick else FULL_RENDERS)
            coordinator_caseload.report(coordinator_caseload.run(
                quick=args.quick, renders=renders, seed=args.seed, directory=args.dir, check=args.verify))
        print(f"after: {load()}")
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
