"""What the ledger's stores share: one connection, one write lock, the history rows, and
the pieces of SQL two tables have in common (the "same input" clause, the duplicate guard).
"""

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, overload

from batchledger._db import Database
from batchledger.batches import RESUBMITTABLE_STATUSES, JobStatus, PartState
from batchledger.claims import claimed_by_another_run
from batchledger.details import CostEstimate, CreateDetails
from batchledger.errors import BatchledgerError, Refused
from batchledger.rows import BatchRow, JobRow
from batchledger.times import utc_now

# When a batch was made: the API's created_at, or when the ledger first saw it. Indexed.
MADE_AT = "coalesce(created_at, recorded_at)"

# The two tables whose rows are submissions: claimed while being sent, found by id prefix.
Table = Literal["batches", "jobs"]
# Called inside a claim's transaction, under the ledger's write lock, with the row (of the
# table) the claim would resume, or None for a new one: raises to refuse the claim. The day
# budget (spend.day_budget_guard): two creates at once cannot both pass it.
ClaimGuard = Callable[[Table, Mapping[str, Any] | None], None]


@dataclass(frozen=True)
class InputFile:
    """What the ledger records about a JSONL input."""

    path: Path
    size: int
    sha256: str
    lines: int = 0  # requests: lines, counted without parsing them


