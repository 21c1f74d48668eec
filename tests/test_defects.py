"""What a demanding user found (issue 11): each test is named after the behaviour it holds."""

import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import API_KEY, api_requests, complete, ledger_rows, log_text, sdk, write_jsonl

from batchledger.emulator import EmulatorServer, Fault
from batchledger.ledger import open_ledger
from batchledger.paths import default_log_path

SKEWS = pytest.mark.parametrize(
    "skew", [-1200, 1200], ids=["clock-20min-ahead", "clock-20min-behind"]
)


def batches_made(server: EmulatorServer) -> int:
    return len(server.state.batches)


# --- 1. a skewed clock never makes a second batch ------------------------------------------


@SKEWS
def test_a_lost_create_answer_is_found_whatever_the_local_clock(
    cli, emulator: EmulatorServer, isolated: Path, skew: int
):
    # The server's clock 20 minutes behind ours is our clock 20 minutes ahead of it.
    emulator.state.set_clock_offset(skew)
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))

    result = cli("create", "--in", "in.jsonl")

    assert result.code == 0, result.err
    assert batches_made(emulator) == 1
    [batch_id] = emulator.state.batches
    assert result.field("batch_id") == batch_id
    assert [row["batch_id"] for row in ledger_rows()] == [batch_id]


@SKEWS
def test_a_cut_off_create_is_found_by_the_sweep_whatever_the_local_clock(
    cli, emulator: EmulatorServer, isolated: Path, skew: int
):
    emulator.state.set_clock_offset(skew)
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))
    assert cli("create", "--in", "in.jsonl", "--max-retries", "0").code == 1

    swept = cli("status", "--all")
    again = cli("create", "--in", "in.jsonl")

    assert swept.code == 0, swept.err
    [batch_id] = emulator.state.batches
    assert f"found {batch_id}" in swept.err
    assert again.code == 3  # a duplicate of the batch the sweep found, not a second one
    assert batches_made(emulator) == 1


# --- 2. the key never reaches the ledger -----------------------------------------------------


