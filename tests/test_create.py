"""`create`: upload, create, record; the duplicate guard; options anywhere."""

import hashlib
from pathlib import Path

import pytest
from helpers import API_KEY, api_requests, ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer, Fault


def test_create_prints_ids_and_records_the_batch(cli, emulator: EmulatorServer, isolated: Path):
    input_ = write_jsonl(isolated / "requests.jsonl", 3)

    result = cli("create", "--in", "requests.jsonl")

    assert result.code == 0, result.err
    assert result.err == ""
    file_id, batch_id = result.field("file_id"), result.field("batch_id")
    assert file_id.startswith("file-") and batch_id.startswith("batch_")
    assert result.out == f"file_id: {file_id}\nbatch_id: {batch_id}\n"
    [row] = ledger_rows()
    assert row["batch_id"] == batch_id
    assert row["input_file_id"] == file_id
    assert row["input_path"] == str(input_.resolve())
    assert row["input_bytes"] == input_.stat().st_size
    assert row["input_sha256"] == hashlib.sha256(input_.read_bytes()).hexdigest()
    assert row["endpoint"] == "/v1/responses"
    assert row["completion_window"] == "24h"
    assert row["status"] == "validating"
    assert row["created_at"].endswith("Z") and "T" in row["created_at"]
    assert row["origin"] == "create"
    # The batch carries the ledger's ref, so it can be found again on the server.
    server_batch = emulator.state.batches[batch_id]
    assert server_batch.metadata == {"batchledger_ref": row["ref"]}
    assert emulator.state.files[file_id].purpose == "batch"
    history = ledger_rows("history")
    assert [event["action"] for event in history] == ["submit", "upload", "create"]
    log_files = {event["log_file"] for event in history}
    assert len(log_files) == 1 and Path(log_files.pop()).is_file()


def test_create_passes_endpoint_and_window(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "chat.jsonl", 2, endpoint="/v1/chat/completions")

    result = cli(
        "create",
        "--in",
        "chat.jsonl",
        "--endpoint",
        "/v1/chat/completions",
        "--completion-window",
        "24h",
    )

    assert result.code == 0, result.err
    batch = emulator.state.batches[result.field("batch_id")]
    assert batch.endpoint == "/v1/chat/completions"
    assert ledger_rows()[0]["endpoint"] == "/v1/chat/completions"


def test_global_options_go_before_or_after_the_command(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 1)

    before = cli("--db", "a.db", "--log-file", "before.log", "create", "--in", "in.jsonl")
    after = cli("create", "--in", "in.jsonl", "--db", "b.db", "--log-file", "l/after.log")

    assert (before.code, after.code) == (0, 0), before.err + after.err
    assert (isolated / "a.db").is_file() and (isolated / "b.db").is_file()
    assert "CREATE_BATCH" in (isolated / "before.log").read_text()
    assert "CREATE_BATCH" in (isolated / "l" / "after.log").read_text()
    # --db wins over BATCHLEDGER_DB, which was never created.
    assert not Path(ledger_db := str(isolated.parent / "ledger.db")).exists(), ledger_db


def test_same_input_twice_is_refused_unless_forced(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 2)
    first = cli("create", "--in", "in.jsonl")
    assert first.code == 0

    again = cli("create", "--in", "in.jsonl")

    assert again.code == 3
    assert again.out == ""
    assert again.err.startswith("batchledger: error: in.jsonl was already submitted as ")
    assert first.field("batch_id") in again.err and "--force" in again.err
    assert len(again.err.splitlines()) == 1
    assert api_requests(emulator, "POST", "/v1/files") == 1
    assert len(ledger_rows()) == 1

    forced = cli("create", "--in", "in.jsonl", "--force")

    assert forced.code == 0, forced.err
    assert forced.field("batch_id") != first.field("batch_id")
    assert len(emulator.state.batches) == 2
    assert len(ledger_rows()) == 2


def batches_made(server: EmulatorServer) -> int:
    return len(server.state.batches)


# --- uploads are always named .jsonl ----------------------------------------------------


@pytest.mark.parametrize("name", ["data.ndjson", "input"])
def test_uploads_are_named_jsonl_whatever_the_input_is_called(
    cli, emulator: EmulatorServer, isolated: Path, name: str
):
    write_jsonl(isolated / name, 2)

    result = cli("create", "--in", name)

    assert result.code == 0, result.err
    [upload] = emulator.state.files.values()
    stem = name.partition(".")[0]
    assert upload.filename.startswith(f"{stem}.bl_") and upload.filename.endswith(".jsonl")
    assert upload.filename.count(".") == 2


# --- a create that failed after its upload has an end ------------------------------------


def test_a_create_refused_by_5xx_is_abandoned_then_resumed_by_create(
    cli, emulator: EmulatorServer, isolated: Path, monkeypatch
):
    write_jsonl(isolated / "in.jsonl", 2)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", status=500, times=None))
    assert cli("create", "--in", "in.jsonl", "--max-retries", "1").code == 1
    emulator.state.clear_faults()

    swept = cli("status", "--all")
    requests_before = len(emulator.state.requests)
    monkeypatch.delenv("OPENAI_API_KEY")
    quiet = cli("status", "--all")
    requests_after = len(emulator.state.requests)
    listed = cli("list")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    resumed = cli("create", "--in", "in.jsonl")

    assert swept.code == 0, swept.err
    assert "marked abandoned" in swept.err
    assert swept.out == "No pending batches in the ledger.\n"
    assert quiet.code == 0 and quiet.out == "No pending batches in the ledger.\n"
    assert requests_after == requests_before  # no network, no key needed
    assert "abandoned" in listed.out
    assert resumed.code == 0, resumed.err
    assert api_requests(emulator, "POST", "/v1/files") == 1  # the upload was reused
    assert batches_made(emulator) == 1
