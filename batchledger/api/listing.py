"""The fast listing of the ledger (`BatchLedger.listing()`, what `batchledger list` shows):
rows read straight from SQLite, only the columns asked for, or each row's JSON made by
SQLite, with no handle built per row; quick on a ledger of 100,000 batches."""

import heapq
import itertools
import json
from collections.abc import Iterator, Sequence
from typing import Any

from batchledger.ledger import BatchFilter, Ledger
from batchledger.render import row_json
from batchledger.rows import JobListingRow


class Listing:
    """The ledger's batches and jobs that match a filter, newest first, at most `limit`:
    as rows (`rows()`) or JSON documents (`json_documents()`); `count()` of all that match."""

    def __init__(self, ledger: Ledger | None, filters: BatchFilter, limit: int | None) -> None:
        self._ledger = ledger
        self._filters = filters
        self.limit = limit
        self._jobs: list[JobListingRow] | None = None

    @property
    def filtered(self) -> bool:
        """Whether a filter (status, since, account, endpoint, model, metadata) was given."""
        return self._filters.active

    def jobs(self) -> list[JobListingRow]:
        """The jobs that match, newest first, at most `limit`: each job's row and its
        counts (parts, parts done, requests done, requests failed now)."""
        if self._jobs is None:
            ledger = self._ledger
            self._jobs = ledger.reports.list_jobs(self._filters, self.limit) if ledger else []
        return self._jobs

    def rows(self, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The batches (only `columns` of each, else every column; those named must
        include `created_at` and `recorded_at` for the jobs to go among them) and the jobs
        (a job's row has `job_id`), newest first by when each was made, at most `limit`."""
        if self._ledger is None:
            return []
        batches = self._ledger.reports.list_batches(self._filters, self.limit, columns or ("*",))
        jobs = self.jobs()
        if not jobs:
            return batches
        return sorted(
            [*batches, *(dict(job) for job in jobs)],
            key=lambda row: row["recorded_at"] if "job_id" in row else made_at(row),
            reverse=True,
        )[: self.limit]

    def json_documents(self) -> Iterator[bytes]:
        """Each row as a JSON object (UTF-8 bytes, keys sorted), newest first, at most
        `limit`: a batch's made by SQLite as it is read, the listing never held whole."""
        if self._ledger is None:
            return iter(())
        docs: Iterator[tuple[str, bytes]] = self._ledger.reports.list_batches_json(
            self._filters, self.limit
        )
        jobs = self.jobs()
        if jobs:  # among the batches by when they were made (both newest first)
            job_docs = [
                (job["recorded_at"], json.dumps(row_json(job), sort_keys=True).encode())
                for job in jobs
            ]
            docs = heapq.merge(docs, job_docs, key=lambda doc: doc[0], reverse=True)
        return (doc for _, doc in itertools.islice(docs, self.limit))

    def count(self) -> int:
        """How many batches match in all (the listing stops at `limit`)."""
        return self._ledger.reports.count_batches(self._filters) if self._ledger else 0

    def accounts_in_use(self) -> dict[str, int]:
        """Each account the ledger has batches of (whatever the filter), and how many."""
        return self._ledger.reports.accounts_in_use() if self._ledger else {}


def made_at(row: dict[str, Any]) -> str:
    """When a batch was made, as the listing orders it: the API's time, else the ledger's."""
    return str(row["created_at"] or row["recorded_at"])
