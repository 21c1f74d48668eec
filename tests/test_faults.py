"""The fault matrix: each injected failure, its exit code and message, and that nothing is lost."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    api_requests,
    complete,
    ledger_rows,
    log_text,
    sdk,
    server_bytes,
    write_jsonl,
)

from batchledger.emulator import EmulatorServer, Fault
from batchledger.migrations import migration_names


def cli_process(*args: str, cwd: Path, preamble: str = "") -> subprocess.Popen[str]:
    """The CLI as a child process (so it can be signalled or limited)."""
    code = f"{preamble}\nimport sys\nfrom batchledger.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def created(cli, path: Path, lines: int = 3) -> str:
    write_jsonl(path, lines)
    result = cli("create", "--in", str(path))
    assert result.code == 0, result.err
    return result.field("batch_id")


def wait_for_downloads(folder: Path, count: int = 1) -> None:
    """Wait until `count` downloads into `folder` have their temporary files."""
    deadline = time.monotonic() + 10
    while len(list(folder.glob(".*.part"))) < count:
        assert time.monotonic() < deadline, "the downloads never started"
        time.sleep(0.02)


def stalled_retrieve(
    cli, emulator: EmulatorServer, isolated: Path
) -> tuple[str, subprocess.Popen[str]]:
    """A completed batch, and a child retrieving it that is stalled midway."""
    batch_id = created(cli, isolated / "in.jsonl", lines=200)
    complete(emulator, batch_id)
    emulator.state.add_fault(Fault(path=r"/content$", stall_after_bytes=1000, delay=30))
    child = cli_process("retrieve", "--batch-id", batch_id, cwd=isolated)
    wait_for_downloads(isolated)
    return batch_id, child


def output_of(emulator: EmulatorServer, batch_id: str) -> str:
    output_file_id = emulator.state.batches[batch_id].output_file_id
    assert output_file_id is not None
    return output_file_id


def no_part_files(folder: Path) -> bool:
    return not list(folder.rglob("*.part"))


# --- create ---------------------------------------------------------------------------


def test_upload_response_lost_is_found_not_uploaded_again(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/files$", drop_request=True))

    result = cli("create", "--in", "in.jsonl")

    assert result.code == 0, result.err
    assert len(emulator.state.files) == 1  # the lost upload was found by listing
    assert api_requests(emulator, "POST", "/v1/files") == 1
    [row] = ledger_rows()
    assert row["input_file_id"] == result.field("file_id") == next(iter(emulator.state.files))


def test_upload_cut_midway_is_sent_again(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 50)
    emulator.state.add_fault(
        Fault(method="POST", path=r"^/v1/files$", cut_request_after_bytes=1000)
    )

    result = cli("create", "--in", "in.jsonl")

    assert result.code == 0, result.err
    [stored] = emulator.state.files.values()  # the cut upload never became a file
    assert stored.path.read_bytes() == (isolated / "in.jsonl").read_bytes()
    assert api_requests(emulator, "POST", "/v1/files") == 2


def test_drop_after_upload_before_create_reuses_the_upload(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", status=503, times=None))

    failed = cli("create", "--in", "in.jsonl", "--max-retries", "0")

    assert failed.code == 1 and "CREATE_BATCH failed with HTTP 503" in failed.err
    [row] = ledger_rows()
    assert row["batch_id"] is None and row["input_file_id"] in emulator.state.files
    emulator.state.clear_faults()

    again = cli("create", "--in", "in.jsonl")

    assert again.code == 0, again.err
    assert again.field("file_id") == row["input_file_id"]
    assert api_requests(emulator, "POST", "/v1/files") == 1
    assert len(emulator.state.batches) == 1
    [row] = ledger_rows()  # the same row, finished
    assert row["batch_id"] == again.field("batch_id")


def test_create_response_lost_is_found_by_its_ref_within_the_run(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))

    result = cli("create", "--in", "in.jsonl")

    assert result.code == 0, result.err
    assert len(emulator.state.batches) == 1  # not a second, paid-for batch
    assert api_requests(emulator, "POST", "/v1/batches") == 1
    assert ledger_rows()[0]["batch_id"] == result.field("batch_id")


@pytest.mark.parametrize("next_command", [["create", "--in", "in.jsonl"], ["status", "--all"]])
def test_create_response_lost_then_next_run_recovers_it(
    cli, emulator: EmulatorServer, isolated: Path, next_command: list[str]
):
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))

    lost = cli("create", "--in", "in.jsonl", "--max-retries", "0")

    assert lost.code == 1 and "CREATE_BATCH could not reach" in lost.err
    [server_batch] = emulator.state.batches.values()
    assert ledger_rows()[0]["batch_id"] is None

    recovered = cli(*next_command)

    assert recovered.code == 0, recovered.err
    assert f"found {server_batch.id}" in recovered.err or server_batch.id in recovered.err
    assert len(emulator.state.batches) == 1
    [row] = ledger_rows()
    assert row["batch_id"] == server_batch.id


def test_killed_create_is_resumed_without_a_second_batch(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)
    # The server takes its time answering the create; the process dies meanwhile.
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", delay=5))
    child = cli_process("create", "--in", "in.jsonl", cwd=isolated)
    deadline = time.monotonic() + 10
    while not emulator.state.batches and time.monotonic() < deadline:
        time.sleep(0.02)
    child.kill()
    child.wait()
    assert len(emulator.state.batches) == 1
    emulator.state.clear_faults()

    result = cli("create", "--in", "in.jsonl")

    assert result.code == 0, result.err
    assert len(emulator.state.batches) == 1
    assert api_requests(emulator, "POST", "/v1/files") == 1
    assert [row["batch_id"] for row in ledger_rows()] == [next(iter(emulator.state.batches))]


# --- downloads ------------------------------------------------------------------------


def test_drop_mid_download_is_retried(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = created(cli, isolated / "in.jsonl", lines=50)
    complete(emulator, batch_id)
    emulator.state.add_fault(Fault(path=r"/content$", drop_after_bytes=100, times=2))

    result = cli("retrieve", "--batch-id", batch_id)

    assert result.code == 0, result.err
    output_file_id = emulator.state.batches[batch_id].output_file_id
    target = isolated / f"results_{batch_id}.jsonl"
    assert target.read_bytes() == server_bytes(emulator, output_file_id)
    assert api_requests(emulator, "GET", f"/v1/files/{output_file_id}/content") == 4
    assert no_part_files(isolated)


def test_drop_mid_download_exhausted_keeps_the_previous_file(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = created(cli, isolated / "in.jsonl", lines=50)
    complete(emulator, batch_id)
    target = isolated / "out.jsonl"
    target.write_bytes(b"an earlier complete result\n")
    emulator.state.add_fault(Fault(path=r"/content$", drop_after_bytes=100, times=None))

    result = cli("retrieve", "--batch-id", batch_id, "--out", "out.jsonl")

    assert result.code == 1
    assert "broke off 3 times" in result.err and "nothing was saved" in result.err
    assert target.read_bytes() == b"an earlier complete result\n"
    assert no_part_files(isolated)
    [row] = ledger_rows()
    assert row["output_path"] is None
    assert ledger_rows("history")[-1]["action"] == "save_output_failed"


def test_sigint_mid_download_leaves_no_file(cli, emulator: EmulatorServer, isolated: Path):
    batch_id, child = stalled_retrieve(cli, emulator, isolated)

    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=10)

    assert child.returncode == 130
    assert err == "batchledger: interrupted\n"
    assert not (isolated / f"results_{batch_id}.jsonl").exists()
    assert no_part_files(isolated)
    assert ledger_rows("history")[-1]["action"] == "save_output_interrupted"
    assert ledger_rows()[0]["output_path"] is None


def test_a_download_killed_outright_is_cleaned_up_by_the_next_save(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id, child = stalled_retrieve(cli, emulator, isolated)
    child.kill()  # SIGKILL: the run gets no chance to remove its temporary file
    child.communicate(timeout=10)
    [left] = isolated.glob(".*.part")
    assert left.name.startswith(f".results_{batch_id}.jsonl.{child.pid}.")

    result = cli("retrieve", "--batch-id", batch_id)

    assert result.code == 0, result.err
    target = isolated / f"results_{batch_id}.jsonl"
    assert target.read_bytes() == server_bytes(emulator, output_of(emulator, batch_id))
    assert no_part_files(isolated)
    assert f"removed {left} " in log_text(isolated)


def test_only_temporary_files_nobody_holds_are_removed(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = created(cli, isolated / "in.jsonl", lines=5)
    complete(emulator, batch_id)
    target = f"results_{batch_id}.jsonl"
    files = {
        "left by a killed run": isolated / f".{target}.4194301.0123abcd.part",
        # A pid that runs now proves nothing (reused, or another container's): no lock, gone.
        "naming a live pid": isolated / f".{target}.{os.getpid()}.2468ace0.part",
        "held by a live run": isolated / f".{target}.4194302.89abcdef.part",
        "being made": isolated / f".{target}.4194303.13579bdf.part.new",
        "another target's": isolated / ".other.jsonl.4194301.0123abcd.part",
        "not ours": isolated / f".{target}.notes.part",
    }
    for path in files.values():
        path.write_bytes(b"half a result")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "held = open(sys.argv[1], 'rb')\n"
            "fcntl.flock(held.fileno(), fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)",
            str(files["held by a live run"]),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"

        result = cli("retrieve", "--batch-id", batch_id)
    finally:
        holder.kill()
        holder.wait()

    assert result.code == 0, result.err
    assert (isolated / target).read_bytes() == server_bytes(emulator, output_of(emulator, batch_id))
    assert {name for name, path in files.items() if path.exists()} == {
        "held by a live run",
        "being made",
        "another target's",
        "not ours",
    }


@pytest.mark.parametrize(
    ("lines", "limit_bytes"),
    [
        (2000, 200_000),  # the first write fails
        # The writer fails several megabytes in, while the reader waits on a full queue.
        (20_000, 3_000_000),
    ],
)
def test_disk_full_while_saving(
    cli, emulator: EmulatorServer, isolated: Path, lines: int, limit_bytes: int
):
    batch_id = created(cli, isolated / "in.jsonl", lines=lines)
    complete(emulator, batch_id)
    assert emulator.state.files[output_of(emulator, batch_id)].bytes > 2 * limit_bytes
    # Files may grow to the limit: enough for the ledger and the log, not for the output.
    limit = (
        "import resource, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))"
    )
    child = cli_process("retrieve", "--batch-id", batch_id, cwd=isolated, preamble=limit)
    out, err = child.communicate(timeout=60)

    assert child.returncode == 1, err
    assert err.startswith("batchledger: error: could not save ") and "File too large" in err
    assert out == ""
    assert not (isolated / f"results_{batch_id}.jsonl").exists()
    assert no_part_files(isolated)
    assert ledger_rows("history")[-1]["action"] == "save_output_failed"


# --- rate limits and outages ----------------------------------------------------------


def test_429_twice_then_success_honours_retry_after(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = created(cli, isolated / "in.jsonl")
    emulator.state.add_fault(
        Fault(method="GET", path=r"^/v1/batches/", status=429, retry_after=1, times=2)
    )

    started = time.monotonic()
    result = cli("status", "--batch-id", batch_id)
    elapsed = time.monotonic() - started

    assert result.code == 0, result.err
    assert result.field("status") == "in_progress"
    assert api_requests(emulator, "GET", f"/v1/batches/{batch_id}") == 3
    assert elapsed >= 2  # two waits of the server's Retry-After: 1


def test_500_on_every_attempt(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = created(cli, isolated / "in.jsonl")
    emulator.state.add_fault(Fault(method="GET", path=r"^/v1/batches/", status=500, times=None))

    result = cli("status", "--batch-id", batch_id, "--max-retries", "2")

    assert result.code == 1
    assert result.err.startswith("batchledger: error: GET_STATUS failed with HTTP 500")
    assert "try again later" in result.err
    assert api_requests(emulator, "GET", f"/v1/batches/{batch_id}") == 3
    assert ledger_rows()[0]["status"] == "validating"  # the last state actually seen


# --- the ledger -----------------------------------------------------------------------


def test_concurrent_runs_leave_a_consistent_ledger(cli, emulator: EmulatorServer, isolated: Path):
    ids = [created(cli, isolated / f"in{n}.jsonl", lines=n + 1) for n in range(6)]
    for batch_id in ids[:3]:
        complete(emulator, batch_id)
    write_jsonl(isolated / "new.jsonl", 9)
    emulator.state.add_fault(Fault(method="GET", path=r"^/v1/batches/", delay=0.05, times=None))

    children = [
        cli_process("status", "--all", cwd=isolated),
        cli_process("status", "--all", cwd=isolated),
        cli_process("create", "--in", "new.jsonl", cwd=isolated),
    ]
    results = [(child.wait(timeout=60), child.communicate()) for child in children]

    for code, (_, err) in results:
        assert code == 0, err
    rows = ledger_rows()
    assert len(rows) == 7 and len({row["batch_id"] for row in rows}) == 7
    for batch_id in ids[:3]:
        output_file_id = emulator.state.batches[batch_id].output_file_id
        saved = isolated / f"results_{batch_id}.jsonl"
        assert saved.read_bytes() == server_bytes(emulator, output_file_id)
    assert no_part_files(isolated)
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_locked_ledger_exits_1(cli, emulator: EmulatorServer, isolated: Path, monkeypatch):
    created(cli, isolated / "in.jsonl")
    monkeypatch.setenv("BATCHLEDGER_LOCK_TIMEOUT", "0.5")
    holder = sqlite3.connect(os.environ["BATCHLEDGER_DB"], isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        write_jsonl(isolated / "other.jsonl", 5)
        result = cli("create", "--in", "other.jsonl")
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert result.code == 1
    assert result.err.startswith("batchledger: error: ledger ")
    assert "is locked by another process" in result.err
    assert len(emulator.state.files) == 1  # nothing uploaded while the ledger was locked
    assert len(ledger_rows()) == 1


def test_newer_schema_is_refused_and_left_alone(cli, emulator: EmulatorServer, isolated: Path):
    created(cli, isolated / "in.jsonl")
    ledger = Path(os.environ["BATCHLEDGER_DB"])
    conn = sqlite3.connect(ledger)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
        "VALUES ('batchledger', 'm999_from_the_future', '2030-01-01')"
    )
    conn.commit()
    conn.close()
    before = ledger.read_bytes()

    result = cli("list")

    assert result.code == 1
    assert "was written by a newer batchledger" in result.err
    assert ledger.read_bytes() == before


def test_an_upgrade_killed_midway_leaves_the_old_ledger_and_the_next_run_upgrades_it(
    cli, isolated: Path
):
    # A ledger of the first release (m001-m002) holding the history of a batch deleted by hand.
    ledger = Path(os.environ["BATCHLEDGER_DB"])
    shutil.copy(Path(__file__).parent / "fixtures" / "ledger_v0_1_0.db", ledger)
    conn = sqlite3.connect(ledger)
    conn.execute("INSERT INTO history (batch, at, action) VALUES (99, '2026-01-02', 'submitted')")
    conn.commit()
    before = list(conn.iterdump())
    conn.close()
    # The run is killed once every migration ran and the row was set aside, before the commit.
    marker = isolated / "upgraded"
    preamble = f"""
