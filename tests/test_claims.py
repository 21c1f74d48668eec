"""Claims on a create are leases: one held by another host holds until it runs out, and a
recycled pid does not block a create."""

import os
import socket
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpers import ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer, Fault


def batches_made(server: EmulatorServer) -> int:
    return len(server.state.batches)


# --- claims are leases -------------------------------------------------------------------


def left_unfinished(cli, emulator: EmulatorServer, isolated: Path) -> None:
    write_jsonl(isolated / "in.jsonl", 2)
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", status=500, times=None))
    assert cli("create", "--in", "in.jsonl", "--max-retries", "0").code == 1
    emulator.state.clear_faults()


def set_claim(
    claimed_by: str, claimed_at: datetime, expires_at: datetime, table: str = "batches"
) -> None:
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    with conn:
        conn.execute(
            f"UPDATE {table} SET claimed_by = ?, claimed_at = ?, claim_expires_at = ?",
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


def test_a_sweep_leaves_alone_a_create_another_run_holds(
    cli, emulator: EmulatorServer, isolated: Path
):
    # A create another host is still making (its upload recorded, its batch not yet): a
    # sweep that marked it abandoned would let the same input be sent again while the
    # holder goes on to create its batch, paid for twice.
    left_unfinished(cli, emulator, isolated)
    now = datetime.now(UTC)
    set_claim("another-host:4242", now, now + timedelta(minutes=30))

    held = cli("status", "--all")
    [row] = ledger_rows()
    again = cli("create", "--in", "in.jsonl")
    set_claim("another-host:4242", now - timedelta(hours=2), now - timedelta(hours=1))
    expired = cli("status", "--all")

    assert held.code == 0, held.err
    assert "abandoned" not in held.err
    assert row["status"] is None and row["batch_id"] is None
    assert again.code == 3 and "being submitted by another run" in again.err
    assert expired.code == 0 and "marked abandoned" in expired.err  # its lease ran out
    assert ledger_rows()[0]["status"] == "abandoned"
    assert batches_made(emulator) == 0


def test_a_job_another_host_is_sending_is_not_resumed_until_its_lease_runs_out(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 4)
    # The first part is made, the second's create fails: the job is not wholly sent.
    emulator.state.add_fault(
        Fault(method="POST", path=r"^/v1/batches$", status=500, times=None, spare=1)
    )
    cut = cli("create", "--in", "in.jsonl", "--max-requests", "2", "--max-retries", "0")
    emulator.state.clear_faults()
    assert cut.code == 1 and batches_made(emulator) == 1
    now = datetime.now(UTC)
    set_claim("another-host:4242", now, now + timedelta(minutes=30), table="jobs")

    held = cli("create", "--in", "in.jsonl", "--max-requests", "2")
    set_claim("another-host:4242", now - timedelta(hours=2), now - timedelta(hours=1), "jobs")
    expired = cli("create", "--in", "in.jsonl", "--max-requests", "2")

    assert held.code == 3 and "being submitted by another run (another-host:4242" in held.err
    assert expired.code == 0, expired.err
    assert batches_made(emulator) == 2
