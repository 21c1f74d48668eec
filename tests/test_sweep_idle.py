"""`status --all` with nothing to poll: no key, no network, no log (issue 15)."""

from pathlib import Path

import pytest
from helpers import complete, ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer


def test_status_all_with_every_batch_final_and_saved_needs_no_key_or_network(
    cli, emulator: EmulatorServer, isolated: Path, monkeypatch: pytest.MonkeyPatch
):
    for name, lines in (("a", 2), ("b", 3)):
        write_jsonl(isolated / f"{name}.jsonl", lines)
        created = cli("create", "--in", str(isolated / f"{name}.jsonl"))
        assert created.code == 0, created.err
        complete(emulator, created.field("batch_id"))
    saved = cli("status", "--all")
    assert saved.code == 0, saved.err
    rows = ledger_rows()
    assert all(row["status"] == "completed" and row["output_path"] for row in rows), rows
    logs = sorted((isolated / "logs").iterdir())
    monkeypatch.delenv("OPENAI_API_KEY")
    emulator.state.clear_requests()

    result = cli("status", "--all")

    assert result.code == 0, result.err
    assert result.out == "No pending batches in the ledger.\n"
    assert result.err == ""
    assert emulator.state.requests == []
    assert sorted((isolated / "logs").iterdir()) == logs
    assert ledger_rows() == rows
