"""The handles of the Python API: a `Batch` and a `Job` of the ledger, each with its status,
its request counts, and what can be done with it (refresh, wait, results, retry, cancel,
export). Each method is a call of the same steps the command line takes (batch.py, jobs/,
retry.py, export.py), so every guarantee holds: nothing sent twice, every answer recorded.

Nothing here prints, unless `wait(progress=True)` is asked for (a bar on stderr).
"""

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from batchledger.api.result_rows import ResultRow, result_rows, to_pandas
from batchledger.batches import (
    FINAL_STATUSES,
    JOB_INPUT_CHANGED,
    JOB_RUNNING,
    BatchRef,
    JobRef,
    Row,
)
from batchledger.context import Context
from batchledger.errors import NotFound, NotInLedger, Refused, UsageError, WaitTimeout

if TYPE_CHECKING:
    from batchledger.batch import BatchReport, SavedFile
    from batchledger.export import ExportCounts
    from batchledger.jobs import JobReport
    from batchledger.retry import RetryReport

# How long `wait` pauses between checks at first: an emulator's batches move every few
# seconds, a provider's in minutes or hours. The pause grows while nothing moves.
EMULATOR_INTERVAL = 1.0
PROVIDER_INTERVAL = 10.0
MAX_INTERVAL = 300.0

ExportFormat = Literal["csv", "jsonl"]


class RequestCounts(TypedDict):
    """A batch's or job's requests: all of them, those that succeeded, those that failed."""

    total: int
    completed: int
    failed: int


def first_interval(ctx: Context, account: str) -> float:
    """The first pause of a wait, for the account's kind."""
    kind = ctx.account_named(account).kind
    return EMULATOR_INTERVAL if kind == "emulator" else PROVIDER_INTERVAL


def deadline_sleep(timeout: float | None) -> Callable[[float], None] | None:
    """The polling loops' sleep, cut short at the deadline and raising WaitTimeout there;
    None (plain time.sleep) without a timeout."""
    if timeout is None:
        return None
    deadline = time.monotonic() + timeout

    def sleep(seconds: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"still running after {timeout:g} s; it goes on on the server")
        time.sleep(min(seconds, left))

    return sleep


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

    def history(self) -> list[Row]:
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
        self._took(batch.look_up(self._ctx, self._ref))
        if save:
            self.save(out)
        return self

    def save(self, out: str | Path | None = None) -> "Batch":
        """Save the results of the batch as the last `refresh()` found it, if it has
        finished and they are not saved yet (or `out` names a place for them)."""
        from batchledger import batch  # start-up: only calls of the API load it

        if self.report is None or self.report.batch is None:
            return self.refresh(save=True, out=out)
        report = self.report
        batch.save_if_finished(self._ctx, report, out=Path(out) if out is not None else None)
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
        bar = _progress() if progress else None
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
        input_path, results = export.check_exportable(self.row)
        return result_rows(input_path, results)

    def to_pandas(self) -> Any:
        """`results()` as a pandas DataFrame (`pip install 'batchledger[pandas]'`)."""
        return to_pandas(self.results())

    def retry(self, *, all_failed: bool = False, max_in_flight: int | None = None) -> "Job | None":
        """Send again, as a new job, the requests that got no successful response
        (expired, cancelled, timed out, 429, 5xx, missing; every failure if `all_failed`).
        None when there is nothing to retry. Once the job is done, this batch's results
        hold each request's last answer."""
        self.retry_report = _retry(self._ctx, self._ref, self.account, all_failed, max_in_flight)
        return _retry_job(self._ctx, self.retry_report)

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
        return _save_export(self.id, self.export_bytes(format=format, counts=counts), path, format)

    def export_bytes(
        self, *, format: ExportFormat = "csv", counts: "ExportCounts | None" = None
    ) -> Iterator[bytes]:
        """`export()`'s bytes, streamed instead of saved (`batchledger export --out -`)."""
        self._reread()
        return _export_chunks(self.row, None, format, counts)


