"""The Python API's `results()` on a 1,000,000-line batch (100,000 with --quick): peak RSS of a
child that iterates every row, against the import floor (a child that imports batchledger,
opens the ledger, gets the batch and imports what results() loads, then stops).

.venv/bin/python bench/api_results.py [--quick]

The batch is recorded in a ledger as a create and a download record it (claim_submission,
record_upload, record_batch, record_download); its output answers nine requests in ten,
written in a shuffled order (as Anthropic's results are), about 300 bytes a line.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

from _common import (
    ENDPOINT,
    Report,
    child_env,
    megabytes,
    parse_args,
    progress,
    run_measured,
)
from _common import seconds as fmt

from batchledger.ledger import InputFile, open_ledger

LIMIT_MB = 50
WHERE = {"account": "default", "base_url": None}
FLOOR = (
    "import sys, batchledger as bl, batchledger.export, batchledger.api.result_rows\n"
    "ledger = bl.open(); run = ledger.get(sys.argv[1])\n"
)
ITERATE = FLOOR + (
    "import time\n"
    "started = time.monotonic(); rows = ok = 0; last = None\n"
    "for row in run.results():\n"
    "    rows += 1; ok += row['status'] == 'ok'\n"
    "    assert row['line'] == rows\n"
    "print(rows, ok, time.monotonic() - started)\n"
)


def make_batch(folder: Path, requests: int) -> str:
    """An input of `requests` lines, its results saved (shuffled), a ledger recording both."""
    source, output = folder / "in.jsonl", folder / "results.jsonl"
    with source.open("w") as inputs:
        for n in range(requests):
            inputs.write(
                f'{{"custom_id":"r{n}","method":"POST","url":"{ENDPOINT}","body":'
                f'{{"model":"gpt-4o-mini","input":"Say hello number {n}"}}}}\n'
            )
    order = list(range(requests))
    random.Random(7).shuffle(order)
    with output.open("w") as outputs:
        for n in order:
            if n % 10 == 0:
                continue  # one in ten has no result: `missing`
            body = {"object": "response", "output_text": f"answer {n} " + "x" * 160}
            record = {"custom_id": f"r{n}", "response": {"status_code": 200, "body": body}}
            outputs.write(json.dumps(record) + "\n")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    ledger = open_ledger(folder / "ledger.db")
    assert ledger is not None
    try:
        input_ = InputFile(path=source, size=source.stat().st_size, sha256=digest)
        row, _ = ledger.batches.claim_submission(input_, ENDPOINT, "24h", force=True, **WHERE)
        ledger.batches.record_upload(row["id"], "file-in")
        batch = {
            "id": "batch_bench",
            "status": "completed",
            "input_file_id": "file-in",
            "output_file_id": "file-out",
            "request_counts": {"total": requests, "completed": requests - requests // 10},
            "created_at": 1_700_000_000,
        }
        ledger.batches.record_batch(batch, action="create", row_id=row["id"], **WHERE)
        saved = hashlib.sha256(output.read_bytes()).hexdigest()
        ledger.batches.record_download(row["id"], "output", output, output.stat().st_size, saved)
    finally:
        ledger.close()
    return "batch_bench"


def main() -> None:
    args = parse_args(__doc__ or "")
    requests = 100_000 if args.quick else 1_000_000
    report = Report(f"api results() ({'quick, ' if args.quick else ''}{requests:,} lines)")
    with tempfile.TemporaryDirectory(prefix="bench-api-") as name:
        folder = Path(name)
        progress(f"writing {requests:,} requests and their shuffled results")
        batch_id = make_batch(folder, requests)
        env = child_env(db=folder / "ledger.db")
        progress("the import floor, then results() to the end")
        floor = run_measured([sys.executable, "-c", FLOOR, batch_id], env, folder)
        run = run_measured([sys.executable, "-c", ITERATE, batch_id], env, folder)
        rows, ok, took = run.stdout.read_text().split()
        above = (run.maxrss_kib - floor.maxrss_kib) / 1024
        report.add("rows read (ok)", f"{int(rows):,} ({int(ok):,})", f"{requests:,}", None)
        report.add("results() to the end", fmt(float(took)))
        report.add("import floor RSS", megabytes(floor.maxrss_kib))
        report.add("results() RSS", megabytes(run.maxrss_kib))
        report.add("above the floor", f"{above:.1f} MB", f"<= {LIMIT_MB} MB", above <= LIMIT_MB)
        report.add("input + results on disk", megabytes(
            ((folder / "in.jsonl").stat().st_size + (folder / "results.jsonl").stat().st_size)
            / 1024
        ))  # fmt: skip
    report.print()


if __name__ == "__main__":
    main()
