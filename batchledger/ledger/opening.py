"""The ledger's file opened: created private, locked with a timeout, migrated.

An upgrade (the migrations a ledger has not had yet) runs in one transaction and ends
with its foreign keys checked. The history rows of a batch or job that is not in the
ledger (deleted by hand, with foreign keys off as the sqlite3 shell has them) are set
aside in `orphan_history` and reported; any other row that points at a missing one
stops the upgrade with the ledger left as it was (README, "Upgrading a ledger").
"""

import contextlib
import math
import os
import sqlite3
from pathlib import Path
from typing import Any

from batchledger._db import Database
from batchledger.errors import BatchledgerError, UsageError
from batchledger.ledger.store import describe_sqlite_error
from batchledger.migrations import migration_names, migrations
from batchledger.times import utc_now

LOCK_TIMEOUT_ENV = "BATCHLEDGER_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_SECONDS = 15.0
MAX_LOCK_TIMEOUT_SECONDS = 86400  # a day; SQLite's busy timeout is a 32-bit count of ms


# The append-only histories, the column that names their owner, and the owner's table.
HISTORIES = (("history", "batch", "batches"), ("job_history", "job", "jobs"))
# Ids named in a message at most; the rest are counted.
NAMED_IDS = 5


def connect(path: Path, *, create: bool = True, notes: list[str] | None = None) -> Database | None:
    """Open the ledger's SQLite file at `path`, migrating it; None if it does not exist
    and not `create`. What an upgrade did that the user should know is added to `notes`."""
    if not create and not path.exists():
        return None
    if path.is_dir():
        raise BatchledgerError(f"ledger {path} is a directory, not a SQLite file")
    timeout = lock_timeout()
    try:
        _make_private(path)
        conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise BatchledgerError(f"cannot open ledger {path}: {exc}") from exc
    try:
        db = Database(conn, execute_plugins=False)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        _refuse_newer_schema(db, path)
        if migrations.pending(db):
            said = _migrate(db, path)
            if notes is not None:
                notes.extend(said)
        conn.execute("PRAGMA foreign_keys = ON")
    except BatchledgerError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise BatchledgerError(describe_sqlite_error(path, exc)) from exc
    return db


def _make_private(path: Path) -> None:
    """Create the ledger (and the folder made for it) readable by its owner only.

    It holds paths, errors and what was sent, as gh and ssh keep their files. SQLite
    gives the -wal and -shm files beside it the same mode.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _migrate(db: Database, path: Path) -> list[str]:
    """Apply pending migrations, one run at a time: two runs may open a new ledger at once.

    Foreign keys are off meanwhile (they cannot change inside a transaction), so that a
    migration may rebuild a table others point at; they are checked at the end, before the
    upgrade is committed. What was set aside is returned, a line each.
    """
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("BEGIN IMMEDIATE")
    notes: list[str] = []
    try:
        if migrations.pending(db):  # the other run may have applied them meanwhile
            applied = [migration.name for migration in migrations.applied(db)]
            migrations.apply(db)
            notes = _set_aside_orphan_history(db)
            _check_foreign_keys(db, path, applied[-1] if applied else None)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return notes


def _set_aside_orphan_history(db: Database) -> list[str]:
    """Move the history rows whose batch (job) is not in the ledger to `orphan_history`.

    They are kept as they were, in their order. Left where they are, they would be shown
    as the history of the next batch (job) given their owner's id.
    """
    notes = []
    for table, owner, parent in HISTORIES:
        orphan = f"{owner} NOT IN (SELECT id FROM {parent})"
        owners = [
            row[0]
            for row in db.execute(
                f"SELECT DISTINCT {owner} FROM {table} WHERE {orphan} ORDER BY {owner}"
            )
        ]
        if not owners:
            continue
        moved = db.execute(
            "INSERT INTO orphan_history "
            "(source, source_id, owner, at, action, detail, log_file, set_aside_at) "
            f"SELECT ?, id, {owner}, at, action, detail, log_file, ? FROM {table} "
            f"WHERE {orphan} ORDER BY id",
            (table, utc_now()),
        ).rowcount
        # The table refuses deletes (it is append-only) but for this move: its trigger is
        # dropped and made again, as it was, inside the upgrade's transaction (one dropped
        # by hand is left dropped).
        trigger = f"{table}_append_only_delete"
        made = db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (trigger,)
        ).fetchone()
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        db.execute(f"DELETE FROM {table} WHERE {orphan}")
        if made is not None:
            db.execute(made[0])
        if moved == 1:
            rows = f"1 {table} row of a {owner} not in the ledger ({owner} id {owners[0]})"
            kept = "was set aside, as it was"
        else:
            plural = "batches" if owner == "batch" else f"{owner}s"
            rows = (
                f"{moved} {table} rows of {plural} not in the ledger ({owner} ids {_some(owners)})"
            )
            kept = "were set aside, as they were"
        notes.append(f"{rows} {kept}, in its table orphan_history")
    return notes


def _check_foreign_keys(db: Database, path: Path, was: str | None) -> None:
    """Refuse an upgrade that would leave a row pointing at one that is not there."""
    missing = db.execute("PRAGMA foreign_key_check").fetchall()  # (table, rowid, parent, fk)
    if not missing:
        return
    rows = []
    for table, rowid, parent, key in missing[:NAMED_IDS]:
        # foreign_key_list: (id, seq, parent, column, parent column, ...) of each key
        column = next(
            row[3] for row in db.execute(f"PRAGMA foreign_key_list({table})") if row[0] == key
        )
        (value,) = db.execute(f"SELECT {column} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
        rows.append(f"{table} {rowid}: {column} {value} is not in {parent}")
    more = f" and {len(missing) - NAMED_IDS} more" if len(missing) > NAMED_IDS else ""
    noun = "row points" if len(missing) == 1 else "rows point"
    raise BatchledgerError(
        f"ledger {path} cannot be upgraded: {len(missing)} {noun} at rows not in it "
        f"({'; '.join(rows)}{more}); its rows and schema ({was or 'none'}) are left as they "
        "were: put those rows back or delete the ones that point at them (sqlite3), then "
        "run again"
    )


def _some(items: list[Any]) -> str:
    shown = ", ".join(str(item) for item in items[:NAMED_IDS])
    return shown if len(items) <= NAMED_IDS else f"{shown} and {len(items) - NAMED_IDS} more"


def lock_timeout() -> float:
    """Seconds to wait for a ledger that another run is writing to."""
    text = os.environ.get(LOCK_TIMEOUT_ENV)
    if not text:
        return DEFAULT_LOCK_TIMEOUT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_LOCK_TIMEOUT_SECONDS:  # also false for nan
        raise UsageError(
            f"{LOCK_TIMEOUT_ENV} must be a number of seconds from 0 to "
            f"{MAX_LOCK_TIMEOUT_SECONDS}, not {text!r}"
        )
    return seconds


def _refuse_newer_schema(db: Database, path: Path) -> None:
    known = set(migration_names())
    unknown = [m.name for m in migrations.applied(db) if m.name not in known]
    if unknown:
        raise BatchledgerError(
            f"ledger {path} was written by a newer batchledger (schema {unknown[-1]}); "
            "upgrade batchledger to use it"
        )
