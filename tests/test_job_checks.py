"""Issue 19, the jobs part: a changed input, retrieve of a job, jobs in `status --all --json`
and `list`, and the job's messages and counts; all through the real CLI over real HTTP."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from helpers import api_requests, write_jsonl

import batchledger as bl
from batchledger.emulator import EmulatorServer, Fault


def finish_all(server: EmulatorServer) -> None:
    """Let every batch on the server run to its end."""
    for _ in range(4):
        for batch_id in list(server.state.batches):
            server.state.advance(batch_id)


def job_id_of(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("job_id: ")).split(": ")[1]


def jobs_table() -> list[dict]:
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM jobs ORDER BY id")]
    finally:
        conn.close()


def uploads(server: EmulatorServer) -> list[bytes]:
    return [f.path.read_bytes() for f in server.state.files.values() if f.purpose == "batch"]


# --- 3. a job's queued parts are never read from a changed input ---------------------------


def test_a_changed_input_marks_the_job_and_no_part_is_sent_from_it(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 9)
    original = source.read_bytes()
    write_jsonl(isolated / "plain.jsonl", 2)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "3", "--max-in-flight", "1")
    plain = cli("create", "--in", "plain.jsonl").field("batch_id")
    job_id = job_id_of(created.out)
    write_jsonl(isolated / "in.jsonl", 7, instructions="other lines")  # overwritten
    finish_all(emulator)

    swept = cli("status", "--all")
    again = cli("status", "--all")
    status = cli("status", "--batch-id", job_id)
    listed = cli("list")
    shown = cli("show", job_id)

    assert swept.code == 0, swept.err
    warning = [line for line in swept.err.splitlines() if job_id in line]
    assert warning and "in.jsonl" in warning[0] and "changed" in warning[0]
    assert (isolated / f"results_{plain}.jsonl").exists()  # the sweep went on
    assert len(uploads(emulator)) == 2  # part 1 and the plain batch: nothing from new bytes
    assert all(b"other lines" not in data for data in uploads(emulator))
    assert jobs_table()[0]["status"] == "input_changed"
    assert again.code == 0, again.err
    assert any(job_id in line and "input_changed" in line for line in again.err.splitlines())
    assert status.code == 0 and status.field("status") == "input_changed"
    assert "input_changed" in listed.out and job_id in listed.out
    assert "status: input_changed" in shown.out and "input changed" in shown.out

    # The input put back as it was: the job goes on from where it stopped.
    source.write_bytes(original)
    resumed = cli("status", "--batch-id", job_id)
    for _ in range(3):
        finish_all(emulator)
        cli("status", "--all")

    assert resumed.code == 0 and resumed.field("status") == "running", resumed.err
    assert jobs_table()[0]["status"] == "done"
    assert b"".join(uploads(emulator)[:1] + uploads(emulator)[2:]) == original


def test_an_input_edited_in_place_while_one_run_follows_its_job_is_noticed(
    emulator: EmulatorServer, isolated: Path
):
    # One run that follows a job for hours (`watch`, Job.wait) hashes its input again only
    # when its size, mtime or inode moved: an edit in place that keeps the size moves the
    # mtime. Through the Python API, whose one run spans the calls, round by round.
    source = write_jsonl(isolated / "in.jsonl", 4)
    with bl.open() as ledger:
        job = ledger.create("in.jsonl", max_requests=2, max_in_flight=1)
        assert isinstance(job, bl.Job)
        source.write_bytes(source.read_bytes().replace(b"number 3", b"number 9"))
        finish_all(emulator)
        job.refresh()

    assert job.status == "input_changed"
    assert len(uploads(emulator)) == 1  # part 2 was not read from the edited bytes
    assert jobs_table()[0]["status"] == "input_changed"


def test_create_of_the_input_put_back_resumes_its_input_changed_job(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 9)
    original = source.read_bytes()
    args = ("create", "--in", "in.jsonl", "--max-requests", "3", "--max-in-flight", "1")
    job_id = job_id_of(cli(*args).out)
    source.write_bytes(original.replace(b"hello", b"HELLO"))  # the same size
    finish_all(emulator)
    swept = cli("status", "--all")
    source.write_bytes(original)

    again = cli(*args)

    assert swept.code == 0 and "input_changed" in swept.err, swept.err
    assert again.code == 0, again.err
    assert job_id_of(again.out) == job_id  # the same job, going on: part 1 is not sent twice
    assert len(jobs_table()) == 1 and jobs_table()[0]["status"] == "running"
    assert len(uploads(emulator)) == 2 and b"".join(uploads(emulator)) == original[:804]


def test_cancel_of_an_input_changed_job_ends_it_with_what_its_parts_did(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 9)
    job_id = job_id_of(
        cli("create", "--in", "in.jsonl", "--max-requests", "3", "--max-in-flight", "1").out
    )
    source.write_bytes(b"{}\n")
    finish_all(emulator)
    assert cli("status", "--all").code == 0

    cancelled = cli("cancel", "--batch-id", job_id, "--interval", "0.01")
    swept = cli("status", "--all")

    assert cancelled.code == 0, cancelled.err
    assert cancelled.out.splitlines()[-2:] == [
        "status: cancelled",
        f"saved: results_{job_id}.jsonl ({jobs_table()[0]['output_bytes']} bytes)",
    ]
    assert len(uploads(emulator)) == 1
    assert swept.code == 0 and "input_changed" not in swept.err


def test_a_job_that_cannot_be_advanced_is_a_warning_and_every_sweep_still_runs(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 9)
    write_jsonl(isolated / "plain.jsonl", 2)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "3", "--max-in-flight", "1")
    plain = cli("create", "--in", "plain.jsonl").field("batch_id")
    job_id = job_id_of(created.out)
    # A part's range past the end of its input (the crash of issue 19, without the change
    # the sha256 check now catches): advancing the job fails.
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    with conn:
        conn.execute("UPDATE parts SET end_byte = 10000000 WHERE part_index = 2")
    conn.close()
    finish_all(emulator)

    swept = cli("status", "--all")
    again = cli("status", "--all")

    assert swept.code == 0, swept.err
    assert "Traceback" not in swept.err and "unexpected" not in swept.err
    assert any(job_id in line and "warning" in line for line in swept.err.splitlines())
    assert (isolated / f"results_{plain}.jsonl").exists()
    assert plain in swept.out
    assert again.code == 0, again.err


# --- 5. retrieve of a finished job saves where it is told, rebuilding what is gone ----------


def test_retrieve_of_a_job_saves_to_out_and_rebuilds_a_missing_or_changed_file(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 6)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "3")
    job_id = job_id_of(created.out)
    finish_all(emulator)
    assert cli("status", "--all").code == 0
    merged = isolated / f"results_{job_id}.jsonl"
    good = merged.read_bytes()

    copied = cli("retrieve", "--batch-id", job_id, "--out", "copy.jsonl")
    forced = cli("retrieve", "--batch-id", job_id, "--out", "sub/forced.jsonl", "--force")
    merged.unlink()
    rebuilt = cli("retrieve", "--batch-id", job_id)
    rebuilt_bytes = merged.read_bytes()
    merged.write_bytes(good[:50])  # changed: not what the ledger recorded
    repaired = cli("retrieve", "--batch-id", job_id)
    repaired_bytes = merged.read_bytes()
    shutil.rmtree(isolated.parent / "jobs" / job_id)  # the parts' results gone too
    merged.unlink()
    downloads = api_requests(emulator, "GET", "/v1/files/")
    fetched = cli("retrieve", "--batch-id", job_id)

    assert copied.code == 0, copied.err
    assert (isolated / "copy.jsonl").read_bytes() == good
    assert "saved: copy.jsonl" in copied.out
    assert forced.code == 0 and (isolated / "sub" / "forced.jsonl").read_bytes() == good
    assert rebuilt.code == 0 and rebuilt_bytes == good, rebuilt.err
    assert repaired.code == 0 and repaired_bytes == good, repaired.err
    assert fetched.code == 0, fetched.err
    assert merged.read_bytes() == good
    assert api_requests(emulator, "GET", "/v1/files/") > downloads  # downloaded again


def test_retrieve_of_a_job_to_out_does_not_copy_a_merged_file_changed_in_place(
    cli, emulator: EmulatorServer, isolated: Path
):
    # The same size, other bytes: only the sha256 the ledger recorded tells the merged file
    # is no longer what the parts answered; the copy is merged again from the parts.
    write_jsonl(isolated / "in.jsonl", 4)
    job_id = job_id_of(cli("create", "--in", "in.jsonl", "--max-requests", "2").out)
    finish_all(emulator)
    assert cli("status", "--all").code == 0
    merged = isolated / f"results_{job_id}.jsonl"
    good = merged.read_bytes()
    merged.write_bytes(good.replace(b"request-0", b"request-9", 1))

    copied = cli("retrieve", "--batch-id", job_id, "--out", "copy.jsonl")

    assert copied.code == 0, copied.err
    assert (isolated / "copy.jsonl").read_bytes() == good


# --- 11. jobs in `status --all --json` and `list` -------------------------------------------


def test_status_all_json_holds_each_job_with_its_parts_and_requests(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 6)
    write_jsonl(isolated / "plain.jsonl", 2)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "3", "--max-in-flight", "1")
    cli("create", "--in", "plain.jsonl")
    job_id = job_id_of(created.out)

    running = cli("status", "--all", "--json")
    for _ in range(2):
        finish_all(emulator)
        done = cli("status", "--all", "--json")

    assert running.code == 0, running.err
    rows = json.loads(running.out)  # one JSON document
    [job] = [row for row in rows if row.get("job_id") == job_id]
    assert job["status"] == "running"
    assert (job["parts_done"], job["parts_total"]) == (0, 2)
    assert (job["requests_completed"], job["requests_total"]) == (0, 6)
    assert done.code == 0, done.err
    [job] = [row for row in json.loads(done.out) if row.get("job_id") == job_id]
    assert job["status"] == "done" and (job["parts_done"], job["parts_total"]) == (2, 2)
    assert job["requests_completed"] == 6 and job["requests_failed"] == 0
    assert job["output_path"] == str(isolated / f"results_{job_id}.jsonl")


def test_list_shows_the_parts_done_of_a_job(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 6)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "2", "--max-in-flight", "2")
    job_id = job_id_of(created.out)
    finish_all(emulator)
    cli("status", "--all")  # two parts done, the third sent

    listed = cli("list")

    [row] = [line for line in listed.out.splitlines() if job_id in line]
    assert "2/3 parts" in row and "4/6" in row


# --- 12. the job's messages and counts --------------------------------------------------------


def test_a_bad_line_of_a_job_is_reported_with_its_line_in_the_job(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 15)
    lines = source.read_bytes().splitlines(keepends=True)
    lines[11] = b'{"custom_id": "request-11", not json\n'  # input line 12: part 3's line 2
    source.write_bytes(b"".join(lines))
    created = cli("create", "--in", "in.jsonl", "--max-requests", "5")
    job_id = job_id_of(created.out)
    finish_all(emulator)

    swept = cli("status", "--all")
    status = cli("status", "--batch-id", job_id)
    shown = cli("show", job_id)

    assert swept.code == 0, swept.err
    assert "line 12" in swept.out + swept.err
    assert "line 12" in status.out and "line 12" in shown.out
    assert "invalid_json_line" in status.out


def test_a_part_the_token_limit_refuses_at_create_is_shown_queued_to_be_sent_again(
    cli, make_server, isolated: Path, monkeypatch
):
    source = write_jsonl(isolated / "in.jsonl", 6)
    part_tokens = len(source.read_bytes()) // 2 // 4
    server = make_server(enqueued_token_limit=part_tokens // 2, token_limit_at="create")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)

    created = cli("create", "--in", "in.jsonl", "--max-requests", "3")

    assert created.code == 0, created.err
    assert created.out.splitlines()[1:] == [
        "part 1/2: queued (token limit; sent again later)",
        "part 2/2: queued (token limit; sent again later)",
    ]
    assert "rejected" not in created.out


def test_job_counts_are_completed_over_total_and_the_original_is_full_after_retry(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 6)
    emulator.state.set_line_outcomes({"request-1": "500", "request-4": "500"})
    created = cli("create", "--in", "in.jsonl", "--max-requests", "3")
    job_id = job_id_of(created.out)
    finish_all(emulator)

    swept = cli("status", "--all")
    status = cli("status", "--batch-id", job_id)
    listed = cli("list")
    retried = cli("retry", job_id)
    finish_all(emulator)
    after = cli("status", "--all")
    status_after = cli("status", "--batch-id", job_id)
    listed_after = cli("list")

    assert swept.code == 0, swept.err
    assert f"{job_id}: done, 2/2 parts done, 4/6 requests (2 failed)" in swept.out
    assert status.field("requests") == "4/6 completed, 2 failed"
    [row] = [line for line in listed.out.splitlines() if job_id in line]
    assert "4/6 (2 failed)" in row
    assert retried.code == 0 and after.code == 0, after.err
    assert status_after.field("requests") == "6/6 completed, 0 failed"
    [row] = [line for line in listed_after.out.splitlines() if line.startswith(job_id)]
    assert "6/6" in row and "failed" not in row


def test_show_of_a_retry_job_names_the_job_it_retries(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 6)
    emulator.state.set_line_outcomes({"request-1": "500"})
    job_id = job_id_of(cli("create", "--in", "in.jsonl", "--max-requests", "3").out)
    finish_all(emulator)
    cli("status", "--all")
    retry_id = job_id_of(cli("retry", job_id).out)

    shown = cli("show", retry_id)

    assert shown.code == 0, shown.err
    assert shown.field("retry of") == job_id


def test_create_prints_the_job_id_before_the_uploads_are_done(
    emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 9)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/files$", spare=1, delay=30))
    child = subprocess.Popen(
        [sys.executable, "-m", "batchledger", "create", "--in", "in.jsonl", "--max-requests", "3"],
        cwd=isolated,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while api_requests(emulator, "POST", "/v1/batches") < 1:
        assert time.monotonic() < deadline, "the first part was never sent"
        time.sleep(0.01)
    time.sleep(0.3)  # the second upload is held back
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=20)

    assert child.returncode == 130, err
    [job] = jobs_table()
    assert out.splitlines()[0] == f"job_id: {job['job_id']}"


def test_cancel_of_a_job_waits_until_its_batches_are_cancelled(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 6)
    write_jsonl(isolated / "other.jsonl", 4)
    job_id = job_id_of(cli("create", "--in", "in.jsonl", "--max-requests", "3").out)
    other = job_id_of(cli("create", "--in", "other.jsonl", "--max-requests", "2").out)

    waited = cli("cancel", "--batch-id", job_id, "--interval", "0.01")
    not_waited = cli("cancel", "--batch-id", other, "--no-wait")

    assert waited.code == 0, waited.err
    assert waited.out.splitlines()[-1] == "status: cancelled"
    first_job = list(emulator.state.batches.values())[:2]
    assert [batch.status for batch in first_job] == ["cancelled", "cancelled"]
    assert jobs_table()[0]["status"] == "cancelled"
    assert not_waited.code == 0 and not_waited.out.splitlines()[-1] == "status: cancelling"


def test_list_refuses_a_status_that_is_not_one(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 2)
    cli("create", "--in", "in.jsonl")

    listed = cli("list", "--status", "complete")
    fine = cli("list", "--status", "validating,running")

    assert listed.code == 2
    assert listed.err.startswith("batchledger: error: ") and len(listed.err.splitlines()) == 1
    assert "'complete'" in listed.err and "completed" in listed.err and "running" in listed.err
    assert fine.code == 0, fine.err


def test_create_refuses_an_input_that_is_not_a_regular_file(
    emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 2)
    env = {**os.environ, "OPENAI_BASE_URL": emulator.base_url}
    command = [sys.executable, "-m", "batchledger", "create", "--in", "/dev/stdin"]
    with source.open("rb") as stdin:
        redirected = subprocess.run(
            command, cwd=isolated, stdin=stdin, capture_output=True, env=env
        )
    piped = subprocess.run(
        command, cwd=isolated, input=source.read_bytes(), capture_output=True, env=env
    )

    for result in (redirected, piped):
        err = result.stderr.decode()
        assert result.returncode == 2, err
        assert len(err.splitlines()) == 1 and err.startswith("batchledger: error: ")
        assert "cannot be read again" in err
    assert emulator.state.requests == []


def test_one_skipped_batch_is_one_batch(cli, emulator: EmulatorServer, isolated: Path, monkeypatch):
    write_jsonl(isolated / "a.jsonl", 2)
    cli("create", "--in", "a.jsonl")
    monkeypatch.delenv("OPENAI_API_KEY")

    swept = cli("status", "--all")

    assert "skipped 1 batch of account 'default'" in swept.err
    assert "1 batches" not in swept.err
