"""Ledgers written by earlier releases, opened with the new code: the release before the
third round (schema m001-m005, jobs included) and the last release (m001-m009: estimates,
actual costs, part tokens). Every later migration runs, nothing they held is lost, and the
columns added since start empty (or, for m011's estimate basis, as the old rows imply)."""

import os
import shutil
import sqlite3
from pathlib import Path

from helpers import ledger_rows

from batchledger.migrations import migration_names

FIXTURE = Path(__file__).parent / "fixtures" / "ledger_m005.db"  # made by make_ledger_m005.py
# The last release's (m001-m009), made by make_ledger_m009.py: a priced batch, a token-cut job.
FIXTURE_M009 = Path(__file__).parent / "fixtures" / "ledger_m009.db"
ADDED = {
    "batches": (
        "estimated_input_tokens",
        "estimated_cost_min",
        "estimated_cost_max",
        "actual_cost",
        "estimated_from",
    ),
    "jobs": (
        "requests_completed",
        "requests_failed",
        "estimated_cost_max",
        "actual_cost",
        "estimated_from",
    ),
    "parts": ("input_tokens",),
}


def released(table: str, fixture: Path = FIXTURE) -> list[dict[str, object]]:
    conn = sqlite3.connect(fixture)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
    finally:
        conn.close()


def test_a_ledger_with_jobs_of_the_last_release_is_migrated_with_nothing_lost(cli, isolated: Path):
    shutil.copy(FIXTURE, os.environ["BATCHLEDGER_DB"])
    before = {table: released(table) for table in ("batches", "jobs", "parts", "history")}
    assert len(before["jobs"]) == 2 and len(before["parts"]) == 5

    listed = cli("list", "--all", "--parts", "--json")
    shown = cli("show", before["jobs"][0]["job_id"])

    assert listed.code == 0, listed.err
    assert shown.code == 0, shown.err
    assert before["jobs"][0]["job_id"] in shown.out and "done" in shown.out
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    applied = [row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    conn.close()
    assert applied == migration_names()
    for table, rows in before.items():
        after = ledger_rows(table)
        assert len(after) == len(rows)
        for old, new in zip(rows, after, strict=True):
            assert {key: new[key] for key in old} == old  # every value kept as it was
    for table, columns in ADDED.items():
        for row in ledger_rows(table):
            assert all(row[column] is None for column in columns), (table, row)


def test_the_running_job_of_the_last_release_shows_with_its_queued_part(cli, isolated: Path):
    shutil.copy(FIXTURE, os.environ["BATCHLEDGER_DB"])
    running = [job for job in released("jobs") if job["status"] == "running"]

    shown = cli("show", running[0]["job_id"])
    listed = cli("list")

    assert shown.code == 0 and listed.code == 0, shown.err + listed.err
    assert "queued" in shown.out
    assert running[0]["job_id"] in listed.out and "running, 0/2 parts" in listed.out


def test_estimates_recorded_before_m011_are_marked_counted(cli, isolated: Path):
    # Before m011 only a counted estimate (--max-cost, a budget) was ever recorded.
    from sqlite_utils import Database

    from batchledger.migrations import migrations

    path = Path(os.environ["BATCHLEDGER_DB"])
    db = Database(sqlite3.connect(path))
    migrations.apply(db, stop_before="m011_estimate_basis_and_price_quotes")
    for ref, tokens in (("bl_counted", 42), ("bl_none", None)):
        db["batches"].insert(
            {
                "ref": ref,
                "account": "default",
                "origin": "create",
                "endpoint": "/v1/responses",
                "completion_window": "24h",
                "recorded_at": "2026-12-05T10:00:00Z",
                "estimated_input_tokens": tokens,
            }
        )
    db.conn.close()

    assert cli("list", "--json").code == 0  # opening the ledger migrates it

    assert [row["estimated_from"] for row in ledger_rows()] == ["tokens", None]


def test_a_ledger_of_the_last_release_keeps_its_estimates_costs_and_part_tokens(
    cli, isolated: Path
):
    shutil.copy(FIXTURE_M009, os.environ["BATCHLEDGER_DB"])
    tables = ("batches", "jobs", "parts", "history", "job_history")
    before = {table: released(table, FIXTURE_M009) for table in tables}
    priced, part_batch = before["batches"]
    assert priced["estimated_input_tokens"] == 24 and priced["actual_cost"] is not None
    assert [part["state"] for part in before["parts"]] == ["sent", "queued"]

    listed = cli("list", "--all", "--parts", "--json")
    shown = cli("show", str(priced["batch_id"]))
    job = cli("show", str(before["jobs"][0]["job_id"]))

    assert listed.code == 0, listed.err
    assert shown.code == 0 and job.code == 0, shown.err + job.err
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    applied = [row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    quotes = conn.execute("SELECT COUNT(*) FROM price_quotes").fetchone()[0]
    conn.close()
    assert applied == migration_names()
    assert applied[-2:] == ["m010_result_counts", "m011_estimate_basis_and_price_quotes"]
    assert quotes == 0  # a cache, empty until a plain create prices a model
    for table, rows in before.items():
        after = ledger_rows(table)
        assert len(after) == len(rows)
        for old, new in zip(rows, after, strict=True):
            assert {key: new[key] for key in old} == old  # every value kept as it was
    batches = ledger_rows("batches")
    assert [row["estimated_from"] for row in batches] == ["tokens", None]  # counted, or none
    assert [row["result_counts"] for row in batches] == [None, None]
    assert ledger_rows("jobs")[0]["estimated_from"] is None
    assert f"estimated_cost_max: {priced['estimated_cost_max']:.6f} USD" in shown.out
    assert f"actual_cost: {priced['actual_cost']:.6f} USD" in shown.out
    assert "queued" in job.out and part_batch["batch_id"] in job.out