class Job:
    """A job of the ledger: an input split into parts, each its own batch. `status` is
    `running`, `done`, `cancelled` or `input_changed`."""

    def __init__(self, ctx: Context, row: Row) -> None:
        self._ctx = ctx
        self.row: Row = row
        """The job's ledger row (every column of `jobs`), as last read or recorded."""
        self.warnings: list[str] = []
        """What the last call found worth knowing, as the command line would warn."""
        self._report: JobReport | None = None
        self.retry_report: RetryReport | None = None
        """What the last `retry()` planned and sent, as `batchledger retry` shows it."""

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.status} ({self.account})>"

    @property
    def id(self) -> str:
        """The job's id (`job_…`)."""
        return str(self.row["job_id"])

    @property
    def account(self) -> str:
        """The account the job's batches are made on."""
        return str(self.row["account"])

    @property
    def status(self) -> str:
        """`running`, `done`, `cancelled` or `input_changed` (its queued parts wait for
        the input as it was split)."""
        return str(self.row["status"])

    @property
    def done(self) -> bool:
        """The job is over: done (results merged) or cancelled."""
        return self.row["status"] not in (JOB_RUNNING, JOB_INPUT_CHANGED)

    @property
    def request_counts(self) -> RequestCounts:
        """Its requests: every part's, those answered successfully, those that failed."""
        total = int(self.row["input_requests"] or 0)
        completed, failed = self.row["requests_completed"], self.row["requests_failed"]
        if completed is None or failed is None:  # counted once merged; till then, the parts'
            completed, failed = self.report.requests_completed, self.report.requests_failed
        return RequestCounts(total=total, completed=int(completed), failed=int(failed))

    @property
    def report(self) -> "JobReport":
        """The job with its parts, as the command line shows it."""
        if self._report is None:
            from batchledger.jobs import JobReport, views  # start-up: jobs only

            self._report = JobReport(job=self.row, parts=views(self._ctx, self.row))
        return self._report

    @property
    def output_path(self) -> Path | None:
        """Where its merged results are saved, once they are."""
        return Path(self.row["output_path"]) if self.row["output_path"] else None

    @property
    def error_path(self) -> Path | None:
        """Where its merged error lines are saved, once they are (if it has any)."""
        return Path(self.row["error_path"]) if self.row["error_path"] else None

    def _took(self, report: "JobReport") -> None:
        self._report = report
        self.row = report.job
        self.warnings = [f"overwrote existing file {i.path}" for i in report.saved if i.replaced]
        self.warnings += report.warnings

    def _reread(self) -> None:
        ledger = self._ctx.open_ledger(create=False)
        row = ledger.jobs.find_job(self.id) if ledger is not None else None
        if row is None:
            raise NotInLedger(f"no job {self.id} in the ledger")
        if row != self.row:
            self.row, self._report = row, None

    def refresh(self, *, out: str | Path | None = None) -> "Job":
        """Move the job on, as `batchledger status` does: check its live parts (saving
        their results), send queued parts, merge the results once every part is final
        (at `out`, else `results_<job id>.jsonl` in the working directory)."""
        from batchledger.jobs import advance  # start-up: jobs only

        self._reread()
        self._ctx.start_api_command(self.account)
        self._took(advance(self._ctx, self.row, out=Path(out) if out is not None else None))
        return self

    def wait(
        self,
        *,
        progress: bool = False,
        timeout: float | None = None,
        interval: float | None = None,
        max_interval: float = MAX_INTERVAL,
    ) -> "Job":
        """Move the job on round after round (backing off while nothing moves) until it is
        over and its results are merged. As `Batch.wait`: `progress`, `timeout`."""
        from batchledger.render_jobs import job_progress  # start-up: jobs only

        bar = _progress() if progress else None
        rounds = self.follow(
            interval=interval, max_interval=max(max_interval, interval or 0), timeout=timeout
        )
        try:
            for _ in rounds:
                if bar is not None:
                    bar.show(job_progress(self.report))
        finally:
            if bar is not None:
                bar.end_line()
        return self

    def follow(
        self,
        *,
        interval: float | None = None,
        max_interval: float = MAX_INTERVAL,
        timeout: float | None = None,
    ) -> Iterator["Job"]:
        """Move the job on round after round until it is over, yielding the handle after
        each (`report`: its parts, what was sent, the merged results): what `wait` and
        `batchledger watch` show."""
        from batchledger.jobs import follow_job  # start-up: jobs only

        self._reread()
        self._ctx.start_api_command(self.account)  # now: a missing key is told at once
        rounds = follow_job(
            self._ctx,
            self.row,
            interval=interval or first_interval(self._ctx, self.account),
            max_interval=max_interval,
            sleep=deadline_sleep(timeout),
        )
        return self._each(rounds)

    def _each(self, rounds: "Iterator[JobReport]") -> Iterator["Job"]:
        for report in rounds:
            self._took(report)
            yield self

    def results(self) -> Iterator[ResultRow]:
        """As `Batch.results`: one dict per input line of the job, in input order."""
        from batchledger import export  # start-up: only results and export load it

        self._reread()
        input_path, results = export.check_job_exportable(self.row)
        return result_rows(input_path, results)

    def to_pandas(self) -> Any:
        """`results()` as a pandas DataFrame (`pip install 'batchledger[pandas]'`)."""
        return to_pandas(self.results())

    def retry(self, *, all_failed: bool = False, max_in_flight: int | None = None) -> "Job | None":
        """As `Batch.retry`, for the requests of this job."""
        self.retry_report = _retry(
            self._ctx, JobRef(self.id), self.account, all_failed, max_in_flight
        )
        return _retry_job(self._ctx, self.retry_report)

    def cancel(self) -> "Job":
        """Cancel the job's live batches and its queued parts (Refused if it is over);
        `wait()` follows it until every batch has ended."""
        from batchledger.jobs import cancel_job  # start-up: jobs only

        self._reread()
        if self.done:
            raise Refused(f"job {self.id} is already {self.status}; there is nothing to cancel")
        self._ctx.start_api_command(self.account)
        self._took(cancel_job(self._ctx, self.row))
        return self

    def export(
        self,
        path: str | Path | None = None,
        *,
        format: ExportFormat = "csv",
        counts: "ExportCounts | None" = None,
    ) -> Path:
        """As `Batch.export`, for the job's merged results."""
        return _save_export(self.id, self.export_bytes(format=format, counts=counts), path, format)

    def export_bytes(
        self, *, format: ExportFormat = "csv", counts: "ExportCounts | None" = None
    ) -> Iterator[bytes]:
        """As `Batch.export_bytes`, for the job's merged results."""
        self._reread()
        return _export_chunks(None, self.row, format, counts)


