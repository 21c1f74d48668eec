"""Jobs (issue 13): an input past one batch's limits, split, queued, merged, over real HTTP."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import api_requests, write_jsonl

from batchledger.emulator import EmulatorServer, Fault


def finish_all(server: EmulatorServer) -> None:
    """Let every batch on the server run to its end."""
    for _ in range(4):
        for batch_id in list(server.state.batches):
            server.state.advance(batch_id)


def server_output(server: EmulatorServer, batch_id: str, kind: str = "output") -> bytes:
    batch = server.state.batches[batch_id]
    file_id = batch.output_file_id if kind == "output" else batch.error_file_id
    return server.state.files[file_id].path.read_bytes() if file_id else b""


def job_rows() -> tuple[list[dict], list[dict], list[dict]]:
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    conn.row_factory = sqlite3.Row
    try:
        jobs = [dict(row) for row in conn.execute("SELECT * FROM jobs ORDER BY id")]
        parts = [dict(row) for row in conn.execute("SELECT * FROM parts ORDER BY id")]
        attempts = [
            dict(row)
            for row in conn.execute("SELECT * FROM batches WHERE part IS NOT NULL ORDER BY id")
        ]
    finally:
        conn.close()
    return jobs, parts, attempts


def part_batches(result_out: str) -> list[str]:
    return [line.split("batch_id: ")[1] for line in result_out.splitlines() if "batch_id: " in line]


def test_an_input_past_the_limits_becomes_three_parts_merged_byte_for_byte(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "big.jsonl", 120_001)
    lines = source.read_bytes().splitlines(keepends=True)

    created = cli("create", "--in", "big.jsonl")
    finish_all(emulator)
    swept = cli("status", "--all")

    assert created.code == 0, created.err
    job_id = created.out.splitlines()[0].removeprefix("job_id: ")
    assert job_id.startswith("job_")
    batch_ids = part_batches(created.out)
    assert [line.split(":")[0] for line in created.out.splitlines()[1:]] == [
        "part 1/3",
        "part 2/3",
        "part 3/3",
    ]
    # Each part is a byte range of the input, ending at a newline: uploaded as it is.
    uploads = [emulator.state.files[emulator.state.batches[b].input_file_id] for b in batch_ids]
    assert [u.lines for u in uploads] == [50_000, 50_000, 20_001]
    assert b"".join(u.path.read_bytes() for u in uploads) == source.read_bytes()
    assert uploads[0].filename.startswith("big.part1of3.bl_") and uploads[0].filename.endswith(
        ".jsonl"
    )
    assert swept.code == 0, swept.err
    merged = isolated / f"results_{job_id}.jsonl"
    assert merged.read_bytes() == b"".join(server_output(emulator, b) for b in batch_ids)
    assert len(merged.read_bytes().splitlines()) == len(lines)
    assert f"{job_id}: done, 3/3 parts done" in swept.out
    listed = cli("list")
    assert job_id in listed.out and "120001/120001" in listed.out
    assert not any(b in listed.out for b in batch_ids)  # one row per job
    with_parts = cli("list", "--parts")
    assert all(b in with_parts.out for b in batch_ids)


def test_max_in_flight_sends_one_part_at_a_time_across_sweeps(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 9)

    created = cli("create", "--in", "in.jsonl", "--max-requests", "3", "--max-in-flight", "1")
    sent = [len(emulator.state.batches)]
    for _ in range(3):
        finish_all(emulator)
        assert cli("status", "--all").code == 0
        sent.append(len(emulator.state.batches))

    assert created.code == 0, created.err
    assert created.out.splitlines()[2:] == ["part 2/3: queued", "part 3/3: queued"]
    # Progress of the uploads on stderr, a line per part off a terminal; stdout untouched.
    assert created.err.startswith("part 1/3 uploaded: ")
    assert len(created.err.splitlines()) == 1
    assert sent == [1, 2, 3, 3]
    # Never two parts live at once on the server.
    jobs, _, attempts = job_rows()
    assert jobs[0]["status"] == "done" and len(attempts) == 3
    assert api_requests(emulator, "POST", "/v1/files") == 3


def test_a_part_bounced_by_the_token_limit_is_sent_again_when_another_finishes(
    cli, isolated: Path, monkeypatch
):
    source = write_jsonl(isolated / "in.jsonl", 6)
    part_tokens = len(source.read_bytes()) // 2 // 4
    # Room for one part enqueued at a time, not two.
    with EmulatorServer(port=0, enqueued_token_limit=part_tokens + part_tokens // 2) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        created = cli("create", "--in", "in.jsonl", "--max-requests", "3")
        first, second = part_batches(created.out)
        server.state.advance(first)  # in_progress: its tokens are enqueued
        server.state.advance(second)  # validating -> failed: token_limit_exceeded
        bounced = cli("status", "--all")
        _, parts, _ = job_rows()
        requeued = parts[1]
        finish_all(server)  # the first part completes
        resent = cli("status", "--all")
        finish_all(server)
        done = cli("status", "--all")

    assert created.code == 0, created.err
    assert server.state.batches[second].status == "failed"
    assert server.state.batches[second].errors[0].code == "token_limit_exceeded"
    assert bounced.code == 0, bounced.err
    assert requeued["state"] == "queued" and requeued["requeues"] == 1
    jobs, parts, attempts = job_rows()
    assert [a["part"] for a in attempts] == [parts[0]["id"], parts[1]["id"], parts[1]["id"]]
    # The upload was reused; never two live batches for one part.
    assert attempts[1]["input_file_id"] == attempts[2]["input_file_id"]
    assert len([f for f in server.state.files.values() if f.purpose == "batch"]) == 2
    assert resent.code == 0 and done.code == 0, done.err
    assert jobs[0]["status"] == "done"
    merged = (isolated / f"results_{jobs[0]['job_id']}.jsonl").read_bytes()
    assert len(merged.splitlines()) == 6


def test_an_expired_part_keeps_its_partial_output_with_a_warning(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 8)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "4")
    first, second = part_batches(created.out)
    emulator.state.set_outcome(second, "expired")
    finish_all(emulator)

    swept = cli("status", "--all")

    assert swept.code == 0, swept.err
    job_id = created.out.splitlines()[0].removeprefix("job_id: ")
    merged = (isolated / f"results_{job_id}.jsonl").read_bytes()
    errors = (isolated / f"results_{job_id}.errors.jsonl").read_bytes()
    assert merged == server_output(emulator, first) + server_output(emulator, second)
    assert errors == server_output(emulator, second, "error")
    assert "2 of 8 requests have no result" in swept.err


def test_status_and_watch_of_a_job_follow_it_to_the_end(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 6)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "2")
    job_id = created.out.splitlines()[0].removeprefix("job_id: ")

    running = cli("status", "--batch-id", job_id[:10])
    watched = cli("watch", "--batch-id", "last", "--interval", "0.01")
    shown = cli("show", job_id, "--json")

    assert running.code == 0 and running.field("status") == "running"
    assert running.field("parts") == "0/3 done, 0 queued"
    assert watched.code == 0, watched.err
    assert watched.field("status") == "done"
    assert f"saved: results_{job_id}.jsonl" in watched.out
    job = json.loads(shown.out)
    assert job["job_id"] == job_id and len(job["parts"]) == 3 and len(job["attempts"]) == 3


def test_cancel_of_a_job_cancels_its_live_batches_and_its_queue(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 6)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "2", "--max-in-flight", "1")
    job_id = created.out.splitlines()[0].removeprefix("job_id: ")
    [first] = part_batches(created.out)
    emulator.state.advance(first)  # in_progress

    cancelled = cli("cancel", "--batch-id", job_id)
    finish_all(emulator)
    swept = cli("status", "--all")

    assert cancelled.code == 0, cancelled.err
    assert emulator.state.batches[first].status == "cancelled"
    assert len(emulator.state.batches) == 1  # the queued parts were never sent
    assert swept.code == 0, swept.err
    jobs, parts, _ = job_rows()
    assert jobs[0]["status"] == "cancelled"
    assert [p["state"] for p in parts] == ["sent", "cancelled", "cancelled"]


def test_the_same_job_input_is_a_duplicate_unless_forced(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 6)

    first = cli("create", "--in", "in.jsonl", "--max-requests", "3")
    again = cli("create", "--in", "in.jsonl", "--max-requests", "3")
    as_batch = cli("create", "--in", "in.jsonl")
    forced = cli("create", "--in", "in.jsonl", "--max-requests", "3", "--force")

    assert first.code == 0
    assert again.code == 3 and "already submitted as job_" in again.err
    assert as_batch.code == 3
    assert forced.code == 0
    assert len(emulator.state.batches) == 4


def test_a_create_killed_during_the_uploads_resumes_without_sending_a_part_twice(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 9)
    # The second part's upload is made on the server, then its answer held back.
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/files$", delay=30, times=None))
    emulator.state.clear_faults()
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", delay=0, times=1))
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/files$", times=1))
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/files$", delay=30, times=1))
    child = subprocess.Popen(
        [sys.executable, "-m", "batchledger", "create", "--in", "in.jsonl", "--max-requests", "3"],
        cwd=isolated,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while len(emulator.state.files) < 2:
        assert time.monotonic() < deadline, "the second upload never arrived"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    emulator.state.clear_faults()

    resumed = cli("create", "--in", "in.jsonl", "--max-requests", "3")

    assert resumed.code == 0, resumed.err
    uploads = [f for f in emulator.state.files.values() if f.purpose == "batch"]
    assert len(uploads) == 3  # the lost upload was found by its name, not sent again
    assert len(emulator.state.batches) == 3
    jobs, _, attempts = job_rows()
    assert len(jobs) == 1 and len(attempts) == 3


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--max-requests", "0"], "--max-requests"),
        (["--max-bytes", "40"], "line 1 of in.jsonl is"),
        (["--max-in-flight", "0"], "--max-in-flight"),
    ],
)
def test_bad_split_options_are_usage_errors_and_nothing_is_sent(
    cli, emulator: EmulatorServer, isolated: Path, args: list[str], says: str
):
    write_jsonl(isolated / "in.jsonl", 3)

    result = cli("create", "--in", "in.jsonl", *args)

    assert result.code == 2
    assert says in result.err and len(result.err.splitlines()) == 1
    assert emulator.state.requests == []


def test_a_last_line_without_a_newline_ends_the_last_part(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 5)
    source.write_bytes(source.read_bytes().rstrip(b"\n"))

    created = cli("create", "--in", "in.jsonl", "--max-requests", "2")
    finish_all(emulator)
    swept = cli("status", "--all")

    assert created.code == 0 and swept.code == 0, swept.err
    batch_ids = part_batches(created.out)
    uploads = [emulator.state.files[emulator.state.batches[b].input_file_id] for b in batch_ids]
    assert b"".join(u.path.read_bytes() for u in uploads) == source.read_bytes()
    assert [u.lines for u in uploads] == [2, 2, 1]


def test_watch_all_sends_queued_parts_and_merges_the_job(cli, isolated: Path, monkeypatch):
    # Time moves the batches on: watch --all alone must carry the job to its end.
    with EmulatorServer(port=0, step_seconds=0.05) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        write_jsonl(isolated / "in.jsonl", 6)
        write_jsonl(isolated / "plain.jsonl", 2)
        created = cli("create", "--in", "in.jsonl", "--max-requests", "2", "--max-in-flight", "1")
        plain = cli("create", "--in", "plain.jsonl").field("batch_id")

        watched = cli("watch", "--all", "--interval", "0.05", "--max-interval", "0.1")

    job_id = created.out.splitlines()[0].removeprefix("job_id: ")
    assert watched.code == 0, watched.err
    assert f"{job_id}: done, 3/3 parts done" in watched.out
    assert f"saved: results_{plain}.jsonl" in watched.out
    assert len((isolated / f"results_{job_id}.jsonl").read_bytes().splitlines()) == 6
    assert len(server.state.batches) == 4
    assert not list(isolated.glob("results_batch_*part*"))


def test_export_of_a_job_lists_every_request_of_its_input(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 7)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "3")
    job_id = created.out.splitlines()[0].removeprefix("job_id: ")
    early = cli("export", job_id)
    finish_all(emulator)
    assert cli("status", "--all").code == 0

    exported = cli("export", job_id, "--format", "jsonl", "--out", "-")

    assert early.code == 3 and "still running" in early.err
    assert exported.code == 0, exported.err
    rows = [json.loads(line) for line in exported.out.splitlines()]
    wanted = [json.loads(line)["custom_id"] for line in source.read_text().splitlines()]
    assert [row["custom_id"] for row in rows] == wanted
    assert {row["status"] for row in rows} == {"ok"}
