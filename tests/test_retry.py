"""retry (issue 13): the requests with no successful response, sent again and merged back."""

import json
import os
import sqlite3
from pathlib import Path

from helpers import write_jsonl

from batchledger.emulator import EmulatorServer


def finish_all(server: EmulatorServer) -> None:
    for _ in range(4):
        for batch_id in list(server.state.batches):
            server.state.advance(batch_id)


def custom_ids(path: Path) -> list[str]:
    return [json.loads(line)["custom_id"] for line in path.read_bytes().splitlines()]


def statuses(path: Path) -> dict[str, int | None]:
    out = {}
    for line in path.read_bytes().splitlines():
        record = json.loads(line)
        response = record.get("response") or {}
        out[record["custom_id"]] = response.get("status_code")
    return out


def test_retry_of_a_job_fills_the_holes_and_the_results_hold_one_line_per_request(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 12)
    emulator.state.set_line_outcomes(
        {"request-1": "500", "request-2": "429", "request-4": "missing", "request-10": "400"},
        times=1,
    )
    created = cli("create", "--in", "in.jsonl", "--max-requests", "6")
    job_id = created.out.splitlines()[0].removeprefix("job_id: ")
    second = created.out.splitlines()[2].split("batch_id: ")[1]
    emulator.state.set_outcome(second, "expired")  # requests 9-11 never run
    finish_all(emulator)
    assert cli("status", "--all").code == 0
    results = isolated / f"results_{job_id}.jsonl"
    errors = isolated / f"results_{job_id}.errors.jsonl"
    before = len(results.read_bytes().splitlines())

    retried = cli("retry", job_id)
    retry_job = retried.out.splitlines()[1].removeprefix("job_id: ")
    finish_all(emulator)
    swept = cli("status", "--all")
    again = cli("retry", job_id)

    assert retried.code == 0, retried.err
    # 1 and 2 (a 5xx, a 429), 4 (missing); 9 to 11 expired, never run (10's 400 is moot).
    assert retried.out.splitlines()[0] == (
        f"retry of {job_id}: 6 requests (1 429, 1 5xx, 3 expired, 1 missing)"
    )
    assert swept.code == 0, swept.err
    assert retry_job.startswith("job_")
    merged = statuses(results)
    failed = statuses(errors)
    # Exactly one line per input request: its success, else its last error (request-10
    # ran for the first time in the retry, and got its 400 there).
    assert failed == {"request-10": 400}
    assert sorted([*merged, *failed]) == sorted(custom_ids(source))
    assert all(code == 200 for code in merged.values())
    assert custom_ids(results) == [c for c in custom_ids(source) if c != "request-10"]
    assert len(results.read_bytes().splitlines()) == 11 > before
    assert again.code == 0
    assert again.out.startswith(f"Nothing to retry: 11 requests of {job_id}")
    assert "1 failed for other reasons" in again.out


def test_retry_leaves_other_failures_unless_all_failed(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 4)
    emulator.state.set_line_outcomes({"request-3": "400"}, times=1)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    finish_all(emulator)
    assert cli("status", "--batch-id", batch_id).code == 0

    plain = cli("retry", batch_id)
    every = cli("retry", batch_id, "--all-failed")
    finish_all(emulator)
    swept = cli("status", "--all")

    assert plain.code == 0 and plain.out == (
        f"Nothing to retry: 3 requests of {batch_id} have a successful response; "
        "1 failed for other reasons (--all-failed sends them).\n"
    )
    assert every.code == 0, every.err
    assert every.out.startswith(f"retry of {batch_id}: 1 requests (1 failed)")
    assert swept.code == 0, swept.err
    results = isolated / f"results_{batch_id}.jsonl"
    errors = isolated / f"results_{batch_id}.errors.jsonl"
    assert custom_ids(results) == [f"request-{n}" for n in range(4)]
    assert errors.read_bytes() == b""  # its one error was answered by the retry
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    row = conn.execute(
        "SELECT output_bytes, error_bytes FROM batches WHERE batch_id = ?", (batch_id,)
    ).fetchone()
    conn.close()
    assert row == (results.stat().st_size, 0)
    # Nothing left for a sweep to fetch back, and nothing left to retry.
    assert cli("status", "--all").out == "No pending batches in the ledger.\n"
    assert cli("retry", batch_id).out.startswith(f"Nothing to retry: 4 requests of {batch_id}")
    assert custom_ids(results) == [f"request-{n}" for n in range(4)]


def test_retry_of_a_batch_whose_results_are_not_saved_says_what_to_run(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    finish_all(emulator)

    result = cli("retry", batch_id)

    assert result.code == 3
    assert f"run 'batchledger retrieve --batch-id {batch_id}' first" in result.err


def test_retry_of_an_input_with_a_repeated_custom_id_names_the_line(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 3)
    lines = source.read_text().splitlines()
    source.write_text("\n".join([*lines, lines[1]]) + "\n")  # request-1 twice
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    finish_all(emulator)  # the API fails the batch: duplicate_custom_id
    assert cli("status", "--batch-id", batch_id).field("status") == "failed"
    before = len(emulator.state.requests)

    result = cli("retry", batch_id)

    assert result.code == 2
    assert "line 4" in result.err and len(result.err.splitlines()) == 1
    assert len(emulator.state.requests) == before