def test_an_api_error_that_echoes_the_key_is_stored_without_it(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    emulator.state.add_fault(
        Fault(
            method="POST",
            path=r"^/v1/batches$",
            status=400,
            message=f"Invalid request from key {API_KEY}: endpoint not allowed",
        )
    )

    result = cli("create", "--in", "in.jsonl")

    assert result.code == 1
    assert "[API key]" in result.err and API_KEY not in result.err + result.out
    dump = "\n".join(sqlite3.connect(os.environ["BATCHLEDGER_DB"]).iterdump())
    assert "endpoint not allowed" in dump and API_KEY not in dump
    assert API_KEY not in log_text(isolated)


# --- 3. uploads are always named .jsonl ----------------------------------------------------


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


# --- 4. a batch of another base URL never stops a sweep ---------------------------------------


@pytest.fixture
def other_server(monkeypatch: pytest.MonkeyPatch):
    with EmulatorServer(port=0) as server:
        yield server


def test_batches_of_another_base_url_are_skipped_with_one_warning(
    cli, emulator: EmulatorServer, other_server: EmulatorServer, isolated: Path, monkeypatch
):
    write_jsonl(isolated / "in.jsonl", 2)
    assert cli("create", "--in", "in.jsonl").code == 0
    write_jsonl(isolated / "two.jsonl", 3)
    assert cli("create", "--in", "two.jsonl").code == 0
    monkeypatch.setenv("OPENAI_BASE_URL", other_server.base_url)

    again = cli("create", "--in", "in.jsonl")  # not a duplicate: another server's batch
    swept = cli("status", "--all")
    watched = cli("watch", "--all", "--interval", "0.01")

    assert again.code == 0, again.err
    assert swept.code == 0, swept.err
    warnings = [line for line in swept.err.splitlines() if "skipped 2 batches" in line]
    assert len(warnings) == 1 and emulator.base_url in warnings[0]
    assert again.field("batch_id") in swept.out
    assert watched.code == 0, watched.err
    # Nothing of the first server's was asked of the second.
    first_ids = set(emulator.state.batches)
    asked = {request.path.rsplit("/", 1)[-1] for request in other_server.state.requests}
    assert not first_ids & asked


def test_a_batch_its_account_does_not_know_is_reported_and_the_others_go_on(
    cli, emulator: EmulatorServer, isolated: Path
):
    # A ledger of the released version, whose batches were made on a server long gone
    # (their base URL was never recorded): each is a 404 here.
    shutil.copy(
        Path(__file__).parent / "fixtures" / "ledger_v0_1_0.db", os.environ["BATCHLEDGER_DB"]
    )
    write_jsonl(isolated / "new.jsonl", 6)
    new = cli("create", "--in", "new.jsonl").field("batch_id")

    first = cli("status", "--all")
    asked_first = api_requests(emulator, "GET", "/v1/batches/batch_")
    second = cli("status", "--all")

    assert first.code == 0, first.err
    assert first.err.count("does not know it") == 2  # the running batch and the synced one
    assert "a create of cut.jsonl made no batch; marked abandoned" in first.err
    assert new in first.out
    assert second.code == 0 and "does not know it" not in second.err
    assert asked_first == 3
    assert api_requests(emulator, "GET", "/v1/batches/batch_") == 4  # only the new one again


# --- 5. a create that failed after its upload has an end ------------------------------------


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


# --- 6. status prints, then saves -------------------------------------------------------


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


# --- 7. last is the batch most recently made -------------------------------------------------


def test_last_is_the_batch_made_most_recently_here_even_after_sync(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "a.jsonl", 2)
    write_jsonl(isolated / "b.jsonl", 3)
    cli("create", "--in", "a.jsonl")
    mine = cli("create", "--in", "b.jsonl").field("batch_id")
    client = sdk(emulator)
    for n in (4, 5):
        upload = client.files.create(
            file=write_jsonl(isolated / f"e{n}.jsonl", n).open("rb"), purpose="batch"
        )
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
        )
    assert cli("sync").code == 0

    shown = cli("show", "last")

    assert shown.code == 0
    assert shown.field("batch_id") == mine


def test_last_without_batches_made_here_is_the_newest_synced(
    cli, emulator: EmulatorServer, isolated: Path
):
    client = sdk(emulator)
    made = []
    for n in (2, 3):
        upload = client.files.create(
            file=write_jsonl(isolated / f"e{n}.jsonl", n).open("rb"), purpose="batch"
        )
        made.append(
            client.batches.create(
                input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
            ).id
        )
        emulator.state.set_clock_offset(60)  # the second made a minute later
    assert cli("sync").code == 0

    assert cli("show", "last").field("batch_id") == made[-1]


# --- 8. synced batches are not saved by sweeps unless asked ---------------------------------


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


# --- 9. --out may name a folder ------------------------------------------------------------


