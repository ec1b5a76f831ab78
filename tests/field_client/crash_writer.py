"""Helper for test_crash_safety.py: record ops in a loop until killed.

``python crash_writer.py DATA_DIR`` opens the device (passphrase from MINQING_PASSPHRASE),
prints ``ready``, then forever registers a case with a party, adds a visit and accepts the
case. After each ``FieldClient`` call returns (the transaction is committed) it prints
what was acknowledged, ``case <id>``, ``visit <id>`` or ``op <op_id>``, and flushes: a
line on stdout is a promise that the record is on disk.
"""

from __future__ import annotations

import os
import sys

from field_client.store import FieldClient


def main(data: str) -> None:
    client = FieldClient.open(data, os.environ["MINQING_PASSPHRASE"])
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    n = 0
    while True:
        n += 1
        case_id = client.new_case(
            {"title": f"纠纷{n}", "category": "dispute", "subject": "neighbour", "channel": "visit",
             "summary": f"张三丰反映第{n}件事"},
            [{"role": "petitioner", "name": "张三丰", "phone": "13812345678"}],
        )
        out.write(f"case {case_id}\n")
        out.flush()
        visit_id = client.add_record(
            "visit", case_id,
            {"kind": "home", "visitor": "wangli", "visited_at": "2026-11-22T09:00:00+08:00", "summary": "上门"},
        )
        out.write(f"visit {visit_id}\n")
        out.flush()
        op = client.transition(case_id, "accept")
        out.write(f"op {op.op_id}\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1])
