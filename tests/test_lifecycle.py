"""The whole lifecycle: watch, cancel, error files, expired and failed batches, sync, show,
id shortcuts, list filters and --json."""

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    advance,
    api_requests,
    complete,
    ledger_rows,
    sdk,
    server_bytes,
    write_jsonl,
)

from batchledger import batch as batch_steps
from batchledger.batches import REF_KEY, BatchRef
from batchledger.context import Context
from batchledger.emulator import EmulatorServer, Fault


def created(cli, path: Path, lines: int = 4, **body) -> str:
    write_jsonl(path, lines, **body)
    result = cli("create", "--in", str(path), "--force")
    assert result.code == 0, result.err
    return result.field("batch_id")


# --- watch ----------------------------------------------------------------------------


def test_watch_follows_a_batch_to_the_end_and_saves_it(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = created(cli, isolated / "in.jsonl")

    result = cli("watch", "--batch-id", "last", "--interval", "0.01")

    assert result.code == 0, result.err
    assert result.field("status") == "completed"
    output_file_id = emulator.state.batches[batch_id].output_file_id
    saved = isolated / f"results_{batch_id}.jsonl"
    assert saved.read_bytes() == server_bytes(emulator, output_file_id)
    assert result.field("saved") == f"results_{batch_id}.jsonl ({saved.stat().st_size} bytes)"
    # Progress goes to stderr, one plain line per change when it is not a terminal.
    assert result.err.splitlines() == [
        f"{batch_id} in_progress: 0/4 done, 0 failed, 0 %",
        # Every request answered, the results not written yet: not 100 % (issue 22).
        f"{batch_id} finalizing: 4/4 done, 0 failed, 99 % (finalizing: results not ready yet)",
        f"{batch_id} completed: 4/4 done, 0 failed, 100 %",
    ]
    assert ledger_rows()[0]["output_path"] == str(saved)


def test_watch_all_follows_every_unfinished_batch(cli, emulator: EmulatorServer, isolated: Path):
    good = created(cli, isolated / "a.jsonl", lines=2)
    bad = created(cli, isolated / "b.jsonl", lines=3)
    emulator.state.set_outcome(bad, "failed")

    result = cli("watch", "--all", "--interval", "0.01")

    assert result.code == 0, result.err
    statuses = [line for line in result.out.splitlines() if line.startswith("status: ")]
    assert sorted(statuses) == ["status: completed", "status: failed"]
    assert "error: token_limit_exceeded: " in result.out
    rows = {row["batch_id"]: row for row in ledger_rows()}
    assert rows[good]["output_path"] and rows[bad]["status"] == "failed"


def test_watch_backs_off_while_nothing_moves(isolated: Path, monkeypatch):
    with EmulatorServer(host="127.0.0.1", port=0, step_seconds=3600) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        client = sdk(server)
        upload = client.files.create(
            file=write_jsonl(isolated / "x.jsonl", 2).open("rb"), purpose="batch"
        )
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
        )
        ctx = Context(
            command="watch", ledger_path=isolated / "watch.db", log_file=isolated / "watch.log"
        )
        pauses: list[float] = []
        checks = batch_steps.follow(
            ctx,
            [BatchRef("default", batch.id)],
            auto_save=True,
            interval=1.0,
            max_interval=3.0,
            sleep=pauses.append,
        )
        reports = [next(checks) for _ in range(6)]
        ctx.close()

    assert [report.batch["status"] for report in reports if report.batch] == ["validating"] * 6
    assert pauses == [1.0, 1.5, 2.25, 3.0, 3.0]


