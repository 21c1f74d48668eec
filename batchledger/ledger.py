"""The ledger: a SQLite file of every batch, opened (and migrated) only here.

It stores what it is given; it does not parse what a user typed (resolve.py does).
"""

import contextlib
import json
import math
import os
import sqlite3
import threading
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchledger._db import Database
from batchledger.batches import (
    ABANDONED,
    FINAL_STATUSES,
    JOB_CANCELLED,
    JOB_INPUT_CHANGED,
    JOB_RUNNING,
    PART_CANCELLED,
    PART_QUEUED,
    PART_SENT,
    REJECTED,
    RESUBMITTABLE_STATUSES,
    SAVABLE_STATUSES,
    Row,
    attempt_is_open,
    fields_from_batch,
    ref_of,
)
from batchledger.claims import claimed_by_another_run, new_claim
from batchledger.details import CreateDetails
from batchledger.errors import BatchledgerError, Refused, UsageError
from batchledger.migrations import migration_names, migrations
from batchledger.times import utc_now

# When a batch was made: the API's created_at, or when the ledger first saw it. Indexed.
MADE_AT = "coalesce(created_at, recorded_at)"
LOCK_TIMEOUT_ENV = "BATCHLEDGER_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_SECONDS = 15.0
MAX_LOCK_TIMEOUT_SECONDS = 86400  # a day; SQLite's busy timeout is a 32-bit count of ms


@dataclass(frozen=True)
class InputFile:
    """What the ledger records about a JSONL input."""

    path: Path
    size: int
    sha256: str
    lines: int = 0  # requests: lines, counted without parsing them


