"""`prune`: remote files of final batches whose results are saved, and no others."""

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from helpers import ServerFactory, advance, complete, ledger_rows, log_text, sdk, write_jsonl

from batchledger.emulator import EmulatorServer


def create(cli: Any, isolated: Path, name: str, lines: int) -> str:
    write_jsonl(isolated / f"{name}.jsonl", lines, input=name)
    result = cli("create", "--in", f"{name}.jsonl")
    assert result.code == 0, result.err
    return result.field("batch_id")


def row_of(batch_id: str) -> dict[str, Any]:
    return next(row for row in ledger_rows() if row["batch_id"] == batch_id)


def remote_files(row: dict[str, Any]) -> set[str]:
    return {row[f"{kind}_file_id"] for kind in ("input", "output", "error")} - {None}


def set_column(batch_id: str, column: str, value: Any) -> None:
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    with conn:
        conn.execute(f"UPDATE batches SET {column} = ? WHERE batch_id = ?", (value, batch_id))
    conn.close()


def test_prune_deletes_exactly_the_files_of_batches_whose_results_are_saved(
    cli, emulator: EmulatorServer, isolated: Path
):
    state = emulator.state
    saved = create(cli, isolated, "saved", 3)
    complete(emulator, saved)
    assert cli("status", "--batch-id", saved).code == 0  # saves the output
    unsaved = create(cli, isolated, "unsaved", 3)
    complete(emulator, unsaved)
    assert cli("status", "--batch-id", unsaved, "--no-auto-save").code == 0
    failed = create(cli, isolated, "failed", 2)
    state.set_outcome(failed, "failed")
    assert cli("status", "--batch-id", failed).field("status") == "failed"
    running = create(cli, isolated, "running", 2)
    assert cli("status", "--batch-id", running).field("status") == "in_progress"
    expired = create(cli, isolated, "expired", 4)
    state.set_outcome(expired, "expired")
    advance(emulator, expired, 1)
    assert cli("status", "--batch-id", expired).field("status") == "expired"  # saves both
    changed = create(cli, isolated, "changed", 2)
    complete(emulator, changed)
    assert cli("status", "--batch-id", changed).code == 0
    with open(row_of(changed)["output_path"], "ab") as out:
        out.write(b"edited by hand\n")

    rows = {batch_id: row_of(batch_id) for batch_id in (saved, unsaved, failed, running)}
    rows.update({expired: row_of(expired), changed: row_of(changed)})
    assert len(remote_files(rows[expired])) == 3 and len(remote_files(rows[saved])) == 2
    to_go = remote_files(rows[saved]) | {rows[failed]["input_file_id"]}
    to_go |= remote_files(rows[expired])
    before = set(state.files)
    sizes = {file_id: state.files[file_id].bytes for file_id in to_go}

    result = cli("prune")

    assert result.code == 0, result.err
    assert set(state.files) == before - to_go
    for kept in (unsaved, running, changed):
        assert remote_files(rows[kept]) <= set(state.files)
    header, _, *lines = result.out.splitlines()[:-1]
    assert header.split() == ["batch_id", "file", "file_id", "bytes", "result"]
    table = {line.split()[2]: line.split() for line in lines}
    assert set(table) == to_go
    assert all(cells[3] == str(sizes[file_id]) for file_id, cells in table.items())
    assert all(cells[4] == "deleted" for cells in table.values())
    assert result.out.splitlines()[-1] == f"freed: {sum(sizes.values())} bytes"
    assert "2 final batches whose results are not saved" in result.err
    assert log_text(isolated).count("DELETE_FILE request=") == len(to_go)

    history = ledger_rows("history")
    pruned = [event for event in history if event["action"].startswith("prune_")]
    assert len(pruned) == len(to_go)
    assert row_of(saved)["output_file_gone_at"] and row_of(saved)["input_file_gone_at"]
    assert row_of(unsaved)["input_file_gone_at"] is None

    requests = len(state.requests)
    again = cli("prune")
    assert again.code == 0, again.err
    assert again.out == "Nothing to prune: no final batch with files to delete.\n"
    assert len(state.requests) == requests


