"""The ledger's file opened: created private, locked with a timeout, migrated."""

import contextlib
import math
import os
import sqlite3
from pathlib import Path

from batchledger._db import Database
from batchledger.errors import BatchledgerError, UsageError
from batchledger.ledger.store import describe_sqlite_error
from batchledger.migrations import migration_names, migrations

LOCK_TIMEOUT_ENV = "BATCHLEDGER_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_SECONDS = 15.0
MAX_LOCK_TIMEOUT_SECONDS = 86400  # a day; SQLite's busy timeout is a 32-bit count of ms


def connect(path: Path, *, create: bool = True) -> Database | None:
    """Open the ledger's SQLite file at `path`, migrating it; None if it does not exist
    and not `create`."""
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
            _migrate(db)
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


def _migrate(db: Database) -> None:
    """Apply pending migrations, one run at a time: two runs may open a new ledger at once.

    Foreign keys are off meanwhile (they cannot change inside a transaction), so that a
    migration may rebuild a table others point at; it checks them itself.
    """
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("BEGIN IMMEDIATE")
    try:
        if migrations.pending(db):  # the other run may have applied them meanwhile
            migrations.apply(db)
        db.commit()
    except BaseException:
        db.rollback()
        raise


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
