"""The ledger: a SQLite file of every batch, opened (and migrated) only here.

One store per aggregate over one connection and one write lock (as llm's LogStore and
MessageStore share one sqlite_utils Database): `ledger.batches` (batches and their history),
`ledger.jobs` (jobs, parts, their history and attempts), `ledger.reports` (listings, usage,
spend). It stores what it is given; it does not parse what a user typed (resolve.py does),
nor price what it stores (the callers do).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

from batchledger._db import Database
from batchledger.batches import Row
from batchledger.details import CostEstimate
from batchledger.ledger.batch_store import BatchStore
from batchledger.ledger.job_store import JobStore
from batchledger.ledger.opening import LOCK_TIMEOUT_ENV, connect, lock_timeout
from batchledger.ledger.report_store import BatchFilter, ReportStore
from batchledger.ledger.store import MADE_AT, ClaimGuard, Connection, InputFile, Table
from batchledger.rows import BatchRow, JobRow

__all__ = [
    "LOCK_TIMEOUT_ENV",
    "MADE_AT",
    "BatchFilter",
    "BatchStore",
    "ClaimGuard",
    "InputFile",
    "JobStore",
    "Ledger",
    "ReportStore",
    "Table",
    "lock_timeout",
    "open_ledger",
]


def open_ledger(path: Path, *, create: bool = True) -> "Ledger | None":
    """Open the ledger at `path`, migrating it; None if it does not exist and not `create`."""
    notes: list[str] = []
    db = connect(path, create=create, notes=notes)
    return None if db is None else Ledger(db, path, notes)


class Ledger:
    """The ledger's connection and its stores. Safe to share between threads."""

    def __init__(self, db: Database, path: Path, notes: list[str] | None = None) -> None:
        # What opening it did that the user should know (rows an upgrade set aside).
        self.notes = notes or []
        self.conn = Connection(db, path)
        self.batches = BatchStore(self.conn)
        self.jobs = JobStore(self.conn, self.batches)
        self.reports = ReportStore(self.conn)

    @property
    def db(self) -> Database:
        return self.conn.db

    @property
    def path(self) -> Path:
        return self.conn.path

    @property
    def log_file(self) -> Path | None:
        """The log file of this run, named in every history row it writes."""
        return self.conn.log_file

    @log_file.setter
    def log_file(self, path: Path | None) -> None:
        self.conn.log_file = path

    def close(self) -> None:
        self.conn.close()

    def record_estimate(self, table: Table, row_id: int, estimate: CostEstimate) -> None:
        """A batch's row's (`batches`) or a job's (`jobs`) estimate, made after its claim."""
        self.conn.record_estimate(table, row_id, estimate)

    def cached_quote(self, model: str, library: str, day: str) -> Row | None:
        """A model's price as the price library (of version `library`) gave it on `day`."""
        return self.conn.cached_quote(model, library, day)

    def keep_quote(self, model: str, library: str, day: str, quote: Mapping[str, Any]) -> None:
        """Keep a model's price as the price library gave it (a cache of `prices`)."""
        self.conn.keep_quote(model, library, day, quote)

    def release_claim(self, table: Table, row_id: int) -> None:
        """The submission of a batch's row (`batches`) or a job (`jobs`) is no longer this
        run's."""
        self.conn.release_claim(table, row_id)

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
        """Batches (or jobs) whose id starts with `prefix`, with or without its `batch_`
        (`job_`) part, newest first."""
        return self.conn.with_prefix(table, prefix, account, limit)
