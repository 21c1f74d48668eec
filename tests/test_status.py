"""`status` of one batch and `status --all`: print, record, auto-save."""

import re
from pathlib import Path

from helpers import advance, api_requests, complete, ledger_rows, sdk, server_bytes, write_jsonl

from batchledger.emulator import EmulatorServer

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def create(cli, path: Path, lines: int = 3) -> str:
    write_jsonl(path, lines)
    result = cli("create", "--in", str(path), "--force")
    assert result.code == 0, result.err
    return result.field("batch_id")


def test_status_prints_status_and_iso_timestamps(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = create(cli, isolated / "in.jsonl")

    result = cli("status", "--batch-id", batch_id)

    assert result.code == 0, result.err
    assert result.field("batch_id") == batch_id
    assert result.field("status") == "in_progress"
    for name in ("created_at", "in_progress_at", "expires_at"):
        assert ISO_UTC.match(result.field(name)), result.out
    assert result.field("requests") == "0 completed, 0 failed, 3 total"
    assert not re.search(r"\b\d{10}\b", result.out), "raw epoch seconds in output"
    [row] = ledger_rows()
    assert row["status"] == "in_progress"
    assert row["in_progress_at"] == result.field("in_progress_at")
    assert row["requests_total"] == 3
    assert ledger_rows("history")[-1]["action"] == "status"


def test_status_saves_results_when_completed(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = create(cli, isolated / "in.jsonl")
    advance(emulator, batch_id, 2)  # in_progress, finalizing

    result = cli("status", "--batch-id", batch_id)

    assert result.code == 0, result.err
    assert result.field("status") == "completed"
    assert ISO_UTC.match(result.field("completed_at"))
    saved = isolated / f"results_{batch_id}.jsonl"
    output_file_id = emulator.state.batches[batch_id].output_file_id
    expected = server_bytes(emulator, output_file_id)
    assert saved.read_bytes() == expected
    assert result.field("saved") == f"results_{batch_id}.jsonl ({len(expected)} bytes)"
    assert len(expected.splitlines()) == 3
    [row] = ledger_rows()
    assert row["output_file_id"] == output_file_id
    assert row["output_path"] == str(saved)
    assert row["output_bytes"] == len(expected)
    assert row["requests_completed"] == 3

    # Checked again: nothing new to download.
    again = cli("status", "--batch-id", batch_id)
    assert again.code == 0
    assert "saved" not in again.out
    assert api_requests(emulator, "GET", f"/v1/files/{output_file_id}/content") == 2


def test_status_no_auto_save_leaves_results_on_the_server(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = create(cli, isolated / "in.jsonl")
    advance(emulator, batch_id, 2)

    result = cli("status", "--batch-id", batch_id, "--no-auto-save")

    assert result.code == 0, result.err
    assert result.field("status") == "completed"
    assert "saved" not in result.out
    assert list(isolated.glob("results_*")) == []
    assert ledger_rows()[0]["output_path"] is None
    assert api_requests(emulator, "GET", "/v1/files/") == 0


def test_status_out_names_the_file(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = create(cli, isolated / "in.jsonl")
    advance(emulator, batch_id, 2)

    result = cli("status", "--batch-id", batch_id, "--out", "deep/dir/mine.jsonl")

    assert result.code == 0, result.err
    assert (isolated / "deep/dir/mine.jsonl").is_file()
    assert result.field("saved").startswith("deep/dir/mine.jsonl (")


def test_status_of_a_batch_made_elsewhere_adds_it(cli, emulator: EmulatorServer, isolated: Path):
    client = sdk(emulator)
    upload = client.files.create(
        file=write_jsonl(isolated / "x.jsonl", 2).open("rb"), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
    )

    result = cli("status", "--batch-id", batch.id)

    assert result.code == 0, result.err
    [row] = ledger_rows()
    assert (row["batch_id"], row["origin"], row["input_file_id"]) == (batch.id, "lookup", upload.id)


def test_status_all_sweeps_pending_batches(cli, emulator: EmulatorServer, isolated: Path):
    done = create(cli, isolated / "a.jsonl")
    running = create(cli, isolated / "b.jsonl")
    failing = create(cli, isolated / "c.jsonl")
    saved_before = create(cli, isolated / "d.jsonl")
    unsaved = create(cli, isolated / "e.jsonl")
    advance(emulator, done, 2)
    emulator.state.set_outcome(failing, "failed")
    complete(emulator, saved_before)
    assert cli("retrieve", "--batch-id", saved_before).code == 0
    complete(emulator, unsaved)
    assert cli("status", "--batch-id", unsaved, "--no-auto-save").code == 0
    status_calls_before = api_requests(emulator, "GET", f"/v1/batches/{saved_before}")

    result = cli("status", "--all")

    assert result.code == 0, result.err
    lines = {line.split()[0]: line for line in result.out.splitlines()[2:]}
    assert set(lines) == {done, running, failing, unsaved}
    assert "completed" in lines[done] and f"results_{done}.jsonl" in lines[done]
    assert "in_progress" in lines[running]
    assert "failed" in lines[failing]
    assert f"results_{unsaved}.jsonl" in lines[unsaved]
    assert result.out.splitlines()[0].split() == ["batch_id", "status", "requests", "saved", "note"]
    for batch_id in (done, unsaved):
        output_file_id = emulator.state.batches[batch_id].output_file_id
        assert (isolated / f"results_{batch_id}.jsonl").read_bytes() == server_bytes(
            emulator, output_file_id
        )
    # Final and saved batches are not asked about again.
    assert api_requests(emulator, "GET", f"/v1/batches/{saved_before}") == status_calls_before
    rows = {row["batch_id"]: row for row in ledger_rows()}
    assert rows[failing]["status"] == "failed" and rows[failing]["errors"]
    assert rows[done]["output_path"] == str(isolated / f"results_{done}.jsonl")

    second = cli("status", "--all")
    assert second.code == 0
    assert [line.split()[0] for line in second.out.splitlines()[2:]] == [running]


def test_status_all_on_an_empty_ledger(cli, isolated: Path):
    result = cli("status", "--all")

    assert result.code == 0
    assert result.out == "No pending batches in the ledger.\n"
    assert not (isolated.parent / "ledger.db").exists()


# --- status prints, then saves -------------------------------------------------------


def test_status_prints_the_batch_before_saving_and_a_gone_result_is_a_warning_once(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    complete(emulator, batch_id)
    sdk(emulator).files.delete(emulator.state.batches[batch_id].output_file_id)

    first = cli("status", "--batch-id", batch_id)
    second = cli("status", "--batch-id", batch_id)

    assert first.code == 0, first.err
    assert first.field("status") == "completed"
    assert "results are gone from the API" in first.err
    assert second.code == 0 and second.field("status") == "completed"
    assert "gone" not in second.err
    assert api_requests(emulator, "GET", "/v1/files/") == 1  # asked once, then remembered


# --- synced batches are not saved by sweeps unless asked ---------------------------------


def test_a_sweep_after_sync_does_not_download_what_was_made_elsewhere(
    cli, emulator: EmulatorServer, isolated: Path
):
    client = sdk(emulator)
    upload = client.files.create(
        file=write_jsonl(isolated / "e.jsonl", 2).open("rb"), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
    )
    complete(emulator, batch.id)
    assert cli("sync").code == 0

    swept = cli("status", "--all")
    into = isolated / "saved"
    asked = cli("status", "--all", "--include-synced", "--out-dir", str(into))

    assert swept.code == 0 and swept.out == "No pending batches in the ledger.\n"
    assert not list(isolated.glob("results_*"))
    assert asked.code == 0, asked.err
    assert (into / f"results_{batch.id}.jsonl").read_bytes() == emulator.state.files[
        emulator.state.batches[batch.id].output_file_id
    ].path.read_bytes()