class Connection:
    """The one connection every store of a ledger uses, and its one lock: safe to share
    between threads."""

    def __init__(self, db: Database, path: Path) -> None:
        self.db = db
        self.path = path
        # The log file of this run, named in every history row it writes.
        self.log_file: Path | None = None
        self.lock = threading.RLock()

    def close(self) -> None:
        """Close the connection once no thread is using it: a sweep stopped by Ctrl-C may
        still be writing from its workers, and closing a connection another thread is
        inside crashes the sqlite3 module (SIGSEGV, tests/test_ledger_write.py). Their
        next use raises an error instead."""
        with self.lock:
            self.db.close()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """One write transaction; a SQLite failure in it becomes a one-line error."""
        # BEGIN IMMEDIATE takes the write lock up front, so two processes never both
        # read-then-upgrade and deadlock; the busy timeout makes the loser wait.
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self.db.commit()
                except BaseException:
                    self.db.rollback()
                    raise
            except sqlite3.Error as exc:
                raise BatchledgerError(describe_sqlite_error(self.path, exc)) from exc

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The rows SQLite answers, as dicts (the stores say which rows.py type each is)."""
        with self.lock:
            try:
                return list(self.db.query(sql, params))
            except sqlite3.Error as exc:
                raise BatchledgerError(describe_sqlite_error(self.path, exc)) from exc

    def _log_file(self) -> str | None:
        # Absolute: the ledger is shared by runs from any working directory.
        return str(self.log_file.absolute()) if self.log_file else None

    def history(self, row_id: int, action: str, detail: str) -> None:
        """A row of a batch's history."""
        # Plain SQL: sqlite-utils' insert reads the table's schema first, on every call.
        self.db.conn.execute(
            "INSERT INTO history (batch, at, action, detail, log_file) VALUES (?, ?, ?, ?, ?)",
            (row_id, utc_now(), action, detail, self._log_file()),
        )

    def job_history(self, job_row_id: int, action: str, detail: str) -> None:
        """A row of a job's history."""
        self.db.table("job_history").insert(
            {
                "job": job_row_id,
                "at": utc_now(),
                "action": action,
                "detail": detail,
                "log_file": self._log_file(),
            }
        )

    def update_batch(self, row_id: int, fields: Mapping[str, Any]) -> None:
        """Set `fields` of a batch row in one UPDATE (sqlite-utils' reads row and schema first)."""
        columns = ", ".join(f"[{name}] = ?" for name in fields)
        cursor = self.db.conn.execute(
            f"UPDATE batches SET {columns} WHERE id = ?", (*fields.values(), row_id)
        )
        if cursor.rowcount != 1:
            raise BatchledgerError(f"ledger row {row_id} vanished")

    def record_estimate(self, table: Table, row_id: int, estimate: CostEstimate) -> None:
        """A create's estimate, made once its row was claimed (a scan beside the upload),
        where the row has none yet."""
        fields = estimate_fields(estimate)
        columns = ", ".join(f"[{name}] = ?" for name in fields)
        with self.writing():
            self.db.conn.execute(
                f"UPDATE {table} SET {columns} WHERE id = ? AND estimated_from IS NULL "
                "AND estimated_input_tokens IS NULL",
                (*fields.values(), row_id),
            )

    def cached_quote(self, model: str, library: str, day: str) -> dict[str, Any] | None:
        """A model's price as `library` gave it on `day` (m011), if kept."""
        rows = self.rows(
            "SELECT * FROM price_quotes WHERE model = ? AND library = ? AND day = ?",
            (model, library, day),
        )
        return rows[0] if rows else None

    def keep_quote(self, model: str, library: str, day: str, quote: Mapping[str, Any]) -> None:
        """Keep a model's price (`input`, `cached_input`, `output`, `source`; all None: the
        library has none) as `library` gave it on `day`; older days' are dropped."""
        with self.writing():
            self.db.conn.execute("DELETE FROM price_quotes WHERE day < ?", (day,))
            self.db.conn.execute(
                "INSERT OR REPLACE INTO price_quotes (model, library, day, input, "
                "cached_input, output, source) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    model,
                    library,
                    day,
                    quote.get("input"),
                    quote.get("cached_input"),
                    quote.get("output"),
                    quote.get("source"),
                ),
            )

    def release_claim(self, table: Table, row_id: int) -> None:
        """The submission of a batch's row or of a job is no longer this run's."""
        with self.writing():
            self.db.table(table).update(
                row_id, {"claimed_by": None, "claimed_at": None, "claim_expires_at": None}
            )

    @overload
    def with_prefix(
        self, table: Literal["batches"], prefix: str, account: str | None = ..., limit: int = ...
    ) -> list[BatchRow]: ...
    @overload
    def with_prefix(
        self, table: Literal["jobs"], prefix: str, account: str | None = ..., limit: int = ...
    ) -> list[JobRow]: ...
    def with_prefix(
        self, table: Table, prefix: str, account: str | None = None, limit: int = 10
    ) -> list[BatchRow] | list[JobRow]:
        """Batches (or jobs) whose id starts with `prefix`, with or without the `batch_`
        (`job_`) part."""
        column, kind = ("batch_id", "batch_") if table == "batches" else ("job_id", "job_")
        with_part = f"{kind}{prefix}"
        where = "AND account = ? " if account is not None else ""
        rows = self.rows(
            f"SELECT * FROM {table} WHERE (substr({column}, 1, ?) = ? "
            f"OR substr({column}, 1, ?) = ?) {where}ORDER BY id DESC LIMIT ?",
            (
                len(prefix),
                prefix,
                len(with_part),
                with_part,
                *((account,) if account is not None else ()),
                limit,
            ),
        )
        if table == "batches":
            return cast(list[BatchRow], rows)
        return cast(list[JobRow], rows)


