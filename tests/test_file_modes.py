"""Who may read what batchledger writes: the ledger and the logs are private, results
follow the umask."""

import os
import sqlite3
import stat
from pathlib import Path

from helpers import complete, write_jsonl

from batchledger.emulator import EmulatorServer

# --- private files ---------------------------------------------------------------------


def test_the_ledger_and_logs_are_private_and_results_follow_the_umask(
    cli, emulator: EmulatorServer, isolated: Path, monkeypatch
):
    monkeypatch.setenv("BATCHLEDGER_DB", str(isolated / "data" / "ledger.db"))
    old = os.umask(0o022)
    try:
        write_jsonl(isolated / "in.jsonl", 2)
        batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
        complete(emulator, batch_id)
        assert cli("retrieve", "--batch-id", batch_id).code == 0
    finally:
        os.umask(old)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(isolated / "data") == 0o700
    assert mode(isolated / "data" / "ledger.db") == 0o600
    conn = sqlite3.connect(isolated / "data" / "ledger.db")
    with conn:  # a write, so that SQLite makes its -wal file beside the ledger
        conn.execute("UPDATE batches SET checked_at = checked_at")
    assert mode(isolated / "data" / "ledger.db-wal") == 0o600
    conn.close()
    assert mode(isolated / "logs") == 0o700
    assert {mode(log) for log in (isolated / "logs").iterdir()} == {0o600}
    assert mode(isolated / f"results_{batch_id}.jsonl") == 0o644