import pathlib, time
from batchledger.ledger import opening
set_aside = opening._set_aside_orphan_history
def pause(db):
    notes = set_aside(db)
    pathlib.Path({str(marker)!r}).touch()
    time.sleep(30)
    return notes
opening._set_aside_orphan_history = pause
"""
    child = cli_process("list", "--all", cwd=isolated, preamble=preamble)
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline and child.poll() is None, child.communicate()
        time.sleep(0.02)
    child.kill()
    child.wait()

    conn = sqlite3.connect(ledger)
    after = list(conn.iterdump())
    conn.close()
    assert after == before  # nothing of the upgrade was kept, nothing of the ledger lost

    result = cli("list", "--all")

    assert result.code == 0, result.err
    assert "1 history row of a batch not in the ledger (batch id 99) was set aside" in result.err
    assert [row["owner"] for row in ledger_rows("orphan_history")] == [99]
    assert len(ledger_rows()) == 5


def test_cut_off_batch_looked_up_by_id_lands_in_its_own_row(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))
    assert cli("create", "--in", "in.jsonl", "--max-retries", "0").code == 1
    [server_batch] = emulator.state.batches.values()

    looked_up = cli("status", "--batch-id", server_batch.id)
    swept = cli("status", "--all")

    assert (looked_up.code, swept.code) == (0, 0), looked_up.err + swept.err
    [row] = ledger_rows()  # the create's own row, not a second one
    assert (row["batch_id"], row["origin"]) == (server_batch.id, "create")
    assert row["input_path"] == str(isolated / "in.jsonl")


def test_read_only_ledger_exits_1_and_is_left_alone(cli, emulator: EmulatorServer, isolated: Path):
    created(cli, isolated / "in.jsonl")
    ledger = Path(os.environ["BATCHLEDGER_DB"])
    assert cli("list").code == 0  # a checkpoint leaves every row in the main file
    before = ledger.read_bytes()
    make_read_only(ledger)
    try:
        write_jsonl(isolated / "other.jsonl", 5)
        result = cli("create", "--in", "other.jsonl")
        listed = cli("list")
    finally:
        make_writable(ledger)

    assert result.code == 1
    assert result.err == (
        f"batchledger: error: ledger {ledger} is read-only; check its permissions\n"
    )
    assert len(emulator.state.files) == 1  # refused before anything was uploaded
    assert listed.code == 0 and "in.jsonl" in listed.out  # reading still works
    assert ledger.read_bytes() == before


def make_read_only(path: Path) -> None:
    if os.geteuid() == 0:  # root writes through permission bits; not through immutable
        if subprocess.run(["chattr", "+i", str(path)], check=False).returncode != 0:
            pytest.skip("chattr +i is not supported on this file system")
    else:
        path.chmod(0o444)


def make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=False)
    path.chmod(0o644)


# --- found in review ------------------------------------------------------------------


def test_two_runs_of_the_same_create_make_one_batch(emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/files$", delay=3))
    first = cli_process("create", "--in", "in.jsonl", cwd=isolated)
    deadline = time.monotonic() + 10
    while not emulator.state.files:  # the first run is uploading
        assert time.monotonic() < deadline
        time.sleep(0.02)

    second = cli_process("create", "--in", "in.jsonl", cwd=isolated)
    second_out, second_err = second.communicate(timeout=30)
    _, first_err = first.communicate(timeout=30)

    assert first.returncode == 0, first_err
    assert second.returncode == 3, second_err
    assert "in.jsonl is being submitted by another run" in second_err
    assert second_out == ""
    assert len(emulator.state.batches) == 1 and len(emulator.state.files) == 1
    [row] = ledger_rows()
    assert row["batch_id"] == next(iter(emulator.state.batches))
    assert row["claimed_by"] is None  # released when the create finished


def test_parallel_runs_on_a_new_ledger(emulator: EmulatorServer, isolated: Path):
    for n in range(5):
        write_jsonl(isolated / f"in{n}.jsonl", n + 1)
    children = [
        cli_process("create", "--in", f"in{n}.jsonl", "--db", "fresh.db", cwd=isolated)
        for n in range(5)
    ]
    results = [child.communicate(timeout=60) for child in children]

    assert [child.returncode for child in children] == [0] * 5, results
    conn = sqlite3.connect(isolated / "fresh.db")
    assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == 5
    assert conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == len(
        migration_names()
    )


def test_a_lost_upload_is_never_mistaken_for_a_same_named_file(
    cli, emulator: EmulatorServer, isolated: Path
):
    first = write_jsonl(isolated / "d1" / "in.jsonl", 3)
    second = write_jsonl(isolated / "d2" / "in.jsonl", 3, instructions="other")
    second.write_bytes(second.read_bytes()[: first.stat().st_size].ljust(first.stat().st_size))
    assert second.stat().st_size == first.stat().st_size
    assert cli("create", "--in", "d1/in.jsonl").code == 0
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/files$", status=500))

    result = cli("create", "--in", "d2/in.jsonl")

    assert result.code == 0, result.err
    batch = emulator.state.batches[result.field("batch_id")]
    assert emulator.state.files[batch.input_file_id].path.read_bytes() == second.read_bytes()
    assert {file.filename for file in emulator.state.files.values()} == {
        f"in.{row['ref']}.jsonl" for row in ledger_rows()
    }


def test_a_refused_create_is_marked_and_not_resumed(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 2)

    result = cli("create", "--in", "in.jsonl", "--endpoint", "/v1/bogus")

    assert result.code == 1 and "CREATE_BATCH failed with HTTP 400" in result.err
    [row] = ledger_rows()
    assert (row["status"], row["batch_id"], row["claimed_by"]) == ("rejected", None, None)
    assert ledger_rows("history")[-1]["action"] == "rejected"
    swept = cli("status", "--all")
    assert swept.out == "No pending batches in the ledger.\n"
    assert "rejected" in cli("list").out


def test_downloads_ask_for_the_bytes_uncompressed(cli, emulator: EmulatorServer, isolated: Path):
    batch_id = created(cli, isolated / "in.jsonl")
    complete(emulator, batch_id)

    assert cli("retrieve", "--batch-id", batch_id).code == 0

    [download] = [r for r in emulator.state.requests if r.path.endswith("/content")]
    assert download.headers["accept-encoding"] == "identity"


def test_ctrl_c_stops_a_sweep_promptly(cli, emulator: EmulatorServer, isolated: Path):
    ids = [created(cli, isolated / f"in{n}.jsonl", lines=100 + n) for n in range(6)]
    for batch_id in ids:
        complete(emulator, batch_id)
    # Each download stalls 1.5 s midway: finishing all six, two at a time, takes 4.5 s.
    stall = Fault(path=r"/content$", stall_after_bytes=500, delay=1.5, times=None)
    emulator.state.add_fault(stall)
    child = cli_process("status", "--all", "--concurrency", "2", cwd=isolated)
    wait_for_downloads(isolated, 2)

    interrupted = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)

    assert child.returncode == 130, err
    assert time.monotonic() - interrupted < 3  # not after every download ran its course
    assert no_part_files(isolated)
    assert not list(isolated.glob("results_*.jsonl"))


def test_ctrl_c_does_not_wait_for_a_stalled_download(cli, emulator: EmulatorServer, isolated: Path):
    """A download stalled in a read cannot see Ctrl-C until the server sends again: the run
    waits a moment for it, then ends; the next sweep removes what it left and saves all."""
    ids = [created(cli, isolated / f"in{n}.jsonl", lines=100 + n) for n in range(2)]
    for batch_id in ids:
        complete(emulator, batch_id)
    stall = Fault(path=r"/content$", stall_after_bytes=500, delay=60, times=2)
    emulator.state.add_fault(stall)
    child = subprocess.Popen(  # the console script's way: its own exit and Ctrl-C handling
        [sys.executable, "-m", "batchledger", "status", "--all", "--concurrency", "2"],
        cwd=isolated,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_downloads(isolated, 2)

    interrupted = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)

    assert child.returncode == 130, err
    assert time.monotonic() - interrupted < 10  # not the 60 s of the stall
    assert not list(isolated.glob("results_*.jsonl"))
    swept = cli("status", "--all")
    assert swept.code == 0, swept.err
    assert no_part_files(isolated)
    for row in ledger_rows():
        assert Path(row["output_path"]).read_bytes() == server_bytes(
            emulator, row["output_file_id"]
        )


def test_a_ctrl_c_that_a_download_thread_takes_still_stops_a_sweep(
    cli, emulator: EmulatorServer, isolated: Path
):
    """The kernel hands a process's SIGINT to any thread not blocking it: a thread being
    made (its pthread_create unblocks signals as it starts) can take it, and CPython then
    only flags it for the main thread, asleep on a worker's result. Seen once in seven
    suite runs of the test above, reproduced here for sure: the signal is sent to the
    download's own thread as it starts. The sweep's main thread wakes to look."""
    ids = [created(cli, isolated / f"in{n}.jsonl", lines=100 + n) for n in range(2)]
    for batch_id in ids:
        complete(emulator, batch_id)
    emulator.state.add_fault(Fault(path=r"/content$", stall_after_bytes=500, delay=60, times=2))
    to_the_worker = (
        "import signal, sys, threading\n"
        "import batchledger.savefile as savefile\n"
        "made = savefile.new_part\n"
        "def new_part(target):\n"
        "    part = made(target)\n"
        "    if threading.current_thread() is not threading.main_thread():\n"
        "        signal.pthread_kill(threading.get_ident(), signal.SIGINT)\n"
        "    return part\n"
        "savefile.new_part = new_part\n"
        "sys.argv = ['batchledger', 'status', '--all', '--concurrency', '2']\n"
        "from batchledger.cli import entry\n"
        "entry()\n"
    )
    started = time.monotonic()
    child = subprocess.Popen(  # the console script's way: its own exit and Ctrl-C handling
        [sys.executable, "-c", to_the_worker],
        cwd=isolated,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = child.communicate(timeout=30)

    assert child.returncode == 130, err
    assert time.monotonic() - started < 15  # not the 60 s of the stall
    assert "batchledger: interrupted" in err
    assert not list(isolated.glob("results_*.jsonl"))


def test_results_the_api_no_longer_has_stop_blocking_sweeps(
    cli, emulator: EmulatorServer, isolated: Path
):
    gone = created(cli, isolated / "a.jsonl", lines=2)
    running = created(cli, isolated / "b.jsonl", lines=3)
    complete(emulator, gone)
    sdk(emulator).files.delete(emulator.state.batches[gone].output_file_id)  # expired

    first = cli("status", "--all")
    second = cli("status", "--all")

    # Noted once, as a warning: the ledger remembers, and a cron job does not fail for ever.
    assert first.code == 0, first.err
    assert f"warning: {gone}: its results are gone from the API" in first.err
    assert "HTTP 404" in first.err
    assert second.code == 0, second.err
    assert gone not in second.err
    assert [line.split()[0] for line in second.out.splitlines()[2:]] == [running]
    row = {row["batch_id"]: row for row in ledger_rows()}[gone]
    assert row["results_gone_at"] and row["output_path"] is None


def test_a_ctrl_c_lost_in_a_finaliser_is_raised_again(emulator: EmulatorServer, isolated: Path):
    # CPython drops an exception raised in a weakref callback or __del__; a KeyboardInterrupt
    # that lands there is lost (seen in the fault campaign). Lose the first one on purpose.
    write_jsonl(isolated / "in.jsonl", 2)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", delay=20))
    lose_the_first = (
        "import signal\n"
        "import batchledger.cli.process as cli\n"
        "cli.install_interrupt_handler()\n"
        "def lost(signum, frame):\n"
        "    signal.signal(signal.SIGINT, cli._interrupted)\n"
        "    try:\n"
        "        cli._interrupted(signum, frame)\n"
        "    except KeyboardInterrupt:\n"
        "        pass  # as when it is raised inside a weakref callback\n"
        "signal.signal(signal.SIGINT, lost)"
    )
    child = cli_process("create", "--in", "in.jsonl", cwd=isolated, preamble=lose_the_first)
    deadline = time.monotonic() + 10
    while not emulator.state.batches:
        assert time.monotonic() < deadline
        time.sleep(0.02)

    interrupted = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)

    assert child.returncode == 130, err
    assert time.monotonic() - interrupted < 5  # not after the server's 20 s answer
    assert err == "batchledger: interrupted\n"
