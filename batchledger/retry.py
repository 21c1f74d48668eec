"""`retry`: send again, as a new job linked to the original, the input lines of a batch or
a job that have no successful response; once that job is done, the original's results are
merged with it so that they hold one line per input custom_id (jobs/retry_merge.py)."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from batchledger.batches import (
    JOB_RUNNING,
    BatchRef,
    JobRef,
)
from batchledger.context import Context
from batchledger.details import CreateDetails
from batchledger.errors import Refused
from batchledger.jobs import JobReport, advance
from batchledger.jobs.retry_merge import (
    Original,
    check_input,
    merged_retries,
    original_of,
    results_of,
)
from batchledger.ledger import InputFile
from batchledger.merge import concat
from batchledger.paths import errors_path_for
from batchledger.redo import Attempt, RedoPlan, merge_attempts, plan_redo
from batchledger.savefile import Saved

READ_BYTES = 1024 * 1024


@dataclass
class RetryReport:
    original: Original
    plan: RedoPlan | None = None  # None: a retry cut off earlier was resumed
    job: JobReport | None = None  # the retry job; None when there was nothing to send
    warnings: list[str] = field(default_factory=list)


def retry(
    ctx: Context, target: BatchRef | JobRef, *, all_failed: bool, max_in_flight: int | None
) -> RetryReport:
    """Plan the lines to send again and send them as a new job (a retry cut off earlier
    is resumed instead); nothing is sent when there is nothing to retry."""
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
            if report.job.job["status"] == JOB_RUNNING:
                raise Refused(
                    f"a retry of {original.retry_of} is still running ({job['job_id']}); "
                    f"'batchledger watch --batch-id {job['job_id']}' follows it"
                )
            return report
        report.job = advance(ctx, job, search_uploads=True)
        return report
    sha256 = check_input(original)
    attempts, changed = results_of(ctx, original)
    if changed:
        rebuild(ctx, original, attempts)
        folder = ctx.ledger_path.parent / "jobs"
        report.warnings += [
            f"{path} was not the file the ledger saved (changed or missing): rebuilt from "
            f"the results of its parts in {folder}"
            for path in changed
        ]
        original = original_of(ctx, target)
        attempts = [(original.output, original.errors)]
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
    job, _ = ctx.ledger.jobs.claim_job(
        input_,
        row["endpoint"],
        row["completion_window"],
        account=row["account"],
        base_url=account.location,
        limits=limits,
        max_in_flight=max_in_flight,
        parts=parts,
        details=CreateDetails(),
        force=True,
        retry_of=original.retry_of,
    )
    try:
        report.job = advance(ctx, job, check=False)
    finally:
        ctx.ledger.release_claim("jobs", job["id"])
    return report


def rebuild(ctx: Context, original: Original, attempts: list[Attempt]) -> None:
    """The job's merged results again, from its parts' results (`attempts`): in part order
    as when it was merged, or one line per custom_id if retries were merged into it."""
    output_target = original.output_target
    errors_target = errors_path_for(output_target)
    targets = (("output", output_target), ("error", errors_target))
    saved: dict[str, Saved | None] = {}
    if merged_retries(ctx, original):
        saved["output"], saved["error"] = merge_attempts(
            output_target, errors_target, original.input_path, attempts
        )
    else:
        for index, (kind, target) in enumerate(targets):
            sources = [path for path in (pair[index] for pair in attempts) if path is not None]
            saved[kind] = concat(target, sources) if sources else None
    for kind, target in targets:
        done = saved[kind]
        path, size, sha256 = (target, done.size, done.sha256) if done else (None, None, None)
        ctx.ledger.jobs.record_job_results(original.row["id"], kind, path, size, sha256)


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
