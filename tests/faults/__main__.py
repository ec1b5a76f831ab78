"""``python -m tests.faults``: the fault suite (docs/faults.md); exit 0 only when every figure holds."""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from tests.faults.harness import Config, report, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.faults",
        description="Real laptops and a real county server (127.0.0.1) under faults: a proxy that drops, "
                    "delays, duplicates, replays, reorders and truncates traffic; laptops' syncs and the "
                    "server killed with SIGKILL; clocks skewed by days; then a clean exchange and a check "
                    "that nothing was lost or doubled and every replica agrees (docs/faults.md).")
    d = Config()
    p.add_argument("--runs", type=int, default=d.runs, help=f"rounds of work and sync under faults (default {d.runs})")
    p.add_argument("--laptops", type=int, default=d.laptops, help=f"field laptops (default {d.laptops})")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    p.add_argument("--p-fault", type=float, default=d.p_fault,
                   help=f"chance that a request meets a network fault (default {d.p_fault})")
    p.add_argument("--p-client-kill", type=float, default=d.p_client_kill,
                   help=f"chance per round that a laptop's sync is killed (default {d.p_client_kill})")
    p.add_argument("--p-server-kill", type=float, default=d.p_server_kill,
                   help=f"chance per round that the server is killed during a merge (default {d.p_server_kill})")
    p.add_argument("--p-skew", type=float, default=d.p_skew,
                   help=f"chance per round that a laptop's clock jumps by days (default {d.p_skew})")
    p.add_argument("--p-relay", type=float, default=d.p_relay,
                   help=f"chance per round that a laptop syncs by USB stick instead (default {d.p_relay})")
    p.add_argument("--pull-limit", type=int, default=None,
                   help="ops per pull answer in the rounds (default: the laptop's own, 300); a small one "
                        "makes answers stop at the limit and pulls take many requests")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="keep the server's and laptops' folders here (default: a temporary folder, removed)")
    p.add_argument("--quiet", action="store_true", help="print the figures only")
    a = p.parse_args(argv)
    if a.runs < 1 or a.laptops < 1:
        p.error("--runs and --laptops must be at least 1")
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 10**6)
    cfg = Config(runs=a.runs, laptops=a.laptops, seed=seed, p_fault=a.p_fault, p_client_kill=a.p_client_kill,
                 p_server_kill=a.p_server_kill, p_skew=a.p_skew, p_relay=a.p_relay, pull_limit=a.pull_limit,
                 work_dir=a.work_dir, keep=a.work_dir is not None)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"fault suite: {cfg.runs} runs, {cfg.laptops} laptops, seed {seed} (started {started})", flush=True)

    def progress(text: str) -> None:
        if not a.quiet:
            print(text, flush=True)

    result = run(cfg, progress=progress)
    print(report(result), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
