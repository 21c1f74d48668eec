"""The ledger: a SQLite file of every batch, opened (and migrated) only here.

It stores what it is given; it does not parse what a user typed (resolve.py does).
"""

import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from batchledger.batches import (
    FINAL_STATUSES,
    REJECTED,
    RESUBMITTABLE_STATUSES,
    SAVABLE_STATUSES,
    Row,
    fields_from_batch,
    ref_of,
)
from batchledger.claims import claimed_by_another_run, this_run
from batchledger.errors import BatchledgerError, Refused, UsageError
from batchledger.times import utc_now
from migrations import migrations

# When a batch was made: the API's created_at, or when the ledger first saw it. Indexed.
MADE_AT = "coalesce(created_at, recorded_at)"
LOCK_TIMEOUT_ENV = "BATCHLEDGER_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class InputFile:
    """What the ledger records about a JSONL input."""

    path: Path
    size: int
    sha256: str


def open_ledger(path: Path, *, create: bool = True) -> "Ledger | None":
    """Open the ledger at `path`, migrating it; None if it does not exist and not `create`."""
    if not create and not path.exists():
        return None
    if path.is_dir():
        raise BatchledgerError(f"ledger {path} is a directory, not a SQLite file")
    timeout = lock_timeout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise BatchledgerError(f"cannot open ledger {path}: {exc}") from exc
    try:
        db = Database(conn, execute_plugins=False)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _refuse_newer_schema(db, path)
        if migrations.pending(db):
            _migrate(db)
    except BatchledgerError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise BatchledgerError(_describe_sqlite_error(path, exc)) from exc
    return Ledger(db, path)


def _migrate(db: Database) -> None:
    """Apply pending migrations, one run at a time: two runs may open a new ledger at once."""
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
    try:
        return float(text) if text else DEFAULT_LOCK_TIMEOUT_SECONDS
    except ValueError:
        raise UsageError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds, not {text!r}") from None


def _refuse_newer_schema(db: Database, path: Path) -> None:
    known = {migration.fn.__name__ for migration in migrations._migrations}
    unknown = [m.name for m in migrations.applied(db) if m.name not in known]
    if unknown:
        raise BatchledgerError(
            f"ledger {path} was written by a newer batchledger (schema {unknown[-1]}); "
            "upgrade batchledger to use it"
        )


