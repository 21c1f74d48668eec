"""Ledgers written by earlier releases, opened with the new code: the release before the
third round (schema m001-m005, jobs included), the release after issue 22 (m001-m009:
estimates, actual costs, part tokens) and the last one (m001-m011). Every later migration
runs, nothing they held is lost, and the columns added since start empty (or, for m011's
estimate basis, as the old rows imply). Then ledgers edited by hand: history left behind by
a deleted batch or job is set aside; any other dangling row stops the upgrade."""

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers import ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer
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
    assert applied[-3:-1] == ["m010_result_counts", "m011_estimate_basis_and_price_quotes"]
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


# --- rows that point at rows no longer there (issue 24) ----------------------------------
# A ledger edited by hand (the sqlite3 shell has foreign keys off) can hold them: a batch
# or job deleted, its append-only history left behind.

FIXTURE_V0_1_0 = Path(__file__).parent / "fixtures" / "ledger_v0_1_0.db"  # m001-m002


def edit_by_hand(*statements: str) -> None:
    """Run `statements` on the ledger as the sqlite3 shell would: foreign keys off."""
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    try:
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 0
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def applied_migrations() -> list[str]:
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    try:
        return [row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    finally:
        conn.close()


def assert_append_only(*tables: str) -> None:
    """Each history table (not empty) still refuses deletes once its orphans were moved out."""
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    try:
        for table in tables:
            with pytest.raises(sqlite3.IntegrityError, match=f"{table} is append-only"):
                conn.execute(f"DELETE FROM {table}")
    finally:
        conn.close()


def dump() -> list[str]:
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_history_of_batches_deleted_by_hand_is_set_aside_when_a_first_release_ledger_upgrades(
    cli, emulator: EmulatorServer, isolated: Path
):
    shutil.copy(FIXTURE_V0_1_0, os.environ["BATCHLEDGER_DB"])
    assert max(row["id"] for row in released("batches", FIXTURE_V0_1_0)) == 5
    # Batch 6 and 99 were deleted by hand: 6 is the id the next batch will be given.
    edit_by_hand(
        "INSERT INTO history (batch, at, action, detail, log_file) VALUES "
        "(6, '2026-01-02T03:04:05Z', 'submitted', 'a batch deleted by hand', 'logs/a.log'), "
        "(99, '2026-01-02T03:04:06Z', 'retrieved', 'another one', NULL)"
    )
    history = released("history", FIXTURE_V0_1_0)

    listed = cli("list", "--all")
    again = cli("list", "--all")

    assert listed.code == 0, listed.err
    assert listed.out == again.out and len(listed.out.splitlines()) == 2 + 5  # a header, a rule
    assert listed.err == (
        f"batchledger: warning: ledger {os.environ['BATCHLEDGER_DB']}: 2 history rows of batches "
        "not in the ledger (batch ids 6, 99) were set aside, as they were, in its table "
        "orphan_history\n"
    )
    assert again.err == ""  # said once, by the upgrade
    assert_append_only("history")  # (job_history is empty: a trigger fires per row)
    assert applied_migrations() == migration_names()
    assert ledger_rows("history") == [
        {key: row[key] for key in ("id", "batch", "at", "action", "detail", "log_file")}
        for row in history
    ]
    assert [
        {key: row[key] for key in ("source", "source_id", "owner", "action", "detail", "log_file")}
        for row in ledger_rows("orphan_history")
    ] == [
        {
            "source": "history",
            "source_id": len(history) + 1,
            "owner": 6,
            "action": "submitted",
            "detail": "a batch deleted by hand",
            "log_file": "logs/a.log",
        },
        {
            "source": "history",
            "source_id": len(history) + 2,
            "owner": 99,
            "action": "retrieved",
            "detail": "another one",
            "log_file": None,
        },
    ]

    # The next batch is given id 6: its history is its own.
    write_jsonl(isolated / "new.jsonl", 7)
    created = cli("create", "--in", "new.jsonl")
    shown = cli("show", created.field("batch_id"))

    assert created.code == 0 and shown.code == 0, created.err + shown.err
    assert ledger_rows()[-1]["id"] == 6
    assert "deleted by hand" not in shown.out
    assert all(row["detail"] != "a batch deleted by hand" for row in ledger_rows("history"))


def test_job_history_of_a_job_deleted_by_hand_is_set_aside_too(cli, isolated: Path):
    shutil.copy(FIXTURE_M009, os.environ["BATCHLEDGER_DB"])
    edit_by_hand(
        "INSERT INTO job_history (job, at, action) VALUES (7, '2026-01-02T03:04:05Z', 'split')",
        "INSERT INTO history (batch, at, action) VALUES (3, '2026-01-02T03:04:06Z', 'submitted')",
    )

    listed = cli("list", "--all", "--json")

    assert listed.code == 0, listed.err
    warning = f"batchledger: warning: ledger {os.environ['BATCHLEDGER_DB']}: "
    assert listed.err.splitlines() == [
        f"{warning}1 history row of a batch not in the ledger (batch id 3) was set aside, as it "
        "was, in its table orphan_history",
        f"{warning}1 job_history row of a job not in the ledger (job id 7) was set aside, as it "
        "was, in its table orphan_history",
    ]
    assert [(row["source"], row["owner"]) for row in ledger_rows("orphan_history")] == [
        ("history", 3),
        ("job_history", 7),
    ]
    assert len(ledger_rows("job_history")) == len(released("job_history", FIXTURE_M009))
    assert_append_only("history", "job_history")


def test_a_history_whose_append_only_trigger_was_dropped_by_hand_still_upgrades(
    cli, isolated: Path
):
    shutil.copy(FIXTURE_M009, os.environ["BATCHLEDGER_DB"])
    edit_by_hand(
        "DROP TRIGGER history_append_only_delete",
        "INSERT INTO history (batch, at, action) VALUES (3, '2026-01-02T03:04:06Z', 'submitted')",
    )

    listed = cli("list", "--all")

    assert listed.code == 0, listed.err
    assert "1 history row of a batch not in the ledger (batch id 3) was set aside" in listed.err
    assert [row["owner"] for row in ledger_rows("orphan_history")] == [3]


def test_a_ledger_whose_rows_point_at_a_job_deleted_by_hand_is_left_as_it_was(cli, isolated: Path):
    shutil.copy(FIXTURE_M009, os.environ["BATCHLEDGER_DB"])
    edit_by_hand("DELETE FROM jobs WHERE id = 1")  # its parts and its history stay behind
    before = dump()

    for _ in range(2):  # and again: nothing was half done
        listed = cli("list", "--all")

        assert listed.code == 1 and listed.out == ""
        assert listed.err == (
            f"batchledger: error: ledger {os.environ['BATCHLEDGER_DB']} cannot be upgraded: "
            "2 rows point at rows not in it (parts 1: job 1 is not in jobs; parts 2: job 1 is "
            "not in jobs); its rows and schema (m009_actual_costs_and_part_tokens) are left as "
            "they were: put those rows back or delete the ones that point at them (sqlite3), "
            "then run again\n"
        )
        assert dump() == before
    assert applied_migrations()[-1] == "m009_actual_costs_and_part_tokens"


# The last release's (m001-m011), made by make_ledger_m011.py: a plain OpenAI batch, an
# Anthropic batch with its result counts, a job merged from two parts; prices kept.
FIXTURE_M011 = Path(__file__).parent / "fixtures" / "ledger_m011.db"


def test_a_ledger_of_the_last_release_upgrades_to_m012_with_nothing_set_aside(cli, isolated: Path):
    shutil.copy(FIXTURE_M011, os.environ["BATCHLEDGER_DB"])
    tables = ("batches", "jobs", "parts", "history", "job_history")
    before = {table: released(table, FIXTURE_M011) for table in tables}
    plain, anthropic, *attempts = before["batches"]
    assert (plain["estimated_from"], anthropic["account"]) == ("bytes", "claude")
    assert len(attempts) == 2 and before["jobs"][0]["status"] == "done"

    listed = cli("list", "--all", "--parts", "--json")
    shown = cli("show", str(anthropic["batch_id"]))

    assert listed.code == 0 and shown.code == 0, listed.err + shown.err
    assert listed.err == "" and shown.err == ""
    assert applied_migrations() == migration_names()
    assert applied_migrations()[-1] == "m012_orphan_history"
    for table, rows in before.items():
        assert ledger_rows(table) == rows  # every value kept as it was
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    quotes = conn.execute("SELECT * FROM price_quotes ORDER BY model").fetchall()
    conn.close()
    assert [quote[0] for quote in quotes] == ["claude-haiku-4-5", "gpt-4o-mini"]
    assert ledger_rows("orphan_history") == []
    assert "results: 0 processing, 3 succeeded, 1 errored, 0 canceled, 0 expired" in shown.out


def test_the_python_api_keeps_what_an_upgrade_set_aside_in_notes_and_prints_nothing(
    isolated: Path, capsys: pytest.CaptureFixture[str]
):
    import batchledger as bl

    shutil.copy(FIXTURE_V0_1_0, os.environ["BATCHLEDGER_DB"])
    edit_by_hand("INSERT INTO history (batch, at, action) VALUES (42, '2026-01-02', 'submitted')")

    with bl.open() as ledger:
        before = ledger.notes
        listed = ledger.list()
        notes = ledger.notes

    assert before == [] and len(listed) == 3  # the three with a batch (two creates made none)
    assert notes == [
        f"ledger {os.environ['BATCHLEDGER_DB']}: 1 history row of a batch not in the ledger "
        "(batch id 42) was set aside, as it was, in its table orphan_history"
    ]
    assert capsys.readouterr() == ("", "")
    assert [row["owner"] for row in ledger_rows("orphan_history")] == [42]
