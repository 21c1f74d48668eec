"""The Python API's `Batch` handle: a batch of the ledger, with its status, its request
counts, and what can be done with it (refresh, save, retrieve, wait, follow, results, retry,
cancel, export). Each method is a call of the same steps the command line takes (batch.py,
retry.py, export.py), so every guarantee holds: nothing sent twice, every answer recorded.

Nothing here prints, unless `wait(progress=True)` is asked for (a bar on stderr).
"""

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from batchledger.api.job_handle import Job, job_of_retry
from batchledger.api.result_rows import ResultRow, result_rows, to_pandas
from batchledger.api.shared import (
    MAX_INTERVAL,
    ExportFormat,
    RequestCounts,
    deadline_sleep,
    export_chunks,
    first_interval,
    progress_bar,
    save_export,
    send_retry,
)
from batchledger.batches import (
    FINAL_STATUSES,
    BatchRef,
    Row,
)
from batchledger.context import Context
from batchledger.errors import NotFound, NotInLedger
from batchledger.rows import BatchRow, HistoryRow

if TYPE_CHECKING:
    from batchledger.batch import BatchReport, SavedFile
    from batchledger.export import ExportCounts
    from batchledger.retry import RetryReport


class Batch:
    """A batch of the ledger (`BatchLedger.get`, `create`, `list`). `status` and
    `request_counts` are the ledger's; `refresh()` asks the API."""

    def __init__(self, ctx: Context, ref: BatchRef, row: Row | None) -> None:
        self._ctx = ctx
        self._ref = ref
        self.row: Row = row or {}
        """The batch's ledger row (every column of `batches`), as last read or recorded;
        empty for a batch id the ledger has not seen yet (`refresh()` records it)."""
        self.warnings: list[str] = []
        """What the last call found worth knowing (results gone from the API, a file
        overwritten), as the command line would warn."""
        self.report: BatchReport | None = None
        """What the last call of the API found and did (the batch as the API answered,
        the files saved), as the command line shows it; None before any."""
        self.retry_report: RetryReport | None = None
        """What the last `retry()` planned and sent, as `batchledger retry` shows it."""

    def __repr__(self) -> str:
        return f"<Batch {self.id} {self.status} ({self.account})>"

    @property
    def id(self) -> str:
        """The batch's id on its account (`batch_…`)."""
        return self._ref.batch_id

    @property
    def account(self) -> str:
        """The account the batch was made on."""
        return self._ref.account

    @property
    def ref(self) -> BatchRef:
        """The batch's id and account (an id is unique on its account only)."""
        return self._ref

    @property
    def status(self) -> str:
        """`validating`, `in_progress`, `finalizing`, `completed`, `failed`, `expired`,
        `cancelling`, `cancelled` (the API's), or `rejected` / `abandoned` (the ledger's)."""
        return str(self.row.get("status") or "unknown")

    @property
    def recorded(self) -> bool:
        """The ledger has the batch (a batch id it has not seen: not until `refresh()`)."""
        return bool(self.row)

    @property
    def request_counts(self) -> RequestCounts:
        """Its requests, as the API last reported them."""
        return RequestCounts(
            total=self.row.get("requests_total") or 0,
            completed=self.row.get("requests_completed") or 0,
            failed=self.row.get("requests_failed") or 0,
        )

    @property
    def done(self) -> bool:
        """The batch is final: completed, failed, expired or cancelled."""
        return self.row.get("status") in FINAL_STATUSES

    @property
    def output_path(self) -> Path | None:
        """Where its results are saved, once they are."""
        return Path(self.row["output_path"]) if self.row.get("output_path") else None

    @property
    def error_path(self) -> Path | None:
        """Where its error lines are saved, once they are (if it has any)."""
        return Path(self.row["error_path"]) if self.row.get("error_path") else None

    def history(self) -> list[HistoryRow]:
        """Every action the ledger recorded on the batch, oldest first (`batchledger show`)."""
        self._reread()
        return self._ctx.ledger.batches.history(self.row["id"])

    def _reread(self) -> None:
        ledger = self._ctx.open_ledger(create=False)
        row = ledger.batches.find_batch(self.id, self.account) if ledger is not None else None
        if row is None:
            raise NotInLedger(f"{self.id} is no longer in the ledger")
        self.row = row

    def _took(self, report: "BatchReport", saved: "list[SavedFile] | None" = None) -> None:
        self.report = report
        if report.row is not None:
            self.row = report.row
        self.warnings = [report.warning] if report.warning else []
        self.warnings += [
            f"overwrote existing file {item.path}"
            for item in saved or report.saved
            if item.replaced
        ]

    def refresh(self, *, save: bool = True, out: str | Path | None = None) -> "Batch":
        """Ask the API for the batch, record it, and (unless `save=False`) save its results
        if it has finished and they are not saved yet (at `out`, else
        `results_<id>.jsonl` in the working directory). Returns the handle."""
        from batchledger import batch  # start-up: only calls of the API load it

        self._ctx.start_api_command(self.account)
        report = batch.look_up(self._ctx, self._ref)
        if save:
            self._took(report)
            return self.save(out)
        report.warning = report.warning or batch.retention_warning(self._ctx, report.row)
        self._took(report)
        return self

    def save(self, out: str | Path | None = None) -> "Batch":
        """Save the results of the batch as the last `refresh()` found it, if it has
        finished and they are not saved yet (or `out` names a place for them)."""
        from batchledger import batch  # start-up: only calls of the API load it

        if self.report is None or self.report.batch is None:
            return self.refresh(save=True, out=out)
        report = self.report
        if report.warning == batch.retention_warning(self._ctx, report.row):
            report.warning = None  # told again below if the results are still not saved
        batch.save_if_finished(self._ctx, report, out=Path(out) if out is not None else None)
        report.warning = report.warning or batch.retention_warning(self._ctx, report.row)
        self._took(report)
        return self

    def retrieve(self, out: str | Path | None = None, *, force: bool = False) -> "Batch":
        """Save the results of a finished batch (Refused while it has none), at `out` or
        `results_<id>.jsonl`. Saved already at that place and unchanged on disk: not
        downloaded again (`report.already_saved`) unless `force`."""
        from batchledger import batch  # start-up: only calls of the API load it

        self._ctx.start_api_command(self.account)
        target = Path(out) if out is not None else None
        self._took(batch.retrieve(self._ctx, self._ref, target, again=force))
        return self

    def wait(
        self,
        *,
        progress: bool = False,
        timeout: float | None = None,
        interval: float | None = None,
        max_interval: float = MAX_INTERVAL,
        out_dir: str | Path | None = None,
    ) -> "Batch":
        """Poll until the batch is final (backing off while nothing moves), saving its
        results (`results_<id>.jsonl` in `out_dir`, else the working directory).

        `progress`: a bar (or a line per change) on stderr. `timeout` (seconds):
        WaitTimeout when it runs out; the batch keeps running. Returns the handle.
        """
        bar = progress_bar() if progress else None
        checks = self.follow(
            interval=interval,
            max_interval=max(max_interval, interval or 0),
            out_dir=out_dir,
            timeout=timeout,
        )
        try:
            for _ in checks:
                report = self.report
                assert report is not None
                if report.error is not None:  # a passing failure: tried again next round
                    continue
                if report.batch is None:
                    raise NotFound(report.warning or f"account {self.account!r} does not know it")
                if bar is not None:
                    bar.show(report.batch)
        finally:
            if bar is not None:
                bar.end_line()
        return self

    def follow(
        self,
        *,
        interval: float | None = None,
        max_interval: float = MAX_INTERVAL,
        save: bool = True,
        out_dir: str | Path | None = None,
        timeout: float | None = None,
    ) -> Iterator["Batch"]:
        """Check the batch until it is final, yielding the handle after every check (what
        `wait` and `batchledger watch` show): `report` holds the API's answer and the files
        saved, or in `report.error` a passing failure (tried again next round); a batch
        its account does not know has `report.batch` None and ends the checks."""
        from batchledger import batch  # start-up: only calls of the API load it

        self._ctx.start_api_command(self.account)  # now: a missing key is told at once
        checks = batch.follow(
            self._ctx,
            [self._ref],
            auto_save=save,
            interval=interval or first_interval(self._ctx, self.account),
            max_interval=max_interval,
            out_dir=Path(out_dir).expanduser() if out_dir is not None else None,
            sleep=deadline_sleep(timeout),
        )
        return self._each(checks)

    def _each(self, checks: "Iterator[BatchReport]") -> Iterator["Batch"]:
        for report in checks:
            self._took(report)
            yield self

    def results(self) -> Iterator[ResultRow]:
        """One dict per input line, in input order: `line`, `custom_id`, `status` (`ok`,
        `error`, `missing`), `response`, `error`. Streams: memory stays bounded.

        Refused while the results are not saved (`wait()` saves them)."""
        from batchledger import export  # start-up: only results and export load it

        self._reread()
        input_path, results = export.check_exportable(cast(BatchRow, self.row))
        return result_rows(input_path, results, self.row["input_sha256"])

    def to_pandas(self) -> Any:
        """`results()` as a pandas DataFrame (`pip install 'batchledger[pandas]'`)."""
        return to_pandas(self.results())

    def retry(self, *, all_failed: bool = False, max_in_flight: int | None = None) -> "Job | None":
        """Send again, as a new job, the requests that got no successful response
        (expired, cancelled, timed out, 429, 5xx, missing; every failure if `all_failed`).
        None when there is nothing to retry. Once the job is done, this batch's results
        hold each request's last answer."""
        self.retry_report = send_retry(
            self._ctx, self._ref, self.account, all_failed, max_in_flight
        )
        return job_of_retry(self._ctx, self.retry_report)

    def cancel(self) -> "Batch":
        """Ask the API to cancel the batch (Refused if it is already over). Returns the
        handle, `cancelling` (`wait()` follows it to `cancelled`)."""
        from batchledger import batch  # start-up: only calls of the API load it

        self._ctx.start_api_command(self.account)
        self._took(batch.cancel(self._ctx, self._ref))
        return self

    def cancel_statuses(self, *, interval: float, max_interval: float) -> Iterator[str]:
        """After `cancel()`: follow the batch until it is final, yielding each new status
        it reaches (`batchledger cancel` prints them)."""
        from batchledger import batch  # start-up: only calls of the API load it

        assert self.report is not None, "cancel() first"
        yield from batch.wait_for_cancel(
            self._ctx, self.report, interval=interval, max_interval=max_interval
        )

    def export(
        self,
        path: str | Path | None = None,
        *,
        format: ExportFormat = "csv",
        counts: "ExportCounts | None" = None,
    ) -> Path:
        """Write one row per request (its result's fields) as CSV or JSONL; the path written
        (default: `export_<id>.<format>` in the working directory; a folder: that name in
        it). `counts`, if given, is told the rows by status."""
        return save_export(self.id, self.export_bytes(format=format, counts=counts), path, format)

    def export_bytes(
        self, *, format: ExportFormat = "csv", counts: "ExportCounts | None" = None
    ) -> Iterator[bytes]:
        """`export()`'s bytes, streamed instead of saved (`batchledger export --out -`)."""
        self._reread()
        return export_chunks(cast(BatchRow, self.row), None, format, counts)
