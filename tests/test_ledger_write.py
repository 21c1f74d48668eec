"""record_batch returns the row as the ledger holds it, whether or not it reads it back."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchledger.ledger import InputFile, Ledger, open_ledger

WHERE = {"account": "default", "base_url": "https://api.openai.com/v1"}


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    opened = open_ledger(tmp_path / "ledger.db")
    assert opened is not None
    yield opened
    opened.close()


def api_batch(file_id: str, **values: Any) -> dict[str, Any]:
    batch: dict[str, Any] = {
        "id": "batch_abc",
        "object": "batch",
        "endpoint": "/v1/responses",
        "input_file_id": file_id,
        "completion_window": "24h",
        "status": "validating",
        "created_at": 1_764_000_000,
        "expires_at": 1_764_086_400,
        "request_counts": {"total": 3, "completed": 0, "failed": 0},
        "metadata": None,
    }
    return {**batch, **values}


def created(ledger: Ledger, tmp_path: Path) -> dict[str, Any]:
    input_ = InputFile(tmp_path / "in.jsonl", 10, "ab" * 32)
    row, _ = ledger.batches.claim_submission(input_, "/v1/responses", "24h", force=False, **WHERE)
    ledger.batches.record_upload(row["id"], "file-1")
    ledger.batches.record_batch(api_batch("file-1"), action="create", row_id=row["id"], **WHERE)
    return row


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "in_progress", "in_progress_at": 1_764_000_100},
        {
            "status": "completed",
            "completed_at": 1_764_000_900,
            "output_file_id": "file-out",
            "request_counts": {"total": 3, "completed": 2, "failed": 1},
            "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
        },
        {"status": "failed", "errors": {"data": [{"code": "bad", "line": 1, "message": "x"}]}},
        # Values SQLite stores in another type: the row must be read back.
        {"request_counts": {"total": 3.0, "completed": "2", "failed": True}},
        {"request_counts": None},
    ],
)
def test_record_batch_returns_the_stored_row(ledger: Ledger, tmp_path: Path, changes: Any):
    row = created(ledger, tmp_path)
    returned = ledger.batches.record_batch(
        api_batch("file-1", **changes), action="status", row_id=None, **WHERE
    )
    assert returned == ledger.batches.get_row(row["id"])
    assert [type(value) for value in returned.values()] == [
        type(value) for value in ledger.batches.get_row(row["id"]).values()
    ]
    assert [event["action"] for event in ledger.batches.history(row["id"])] == [
        "submit",
        "upload",
        "create",
        "status",
    ]


def test_record_batch_of_a_new_batch_adds_its_row(ledger: Ledger):
    returned = ledger.batches.record_batch(
        api_batch("file-9"), action="sync", row_id=None, origin="sync", **WHERE
    )
    assert returned == ledger.batches.find_batch("batch_abc", "default")
    assert returned["origin"] == "sync"
    assert [event["action"] for event in ledger.batches.history(returned["id"])] == ["sync"]


CLOSE_WHILE_WRITING = """
import sys, threading, time
from pathlib import Path
from batchledger.ledger import BatchFilter, InputFile, open_ledger

work = Path(sys.argv[1])
source = work / "in.jsonl"
source.write_text("x\\n")
input_ = InputFile(path=source, size=2, sha256="0" * 64)
for attempt in range(50):
    ledger = open_ledger(work / f"ledger{attempt}.db")

    def write() -> None:
        try:
            while True:
                ledger.batches.claim_submission(
                    input_, "/v1/responses", "24h", force=True, account="default", base_url="x"
                )
                ledger.reports.list_batches(BatchFilter(), 5)
        except Exception:  # the ledger was closed: the thread ends
            pass

    threads = [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.003)
    ledger.close()
    for thread in threads:
        thread.join()
"""


def test_closing_the_ledger_while_threads_write_ends_them_cleanly(tmp_path: Path) -> None:
    """A sweep stopped by Ctrl-C closes the ledger while its workers may still be writing
    (they stop at their next chunk). Closing a sqlite3 connection that another thread is
    inside crashed the process (SIGSEGV, once in a CI run); close waits for the write."""
    done = subprocess.run(
        [sys.executable, "-c", CLOSE_WHILE_WRITING, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