def _describe_sqlite_error(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"ledger {path} is locked by another process; try again when it finishes"
    if "readonly" in text or "read-only" in text:
        return f"ledger {path} is read-only; check its permissions"
    if "not a database" in text or "malformed" in text:
        return f"ledger {path} is not a readable SQLite ledger ({text}); it was left untouched"
    return f"ledger {path} is unusable: {text}"


class Ledger:
    """Reads and writes batches and their history. Safe to share between threads."""

    def __init__(self, db: Database, path: Path) -> None:
        self.db = db
        self.path = path
        # The log file of this run, named in every history row it writes.
        self.log_file: Path | None = None
        self._lock = threading.RLock()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction; a SQLite failure in it becomes a one-line error."""
        # BEGIN IMMEDIATE takes the write lock up front, so two processes never both
        # read-then-upgrade and deadlock; the busy timeout makes the loser wait.
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self.db.commit()
                except BaseException:
                    self.db.rollback()
                    raise
            except sqlite3.Error as exc:
                raise BatchledgerError(_describe_sqlite_error(self.path, exc)) from exc

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        with self._lock:
            try:
                return list(self.db.query(sql, params))
            except sqlite3.Error as exc:
                raise BatchledgerError(_describe_sqlite_error(self.path, exc)) from exc

    def _history(self, row_id: int, action: str, detail: str) -> None:
        # Plain SQL: sqlite-utils' insert reads the table's schema first, on every call.
        self.db.conn.execute(
            "INSERT INTO history (batch, at, action, detail, log_file) VALUES (?, ?, ?, ?, ?)",
            (
                row_id,
                utc_now(),
                action,
                detail,
                # Absolute: the ledger is shared by runs from any working directory.
                str(self.log_file.absolute()) if self.log_file else None,
            ),
        )

    def _update(self, row_id: int, fields: Mapping[str, Any]) -> None:
        """Set `fields` of a batch row in one UPDATE (sqlite-utils' reads row and schema first)."""
        columns = ", ".join(f"[{name}] = ?" for name in fields)
        cursor = self.db.conn.execute(
            f"UPDATE batches SET {columns} WHERE id = ?", (*fields.values(), row_id)
        )
        if cursor.rowcount != 1:
            raise BatchledgerError(f"ledger row {row_id} vanished")

    # --- writes -------------------------------------------------------------------

    def claim_submission(
        self,
        input_: InputFile,
        endpoint: str,
        window: str,
        *,
        force: bool,
    ) -> tuple[Row, bool]:
        """Start (or resume) the submission of `input_`; the row and whether it resumed.

        One transaction decides it, so two runs cannot both start the same input: an
        input already sent is refused (unless `force`), and a submission another live run
        is making is refused too. A create cut off earlier is resumed from its row.
        """
        with self._writing():
            duplicate = self.find_active_duplicate(input_, endpoint, window)
            if duplicate is not None and not force:
                raise Refused(
                    f"{input_.path.name} was already submitted as {duplicate['batch_id']} "
                    f"(status {duplicate['status']}, same content, endpoint and window); "
                    "use --force to submit it again"
                )
            row = self.find_unfinished_submission(input_, endpoint, window)
            if row is not None and claimed_by_another_run(row):
                raise Refused(
                    f"{input_.path.name} is being submitted by another run "
                    f"({row['claimed_by']}, since {row['claimed_at']}); wait for it to finish"
                )
            claim = {"claimed_by": this_run(), "claimed_at": utc_now()}
            if row is not None:
                self.db.table("batches").update(row["id"], claim)
                self._history(row["id"], "resume", "resuming an interrupted create")
                return self.get_row(row["id"]), True
            row_id = (
                self.db.table("batches")
                .insert(
                    {
                        "ref": f"bl_{uuid.uuid4().hex}",
                        "origin": "create",
                        "input_path": str(input_.path),
                        "input_bytes": input_.size,
                        "input_sha256": input_.sha256,
                        "endpoint": endpoint,
                        "completion_window": window,
                        "recorded_at": utc_now(),
                        **claim,
                    }
                )
                .last_pk
            )
            assert isinstance(row_id, int)
            self._history(row_id, "submit", f"input {input_.path}")
            return self.get_row(row_id), False

    def release_claim(self, row_id: int) -> None:
        with self._writing():
            self.db.table("batches").update(row_id, {"claimed_by": None, "claimed_at": None})

    def mark_results_gone(self, row_id: int, reason: str) -> None:
        """The API says a result file does not exist (any more): sweeps stop asking."""
        with self._writing():
            self.db.table("batches").update(row_id, {"results_gone_at": utc_now()})
            self._history(row_id, "results_gone", reason)

    def mark_rejected(self, row_id: int, reason: str) -> None:
        """The API refused to create the batch: the row will not be resumed."""
        with self._writing():
            self.db.table("batches").update(row_id, {"status": REJECTED})
            self._history(row_id, "rejected", reason)

    def record_upload(self, row_id: int, file_id: str) -> None:
        with self._writing():
            self.db.table("batches").update(row_id, {"input_file_id": file_id})
            self._history(row_id, "upload", f"uploaded as {file_id}")

    def record_batch(
        self,
        batch: Mapping[str, Any],
        *,
        action: str,
        row_id: int | None,
        origin: str = "lookup",
    ) -> Row:
        """Store what the API says of a batch; adds a row (from `origin`) if it is new."""
        fields = fields_from_batch(batch)
        existing: Row | None = None
        with self._writing():
            if row_id is None:
                existing = self.row_of(batch)
                row_id = existing["id"] if existing else None
            if row_id is None:
                row_id = self._insert_foreign(batch, fields, origin)
            else:
                self._update(row_id, fields)
            self._history(row_id, action, f"status {batch['status']}")
        if existing is not None and _stored_as_given(fields):
            # Read inside the transaction: the row as it is now, without reading it again.
            return {**existing, **fields}
        return self.get_row(row_id)

    def _insert_foreign(self, batch: Mapping[str, Any], fields: Row, origin: str) -> int:
        """Add a batch this ledger did not create."""
        row_id = (
            self.db.table("batches")
            .insert(
                {
                    "ref": f"bl_{uuid.uuid4().hex}",
                    "origin": origin,
                    "input_file_id": batch.get("input_file_id"),
                    "endpoint": batch.get("endpoint") or "",
                    "completion_window": batch.get("completion_window") or "",
                    "recorded_at": utc_now(),
                    **fields,
                }
            )
            .last_pk
        )
        assert isinstance(row_id, int)
        return row_id

    def record_download(self, row_id: int, kind: str, path: Path, size: int, sha256: str) -> None:
        """Note that the batch's `kind` file ("output" or "error") is saved at `path`."""
        with self._writing():
            self.db.table("batches").update(
                row_id,
                {
                    f"{kind}_path": str(path),
                    f"{kind}_bytes": size,
                    f"{kind}_sha256": sha256,
                    f"{kind}_saved_at": utc_now(),
                },
            )
            self._history(row_id, f"save_{kind}", f"saved {size} bytes to {path}")

    def record_event(self, row_id: int, action: str, detail: str) -> None:
        with self._writing():
            self._history(row_id, action, detail)

    # --- reads --------------------------------------------------------------------

    def get_row(self, row_id: int) -> Row:
        rows = self._rows("SELECT * FROM batches WHERE id = ?", (row_id,))
        if not rows:
            raise BatchledgerError(f"ledger row {row_id} vanished")
        return rows[0]

    def find_batch(self, batch_id: str) -> Row | None:
        rows = self._rows("SELECT * FROM batches WHERE batch_id = ?", (batch_id,))
        return rows[0] if rows else None

    def batches_with_prefix(self, prefix: str, limit: int = 10) -> list[Row]:
        """Batches whose id starts with `prefix`, with or without the `batch_` part."""
        with_part = f"batch_{prefix}"
        return self._rows(
            "SELECT * FROM batches WHERE substr(batch_id, 1, ?) = ? "
            "OR substr(batch_id, 1, ?) = ? ORDER BY id DESC LIMIT ?",
            (len(prefix), prefix, len(with_part), with_part, limit),
        )

    def row_of(self, batch: Mapping[str, Any]) -> Row | None:
        """The ledger's row of an API batch: by its id, or by the ref a create tagged it with.

        A create cut off before it learned its batch id left a row with the ref only; the
        batch must land in that row, not in a second one.
        """
        row = self.find_batch(str(batch["id"]))
        ref = ref_of(batch)
        if row is None and ref:
            by_ref = self.find_by_ref(ref)
            if by_ref is not None and by_ref["batch_id"] is None:
                row = by_ref
        return row

    def find_by_ref(self, ref: str) -> Row | None:
        rows = self._rows("SELECT * FROM batches WHERE ref = ?", (ref,))
        return rows[0] if rows else None

    def latest_batch(self) -> Row | None:
        """The batch most recently added to the ledger."""
        rows = self._rows(
            "SELECT * FROM batches WHERE batch_id IS NOT NULL ORDER BY id DESC LIMIT 1"
        )
        return rows[0] if rows else None

    def find_active_duplicate(self, input_: InputFile, endpoint: str, window: str) -> Row | None:
        """A batch already sent with the same input bytes and parameters that still counts."""
        rows = self._rows(
            "SELECT * FROM batches WHERE input_sha256 = ? AND endpoint = ? "
            "AND completion_window = ? AND batch_id IS NOT NULL "
            f"AND coalesce(status, '') NOT IN ({_placeholders(RESUBMITTABLE_STATUSES)}) "
            "ORDER BY id DESC LIMIT 1",
            (input_.sha256, endpoint, window, *sorted(RESUBMITTABLE_STATUSES)),
        )
        return rows[0] if rows else None

    def find_unfinished_submission(
        self, input_: InputFile, endpoint: str, window: str
    ) -> Row | None:
        """A create of the same input that stopped before it knew its batch id."""
        rows = self._rows(
            "SELECT * FROM batches WHERE input_sha256 = ? AND endpoint = ? "
            "AND completion_window = ? AND batch_id IS NULL AND origin = 'create' "
            "AND status IS NULL ORDER BY id DESC LIMIT 1",
            (input_.sha256, endpoint, window),
        )
        return rows[0] if rows else None

    def unfinished_submissions(self) -> list[Row]:
        """Creates cut off after the upload: their batch may exist on the server."""
        return self._rows(
            "SELECT * FROM batches WHERE batch_id IS NULL AND input_file_id IS NOT NULL "
            "AND origin = 'create' AND status IS NULL ORDER BY id"
        )

    def batches_to_sweep(self) -> list[Row]:
        """Batches not yet final, and finished ones whose result files are not saved yet."""
        return self._rows(
            "SELECT * FROM batches WHERE batch_id IS NOT NULL AND results_gone_at IS NULL AND ("
            f"coalesce(status, '') NOT IN ({_placeholders(FINAL_STATUSES)}) "
            f"OR (status IN ({_placeholders(SAVABLE_STATUSES)}) AND ("
            "(output_file_id IS NOT NULL AND output_path IS NULL) "
            "OR (error_file_id IS NOT NULL AND error_path IS NULL)))"
            ") ORDER BY id",
            (*sorted(FINAL_STATUSES), *sorted(SAVABLE_STATUSES)),
        )

    def list_batches(self, filters: "BatchFilter", limit: int | None) -> list[Row]:
        """Newest first; `limit` None means all."""
        where, params = filters.sql()
        sql = f"SELECT * FROM batches {where} ORDER BY {MADE_AT} DESC, id DESC"
        if limit is not None:
            return self._rows(sql + " LIMIT ?", (*params, limit))
        return self._rows(sql, params)

    def count_batches(self, filters: "BatchFilter") -> int:
        where, params = filters.sql()
        rows = self._rows(f"SELECT count(*) AS n FROM batches {where}", params)
        return int(rows[0]["n"])

    def history(self, row_id: int) -> list[Row]:
        return self._rows("SELECT * FROM history WHERE batch = ? ORDER BY id", (row_id,))


@dataclass(frozen=True)
class BatchFilter:
    """Which ledger batches a listing shows."""

    statuses: tuple[str, ...] = ()
    since: str | None = None  # ISO 8601 UTC, compared with when the batch was made
    endpoint: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.statuses or self.since or self.endpoint)

    def sql(self) -> tuple[str, tuple[Any, ...]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.statuses:
            clauses.append(f"status IN ({', '.join('?' for _ in self.statuses)})")
            params += self.statuses
        if self.since:
            clauses.append(f"{MADE_AT} >= ?")
            params.append(self.since)
        if self.endpoint:
            clauses.append("endpoint = ?")
            params.append(self.endpoint)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


# The columns of fields_from_batch that SQLite stores as INTEGER; the others are TEXT.
_INTEGER_FIELDS = frozenset({"requests_total", "requests_completed", "requests_failed"})


def _stored_as_given(fields: Mapping[str, Any]) -> bool:
    """SQLite gives these values back as they are: no column's type converts them."""
    return all(
        value is None or type(value) is (int if name in _INTEGER_FIELDS else str)
        for name, value in fields.items()
    )


def _placeholders(values: frozenset[str]) -> str:
    """`?, ?, ?`: one SQL parameter per value."""
    return ", ".join("?" for _ in values)
