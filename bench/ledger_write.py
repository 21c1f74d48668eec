"""Ledger writes: one create (3 transactions) and one status update, on a 10,000-batch ledger.

    .venv/bin/python bench/ledger_write.py [--quick]

Calls batchledger.ledger directly, in this process, as the CLI does within a command.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ENDPOINT, Report, make_ledger, parse_args, progress

from batchledger.emulator import StoredBatch
from batchledger.ledger import InputFile, Ledger, open_ledger

# Where the batches are made: the default account, on OpenAI.
WHERE = {"account": "default", "base_url": "https://api.openai.com/v1"}

TARGET_SECONDS = 0.005
LOG_FILE = Path("logs/batch_20261126_101500.log")
WARM_UP = 20


def api_batch(input_file_id: str, status: str) -> dict[str, Any]:
    """A Batch object as the API returns it (the emulator's JSON shape)."""
    now = int(time.time())
    batch = StoredBatch(
        id=f"batch_{uuid.uuid4().hex}",
        endpoint=ENDPOINT,
        input_file_id=input_file_id,
        completion_window="24h",
        created_at=now,
        expires_at=now + 86_400,
        metadata={"batchledger_ref": f"bl_{uuid.uuid4().hex}"},
        model="gpt-4o-mini",
        output_expires_after=None,
        input_path=None,
        input_bytes=1_234_567,
        input_lines=1_000,
        status=status,
    )
    return batch.to_json()


class Timings:
    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def timed(self, name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = call()
        self.values.setdefault(name, []).append(time.perf_counter() - started)
        return result

    def median(self, name: str) -> float:
        return statistics.median(self.values[name][WARM_UP:])

    def p95(self, name: str) -> float:
        values = sorted(self.values[name][WARM_UP:])
        return values[int(len(values) * 0.95)]


def one_create(ledger: Ledger, timings: Timings, n: int) -> dict[str, Any]:
    """What `create` writes: claim, upload, batch, release; each step and the whole timed."""
    input_ = InputFile(Path(f"/home/ana/jobs/req_{n}.jsonl"), 1_234_567, uuid.uuid4().hex * 2)
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    batch = api_batch(file_id, "validating")

    def create() -> None:
        row, _ = timings.timed(
            "claim_submission",
            lambda: ledger.batches.claim_submission(input_, ENDPOINT, "24h", force=True, **WHERE),
        )
        timings.timed("record_upload", lambda: ledger.batches.record_upload(row["id"], file_id))
        timings.timed(
            "record_batch (create)",
            lambda: ledger.batches.record_batch(batch, action="create", row_id=row["id"], **WHERE),
        )
        timings.timed("release_claim", lambda: ledger.release_claim("batches", row["id"]))

    timings.timed("create", create)
    return batch


def one_status(ledger: Ledger, timings: Timings, batch: dict[str, Any]) -> None:
    """record_batch as `status` calls it: found by batch id (row_id=None)."""
    update = {**batch, "status": "in_progress", "in_progress_at": int(time.time())}
    timings.timed(
        "status", lambda: ledger.batches.record_batch(update, action="status", row_id=None, **WHERE)
    )


def reopen(path: Path) -> None:
    """What every command does first: open (and check the migrations of) the ledger."""
    ledger = open_ledger(path)
    assert ledger is not None
    ledger.close()


def main() -> None:
    args = parse_args(__doc__ or "")
    writes = 100 if args.quick else 400
    report = Report(f"ledger writes (10,000-batch file ledger, median of {writes} each)")
    timings = Timings()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        path = Path(tmp) / "ledger.db"
        progress("building a ledger of 10,000 batches")
        make_ledger(path, 10_000)
        ledger = open_ledger(path)
        assert ledger is not None
        ledger.log_file = LOG_FILE  # as a command that calls the API has one
        try:
            pragmas = {
                name: ledger.db.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous")
            }
            for _ in range(WARM_UP + 21):
                timings.timed("open", lambda: reopen(path))
            progress(f"timing {writes + WARM_UP} creates and status updates")
            batches = [one_create(ledger, timings, n) for n in range(writes + WARM_UP)]
            for batch in batches:
                one_status(ledger, timings, batch)
        finally:
            ledger.close()
    for name in ("create", "status"):
        median = timings.median(name)
        report.add(
            f"{name} write: median (p95 {timings.p95(name) * 1000:.2f} ms)",
            f"{median * 1000:.2f} ms",
            f"< {TARGET_SECONDS * 1000:g} ms",
            median < TARGET_SECONDS,
        )
    for name in ("claim_submission", "record_upload", "record_batch (create)", "release_claim"):
        report.add(f"  of which {name}", f"{timings.median(name) * 1000:.2f} ms")
    report.add("open_ledger + close (migrated ledger)", f"{timings.median('open') * 1000:.2f} ms")
    report.note(
        f"journal_mode={pragmas['journal_mode']}, synchronous={pragmas['synchronous']}"
        " (2 = FULL: every commit waits for an fsync)"
    )
    report.print()


if __name__ == "__main__":
    main()