def test_retrieve_into_an_existing_folder_saves_under_the_default_name(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    complete(emulator, batch_id)
    (isolated / "out").mkdir()

    result = cli("retrieve", "--batch-id", batch_id, "--out", "out")

    assert result.code == 0, result.err
    assert result.out.startswith(f"saved: out/results_{batch_id}.jsonl")
    assert (isolated / "out" / f"results_{batch_id}.jsonl").stat().st_size > 0


# --- 10. a log of its own, in UTC --------------------------------------------------------------


def test_runs_started_in_the_same_second_get_their_own_log_files(
    cli, emulator: EmulatorServer, isolated: Path, monkeypatch
):
    same = Path("logs/batch_20261201_120000.log")
    monkeypatch.setattr(sys.modules["batchledger.cli.main"], "default_log_path", lambda now: same)
    write_jsonl(isolated / "a.jsonl", 2)
    write_jsonl(isolated / "b.jsonl", 3)

    assert cli("create", "--in", "a.jsonl").code == 0
    assert cli("create", "--in", "b.jsonl").code == 0

    logs = sorted(path.name for path in (isolated / "logs").iterdir())
    assert logs == ["batch_20261201_120000.log", "batch_20261201_120000_2.log"]
    first = (isolated / "logs" / logs[0]).read_text()
    assert "a.jsonl" in first and "b.jsonl" not in first


def test_log_names_and_lines_are_in_utc(cli, emulator: EmulatorServer, isolated: Path):
    east = datetime(2026, 12, 1, 9, 30, 5, tzinfo=timezone(timedelta(hours=5)))
    assert default_log_path(east) == Path("logs/batch_20261201_043005.log")
    write_jsonl(isolated / "a.jsonl", 2)

    cli("create", "--in", "a.jsonl")

    [log] = (isolated / "logs").iterdir()
    stamp = datetime.strptime(log.name, "batch_%Y%m%d_%H%M%S.log").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert all(line[:24].endswith("Z") for line in log.read_text().splitlines())


# --- 11. private files ---------------------------------------------------------------------


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


# --- 12. every input a user can type gets a one-line error --------------------------------


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e12", "soon"])
def test_a_bad_lock_timeout_is_a_usage_error(cli, isolated: Path, monkeypatch, value: str):
    ledger = open_ledger(Path(os.environ["BATCHLEDGER_DB"]))
    assert ledger is not None
    ledger.close()
    monkeypatch.setenv("BATCHLEDGER_LOCK_TIMEOUT", value)

    result = cli("list")

    assert result.code == 2
    assert result.err.startswith("batchledger: error: BATCHLEDGER_LOCK_TIMEOUT must be")
    assert len(result.err.splitlines()) == 1


def test_a_deleted_working_directory_is_a_usage_error(isolated: Path):
    gone = isolated / "gone"
    gone.mkdir()
    code = (
        "import os, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]);"
        "from batchledger.cli import main; sys.exit(main(['list']))"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, str(gone)], capture_output=True, text=True, timeout=60
    )

    assert child.returncode == 2
    assert child.stderr == (
        "batchledger: error: the working directory no longer exists; cd into one that does\n"
    )


# --- 13. claims are leases -------------------------------------------------------------------


def left_unfinished(cli, emulator: EmulatorServer, isolated: Path) -> None:
    write_jsonl(isolated / "in.jsonl", 2)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", status=500, times=None))
    assert cli("create", "--in", "in.jsonl", "--max-retries", "0").code == 1
    emulator.state.clear_faults()


def set_claim(claimed_by: str, claimed_at: datetime, expires_at: datetime) -> None:
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    with conn:
        conn.execute(
            "UPDATE batches SET claimed_by = ?, claimed_at = ?, claim_expires_at = ?",
            (
                claimed_by,
                claimed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            ),
        )
    conn.close()


def test_a_claim_from_another_host_holds_until_its_lease_runs_out(
    cli, emulator: EmulatorServer, isolated: Path
):
    left_unfinished(cli, emulator, isolated)
    now = datetime.now(UTC)
    set_claim("another-host:4242", now, now + timedelta(minutes=30))

    held = cli("create", "--in", "in.jsonl")
    set_claim("another-host:4242", now - timedelta(hours=2), now - timedelta(hours=1))
    expired = cli("create", "--in", "in.jsonl")

    assert held.code == 3 and "being submitted by another run (another-host:4242" in held.err
    assert expired.code == 0, expired.err
    assert batches_made(emulator) == 1


def test_a_recycled_pid_does_not_block_creates(cli, emulator: EmulatorServer, isolated: Path):
    left_unfinished(cli, emulator, isolated)
    now = datetime.now(UTC)
    # A process alive now, but started long after the claim: the pid was reused.
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        set_claim(
            f"{socket.gethostname()}:{stranger.pid}",
            now - timedelta(minutes=10),
            now + timedelta(minutes=50),
        )
        result = cli("create", "--in", "in.jsonl")
    finally:
        stranger.kill()
        stranger.wait()

    assert result.code == 0, result.err
    assert batches_made(emulator) == 1
