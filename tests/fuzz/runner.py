"""``python -m tests.fuzz``: hostile input against a real county server (docs/fuzz.md).

Starts ``sync-server serve`` on 127.0.0.1 with enrolled laptops, runs the parts in turn,
prints what each tried and what came back, and exits 0 only when no request got a 5xx,
every refusal carried a documented code, no parser raised anything but the project's own
error, and no altered or replayed input was taken as new.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.fuzz import api, hostile, parsers, signed
from tests.fuzz.lab import Lab, lab
from tests.fuzz.tally import Tally

DEFAULT_EXAMPLES = 100


def _api(t: Tally, L: Lab, n: int, seed: int) -> None:
    api.run(t.part("api: schemathesis"), L.url, examples=n, seed=seed)


PARTS: dict[str, tuple[str, Callable[[Tally, Lab, int, int], Any]]] = {
    "api": ("schemathesis over every operation of /api/v1/openapi.json (positive and negative data)", _api),
    "signed": ("envelopes signed by an enrolled laptop, generated headers and payloads, to every envelope endpoint",
               lambda t, L, n, s: signed.run(t.part("api: signed envelopes"), L, examples=n, seed=s)),
    "envelope": ("Hypothesis on the envelope reader (schema/envelope.py), in-process",
                 lambda t, L, n, s: parsers.envelope_parser(t.part("parser: envelope"), L, examples=n, seed=s)),
    "server-import": ("Hypothesis on the server's bundle import (sync_server/bundles.py), on a copy of its data",
                      lambda t, L, n, s: parsers.server_import(t.part("parser: server import"), L, examples=n,
                                                               seed=s)),
    "laptop-import": ("Hypothesis on the laptop's bundle import (field_client/sync.py import_bundle)",
                      lambda t, L, n, s: parsers.laptop_import(t.part("parser: laptop import"), L, examples=n,
                                                               seed=s)),
    "hostile": ("crafted cases over HTTP: content types, methods, JSON, oversized, truncated, bit flips, replays, "
                "forged and misaddressed envelopes",
                lambda t, L, n, s: hostile.http_cases(t.part("hostile: http"), L, examples=n, seed=s)),
    "bundles": ("crafted bundle files: cut, garbled, zero-length, huge, folders, replays (sync-server import, "
                "laptop import)",
                lambda t, L, n, s: hostile.bundle_cases(t.part("hostile: bundles"), L, examples=n, seed=s)),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description="Hostile input against a real sync-server on 127.0.0.1 and both bundle parsers; "
                    "exit 0 only when 5xx = 0, every refusal has a documented code, no parser crashed and "
                    "nothing altered or replayed was taken (docs/fuzz.md).",
        epilog="parts: " + "; ".join(f"{k}: {v[0]}" for k, v in PARTS.items()))
    p.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES, metavar="N",
                   help=f"generated inputs per operation and strategy; also scales cut positions and bit flips "
                        f"(default {DEFAULT_EXAMPLES})")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="seed for Hypothesis and the crafted cases (default: a random one, printed)")
    p.add_argument("--parts", default=",".join(PARTS), metavar="LIST",
                   help=f"comma-separated parts to run (default: all: {','.join(PARTS)})")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="build the server and laptops in DIR and leave them there (the server's log included)")
    return p


def run(examples: int, seed: int, parts: Sequence[str], *, keep: Path | None = None,
        out: Callable[[str], None] = print) -> Tally:
    tally = Tally()
    started = time.monotonic()
    with lab(keep) as L:
        out(f"sync-server at {L.url} (data {L.server.data}); laptops {L.village.id} (village), {L.fuzzer.id} "
            f"(fuzzer), {L.revoked.id} (revoked); seed {seed}, examples {examples}")
        for name in parts:
            t0 = time.monotonic()
            PARTS[name][1](tally, L, examples, seed)
            done = [p for p in tally.parts.values()]
            last = done[-1] if done else None
            out(f"  {name:<14} {time.monotonic() - t0:6.1f} s"
                + (f"  tried {last.tried}, 5xx {last.server_errors}" if last else ""))
        logged = [line for line in L.server.log.read_text(encoding="utf-8", errors="replace").splitlines()
                  if '"unexpected error"' in line]
        if logged:
            out(f"the server logged {len(logged)} unexpected error(s); the first: {logged[0][:300]}")
    out(f"done in {time.monotonic() - started:.0f} s")
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or args.examples < 1:
        print(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}" if unknown else "--examples must be >= 1",
              file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    tally = run(args.examples, seed, parts, keep=args.keep, out=lambda s: print(s, flush=True))
    print(tally.report())
    only = f" --parts {','.join(parts)}" if parts != list(PARTS) else ""
    print(f"(again: python -m tests.fuzz --examples {args.examples} --seed {seed}{only})")
    return 0 if tally.ok else 1