def test_a_file_already_gone_is_noted_and_a_dry_run_deletes_nothing(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = create(cli, isolated, "in", 2)
    complete(emulator, batch_id)
    assert cli("status", "--batch-id", batch_id).code == 0
    row = row_of(batch_id)
    sdk(emulator).files.delete(row["output_file_id"])
    input_size = emulator.state.files[row["input_file_id"]].bytes

    dry = cli("prune", "--dry-run", "--json")

    assert dry.code == 0, dry.err
    assert {item["file_id"]: item["result"] for item in json.loads(dry.out)} == {
        row["input_file_id"]: "would delete",
        row["output_file_id"]: "not found",
    }
    assert row["input_file_id"] in emulator.state.files
    assert row_of(batch_id)["output_file_gone_at"] is None

    result = cli("prune")

    assert result.code == 0, result.err
    assert row["input_file_id"] not in emulator.state.files
    cells = [line.split(maxsplit=4) for line in result.out.splitlines()[2:-1]]
    assert {cell[1]: cell[4] for cell in cells} == {"input": "deleted", "output": "not found"}
    assert result.out.splitlines()[-1] == f"freed: {input_size} bytes"
    gone = row_of(batch_id)
    assert gone["output_file_gone_at"] and gone["input_file_gone_at"]


def test_older_than_keeps_recent_batches(cli, emulator: EmulatorServer, isolated: Path):
    old, new = create(cli, isolated, "old", 1), create(cli, isolated, "new", 1)
    for batch_id in (old, new):
        complete(emulator, batch_id)
        assert cli("status", "--batch-id", batch_id).code == 0
    set_column(old, "created_at", "2020-01-01T00:00:00Z")

    result = cli("prune", "--older-than", "7d", "--json")

    assert result.code == 0, result.err
    assert {item["batch_id"] for item in json.loads(result.out)} == {old}
    assert remote_files(row_of(new)) <= set(emulator.state.files)
    assert not remote_files(row_of(old)) & set(emulator.state.files)


def test_an_input_another_submission_still_uses_is_kept(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = create(cli, isolated, "in", 1)
    complete(emulator, batch_id)
    assert cli("status", "--batch-id", batch_id).code == 0
    shared = row_of(batch_id)["input_file_id"]
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    with conn:  # a create of the same upload, cut off before its batch was made
        conn.execute(
            "INSERT INTO batches (ref, endpoint, completion_window, input_file_id, recorded_at)"
            " VALUES ('bl_cut', '/v1/responses', '24h', ?, '2026-11-25T14:03:07Z')",
            (shared,),
        )
    conn.close()

    result = cli("prune", "--json")

    assert result.code == 0, result.err
    assert [item["file"] for item in json.loads(result.out)] == ["output"]
    assert shared in emulator.state.files


def test_nothing_to_prune_needs_no_key(cli, emulator: EmulatorServer, isolated: Path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    missing = cli("prune")
    assert (missing.code, missing.out) == (0, "Nothing to prune: no batches in the ledger yet.\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    create(cli, isolated, "in", 1)
    monkeypatch.delenv("OPENAI_API_KEY")
    pending = cli("prune")
    assert (pending.code, pending.out) == (
        0,
        "Nothing to prune: no final batch with files to delete.\n",
    )


def test_a_saved_file_changed_in_place_keeps_the_remote_files(
    cli, emulator: EmulatorServer, isolated: Path
):
    # The same size, other bytes (a byte flipped, a fix made in place): only the sha256
    # the ledger recorded tells the saved copy is no longer the API's.
    batch_id = create(cli, isolated, "edited", 2)
    complete(emulator, batch_id)
    assert cli("status", "--batch-id", batch_id).code == 0
    row = row_of(batch_id)
    path = Path(row["output_path"])
    saved = path.read_bytes()
    path.write_bytes(saved.replace(b"request-0", b"request-9", 1))
    assert path.stat().st_size == len(saved) and path.read_bytes() != saved

    result = cli("prune")

    assert result.code == 0, result.err
    assert result.out == "Nothing to prune: no final batch with files to delete.\n"
    assert "kept the files of 1 final batch whose results are not saved" in result.err
    assert remote_files(row) <= set(emulator.state.files)
    assert "DELETE_FILE" not in log_text(isolated)


def test_prune_leaves_the_files_made_where_the_account_pointed_before(
    cli, emulator: EmulatorServer, make_server: ServerFactory, isolated: Path, monkeypatch
):
    # The files are on the first server: asked of the second, they would be "already gone"
    # there, and the ledger would forget files the first one still keeps (and bills).
    batch_id = create(cli, isolated, "saved", 2)
    complete(emulator, batch_id)
    assert cli("status", "--batch-id", batch_id).code == 0  # its results saved
    other = make_server()
    monkeypatch.setenv("OPENAI_BASE_URL", other.base_url)

    result = cli("prune")

    assert result.code == 0, result.err
    assert result.out == "Nothing to prune: no final batch with files to delete.\n"
    assert not other.state.requests
    row = row_of(batch_id)
    assert remote_files(row) <= set(emulator.state.files)
    assert row["input_file_gone_at"] is None and row["output_file_gone_at"] is None
