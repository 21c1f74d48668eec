"""`retry`: send again, as a new job linked to the original, the input lines of a batch or
a job that have no successful response; once that job is done, the original's results are
merged with it so that they hold one line per input custom_id (jobs/retry_merge.py)."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from batchledger.batches import BatchRef, JobRef, JobStatus
from batchledger.context import Context
from batchledger.details import CostEstimate, CreateDetails
from batchledger.errors import Refused
from batchledger.jobs import JobReport, advance, rebuild_job_results
from batchledger.jobs.parts import part_ranges
from batchledger.jobs.retry_merge import (
    Original,
    changed_results,
    check_input,
    original_of,
    results_of,
)
from batchledger.ledger import ClaimGuard, InputFile
from batchledger.redo import RedoPlan, plan_redo
from batchledger.rows import JobRow

READ_BYTES = 1024 * 1024


@dataclass
class RetryReport:
    original: Original
    plan: RedoPlan | None = None  # None: a retry cut off earlier was resumed
    job: JobReport | None = None  # the retry job; None when there was nothing to send
    warnings: list[str] = field(default_factory=list)


# A retry's estimate and its account's day budget (api/shared.py: prices and budgets are a
# layer above): given the input and the byte ranges of the lines to send again, their
# estimate (recorded with the retry's job: counted under a budget, else bytes / 4) and the
# budget's guard, which its claim checks under the write lock (None: no budget).
Pricing = Callable[[Path, list[tuple[int, int]]], tuple[CostEstimate | None, ClaimGuard | None]]


def retry(
    ctx: Context,
    target: BatchRef | JobRef,
    *,
    all_failed: bool,
    max_in_flight: int | None,
    pricing: Pricing | None = None,
) -> RetryReport:
    """Plan the lines to send again and send them as a new job (a retry cut off earlier
    is resumed instead); nothing is sent when there is nothing to retry, or when the day
    budget of `pricing` refuses it (Refused, before anything is recorded or sent)."""
    original = original_of(ctx, target)
    report = RetryReport(original)
    running = [
        job for job in ctx.ledger.jobs.unfinished_jobs() if job["retry_of"] == original.retry_of
    ]
    if running:
        job = running[0]
        if ctx.ledger.jobs.find_unsent_job_by_id(job["id"]) is None:
            # Every part sent: once they are all final, this finishes its merge (one cut
            # off by a kill or Ctrl-C included).
            report.job = advance(ctx, job)
            if report.job.job["status"] == JobStatus.RUNNING:
                raise Refused(
                    f"a retry of {original.retry_of} is still running ({job['job_id']}); "
                    f"'batchledger watch --batch-id {job['job_id']}' follows it"
                )
            return report
        if pricing is not None:
            _hold_resumed(ctx, job, pricing)
        report.job = advance(ctx, job, search_uploads=True)
        return report
    sha256 = check_input(original)
    original_job = original.job
    changed = changed_results(original) if original_job is not None else []
    if original_job is not None and changed:
        # Never from the API: a part's file that is gone or changed is refused, named.
        rebuild_job_results(ctx, original_job, original.output_target, download=False)
        folder = ctx.ledger_path.parent / "jobs"
        report.warnings += [
            f"{path} was not the file the ledger saved (changed or missing): rebuilt from "
            f"the results of its parts in {folder}"
            for path in changed
        ]
        original = original_of(ctx, target)
    attempts = results_of(ctx, original)
    report.plan = plan = plan_redo(original.input_path, attempts, all_failed=all_failed)
    if not plan.lines:
        return report
    row = original.row
    account = ctx.account_named(row["account"])
    limits = account.limits
    parts = pack(original.input_path, plan.ranges, limits)
    # The input file the retry reads its lines from, as the ledger knows it (its size and
    # sha256 describe the same file); the requests are those it sends, and each part's
    # byte ranges say which.
    input_ = InputFile(
        path=original.input_path,
        size=original.input_path.stat().st_size,
        sha256=sha256,
        lines=plan.lines,
    )
    details, guard = CreateDetails(), None
    if pricing is not None:
        estimate, guard = pricing(original.input_path, plan.ranges)
        details = CreateDetails(estimate=estimate)
    job, _ = ctx.ledger.jobs.claim_job(
        input_,
        row["endpoint"],
        row["completion_window"],
        account=row["account"],
        base_url=account.location,
        limits=limits,
        max_in_flight=max_in_flight,
        parts=parts,
        details=details,
        force=True,
        retry_of=original.retry_of,
        guard=guard,
    )
    try:
        report.job = advance(ctx, job, check=False)
    finally:
        ctx.ledger.release_claim("jobs", job["id"])
    return report


def _hold_resumed(ctx: Context, job: JobRow, pricing: Pricing) -> None:
    """A retry cut off before all of it was sent is held to the day budget again when it
    resumes, as a resumed create is: its lines' estimate against the day's spend without
    its own (Refused: nothing more is sent). Its estimate is recorded if it had none."""
    ranges = [span for part in ctx.ledger.jobs.job_parts(job["id"]) for span in part_ranges(part)]
    estimate, guard = pricing(Path(job["input_path"]), ranges)
    if guard is not None:
        with ctx.ledger.conn.writing():
            guard("jobs", job)
    if estimate is not None:
        ctx.ledger.record_estimate("jobs", job["id"], estimate)


def pack(
    path: Path, ranges: list[tuple[int, int]], limits: tuple[int, int]
) -> list[tuple[int, int, int, list[tuple[int, int]] | None]]:
    """The lines of `ranges` in parts within the account's limits (requests, bytes), cut
    at line boundaries: (first byte, last byte + 1, requests, ranges) per part."""
    max_requests, max_bytes = limits
    parts: list[tuple[int, int, int, list[tuple[int, int]] | None]] = []
    current: list[tuple[int, int]] = []
    requests = size = 0

    def close() -> None:
        nonlocal current, requests, size
        if current:
            parts.append((current[0][0], current[-1][1], requests, current))
        current, requests, size = [], 0, 0

    for start, end in _lines_of(path, ranges):
        if requests + 1 > max_requests or size + (end - start) > max_bytes:
            close()
        if current and current[-1][1] == start:
            current[-1] = (current[-1][0], end)
        else:
            current.append((start, end))
        requests += 1
        size += end - start
    close()
    return parts


def _lines_of(path: Path, ranges: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """(start, end) of each line within `ranges`, read in blocks, lines never parsed."""
    with path.open("rb") as source:
        for start, end in ranges:
            source.seek(start)
            line_start = start
            position = start
            while position < end:
                block = source.read(min(READ_BYTES, end - position))
                if not block:
                    break
                cut = block.find(b"\n")
                offset = 0
                while cut != -1:
                    yield (line_start, position + cut + 1)
                    line_start = position + cut + 1
                    offset = cut + 1
                    cut = block.find(b"\n", offset)
                position += len(block)
            if line_start < end:
                yield (line_start, end)