def test_ctrl_c_stops_watching_and_leaves_the_batch_running(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = created(cli, isolated / "in.jsonl")
    child = subprocess.Popen(
        [sys.executable, "-m", "batchledger", "watch", "--batch-id", batch_id, "--interval", "60"],
        cwd=isolated,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while api_requests(emulator, "GET", f"/v1/batches/{batch_id}") == 0:
        assert time.monotonic() < deadline, "watch never checked the batch"
        time.sleep(0.02)
    time.sleep(0.2)

    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=10)

    assert child.returncode == 130
    assert "stopped watching; the batches keep running on the server" in err
    assert emulator.state.batches[batch_id].status == "in_progress"
    assert api_requests(emulator, "POST", f"/v1/batches/{batch_id}/cancel") == 0


# --- cancel ---------------------------------------------------------------------------


def test_cancel_shows_cancelling_then_cancelled_and_keeps_partial_results(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = created(cli, isolated / "in.jsonl", lines=6)
    advance(emulator, batch_id, 1)

    result = cli("cancel", "--batch-id", batch_id, "--interval", "0.01")

    assert result.code == 0, result.err
    assert result.out == f"batch_id: {batch_id}\nstatus: cancelling\nstatus: cancelled\n"
    [row] = ledger_rows()
    assert row["status"] == "cancelled" and row["cancelled_at"].endswith("Z")
    assert "cancel" in [event["action"] for event in ledger_rows("history")]

    retrieved = cli("retrieve", "--batch-id", batch_id)

    assert retrieved.code == 0, retrieved.err
    server = emulator.state.batches[batch_id]
    output = isolated / f"results_{batch_id}.jsonl"
    errors = isolated / f"results_{batch_id}.errors.jsonl"
    assert output.read_bytes() == server_bytes(emulator, server.output_file_id)
    assert errors.read_bytes() == server_bytes(emulator, server.error_file_id)
    assert retrieved.out.splitlines() == [
        f"saved: {output.name} ({output.stat().st_size} bytes)",
        f"saved errors: {errors.name} ({errors.stat().st_size} bytes)",
    ]
    assert f"{batch_id} is cancelled: saved the results it finished; 3 of 6" in retrieved.err


def test_cancel_of_a_finished_batch_is_refused(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = created(cli, isolated / "in.jsonl")
    complete(emulator, batch_id)

    result = cli("cancel", "--batch-id", batch_id)

    assert result.code == 3
    assert result.err == (
        f"batchledger: error: batch {batch_id} is already completed; there is nothing to cancel\n"
    )
    assert api_requests(emulator, "POST", f"/v1/batches/{batch_id}/cancel") == 1  # not retried
    assert ledger_rows("history")[-1]["action"] == "cancel_refused"


# --- error files, expired and failed batches ------------------------------------------


def test_expired_batch_keeps_its_finished_work(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = created(cli, isolated / "in.jsonl", lines=8)
    emulator.state.set_outcome(batch_id, "expired")
    advance(emulator, batch_id, 1)

    result = cli("status", "--batch-id", batch_id)

    assert result.code == 0, result.err
    assert result.field("status") == "expired"
    assert result.field("missing") == "4 requests have no result"
    server = emulator.state.batches[batch_id]
    output = isolated / f"results_{batch_id}.jsonl"
    errors = isolated / f"results_{batch_id}.errors.jsonl"
    assert output.read_bytes() == server_bytes(emulator, server.output_file_id)
    assert errors.read_bytes() == server_bytes(emulator, server.error_file_id)
    assert len(output.read_bytes().splitlines()) == 4
    assert b"batch_expired" in errors.read_bytes()
    assert "is expired: saved the results it finished; 4 of 8 requests have none" in result.err
    [row] = ledger_rows()
    assert (row["requests_total"], row["requests_completed"]) == (8, 4)
    assert row["error_path"] == str(errors)

    retrieved = cli("retrieve", "--batch-id", batch_id, "--out", "again.jsonl")
    assert retrieved.code == 0, retrieved.err
    assert (isolated / "again.jsonl").read_bytes() == output.read_bytes()
    assert (isolated / "again.errors.jsonl").read_bytes() == errors.read_bytes()


def test_completed_batch_with_only_an_error_file(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = created(cli, isolated / "in.jsonl", lines=3, model="emulator-error")
    advance(emulator, batch_id, 2)

    result = cli("status", "--batch-id", batch_id)

    assert result.code == 0, result.err
    assert result.field("status") == "completed"
    assert result.field("requests") == "0 completed, 3 failed, 3 total"
    errors = isolated / f"results_{batch_id}.errors.jsonl"
    server = emulator.state.batches[batch_id]
    assert server.output_file_id is None
    assert errors.read_bytes() == server_bytes(emulator, server.error_file_id)
    assert result.field("saved errors") == f"{errors.name} ({errors.stat().st_size} bytes)"
    assert not (isolated / f"results_{batch_id}.jsonl").exists()
    assert cli("retrieve", "--batch-id", batch_id).code == 0
    assert cli("status", "--all").out.strip() == "No pending batches in the ledger."


def test_failed_batch_shows_the_reason(cli, emulator: EmulatorServer, isolated: Path):
    path = write_jsonl(isolated / "in.jsonl", 3)
    with path.open("a") as out:
        out.write("this is not json\n")
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")

    result = cli("status", "--batch-id", batch_id)

    assert result.code == 0, result.err
    assert result.field("status") == "failed"
    assert result.field("error").startswith("line 4: invalid_json_line: ")
    errors = json.loads(ledger_rows()[0]["errors"])
    assert errors[0]["line"] == 4 and errors[0]["code"] == "invalid_json_line"
    refused = cli("retrieve", "--batch-id", batch_id)
    assert refused.code == 3 and "is failed, not completed" in refused.err
    # A failed batch holds no work: the same input may be sent again without --force.
    assert cli("create", "--in", "in.jsonl").code == 0


def test_retrieve_does_not_download_an_unchanged_result_again(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = created(cli, isolated / "in.jsonl")
    complete(emulator, batch_id)
    first = cli("retrieve", "--batch-id", batch_id)
    assert first.code == 0
    content = f"/v1/files/{emulator.state.batches[batch_id].output_file_id}/content"

    again = cli("retrieve", "--batch-id", batch_id)

    assert again.code == 0
    assert again.out.startswith(f"already saved: results_{batch_id}.jsonl (")
    assert "not downloaded again" in again.err
    assert api_requests(emulator, "GET", content) == 1

    saved = isolated / f"results_{batch_id}.jsonl"
    original = saved.read_bytes()
    saved.write_bytes(original.replace(b"request", b"REQUEST"))  # same size, other bytes
    changed = cli("retrieve", "--batch-id", batch_id)
    assert changed.code == 0 and changed.out.startswith("saved: ")
    assert saved.read_bytes() == original
    forced = cli("retrieve", "--batch-id", batch_id, "--force")
    assert forced.code == 0 and forced.out.startswith("saved: ")
    assert api_requests(emulator, "GET", content) == 3


# --- sync and show --------------------------------------------------------------------


def test_sync_adds_batches_made_elsewhere(cli, make_server, monkeypatch, isolated: Path):
    # Time mode, with time standing still: in step mode each listing moves every batch.
    emulator = make_server(step_seconds=3600)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    ours = created(cli, isolated / "ours.jsonl")
    client = sdk(emulator)
    theirs = []
    for n in range(3):
        upload = client.files.create(
            file=write_jsonl(isolated / f"t{n}.jsonl", n + 1).open("rb"), purpose="batch"
        )
        theirs.append(
            client.batches.create(
                input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
            ).id
        )

    result = cli("sync")

    assert result.code == 0, result.err
    assert result.out == "added: 3\nupdated: 0\nrecovered: 0\nunchanged: 1\n"
    rows = {row["batch_id"]: row for row in ledger_rows()}
    assert set(rows) == {ours, *theirs}
    assert {rows[batch_id]["origin"] for batch_id in theirs} == {"sync"}
    assert rows[ours]["origin"] == "create"
    assert rows[theirs[2]]["requests_total"] is not None or rows[theirs[2]]["status"]
    listed = cli("list", "--json")
    assert {record["batch_id"] for record in json.loads(listed.out)} == set(rows)

    emulator.state.advance(theirs[0])
    assert cli("sync").out == "added: 0\nupdated: 1\nrecovered: 0\nunchanged: 3\n"


def test_sync_pages_through_many_batches(cli, emulator: EmulatorServer, isolated: Path):
    client = sdk(emulator)
    upload = client.files.create(
        file=write_jsonl(isolated / "x.jsonl", 1).open("rb"), purpose="batch"
    )
    for _ in range(130):
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
        )

    result = cli("sync")

    assert result.code == 0, result.err
    assert result.field("added") == "130"
    assert api_requests(emulator, "GET", "/v1/batches") == 2  # pages of 100


def test_sync_recovers_a_cut_off_create(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 2)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))
    assert cli("create", "--in", "in.jsonl", "--max-retries", "0").code == 1

    result = cli("sync")

    assert result.out == "added: 0\nupdated: 0\nrecovered: 1\nunchanged: 0\n"
    [row] = ledger_rows()
    assert row["batch_id"] == next(iter(emulator.state.batches)) and row["origin"] == "create"


def test_show_tells_everything_the_ledger_knows(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = created(cli, isolated / "in.jsonl", lines=3)
    advance(emulator, batch_id, 2)
    assert cli("status", "--batch-id", batch_id).code == 0

    result = cli("show", batch_id[len("batch_") :][:10])

    assert result.code == 0, result.err
    row = ledger_rows()[0]
    assert result.field("batch_id") == batch_id
    assert result.field("input_path") == str(isolated / "in.jsonl")
    assert result.field("input_sha256") == row["input_sha256"]
    assert result.field("completed_at") == row["completed_at"]
    usage = json.loads(row["usage"])
    assert result.field("tokens") == (
        f"{usage['input_tokens']} input, {usage['output_tokens']} output, "
        f"{usage['total_tokens']} total"
    )
    assert result.field("saved").startswith(f"results_{batch_id}.jsonl (")
    history = result.out.split("history:\n", 1)[1]
    for action in ("submit", "upload", "create", "status", "save_output"):
        assert f" {action} " in history

    as_json = json.loads(cli("show", "last", "--json").out)
    assert as_json["batch_id"] == batch_id
    assert as_json["usage"]["total_tokens"] == usage["total_tokens"]
    assert [event["action"] for event in as_json["history"]][:3] == ["submit", "upload", "create"]


def test_show_needs_no_key_and_creates_no_ledger(cli, isolated: Path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    result = cli("show", "last")
    assert (result.code, result.out) == (0, "No batches in the ledger yet.\n")
    assert not (isolated.parent / "ledger.db").exists()


# --- id shortcuts ---------------------------------------------------------------------


def test_id_shortcuts(cli, emulator: EmulatorServer, isolated: Path):
    first = created(cli, isolated / "a.jsonl", lines=1)
    second = created(cli, isolated / "b.jsonl", lines=2)

    assert cli("status", "--batch-id", "last").field("batch_id") == second
    by_prefix = cli("status", "--batch-id", first[: len("batch_") + 8])
    assert by_prefix.field("batch_id") == first
    without_part = cli("show", second[len("batch_") :][:8])
    assert without_part.field("batch_id") == second

    ambiguous = cli("status", "--batch-id", "batch_")
    assert ambiguous.code == 2
    assert "matches 2 batches in the ledger" in ambiguous.err
    assert first in ambiguous.err and second in ambiguous.err
    nothing = cli("retrieve", "--batch-id", "zzzz")
    assert (nothing.code, nothing.err) == (
        2,
        "batchledger: error: no batch in the ledger matches 'zzzz'\n",
    )
    empty_ledger = cli("status", "--batch-id", "last", "--db", "empty.db")
    assert empty_ledger.code == 2 and "the ledger holds no created batch yet" in empty_ledger.err


# --- list filters and JSON ------------------------------------------------------------


def test_list_filters(cli, emulator: EmulatorServer, isolated: Path):
    done = created(cli, isolated / "a.jsonl", lines=1)
    failing = created(cli, isolated / "b.jsonl", lines=2)
    write_jsonl(isolated / "c.jsonl", 3, endpoint="/v1/chat/completions")
    chat = cli("create", "--in", "c.jsonl", "--endpoint", "/v1/chat/completions")
    chat_id = chat.field("batch_id")
    emulator.state.set_outcome(failing, "failed")
    complete(emulator, done)
    assert cli("status", "--all").code == 0

    def ids(*args: str) -> list[str]:
        result = cli("list", "--json", *args)
        assert result.code == 0, result.err
        return [record["batch_id"] for record in json.loads(result.out)]

    assert ids() == [chat_id, failing, done]
    assert ids("--status", "failed") == [failing]
    assert ids("--status", "completed,failed") == [failing, done]
    assert ids("--status", "completed", "--status", "failed") == [failing, done]
    assert ids("--endpoint", "/v1/chat/completions") == [chat_id]
    assert ids("--since", "1d") == [chat_id, failing, done]
    assert ids("--since", "2999-01-01") == []
    assert ids("--limit", "1") == [chat_id]
    assert ids("--all") == [chat_id, failing, done]
    table = cli("list", "--status", "validating")
    assert table.out == "No batches match.\n"
    assert cli("list", "--since", "last tuesday").code == 2


@pytest.mark.parametrize("command", ["create", "status"])
def test_json_output(cli, emulator: EmulatorServer, isolated: Path, command: str):
    write_jsonl(isolated / "in.jsonl", 2)
    result = cli("create", "--in", "in.jsonl", *(["--json"] if command == "create" else []))
    if command == "status":
        batch_id = result.field("batch_id")
        result = cli("status", "--batch-id", batch_id, "--json")

    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert isinstance(document, dict)
    assert document["batch_id"] == ledger_rows()[0]["batch_id"]
    assert document["input_path"] == str(isolated / "in.jsonl")
    assert REF_KEY not in result.out  # ledger fields, not the raw API object


def test_watch_draws_a_progress_bar_on_a_terminal(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = created(cli, isolated / "in.jsonl", lines=4)
    args = ["watch", "--batch-id", batch_id, "--interval", "0.01"]
    leader, follower = pty.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "batchledger", *args],
            cwd=isolated,
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
        )
        out, _ = child.communicate(timeout=30)
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed: all is read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)

    assert child.returncode == 0
    assert "status: completed" in out
    screen = drawn.decode()
    assert f"\r[{'-' * 30}] {batch_id} in_progress: 0/4 done, 0 failed, 0 %" in screen
    # finalizing: the bar stops short of full (99 %), full only once completed.
    assert f"\r[{'#' * 29}-] {batch_id} finalizing: 4/4 done, 0 failed, 99 %" in screen
    assert f"\r[{'#' * 30}] {batch_id} completed: 4/4 done, 0 failed, 100 %" in screen


def test_watch_rides_out_passing_network_failures(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = created(cli, isolated / "in.jsonl")
    emulator.state.add_fault(Fault(method="GET", path=r"^/v1/batches/", drop_request=True, times=3))

    result = cli("watch", "--batch-id", batch_id, "--interval", "0.01", "--max-retries", "0")

    assert result.code == 0, result.err
    assert result.field("status") == "completed"
    assert result.err.count("; still watching") == 3
    assert (isolated / f"results_{batch_id}.jsonl").is_file()


def test_show_json_on_a_missing_ledger_is_null(cli, isolated: Path):
    result = cli("show", "last", "--json")
    assert (result.code, json.loads(result.out)) == (0, None)


def test_an_empty_batch_id_is_a_usage_error(cli, emulator: EmulatorServer, isolated: Path):
    created(cli, isolated / "in.jsonl")
    result = cli("retrieve", "--batch-id", "")
    assert (result.code, result.err) == (2, "batchledger: error: the batch id is empty\n")
