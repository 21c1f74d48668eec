"""The Python API's `Job` handle: a job of the ledger (an input split into parts, each its
own batch), with its status, request counts, and what can be done with it (refresh, wait,
follow, results, retrieve, retry, cancel, export). Each method is a call of the steps the
command line takes (jobs/, retry.py, export.py). Nothing here prints unless asked.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from batchledger.batches import JobRef, JobStatus
from batchledger.context import Context
from batchledger.errors import NotInLedger, Refused
from batchledger.paths import default_results_path, errors_path_for
from batchledger.rows import BatchRow, JobHistoryRow, JobRow, Kind, PartRow, saved_columns

if TYPE_CHECKING:
    from batchledger.export import ExportCounts
    from batchledger.jobs import JobReport
    from batchledger.retry import RetryReport


class Job:
    """A job of the ledger: an input split into parts, each its own batch. `status` is
    `running`, `done`, `cancelled` or `input_changed`."""

    def __init__(self, ctx: Context, row: JobRow) -> None:
        self._ctx = ctx
        self.row: JobRow = row
        """The job's ledger row (every column of `jobs`), as last read or recorded."""
        self.warnings: list[str] = []
        """What the last call found worth knowing, as the command line would warn."""
        self._report: JobReport | None = None
        self.already_saved = False
        """The last `retrieve()` found the results saved there already, unchanged."""
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
        return self.row["status"] not in (JobStatus.RUNNING, JobStatus.INPUT_CHANGED)

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

    def parts(self) -> list[PartRow]:
        """The job's parts (`parts` rows: byte range, requests, state), in input order."""
        self._reread()
        return self._ctx.ledger.jobs.job_parts(self.row["id"])

    def attempts(self) -> list[BatchRow]:
        """Every batch sent for a part of the job (`batches` rows), oldest first."""
        self._reread()
        return self._ctx.ledger.jobs.attempts_of_job(self.row["id"])

    def history(self) -> list[JobHistoryRow]:
        """Every action the ledger recorded on the job, oldest first (`batchledger show`)."""
        self._reread()
        return self._ctx.ledger.jobs.job_history(self.row["id"])

    def retrieve(self, out: str | Path | None = None, *, force: bool = False) -> "Job":
        """Save the job's merged results at `out` (else `results_<job id>.jsonl`): merged
        now if every part is final (Refused while it runs, or when it has none); saved
        there already and unchanged, not written again (`already_saved`) unless `force`;
        a missing or changed file is rebuilt from its parts' results."""
        from batchledger.jobs import advance, rebuild_job_results  # start-up: jobs only

        self._reread()
        wanted = Path(out) if out is not None else None
        self._ctx.start_api_command(self.account)
        report = advance(self._ctx, self.row, out=wanted)
        self._took(report)
        self.already_saved = False
        if self.row["status"] == JobStatus.RUNNING:
            raise Refused(
                f"job {self.id} is still running ({report.parts_done}/{len(report.parts)} "
                "parts done); nothing was saved"
            )
        if not (self.row["output_path"] or self.row["error_path"]):
            raise Refused(f"job {self.id} has no results to save")
        if report.saved:  # merged just now, where it was asked
            return self
        target = (wanted or default_results_path(self.id)).expanduser().absolute()
        if not force and _saved_unchanged(self.row, target):
            self.already_saved = True
            return self
        report.saved = rebuild_job_results(self._ctx, self.row, target, download=True)
        self._took(report)
        return self

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

        bar = progress_bar() if progress else None
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
        return result_rows(input_path, results, self.row["input_sha256"])

    def to_pandas(self) -> Any:
        """`results()` as a pandas DataFrame (`pip install 'batchledger[pandas]'`)."""
        return to_pandas(self.results())

    def retry(self, *, all_failed: bool = False, max_in_flight: int | None = None) -> "Job | None":
        """As `Batch.retry`, for the requests of this job."""
        self.retry_report = send_retry(
            self._ctx, JobRef(self.id), self.account, all_failed, max_in_flight
        )
        return job_of_retry(self._ctx, self.retry_report)

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
        return save_export(self.id, self.export_bytes(format=format, counts=counts), path, format)

    def export_bytes(
        self, *, format: ExportFormat = "csv", counts: "ExportCounts | None" = None
    ) -> Iterator[bytes]:
        """As `Batch.export_bytes`, for the job's merged results."""
        self._reread()
        return export_chunks(None, self.row, format, counts)


def _saved_unchanged(job: JobRow, target: Path) -> bool:
    """The job's results are recorded at `target` (errors beside it) with these bytes."""
    from batchledger.jobs import recorded_intact  # start-up: jobs only

    targets: dict[Kind, Path] = {"output": target, "error": errors_path_for(target)}
    return all(
        saved_columns(job, kind)["path"] == str(path) and recorded_intact(job, kind) is not None
        for kind, path in targets.items()
        if saved_columns(job, kind)["path"]
    )


def job_of_retry(ctx: Context, report: "RetryReport") -> Job | None:
    if report.job is None:
        return None
    job = Job(ctx, report.job.job)
    job._took(report.job)
    job.warnings += report.warnings
    return job
