"""What the ledger reports: listings (with a BatchFilter), usage totals, the rows a day's
spend is summed from, the accounts in use."""

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from batchledger.errors import BatchledgerError
from batchledger.ledger.store import MADE_AT, Connection, describe_sqlite_error
from batchledger.rows import BatchRow, JobListingRow, JobRow, UsageTotalsRow


class ReportStore:
    """Reads over `batches` and `jobs` for listings and sums; it writes nothing."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def list_batches(
        self, filters: "BatchFilter", limit: int | None, columns: Sequence[str] = ("*",)
    ) -> list[dict[str, Any]]:
        """Newest first; `limit` None means all. `columns`: only these (a big listing is
        quicker to read without the columns it does not show)."""
        where, params = filters.sql()
        sql = f"SELECT {', '.join(columns)} FROM batches {where} ORDER BY {MADE_AT} DESC, id DESC"
        if limit is not None:
            return self.conn.rows(sql + " LIMIT ?", (*params, limit))
        return self.conn.rows(sql, params)

    def list_batches_json(
        self, filters: "BatchFilter", limit: int | None
    ) -> Iterator[tuple[str, bytes]]:
        """As list_batches, each row as (when it was made, its JSON as UTF-8), built by
        SQLite and yielded as read: keys sorted, the JSON columns (errors, usage, metadata)
        as objects. Python's own encoding of 100,000 rows takes seconds; SQLite's, a
        fraction of one, and the listing is never held whole. As bytes (a BLOB), not text:
        they go to stdout as they are, not decoded and encoded again (0.2 s of 100,000)."""
        names = sorted(row["name"] for row in self.conn.rows("PRAGMA table_info(batches)"))
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
        with self.conn.lock:
            try:
                yield from self.conn.db.conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise BatchledgerError(describe_sqlite_error(self.conn.path, exc)) from exc

    def count_batches(self, filters: "BatchFilter") -> int:
        where, params = filters.sql()
        rows = self.conn.rows(f"SELECT count(*) AS n FROM batches {where}", params)
        return int(rows[0]["n"])

    def list_jobs(self, filters: "BatchFilter", limit: int | None) -> list[JobListingRow]:
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
            return cast(list[JobListingRow], self.conn.rows(sql + " LIMIT ?", (*params, limit)))
        return cast(list[JobListingRow], self.conn.rows(sql, tuple(params)))

    def usage_totals(self, group_sql: str, since: str | None) -> list[UsageTotalsRow]:
        """Batches, requests answered and tokens, summed per (group, model).

        `group_sql` is an SQL expression over `batches` (usage.GROUPS), never user input.
        """
        where = f"AND {MADE_AT} >= ?" if since else ""
        rows = self.conn.rows(
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
        return cast(list[UsageTotalsRow], rows)

    def spend_rows(self, account: str, since: str) -> tuple[list[BatchRow], list[JobRow]]:
        """(batches, jobs) of `account` made since `since`, or ended since then: what a
        day's spend is summed from (`spend.day_spend`). A job's parts are in its job."""
        ended = "coalesce(completed_at, failed_at, expired_at, cancelled_at)"
        batches = self.conn.rows(
            "SELECT * FROM batches WHERE account = ? AND part IS NULL "
            f"AND (recorded_at >= ? OR {ended} >= ?) ORDER BY id",
            (account, since, since),
        )
        jobs = self.conn.rows(
            "SELECT * FROM jobs WHERE account = ? AND (recorded_at >= ? OR finished_at >= ?) "
            "ORDER BY id",
            (account, since, since),
        )
        return cast(list[BatchRow], batches), cast(list[JobRow], jobs)

    def accounts_in_use(self) -> dict[str, int]:
        """Each account the ledger has batches of, and how many."""
        rows = self.conn.rows("SELECT account, count(*) AS n FROM batches GROUP BY account")
        return {row["account"]: int(row["n"]) for row in rows}


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


# Columns that hold JSON text: shown as JSON objects by --json.
_JSON_COLUMNS = frozenset({"errors", "usage", "metadata", "result_counts"})