def open_ledger(path: Path, *, create: bool = True) -> "Ledger | None":
    """Open the ledger at `path`, migrating it; None if it does not exist and not `create`."""
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
        raise BatchledgerError(_describe_sqlite_error(path, exc)) from exc
    return Ledger(db, path)


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
        """Close the connection once no thread is using it: a sweep stopped by Ctrl-C may
        still be writing from its workers, and closing a connection another thread is
        inside crashes the sqlite3 module (SIGSEGV, tests/test_ledger_write.py). Their
        next use raises an error instead."""
        with self._lock:
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
        account: str,
        base_url: str,
        force: bool,
        details: CreateDetails | None = None,
    ) -> tuple[Row, bool]:
        """Start (or resume) the submission of `input_`; the row and whether it resumed.

        One transaction decides it, so two runs cannot both start the same input: an
        input already sent on the account is refused (unless `force`), and a submission
        another run holds a claim on is refused too. A create cut off earlier is resumed
        from its row.
        """
        with self._writing():
            if not force:
                self._refuse_duplicates(input_, endpoint, window, account, base_url)
            row = self.find_unfinished_submission(input_, endpoint, window, account, base_url)
            _refuse_if_held(input_, row)
            asked = _details_fields(details or CreateDetails())
            if row is not None:
                self.db.table("batches").update(
                    row["id"], {**new_claim(), "status": None, "base_url": base_url, **asked}
                )
                self._history(row["id"], "resume", "resuming an interrupted create")
                return self.get_row(row["id"]), True
            row_id = (
                self.db.table("batches")
                .insert(
                    {
                        "ref": f"bl_{uuid.uuid4().hex}",
                        **_input_fields(input_, endpoint, window, account, base_url),
                        "origin": "create",
                        "recorded_at": utc_now(),
                        **asked,
                        **new_claim(),
                    }
                )
                .last_pk
            )
            assert isinstance(row_id, int)
            self._history(row_id, "submit", f"input {input_.path}")
            return self.get_row(row_id), False

    # --- jobs: one input in many parts ------------------------------------------------

    def claim_job(
        self,
        input_: InputFile,
        endpoint: str,
        window: str,
        *,
        account: str,
        base_url: str,
        limits: tuple[int, int],
        max_in_flight: int | None,
        parts: Sequence[tuple[int, int, int, list[tuple[int, int]] | None]],
        details: CreateDetails,
        force: bool,
        retry_of: str | None = None,
    ) -> tuple[Row, bool]:
        """Start (or resume) the job of `input_`: its row and whether it resumed.

        `parts` are (start byte, end byte, requests, and for a retry the byte ranges of its
        lines). `retry_of`: the batch or job whose lines this job sends again; a retry is
        never taken for a duplicate of what it retries. One transaction decides, as for one
        batch: an input already sent (as a job or a batch) is refused unless `force`; a job
        of it that is not wholly sent yet is resumed, unless another run holds it.
        """
        with self._writing():
            if not (force or retry_of):
                self._refuse_duplicates(input_, endpoint, window, account, base_url)
            job = self.find_unsent_job(input_, endpoint, window, account, base_url, limits)
            _refuse_if_held(input_, job)
            if job is not None:
                self.db.table("jobs").update(job["id"], new_claim())
                self._job_history(job["id"], "resume", "resuming the submission of its parts")
                return self.get_job(job["id"]), True
            job_row_id = (
                self.db.table("jobs")
                .insert(
                    {
                        "job_id": f"job_{uuid.uuid4().hex[:24]}",
                        **_input_fields(input_, endpoint, window, account, base_url),
                        "input_requests": input_.lines,
                        "max_requests": limits[0],
                        "max_bytes": limits[1],
                        "max_in_flight": max_in_flight,
                        **_details_fields(details),
                        "status": JOB_RUNNING,
                        "recorded_at": utc_now(),
                        "retry_of": retry_of,
                        **new_claim(),
                    }
                )
                .last_pk
            )
            assert isinstance(job_row_id, int)
            self.db.table("parts").insert_all(
                {
                    "job": job_row_id,
                    "part_index": index,
                    "start_byte": start,
                    "end_byte": end,
                    "ranges": json.dumps(ranges) if ranges is not None else None,
                    "requests": requests,
                    "ref": f"bl_{uuid.uuid4().hex}",
                    "state": PART_QUEUED,
                }
                for index, (start, end, requests, ranges) in enumerate(parts, start=1)
            )
            self._job_history(job_row_id, "split", f"{len(parts)} parts of {input_.path}")
            return self.get_job(job_row_id), False

    def record_part_tokens(
        self, job_row_id: int, planned: Sequence[tuple[int, int, int, Mapping[str, int]]]
    ) -> None:
        """Each part's counted input tokens per model (issue 22), where the job's part has
        the planned bytes and none recorded yet (a resumed job keeps what it has).

        `planned`: (part index, start byte, end byte, tokens per model) of each part."""
        with self._writing():
            for index, start, end, tokens in planned:
                self.db.conn.execute(
                    "UPDATE parts SET input_tokens = ? WHERE job = ? AND part_index = ? "
                    "AND start_byte = ? AND end_byte = ? AND input_tokens IS NULL",
                    (json.dumps(tokens, sort_keys=True), job_row_id, index, start, end),
                )

    def release_job_claim(self, job_row_id: int) -> None:
        with self._writing():
            self.db.table("jobs").update(
                job_row_id, {"claimed_by": None, "claimed_at": None, "claim_expires_at": None}
            )

    def mark_upload_started(self, part_id: int) -> None:
        with self._writing():
            self.db.table("parts").update(part_id, {"upload_started_at": utc_now()})

    def record_part_upload(self, part_id: int, file_id: str, created_at: int | None) -> None:
        with self._writing():
            self.db.table("parts").update(
                part_id, {"input_file_id": file_id, "input_file_created_at": created_at}
            )

    def start_attempt(self, part: Row, job: Row, details: CreateDetails) -> Row | None:
        """A new batch row for the next attempt of `part`, claimed by this run; None if the
        part has an attempt that is live, or being made by another run."""
        with self._writing():
            last = self.last_attempt(part["id"])
            if last is not None and attempt_is_open(last):
                return None
            row_id = (
                self.db.table("batches")
                .insert(
                    {
                        "ref": f"bl_{uuid.uuid4().hex}",
                        "account": job["account"],
                        "base_url": job["base_url"],
                        "origin": "create",
                        "part": part["id"],
                        "input_path": job["input_path"],
                        "input_bytes": part["end_byte"] - part["start_byte"],
                        "input_file_id": part["input_file_id"],
                        "endpoint": job["endpoint"],
                        "completion_window": job["completion_window"],
                        "metadata": json.dumps(details.metadata, sort_keys=True)
                        if details.metadata
                        else None,
                        "output_expires_after": details.output_expires_after,
                        "recorded_at": utc_now(),
                        **new_claim(),
                    }
                )
                .last_pk
            )
            assert isinstance(row_id, int)
            self.db.table("parts").update(part["id"], {"state": PART_SENT})
            self._history(row_id, "submit", f"part {part['part_index']} of {job['job_id']}")
            return self.get_row(row_id)

    def requeue_part(self, part_id: int, not_before: str, reason: str) -> None:
        """Back to the queue (the enqueued-token limit): sent again after `not_before`, or
        once another batch of the account has finished."""
        with self._writing():
            self.db.execute(
                "UPDATE parts SET state = ?, requeues = requeues + 1, requeued_at = ?, "
                "not_before = ? WHERE id = ?",
                (PART_QUEUED, utc_now(), not_before, part_id),
            )
            job = self._rows("SELECT job FROM parts WHERE id = ?", (part_id,))[0]["job"]
            self._job_history(job, "requeue", reason)

    def reset_part(self, part_id: int) -> None:
        """Back to the queue: its last attempt made no batch (a create cut off, abandoned)."""
        with self._writing():
            self.db.table("parts").update(part_id, {"state": PART_QUEUED})

    def batch_finished_since(self, account: str, since: str) -> bool:
        """A batch of the account was seen ending well (or early) at or after `since`."""
        rows = self._rows(
            "SELECT 1 FROM batches WHERE account = ? AND status IN ('completed', 'expired', "
            "'cancelled') AND checked_at >= ? LIMIT 1",
            (account, since),
        )
        return bool(rows)

    def cancel_queued_parts(self, job_row_id: int) -> None:
        with self._writing():
            self.db.execute(
                "UPDATE parts SET state = ? WHERE job = ? AND state = ?",
                (PART_CANCELLED, job_row_id, PART_QUEUED),
            )
            self._job_history(job_row_id, "cancel", "queued parts cancelled")

    def record_job_results(
        self, job_row_id: int, kind: str, path: Path | None, size: int | None, sha256: str | None
    ) -> None:
        """The job's merged `kind` file ("output" or "error"), or None: it has none."""
        with self._writing():
            self.db.table("jobs").update(
                job_row_id,
                {
                    f"{kind}_path": str(path) if path else None,
                    f"{kind}_bytes": size,
                    f"{kind}_sha256": sha256,
                },
            )
            if path is not None:
                self._job_history(job_row_id, f"merge_{kind}", f"saved {size} bytes to {path}")

    def record_job_counts(self, job_row_id: int, completed: int, failed: int) -> None:
        """The requests with a success and with a failure in the job's merged results."""
        with self._writing():
            self.db.table("jobs").update(
                job_row_id, {"requests_completed": completed, "requests_failed": failed}
            )

    def set_job_status(self, job_row_id: int, status: str, action: str, detail: str) -> None:
        """A running job stopped (its input changed) or going on again."""
        with self._writing():
            self.db.table("jobs").update(job_row_id, {"status": status})
            self._job_history(job_row_id, action, detail)

    def finish_job(self, job_row_id: int, status: str, *, cost: float | None) -> None:
        """The job is over; `cost`: its attempts' sum (issue 22, `usage.job_cost`)."""
        with self._writing():
            self.db.table("jobs").update(
                job_row_id,
                {
                    "status": status,
                    "finished_at": utc_now(),
                    "merged_at": utc_now(),
                    "actual_cost": cost,
                },
            )
            self._job_history(job_row_id, "finish", f"status {status}")

    def _job_history(self, job_row_id: int, action: str, detail: str) -> None:
        self.db.table("job_history").insert(
            {
                "job": job_row_id,
                "at": utc_now(),
                "action": action,
                "detail": detail,
                "log_file": str(self.log_file.absolute()) if self.log_file else None,
            }
        )

    def get_job(self, job_row_id: int) -> Row:
        return self._rows("SELECT * FROM jobs WHERE id = ?", (job_row_id,))[0]

    def find_job(self, job_id: str) -> Row | None:
        rows = self._rows("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return rows[0] if rows else None

    def jobs_with_prefix(self, prefix: str, account: str | None, limit: int = 10) -> list[Row]:
        with_part = f"job_{prefix}"
        where = "AND account = ? " if account is not None else ""
        return self._rows(
            "SELECT * FROM jobs WHERE (substr(job_id, 1, ?) = ? OR substr(job_id, 1, ?) = ?) "
            f"{where}ORDER BY id DESC LIMIT ?",
            (
                len(prefix),
                prefix,
                len(with_part),
                with_part,
                *((account,) if account is not None else ()),
                limit,
            ),
        )

    def latest_job(self, account: str | None = None) -> Row | None:
        where = "WHERE account = ? " if account is not None else ""
        rows = self._rows(
            f"SELECT * FROM jobs {where}ORDER BY recorded_at DESC, id DESC LIMIT 1",
            (account,) if account is not None else (),
        )
        return rows[0] if rows else None

    def find_active_job(
        self, input_: InputFile, endpoint: str, window: str, account: str, base_url: str
    ) -> Row | None:
        """A job of the same input on the account whose every part has been sent."""
        rows = self._rows(
            "SELECT * FROM jobs WHERE input_sha256 = ? AND endpoint = ? AND "
            "completion_window = ? AND account = ? AND coalesce(base_url, ?) = ? "
            f"AND status != ? AND NOT ({_UNSENT}) ORDER BY id DESC LIMIT 1",
            (
                input_.sha256,
                endpoint,
                window,
                account,
                base_url,
                base_url,
                JOB_CANCELLED,
                PART_QUEUED,
            ),
        )
        return rows[0] if rows else None

    def find_unsent_job(
        self,
        input_: InputFile,
        endpoint: str,
        window: str,
        account: str,
        base_url: str,
        limits: tuple[int, int],
    ) -> Row | None:
        """A job of the same input and split whose submission is not over (cut off, or
        waiting for --max-in-flight): running `create` again goes on with it."""
        rows = self._rows(
            "SELECT * FROM jobs WHERE input_sha256 = ? AND endpoint = ? AND "
            "completion_window = ? AND account = ? AND coalesce(base_url, ?) = ? "
            f"AND max_requests = ? AND max_bytes = ? AND status IN (?, ?) AND ({_UNSENT}) "
            "ORDER BY id DESC LIMIT 1",
            (
                input_.sha256,
                endpoint,
                window,
                account,
                base_url,
                base_url,
                *limits,
                JOB_RUNNING,
                JOB_INPUT_CHANGED,  # its input as it was again: it goes on
                PART_QUEUED,
            ),
        )
        return rows[0] if rows else None

    def find_unsent_job_by_id(self, job_row_id: int) -> Row | None:
        """The job, if its submission is not over (a part never sent, a create cut off)."""
        rows = self._rows(
            f"SELECT * FROM jobs WHERE id = ? AND ({_UNSENT})", (job_row_id, PART_QUEUED)
        )
        return rows[0] if rows else None

    def jobs_in_status(self, status: str) -> list[Row]:
        return self._rows("SELECT * FROM jobs WHERE status = ? ORDER BY id", (status,))

    def retries_of(self, retry_of: str) -> list[Row]:
        """The jobs that send again lines of the batch or job `retry_of`, oldest first."""
        return self._rows("SELECT * FROM jobs WHERE retry_of = ? ORDER BY id", (retry_of,))

    def unfinished_jobs(self) -> list[Row]:
        return self._rows("SELECT * FROM jobs WHERE status = ? ORDER BY id", (JOB_RUNNING,))

    def job_parts(self, job_row_id: int) -> list[Row]:
        return self._rows("SELECT * FROM parts WHERE job = ? ORDER BY part_index", (job_row_id,))

    def attempts_of_job(self, job_row_id: int) -> list[Row]:
        """Every batch row of the job's parts, oldest first."""
        return self._rows(
            "SELECT batches.* FROM batches JOIN parts ON batches.part = parts.id "
            "WHERE parts.job = ? ORDER BY batches.id",
            (job_row_id,),
        )

    def spend_rows(self, account: str, since: str) -> tuple[list[Row], list[Row]]:
        """(batches, jobs) of `account` made since `since`, or ended since then: what a
        day's spend is summed from (`spend.day_spend`). A job's parts are in its job."""
        ended = "coalesce(completed_at, failed_at, expired_at, cancelled_at)"
        batches = self._rows(
            "SELECT * FROM batches WHERE account = ? AND part IS NULL "
            f"AND (recorded_at >= ? OR {ended} >= ?) ORDER BY id",
            (account, since, since),
        )
        jobs = self._rows(
            "SELECT * FROM jobs WHERE account = ? AND (recorded_at >= ? OR finished_at >= ?) "
            "ORDER BY id",
            (account, since, since),
        )
        return batches, jobs

    def last_attempt(self, part_id: int) -> Row | None:
        rows = self._rows(
            "SELECT * FROM batches WHERE part = ? ORDER BY id DESC LIMIT 1", (part_id,)
        )
        return rows[0] if rows else None

    def job_of_part(self, part_id: int) -> tuple[Row, Row]:
        """The job and the part a part id names."""
        part = self._rows("SELECT * FROM parts WHERE id = ?", (part_id,))[0]
        return self.get_job(part["job"]), part

    def list_jobs(self, filters: "BatchFilter", limit: int | None) -> list[Row]:
        """Jobs newest first, with counts of their parts and of requests done."""
        if filters.model or filters.metadata:
            return []  # those are batches' details
        clauses: list[str] = []
        params: list[Any] = []
        if filters.account:
            clauses.append("account = ?")
            params.append(filters.account)
        if filters.since:
            clauses.append("recorded_at >= ?")
            params.append(filters.since)
        if filters.endpoint:
            clauses.append("endpoint = ?")
            params.append(filters.endpoint)
        if filters.statuses:
            clauses.append(f"status IN ({', '.join('?' for _ in filters.statuses)})")
            params += filters.statuses
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        # Requests completed and failed: those of each part's last attempt (the job's own
        # counts once merged). Parts done: cancelled, or their last attempt final (not one
        # the enqueued-token limit bounced: that part is sent again).
        last = (
            "FROM batches AS b JOIN parts AS p ON b.part = p.id WHERE p.job = jobs.id AND b.id = "
            "(SELECT max(id) FROM batches WHERE part = p.id)"
        )
        sql = (
            "SELECT jobs.*, (SELECT count(*) FROM parts WHERE parts.job = jobs.id) AS parts_total, "
            "(SELECT count(*) FROM parts WHERE parts.job = jobs.id AND parts.state = 'cancelled') "
            "+ (SELECT count(*) "
            f"{last} AND p.state = 'sent' AND (b.status IN ('completed', 'expired', 'cancelled') "
            "OR (b.status IN ('failed', 'rejected') "
            "AND coalesce(b.errors, '') NOT LIKE '%token_limit_exceeded%'))) AS parts_done, "
            "coalesce(jobs.requests_completed, "
            f"(SELECT coalesce(sum(b.requests_completed), 0) {last})) AS requests_done, "
            f"coalesce(jobs.requests_failed, (SELECT coalesce(sum(b.requests_failed), 0) {last})) "
            "AS requests_failed_now "
            f"FROM jobs {where} ORDER BY recorded_at DESC, id DESC"
        )
        if limit is not None:
            return self._rows(sql + " LIMIT ?", (*params, limit))
        return self._rows(sql, tuple(params))

    def job_history(self, job_row_id: int) -> list[Row]:
        return self._rows("SELECT * FROM job_history WHERE job = ? ORDER BY id", (job_row_id,))

    def record_remote_file_gone(self, row_id: int, kind: str, detail: str) -> None:
        """The batch's `kind` file ("input", "output", "error") is no longer on the account."""
        with self._writing():
            self.db.table("batches").update(row_id, {f"{kind}_file_gone_at": utc_now()})
            self._history(row_id, f"prune_{kind}_file", detail)

    def _refuse_duplicates(
        self, input_: InputFile, endpoint: str, window: str, account: str, base_url: str
    ) -> None:
        """The duplicate guard: the same input already sent on the account, as one batch
        or as a job, and not over (failed, expired, cancelled), is refused."""
        sent = self.find_active_duplicate(input_, endpoint, window, account, base_url)
        job = self.find_active_job(input_, endpoint, window, account, base_url)
        if sent is not None:
            what = f"{sent['batch_id']} (status {sent['status']}, "
        elif job is not None:
            what = f"{job['job_id']} ("
        else:
            return
        raise Refused(
            f"{input_.path.name} was already submitted as {what}same content, endpoint and "
            "window); use --force to submit it again"
        )

    def release_claim(self, row_id: int) -> None:
        with self._writing():
            self.db.table("batches").update(
                row_id, {"claimed_by": None, "claimed_at": None, "claim_expires_at": None}
            )

    def mark_results_gone(self, row_id: int, reason: str) -> None:
        """The API says a result file does not exist (any more): sweeps stop asking."""
        with self._writing():
            self.db.table("batches").update(row_id, {"results_gone_at": utc_now()})
            self._history(row_id, "results_gone", reason)

    def mark_not_found(self, row_id: int, reason: str) -> None:
        """The account says it has no such batch: sweeps stop asking."""
        with self._writing():
            self.db.table("batches").update(row_id, {"not_found_at": utc_now()})
            self._history(row_id, "not_found", reason)

    def mark_rejected(self, row_id: int, reason: str, code: str | None = None) -> None:
        """The API refused to create the batch: the row will not be resumed."""
        errors = json.dumps([{"code": code, "message": reason}]) if code else None
        with self._writing():
            self.db.table("batches").update(row_id, {"status": REJECTED, "errors": errors})
            self._history(row_id, "rejected", reason)

    def mark_abandoned(self, row_id: int, reason: str) -> None:
        """No batch came of this create: sweeps stop looking; a create of it starts again."""
        with self._writing():
            self.db.table("batches").update(row_id, {"status": ABANDONED})
            self._history(row_id, "abandoned", reason)

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
        account: str,
        base_url: str | None,
        origin: str = "lookup",
        actual_cost: float | None = None,
    ) -> Row:
        """Store what the account's API says of a batch; adds a row (from `origin`) if new.

        A row made before base URLs were recorded is stamped with the one that answered.
        `actual_cost`: a final batch's cost, as the caller priced it (`usage.batch_cost`);
        recorded once, where the row has none yet.
        """
        fields = fields_from_batch(batch)
        existing: Row | None = None
        with self._writing():
            if row_id is None:
                existing = self.row_of(batch, account)
                row_id = existing["id"] if existing else None
            if row_id is None:
                row_id = self._insert_foreign(batch, fields, origin, account, base_url)
            else:
                self._update(row_id, fields)
                if base_url is not None and (existing is None or existing["base_url"] is None):
                    self.db.conn.execute(
                        "UPDATE batches SET base_url = ? WHERE id = ? AND base_url IS NULL",
                        (base_url, row_id),
                    )
                    if existing is not None:
                        existing = {**existing, "base_url": base_url}
            self._history(row_id, action, f"status {batch['status']}")
            if actual_cost is not None:  # issue 22: priced once, when the batch ended
                self.db.conn.execute(
                    "UPDATE batches SET actual_cost = ? WHERE id = ? AND actual_cost IS NULL",
                    (actual_cost, row_id),
                )
        if existing is not None and _stored_as_given(fields):
            # Read inside the transaction: the row as it is now, without reading it again.
            return {**existing, **fields}
        return self.get_row(row_id)

    def _insert_foreign(
        self,
        batch: Mapping[str, Any],
        fields: Row,
        origin: str,
        account: str,
        base_url: str | None,
    ) -> int:
        """Add a batch this ledger did not create."""
        row_id = (
            self.db.table("batches")
            .insert(
                {
                    "ref": f"bl_{uuid.uuid4().hex}",
                    "account": account,
                    "base_url": base_url,
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

    def record_merge(
        self,
        row_id: int,
        kind: str,
        path: Path | None,
        size: int | None,
        sha256: str | None,
        detail: str,
    ) -> None:
        """The batch's `kind` results, merged with a retry's: one line per custom_id."""
        with self._writing():
            self.db.table("batches").update(
                row_id,
                {
                    f"{kind}_path": str(path) if path else None,
                    f"{kind}_bytes": size,
                    f"{kind}_sha256": sha256,
                    f"{kind}_saved_at": utc_now(),
                },
            )
            self._history(row_id, f"merge_{kind}", f"{detail}: {size} bytes at {path}")

    def record_event(self, row_id: int, action: str, detail: str) -> None:
        with self._writing():
            self._history(row_id, action, detail)

    # --- reads --------------------------------------------------------------------

    def get_row(self, row_id: int) -> Row:
        rows = self._rows("SELECT * FROM batches WHERE id = ?", (row_id,))
        if not rows:
            raise BatchledgerError(f"ledger row {row_id} vanished")
        return rows[0]

    def find_batches(self, batch_id: str, account: str | None = None) -> list[Row]:
        """The rows of `batch_id`: one per account that has it (or the one of `account`)."""
        if account is None:
            return self._rows("SELECT * FROM batches WHERE batch_id = ? ORDER BY id", (batch_id,))
        return self._rows(
            "SELECT * FROM batches WHERE batch_id = ? AND account = ?", (batch_id, account)
        )

    def find_batch(self, batch_id: str, account: str) -> Row | None:
        rows = self.find_batches(batch_id, account)
        return rows[0] if rows else None

    def batches_with_prefix(
        self, prefix: str, account: str | None = None, limit: int = 10
    ) -> list[Row]:
        """Batches whose id starts with `prefix`, with or without the `batch_` part."""
        with_part = f"batch_{prefix}"
        where = "AND account = ? " if account is not None else ""
        return self._rows(
            "SELECT * FROM batches WHERE (substr(batch_id, 1, ?) = ? "
            f"OR substr(batch_id, 1, ?) = ?) {where}ORDER BY id DESC LIMIT ?",
            (
                len(prefix),
                prefix,
                len(with_part),
                with_part,
                *((account,) if account is not None else ()),
                limit,
            ),
        )

    def row_of(self, batch: Mapping[str, Any], account: str) -> Row | None:
        """The ledger's row of an account's batch: by its id, or by the ref a create tagged
        it with.

        A create cut off before it learned its batch id left a row with the ref only; the
        batch must land in that row, not in a second one.
        """
        row = self.find_batch(str(batch["id"]), account)
        ref = ref_of(batch)
        if row is None and ref:
            by_ref = self.find_by_ref(ref)
            if by_ref is not None and by_ref["batch_id"] is None and by_ref["account"] == account:
                row = by_ref
        return row

    def batch_ids_made_from(self, file_ids: Collection[str]) -> set[str]:
        """The batches recorded as made from these uploads (a part's attempts share one)."""
        if not file_ids:
            return set()
        rows = self._rows(
            f"SELECT batch_id FROM batches WHERE batch_id IS NOT NULL AND input_file_id IN "
            f"({', '.join('?' for _ in file_ids)})",
            tuple(file_ids),
        )
        return {row["batch_id"] for row in rows}

    def find_by_ref(self, ref: str) -> Row | None:
        rows = self._rows("SELECT * FROM batches WHERE ref = ?", (ref,))
        return rows[0] if rows else None

    def latest_batch(self, account: str | None = None) -> Row | None:
        """The batch most recently made, as `list` orders them; made here before synced."""
        where = "AND account = ? " if account is not None else ""
        rows = self._rows(
            f"SELECT * FROM batches WHERE batch_id IS NOT NULL AND part IS NULL {where}"
            f"ORDER BY origin = 'create' DESC, {MADE_AT} DESC, id DESC LIMIT 1",
            (account,) if account is not None else (),
        )
        return rows[0] if rows else None

    def find_active_duplicate(
        self, input_: InputFile, endpoint: str, window: str, account: str, base_url: str
    ) -> Row | None:
        """A batch of the account (where it points now) already sent with the same input
        bytes and parameters that still counts."""
        rows = self._rows(
            "SELECT * FROM batches WHERE input_sha256 = ? AND endpoint = ? "
            "AND completion_window = ? AND account = ? AND coalesce(base_url, ?) = ? "
            "AND batch_id IS NOT NULL AND not_found_at IS NULL "
            f"AND coalesce(status, '') NOT IN ({_placeholders(RESUBMITTABLE_STATUSES)}) "
            "ORDER BY id DESC LIMIT 1",
            (
                input_.sha256,
                endpoint,
                window,
                account,
                base_url,
                base_url,
                *sorted(RESUBMITTABLE_STATUSES),
            ),
        )
        return rows[0] if rows else None

    def find_unfinished_submission(
        self, input_: InputFile, endpoint: str, window: str, account: str, base_url: str
    ) -> Row | None:
        """A create of the same input on the account (where it points now) that stopped
        before it knew its batch id: cut off, or given up on."""
        rows = self._rows(
            "SELECT * FROM batches WHERE input_sha256 = ? AND endpoint = ? "
            "AND completion_window = ? AND account = ? AND coalesce(base_url, ?) = ? "
            "AND batch_id IS NULL AND origin = 'create' AND (status IS NULL OR status = ?) "
            "ORDER BY id DESC LIMIT 1",
            (input_.sha256, endpoint, window, account, base_url, base_url, ABANDONED),
        )
        return rows[0] if rows else None

    def unsent_submissions(self) -> list[Row]:
        """Creates cut off before their upload was recorded: no batch can have been made of
        them (a create needs the file id the upload answers with)."""
        return self._rows(
            "SELECT * FROM batches WHERE batch_id IS NULL AND input_file_id IS NULL "
            "AND origin = 'create' AND status IS NULL AND part IS NULL ORDER BY id"
        )

    def unfinished_submissions(self) -> list[Row]:
        """Creates cut off after the upload: their batch may exist on the server."""
        return self._rows(
            "SELECT * FROM batches WHERE batch_id IS NULL AND input_file_id IS NOT NULL "
            "AND origin = 'create' AND status IS NULL ORDER BY id"
        )

    def batches_to_sweep(self, *, include_synced: bool = False) -> list[Row]:
        """Batches not yet final, and finished ones whose result files are not saved yet.

        Finished batches that `sync` found are left alone unless `include_synced`: their
        results may be saved elsewhere already, by whoever made them.
        """
        synced = "" if include_synced else "AND origin != 'sync' "
        return self._rows(
            "SELECT * FROM batches WHERE batch_id IS NOT NULL AND results_gone_at IS NULL "
            "AND not_found_at IS NULL AND ("
            f"coalesce(status, '') NOT IN ({_placeholders(FINAL_STATUSES)}) "
            f"OR (status IN ({_placeholders(SAVABLE_STATUSES)}) {synced}AND ("
            "(output_file_id IS NOT NULL AND output_path IS NULL) "
            "OR (error_file_id IS NOT NULL AND error_path IS NULL)))"
            ") ORDER BY id",
            (*sorted(FINAL_STATUSES), *sorted(SAVABLE_STATUSES)),
        )

    def accounts_in_use(self) -> dict[str, int]:
        """Each account the ledger has batches of, and how many."""
        rows = self._rows("SELECT account, count(*) AS n FROM batches GROUP BY account")
        return {row["account"]: int(row["n"]) for row in rows}

    def has_work_to_sweep(self, *, include_synced: bool) -> bool:
        """`status --all` has something to do: a batch to check or save, a create to
        recover or end, a job to move on. Without, it needs no key and no network."""
        for sql in (
            "SELECT 1 FROM batches WHERE batch_id IS NULL AND origin = 'create' "
            "AND status IS NULL LIMIT 1",
            "SELECT 1 FROM jobs WHERE status = 'running' LIMIT 1",
        ):
            if self._rows(sql):
                return True
        return bool(self.batches_to_sweep(include_synced=include_synced))

    def list_batches(
        self, filters: "BatchFilter", limit: int | None, columns: Sequence[str] = ("*",)
    ) -> list[Row]:
        """Newest first; `limit` None means all. `columns`: only these (a big listing is
        quicker to read without the columns it does not show)."""
        where, params = filters.sql()
        sql = f"SELECT {', '.join(columns)} FROM batches {where} ORDER BY {MADE_AT} DESC, id DESC"
        if limit is not None:
            return self._rows(sql + " LIMIT ?", (*params, limit))
        return self._rows(sql, params)

    def list_batches_json(
        self, filters: "BatchFilter", limit: int | None
    ) -> Iterator[tuple[str, bytes]]:
        """As list_batches, each row as (when it was made, its JSON as UTF-8), built by
        SQLite and yielded as read: keys sorted, the JSON columns (errors, usage, metadata)
        as objects. Python's own encoding of 100,000 rows takes seconds; SQLite's, a
        fraction of one, and the listing is never held whole. As bytes (a BLOB), not text:
        they go to stdout as they are, not decoded and encoded again (0.2 s of 100,000)."""
        names = sorted(row["name"] for row in self._rows("PRAGMA table_info(batches)"))
        pairs = ", ".join(
            f"'{name}', json([{name}])" if name in _JSON_COLUMNS else f"'{name}', [{name}]"
            for name in names
        )
        where, params = filters.sql()
        sql = (
            f"SELECT {MADE_AT} AS made, CAST(json_object({pairs}) AS BLOB) AS doc "
            f"FROM batches {where} "
            f"ORDER BY {MADE_AT} DESC, id DESC"
        )
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)
        with self._lock:
            try:
                yield from self.db.conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise BatchledgerError(_describe_sqlite_error(self.path, exc)) from exc

    def count_batches(self, filters: "BatchFilter") -> int:
        where, params = filters.sql()
        rows = self._rows(f"SELECT count(*) AS n FROM batches {where}", params)
        return int(rows[0]["n"])

    def rows_with_remote_files(self) -> list[Row]:
        """Every row that names an input, output or error file not known to be gone, oldest
        first."""
        return self._rows(
            "SELECT * FROM batches WHERE "
            "(input_file_id IS NOT NULL AND input_file_gone_at IS NULL) "
            "OR (output_file_id IS NOT NULL AND output_file_gone_at IS NULL) "
            f"OR (error_file_id IS NOT NULL AND error_file_gone_at IS NULL) ORDER BY {MADE_AT}, id"
        )

    def usage_totals(self, group_sql: str, since: str | None) -> list[Row]:
        """Batches, requests answered and tokens, summed per (group, model).

        `group_sql` is an SQL expression over `batches` (usage.GROUPS), never user input.
        """
        where = f"AND {MADE_AT} >= ?" if since else ""
        return self._rows(
            f"SELECT {group_sql} AS grp, model, count(*) AS batches, "
            "coalesce(sum(requests_completed), 0) AS requests, "
            "sum(json_extract(usage, '$.input_tokens')) AS input, "
            "sum(json_extract(usage, '$.input_tokens_details.cached_tokens')) AS cached, "
            "sum(json_extract(usage, '$.output_tokens')) AS output, "
            "sum(json_extract(usage, '$.output_tokens_details.reasoning_tokens')) AS reasoning, "
            # issue 22: the costs recorded when the batches ended, if every one with usage has one
            "sum(actual_cost) AS recorded_cost, "
            "sum(actual_cost IS NULL AND usage IS NOT NULL) AS unrecorded "
            f"FROM batches WHERE batch_id IS NOT NULL {where} GROUP BY grp, model",
            (since,) if since else (),
        )

    def history(self, row_id: int) -> list[Row]:
        return self._rows("SELECT * FROM history WHERE batch = ? ORDER BY id", (row_id,))


@dataclass(frozen=True)
class BatchFilter:
    """Which ledger batches a listing shows."""

    statuses: tuple[str, ...] = ()
    since: str | None = None  # ISO 8601 UTC, compared with when the batch was made
    endpoint: str | None = None
    account: str | None = None
    model: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # every pair must match
    parts: bool = False  # the batches of jobs' parts too (else a job is one line of its own)

    @property
    def active(self) -> bool:
        return bool(
            self.statuses
            or self.since
            or self.endpoint
            or self.account
            or self.model
            or self.metadata
        )

    def sql(self) -> tuple[str, tuple[Any, ...]]:
        # "+part": not the index on part, which would sort every row; the made-at index.
        clauses: list[str] = [] if self.parts else ["+part IS NULL"]
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
        if self.account:
            clauses.append("account = ?")
            params.append(self.account)
        if self.model:
            clauses.append("model = ?")
            params.append(self.model)
        for key, value in self.metadata:
            # json_each rather than a JSON path: a key may hold any character.
            clauses.append(
                "EXISTS (SELECT 1 FROM json_each(batches.metadata) WHERE key = ? AND value = ?)"
            )
            params += (key, value)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


# A job whose submission is not over: a part never sent yet, or an attempt whose create
# was cut off before it learned its batch id. (One parameter: PART_QUEUED.)
_UNSENT = (
    "EXISTS (SELECT 1 FROM parts WHERE parts.job = jobs.id AND parts.state = ? "
    "AND parts.requeues = 0) OR EXISTS (SELECT 1 FROM batches JOIN parts "
    "ON batches.part = parts.id WHERE parts.job = jobs.id AND batches.batch_id IS NULL "
    "AND batches.status IS NULL)"
)


# The columns of fields_from_batch that SQLite stores as INTEGER; the others are TEXT.
_INTEGER_FIELDS = frozenset({"requests_total", "requests_completed", "requests_failed"})


def _stored_as_given(fields: Mapping[str, Any]) -> bool:
    """SQLite gives these values back as they are: no column's type converts them."""
    return all(
        value is None or type(value) is (int if name in _INTEGER_FIELDS else str)
        for name, value in fields.items()
    )


def _refuse_if_held(input_: InputFile, held: Row | None) -> None:
    """Refused when another run holds the claim on the submission (a batch's row or a
    job) that would be resumed."""
    if held is not None and claimed_by_another_run(held):
        raise Refused(
            f"{input_.path.name} is being submitted by another run "
            f"({held['claimed_by']}, since {held['claimed_at']}); wait for it to finish"
        )


def _input_fields(
    input_: InputFile, endpoint: str, window: str, account: str, base_url: str
) -> Row:
    """The ledger columns of what a create sends and where, for a batch's row or a job."""
    return {
        "account": account,
        "base_url": base_url,
        "input_path": str(input_.path),
        "input_bytes": input_.size,
        "input_sha256": input_.sha256,
        "endpoint": endpoint,
        "completion_window": window,
    }


def _details_fields(details: CreateDetails) -> Row:
    """The ledger columns of what a create asked beyond its input."""
    return {
        "metadata": json.dumps(details.metadata, sort_keys=True) if details.metadata else None,
        "input_expires_after": details.input_expires_after,
        "output_expires_after": details.output_expires_after,
        # m008: the create's own estimate, when it made one (a job's parts get none).
        "estimated_input_tokens": details.estimate.input_tokens if details.estimate else None,
        "estimated_cost_min": details.estimate.cost_min if details.estimate else None,
        "estimated_cost_max": details.estimate.cost_max if details.estimate else None,
    }


# Columns that hold JSON text: shown as JSON objects by --json.
_JSON_COLUMNS = frozenset({"errors", "usage", "metadata"})


def _placeholders(values: frozenset[str]) -> str:
    """`?, ?, ?`: one SQL parameter per value."""
    return ", ".join("?" for _ in values)