def describe_sqlite_error(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"ledger {path} is locked by another process; try again when it finishes"
    if "readonly" in text or "read-only" in text:
        return f"ledger {path} is read-only; check its permissions"
    if "not a database" in text or "malformed" in text:
        return f"ledger {path} is not a readable SQLite ledger ({text}); it was left untouched"
    return f"ledger {path} is unusable: {text}"


def same_input(
    input_: InputFile, endpoint: str, window: str, account: str, base_url: str
) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause (and its parameters) of a batch's row or a job made of the same
    input bytes and parameters on the account, where it points now."""
    return (
        "input_sha256 = ? AND endpoint = ? AND completion_window = ? AND account = ? "
        "AND coalesce(base_url, ?) = ?",
        (input_.sha256, endpoint, window, account, base_url, base_url),
    )


# A job whose submission is not over: a part never sent yet, or an attempt whose create
# was cut off before it learned its batch id. (One parameter: PartState.QUEUED.)
UNSENT = (
    "EXISTS (SELECT 1 FROM parts WHERE parts.job = jobs.id AND parts.state = ? "
    "AND parts.requeues = 0) OR EXISTS (SELECT 1 FROM batches JOIN parts "
    "ON batches.part = parts.id WHERE parts.job = jobs.id AND batches.batch_id IS NULL "
    "AND batches.status IS NULL)"
)


def refuse_duplicates(
    conn: Connection, input_: InputFile, endpoint: str, window: str, account: str, base_url: str
) -> None:
    """The duplicate guard: the same input already sent on the account, as one batch
    or as a job, and not over (failed, expired, cancelled), is refused."""
    where, params = same_input(input_, endpoint, window, account, base_url)
    # A batch already sent that still counts.
    sent = conn.rows(
        f"SELECT * FROM batches WHERE {where} "
        "AND batch_id IS NOT NULL AND not_found_at IS NULL "
        f"AND coalesce(status, '') NOT IN ({placeholders(RESUBMITTABLE_STATUSES)}) "
        "ORDER BY id DESC LIMIT 1",
        (*params, *sorted(RESUBMITTABLE_STATUSES)),
    )
    # A job whose every part has been sent.
    job = conn.rows(
        f"SELECT * FROM jobs WHERE {where} AND status != ? AND NOT ({UNSENT}) "
        "ORDER BY id DESC LIMIT 1",
        (*params, JobStatus.CANCELLED, PartState.QUEUED),
    )
    if sent:
        what = f"{sent[0]['batch_id']} (status {sent[0]['status']}, "
    elif job:
        what = f"{job[0]['job_id']} ("
    else:
        return
    raise Refused(
        f"{input_.path.name} was already submitted as {what}same content, endpoint and "
        "window); use --force to submit it again"
    )


def refuse_if_held(input_: InputFile, held: BatchRow | JobRow | None) -> None:
    """Refused when another run holds the claim on the submission (a batch's row or a
    job) that would be resumed."""
    if held is not None and claimed_by_another_run(held):
        raise Refused(
            f"{input_.path.name} is being submitted by another run "
            f"({held['claimed_by']}, since {held['claimed_at']}); wait for it to finish"
        )


def input_fields(
    input_: InputFile, endpoint: str, window: str, account: str, base_url: str
) -> dict[str, Any]:
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


def details_fields(details: CreateDetails) -> dict[str, Any]:
    """The ledger columns of what a create asked beyond its input."""
    return {
        "metadata": json.dumps(details.metadata, sort_keys=True) if details.metadata else None,
        "input_expires_after": details.input_expires_after,
        "output_expires_after": details.output_expires_after,
        # m008: the create's own estimate, when it made one before the claim (a budget);
        # else recorded once the input is scanned (`record_estimate`). A job's parts get none.
        **estimate_fields(details.estimate),
    }


def estimate_fields(estimate: CostEstimate | None) -> dict[str, Any]:
    """The ledger columns of a create's estimate (m008, m011); all None without one."""
    return {
        "estimated_input_tokens": estimate.input_tokens if estimate else None,
        "estimated_cost_min": estimate.cost_min if estimate else None,
        "estimated_cost_max": estimate.cost_max if estimate else None,
        "estimated_from": estimate.estimated_from if estimate else None,
    }


def saved_file_fields(
    kind: str, path: Path | None, size: int | None, sha256: str | None
) -> dict[str, Any]:
    """The columns of a saved `kind` file ("output" or "error"): where, how big, its sha256."""
    return {
        f"{kind}_path": str(path) if path else None,
        f"{kind}_bytes": size,
        f"{kind}_sha256": sha256,
    }


def placeholders(values: frozenset[str]) -> str:
    """`?, ?, ?`: one SQL parameter per value."""
    return ", ".join("?" for _ in values)
