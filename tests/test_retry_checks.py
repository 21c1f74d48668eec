"""retry's checks (issue 19, items 1, 2, 4, 6 and 12): a retry's merge into its original
survives a kill or a Ctrl-C, the results it plans from are the ledger's, its input is the
one that was sent, and what it says about bad lines and records about its input is right."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import api_requests, ledger_rows, write_jsonl

from batchledger import redo
from batchledger.emulator import EmulatorServer

# The CLI in a child that, at the n-th call of module:function, marks a file and waits
# there (to be killed), then goes on.
PAUSED_CHILD = """
import importlib, os, pathlib, sys, time
module_name, _, name = os.environ["PAUSE_AT"].partition(":")
owner = importlib.import_module(module_name)
original = getattr(owner, name)
calls = [0]
def paused(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(os.environ["PAUSE_CALL"]):
        pathlib.Path(os.environ["PAUSE_MARK"]).touch()
        time.sleep(60)
    return original(*args, **kwargs)
setattr(owner, name, paused)
from batchledger.cli import main
sys.exit(main(sys.argv[1:]))
"""


def finish_all(server: EmulatorServer) -> None:
    for _ in range(4):
        for batch_id in list(server.state.batches):
            server.state.advance(batch_id)


def lines_of(path: Path) -> dict[str, int | None]:
    """custom_id -> status code of each line of a results file (none if it is absent)."""
    if not path.exists():
        return {}
    out: dict[str, int | None] = {}
    for line in path.read_bytes().splitlines():
        record = json.loads(line)
        assert record["custom_id"] not in out, f"{record['custom_id']} twice in {path.name}"
        out[record["custom_id"]] = (record.get("response") or {}).get("status_code")
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def done_job(cli, emulator: EmulatorServer, isolated: Path, outcomes: dict[str, str]) -> str:
    """A 12-line job of 2 parts, done, its results saved; `outcomes` forced once."""
    write_jsonl(isolated / "in.jsonl", 12)
    emulator.state.set_line_outcomes(outcomes, times=1)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "6")
    assert created.code == 0, created.err
    job_id = created.field("job_id")
    finish_all(emulator)
    assert cli("status", "--all").code == 0
    assert ledger_rows("jobs")[0]["status"] == "done"
    return job_id


def retried_job(cli, emulator: EmulatorServer, isolated: Path) -> tuple[str, str]:
    """A done job with one 500 and one missing line, and its retry sent and finished on the
    server (not yet merged: no command has seen it finish)."""
    job_id = done_job(cli, emulator, isolated, {"request-3": "500", "request-8": "missing"})
    retried = cli("retry", job_id)
    assert retried.code == 0, retried.err
    assert retried.out.startswith(f"retry of {job_id}: 2 requests")
    finish_all(emulator)
    return job_id, retried.field("job_id")


def assert_merged(isolated: Path, job_id: str) -> None:
    """The original's results: one line per request, every one a success."""
    output = lines_of(isolated / f"results_{job_id}.jsonl")
    errors = lines_of(isolated / f"results_{job_id}.errors.jsonl")
    assert errors == {}, f"errors left: {errors}"
    assert output == {f"request-{n}": 200 for n in range(12)}


def job_status(job_id: str) -> str:
    return str(next(job for job in ledger_rows("jobs") if job["job_id"] == job_id)["status"])


def batches_sent(emulator: EmulatorServer) -> int:
    return api_requests(emulator, "POST", "/v1/batches")


def temporary_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.part"))


# --- item 1: a retry's merge into its original, cut off --------------------------------


def test_a_retry_merge_cut_off_by_ctrl_c_is_finished_by_the_next_sweep(
    cli, emulator: EmulatorServer, isolated: Path, monkeypatch: pytest.MonkeyPatch
):
    job_id, retry_id = retried_job(cli, emulator, isolated)
    original = redo._line_bytes
    interrupted = []

    def ctrl_c_midway(*args: object) -> Iterator[bytes]:
        chunks = original(*args)  # type: ignore[arg-type]
        yield next(chunks)
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        yield from chunks

    monkeypatch.setattr(redo, "_line_bytes", ctrl_c_midway)
    sent = batches_sent(emulator)

    cut = cli("status", "--batch-id", retry_id)
    after_cut = job_status(retry_id)
    swept = cli("status", "--all")

    assert cut.code == 130 and interrupted
    # Not done while its answers are not in the original's results.
    assert after_cut == "running"
    assert swept.code == 0, swept.err
    assert job_status(retry_id) == "done"
    assert_merged(isolated, job_id)
    assert not temporary_files(isolated)
    assert batches_sent(emulator) == sent  # nothing sent again
    again = cli("retry", job_id)
    assert again.code == 0 and again.out.startswith("Nothing to retry: 12 requests")


def test_a_retry_merge_killed_midway_is_finished_by_the_next_run(
    cli, emulator: EmulatorServer, isolated: Path
):
    job_id, retry_id = retried_job(cli, emulator, isolated)
    results = isolated / f"results_{job_id}.jsonl"
    before = results.read_bytes()
    mark = isolated / "paused"
    env = {
        **os.environ,
        # Inside the save of the original's merged results: its temporary file is open.
        "PAUSE_AT": "batchledger.redo:_read_range",
        "PAUSE_CALL": "1",
        "PAUSE_MARK": str(mark),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CHILD, "status", "--all"],
        cwd=isolated,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not mark.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child never reached the merge"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=10)
    left = temporary_files(isolated)
    after_kill = job_status(retry_id), results.read_bytes()
    sent = batches_sent(emulator)

    again = cli("retry", job_id)  # what the user runs next

    assert left, "the kill left no temporary file: it was not inside the save"
    # Killed, the original's results are as they were, and the retry not done.
    assert after_kill == ("running", before)
    assert again.code == 0, again.err
    assert job_status(retry_id) == "done"
    assert_merged(isolated, job_id)
    assert not temporary_files(isolated)
    assert batches_sent(emulator) == sent  # neither request sent a third time
    assert cli("status", "--all").out == "No pending batches in the ledger.\n"


# --- items 2 and 6: the results retry plans from ---------------------------------------


def test_retry_rebuilds_a_job_results_file_that_was_cut_short_from_its_parts(
    cli, emulator: EmulatorServer, isolated: Path
):
    job_id = done_job(cli, emulator, isolated, {"request-3": "500"})
    results = isolated / f"results_{job_id}.jsonl"
    whole = results.read_bytes()
    results.write_bytes(b"".join(whole.splitlines(keepends=True)[:5]))  # head -5

    retried = cli("retry", job_id)

    assert retried.code == 0, retried.err
    assert retried.out.startswith(f"retry of {job_id}: 1 requests (1 5xx)")
    assert results.read_bytes() == whole  # rebuilt from the parts' results
    assert ledger_rows("jobs")[0]["output_sha256"] == sha256(results)
    [retry_part] = [row for row in ledger_rows() if row["batch_id"]][2:]
    assert retry_part["input_file_id"] is not None
    sent = emulator.state.files[retry_part["input_file_id"]].path.read_bytes()
    assert [json.loads(line)["custom_id"] for line in sent.splitlines()] == ["request-3"]


def test_retry_of_a_job_whose_merged_results_were_moved_rebuilds_them(
    cli, emulator: EmulatorServer, isolated: Path
):
    job_id = done_job(cli, emulator, isolated, {"request-3": "500"})
    results = isolated / f"results_{job_id}.jsonl"
    whole = results.read_bytes()
    results.rename(isolated / "elsewhere.jsonl")

    retried = cli("retry", job_id)

    assert retried.code == 0, retried.err
    assert retried.out.startswith(f"retry of {job_id}: 1 requests (1 5xx)")
    assert results.read_bytes() == whole


def test_retry_rebuilds_a_retried_job_results_from_every_attempt(
    cli, emulator: EmulatorServer, isolated: Path
):
    job_id, _ = retried_job(cli, emulator, isolated)
    assert cli("status", "--all").code == 0  # the retry merged into its original
    results = isolated / f"results_{job_id}.jsonl"
    merged = results.read_bytes()
    results.rename(isolated / "elsewhere.jsonl")
    sent = batches_sent(emulator)

    again = cli("retry", job_id)

    assert again.code == 0, again.err
    assert again.out.startswith(f"Nothing to retry: 12 requests of {job_id}")
    assert f"{results} was not the file the ledger saved" in again.err
    # The original's parts and its retry's: one line per custom_id, as merged before.
    assert results.read_bytes() == merged
    assert batches_sent(emulator) == sent


def test_retrieve_rebuilds_a_retried_job_from_every_attempt_downloading_what_is_gone(
    cli, emulator: EmulatorServer, isolated: Path
):
    job_id, retry_id = retried_job(cli, emulator, isolated)
    assert cli("status", "--all").code == 0  # the retry merged into its original
    results = isolated / f"results_{job_id}.jsonl"
    merged = results.read_bytes()
    results.unlink()
    # The retry's own results gone too, merged and part: its answers only on the API now.
    retry_row = next(job for job in ledger_rows("jobs") if job["job_id"] == retry_id)
    Path(retry_row["output_path"]).unlink()
    [retry_part] = [row for row in ledger_rows() if row["batch_id"]][2:]
    Path(retry_part["output_path"]).unlink()
    downloads = api_requests(emulator, "GET", "/v1/files/")

    fetched = cli("retrieve", "--batch-id", job_id)

    assert fetched.code == 0, fetched.err
    assert results.read_bytes() == merged  # the retry's two answers in it, as merged
    assert not (isolated / f"results_{job_id}.errors.jsonl").exists()
    assert api_requests(emulator, "GET", "/v1/files/") > downloads  # the part's, again
    job = next(job for job in ledger_rows("jobs") if job["job_id"] == job_id)
    assert (job["output_sha256"], job["error_path"]) == (sha256(results), None)
    again = cli("retry", job_id)
    assert again.code == 0 and again.out.startswith(f"Nothing to retry: 12 requests of {job_id}")


def test_retrieve_rebuilds_a_retried_job_from_its_retry_merged_results_without_downloading(
    cli, emulator: EmulatorServer, isolated: Path
):
    job_id, _ = retried_job(cli, emulator, isolated)
    assert cli("status", "--all").code == 0  # the retry merged into its original
    results = isolated / f"results_{job_id}.jsonl"
    merged = results.read_bytes()
    results.unlink()
    [retry_part] = [row for row in ledger_rows() if row["batch_id"]][2:]
    Path(retry_part["output_path"]).unlink()  # its merged results are still there
    downloads = api_requests(emulator, "GET", "/v1/files/")

    fetched = cli("retrieve", "--batch-id", job_id)

    assert fetched.code == 0, fetched.err
    assert results.read_bytes() == merged
    assert api_requests(emulator, "GET", "/v1/files/") == downloads  # nothing fetched


def test_retry_refuses_when_the_results_and_a_part_file_are_both_changed(
    cli, emulator: EmulatorServer, isolated: Path
):
    job_id = done_job(cli, emulator, isolated, {"request-3": "500"})
    (isolated / f"results_{job_id}.jsonl").unlink()
    part_file = Path(next(row["output_path"] for row in ledger_rows() if row["output_path"]))
    part_file.write_bytes(part_file.read_bytes()[:-10])
    sent = batches_sent(emulator)

    retried = cli("retry", job_id)

    assert retried.code == 3
    assert str(part_file) in retried.err and len(retried.err.splitlines()) == 1
    assert batches_sent(emulator) == sent


def test_retry_of_a_job_whose_results_and_parts_are_gone_names_the_missing_file(
    cli, emulator: EmulatorServer, isolated: Path
):
    job_id = done_job(cli, emulator, isolated, {"request-3": "500"})
    results = isolated / f"results_{job_id}.jsonl"
    results.rename(isolated / "elsewhere.jsonl")
    part_file = Path(next(row["output_path"] for row in ledger_rows() if row["output_path"]))
    part_file.unlink()

    retried = cli("retry", job_id)

    assert retried.code == 3
    assert "unexpected" not in retried.err
    assert str(part_file) in retried.err and len(retried.err.splitlines()) == 1


def test_retry_of_a_batch_whose_saved_results_changed_is_refused(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 6)
    emulator.state.set_line_outcomes({"request-2": "500"}, times=1)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    finish_all(emulator)
    assert cli("status", "--batch-id", batch_id).code == 0
    results = isolated / f"results_{batch_id}.jsonl"
    results.write_bytes(b"".join(results.read_bytes().splitlines(keepends=True)[:2]))
    sent = batches_sent(emulator)

    retried = cli("retry", batch_id)
    fetched = cli("retrieve", "--batch-id", batch_id, "--force")
    after = cli("retry", batch_id)

    assert retried.code == 3
    assert str(results) in retried.err
    assert f"batchledger retrieve --batch-id {batch_id} --force" in retried.err
    assert batches_sent(emulator) == sent + 1  # only the retry after the fetch
    assert fetched.code == 0, fetched.err
    assert after.code == 0 and after.out.startswith(f"retry of {batch_id}: 1 requests (1 5xx)")


# --- item 4: the input -----------------------------------------------------------------


@pytest.mark.parametrize("job", [True, False], ids=["job", "batch"])
def test_retry_refuses_an_input_changed_since_it_was_sent(
    cli, emulator: EmulatorServer, isolated: Path, job: bool
):
    source = write_jsonl(isolated / "in.jsonl", 12)
    emulator.state.set_line_outcomes({"request-3": "500"}, times=1)
    created = cli("create", "--in", "in.jsonl", *(["--max-requests", "6"] if job else []))
    target = created.field("job_id" if job else "batch_id")
    finish_all(emulator)
    assert cli("status", "--all").code == 0
    # Same size, other requests: line 3 says something else.
    text = source.read_text().replace("Say hello number 3", "Say HELLO number 3")
    source.write_text(text)
    sent = batches_sent(emulator)

    retried = cli("retry", target)

    assert retried.code == 3
    assert "has changed since it was sent" in retried.err and str(source) in retried.err
    assert batches_sent(emulator) == sent


# --- item 12: messages and records -----------------------------------------------------


def test_retry_says_a_line_that_is_not_json_is_not_valid_json(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 6)
    lines = source.read_text().splitlines()
    lines[4] = lines[4][:-1]  # line 5, in the third part, is cut short
    source.write_text("\n".join(lines) + "\n")
    job_id = cli("create", "--in", "in.jsonl", "--max-requests", "2").field("job_id")
    finish_all(emulator)
    assert cli("status", "--all").code == 0

    result = cli("retry", job_id)

    assert result.code == 2
    assert result.err == (
        "batchledger: error: line 5 of in.jsonl is not valid JSON: "
        "retry joins each request to its results by its custom_id\n"
    )


def test_a_retry_job_records_the_input_file_it_reads_with_its_own_size_and_sha256(
    cli, emulator: EmulatorServer, isolated: Path
):
    job_id = done_job(cli, emulator, isolated, {"request-3": "500", "request-8": "missing"})
    source = isolated / "in.jsonl"
    retry_id = cli("retry", job_id).field("job_id")

    shown = json.loads(cli("show", retry_id, "--json").out)

    # input_path, input_bytes and input_sha256 describe one file: the input it reads from;
    # input_requests the lines it sent; its parts, their bytes.
    assert shown["input_path"] == str(source)
    assert shown["input_bytes"] == source.stat().st_size
    assert shown["input_sha256"] == sha256(source)
    assert shown["input_requests"] == 2
    assert sum(part["requests"] for part in shown["parts"]) == 2