def _progress() -> Any:
    from batchledger.render import Progress  # start-up: only a wait with progress draws

    return Progress(sys.stderr)


def _retry(
    ctx: Context,
    target: BatchRef | JobRef,
    account_hint: str,
    all_failed: bool,
    max_in_flight: int | None,
) -> "RetryReport":
    """Sent from the original's account (a retry is sent where the original was)."""
    from batchledger.retry import retry  # start-up: retry and jobs, only for retry

    ledger = ctx.open_ledger(create=False)
    if isinstance(target, BatchRef):
        account = target.account
    else:
        row = ledger.jobs.find_job(target.job_id) if ledger is not None else None
        account = row["account"] if row is not None else account_hint
    ctx.start_api_command(account)
    return retry(ctx, target, all_failed=all_failed, max_in_flight=max_in_flight)


def _retry_job(ctx: Context, report: "RetryReport") -> Job | None:
    if report.job is None:
        return None
    job = Job(ctx, report.job.job)
    job._took(report.job)
    job.warnings += report.warnings
    return job


def _export_chunks(
    batch_row: Row | None, job_row: Row | None, format_: str, counts: "ExportCounts | None"
) -> Iterator[bytes]:
    """The export's bytes; what keeps it from being made is raised now, not when read."""
    from batchledger import export as exporting  # start-up: only export loads it

    if format_ not in ("csv", "jsonl"):
        raise UsageError(f"format {format_!r} is not csv or jsonl")
    if job_row is not None:
        input_path, results = exporting.check_job_exportable(job_row)
    else:
        assert batch_row is not None
        input_path, results = exporting.check_exportable(batch_row)
    rows = exporting.export_rows(input_path, results, counts or exporting.ExportCounts())
    return exporting.csv_chunks(rows) if format_ == "csv" else exporting.jsonl_chunks(rows)


def _save_export(id_: str, chunks: Iterator[bytes], path: str | Path | None, format_: str) -> Path:
    from batchledger import export as exporting  # start-up: only export loads it
    from batchledger.savefile import prepare_target, save_chunks

    default = exporting.default_export_path(id_, format_)
    out = Path(path).expanduser() if path is not None else default
    if out.is_dir():  # as for retrieve and status: the default name, inside the folder
        out = out / default
    out = out.absolute()
    prepare_target(out)
    save_chunks(out, chunks)
    return out
