"""`retry`: send again, as a new job linked to the original, the input lines of a batch or
a job that have no successful response; once that job is done, the original's results are
merged with it so that they hold one line per input custom_id."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batchledger.batches import FINAL_STATUSES, JOB_RUNNING, BatchRef, JobRef, Row, results_saved
from batchledger.context import Context
from batchledger.details import CreateDetails
from batchledger.errors import Refused, UsageError
from batchledger.jobs import JobReport, advance
from batchledger.ledger import InputFile
from batchledger.paths import default_results_path, errors_path_for
from batchledger.redo import RedoPlan, merge_attempts, plan_redo
from batchledger.savefile import Saved, prepare_target, save_chunks

READ_BYTES = 1024 * 1024


@dataclass
class Original:
    """What a retry starts from: a batch or a job, its input and its saved results."""

    retry_of: str  # the batch id or job id
    row: Row  # its ledger row (batches or jobs)
    is_job: bool
    input_path: Path
    output: Path | None
    errors: Path | None

    @property
    def output_target(self) -> Path:
        """Where its merged output is (or would be) saved."""
        if self.output is not None:
            return self.output
        if self.errors is not None:
            return self.errors.with_name(self.errors.name.replace(".errors.jsonl", ".jsonl"))
        return default_results_path(self.retry_of).absolute()


@dataclass
class RetryReport:
    original: Original
    plan: RedoPlan | None = None  # None: a retry cut off earlier was resumed
    job: JobReport | None = None  # the retry job; None when there was nothing to send


def original_of(ctx: Context, target: BatchRef | JobRef) -> Original:
    """The batch or job to retry, with its results saved; Refused (exit 3) if they are not."""
    ledger = ctx.ledger
    if isinstance(target, JobRef):
        job = ledger.find_job(target.job_id)
        if job is None:
            raise UsageError(f"no job {target.job_id} in the ledger")
        if job["retry_of"]:  # a retry of a retry retries the original
            return original_of(ctx, _ref_of(ctx, job["retry_of"]))
        if job["status"] == JOB_RUNNING:
            raise Refused(
                f"job {job['job_id']} is still running; its results are not merged yet: "
                f"'batchledger watch --batch-id {job['job_id']}' first"
            )
        return Original(
            job["job_id"],
            job,
            True,
            Path(job["input_path"]),
            Path(job["output_path"]) if job["output_path"] else None,
            Path(job["error_path"]) if job["error_path"] else None,
        )
    row = ledger.find_batch(target.batch_id, target.account)
    if row is None:
        raise UsageError(f"{target.batch_id} is not in the ledger")
    if row["part"] is not None:
        job, _ = ledger.job_of_part(row["part"])
        raise UsageError(f"{target.batch_id} is a part of {job['job_id']}: retry the job")
    retrieve = f"'batchledger retrieve --batch-id {target.batch_id}'"
    if row["status"] not in FINAL_STATUSES or not results_saved(row):
        raise Refused(f"the results of batch {target.batch_id} are not saved; run {retrieve} first")
    if not row["input_path"]:
        raise UsageError(f"the ledger does not know the input of {target.batch_id}")
    return Original(
        target.batch_id,
        row,
        False,
        Path(row["input_path"]),
        Path(row["output_path"]) if row["output_path"] else None,
        Path(row["error_path"]) if row["error_path"] else None,
    )


def _ref_of(ctx: Context, retry_of: str) -> BatchRef | JobRef:
    if retry_of.startswith("job_"):
        return JobRef(retry_of)
    rows = ctx.ledger.find_batches(retry_of)
    return BatchRef.of(rows[0]) if rows else BatchRef(ctx.account.name, retry_of)


def retry(
    ctx: Context, target: BatchRef | JobRef, *, all_failed: bool, max_in_flight: int | None
) -> RetryReport:
    """Plan the lines to send again and send them as a new job (a retry cut off earlier
    is resumed instead); nothing is sent when there is nothing to retry."""
    original = original_of(ctx, target)
    report = RetryReport(original)
    running = [job for job in ctx.ledger.unfinished_jobs() if job["retry_of"] == original.retry_of]
    if running:
        job = running[0]
        if ctx.ledger.find_unsent_job_by_id(job["id"]) is None:
            raise Refused(
                f"a retry of {original.retry_of} is still running ({job['job_id']}); "
                f"'batchledger watch --batch-id {job['job_id']}' follows it"
            )
        report.job = advance(ctx, job, search_uploads=True)
        return report
    if not original.input_path.is_file():
        raise UsageError(f"the input of {original.retry_of}, {original.input_path}, is gone")
    report.plan = plan = plan_redo(
        original.input_path, [(original.output, original.errors)], all_failed=all_failed
    )
    if not plan.lines:
        return report
    row = original.row
    account = ctx.account_named(row["account"])
    limits = account.limits
    parts = pack(original.input_path, plan.ranges, limits)
    input_ = InputFile(
        path=original.input_path,
        size=sum(end - start for start, end in plan.ranges),
        sha256=row["input_sha256"] or "",
        lines=plan.lines,
    )
    job, _ = ctx.ledger.claim_job(
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
        ctx.ledger.release_job_claim(job["id"])
    return report


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


def merge_into_original(ctx: Context, retry_job: Row) -> list[tuple[str, Path, Saved | None]]:
    """After a retry job is done: the original's results hold one line per custom_id, its
    success if any attempt got one, else its last error. (kind, path, saved) of each."""
    original = original_of(ctx, _ref_of(ctx, retry_job["retry_of"]))
    retried = (
        Path(retry_job["output_path"]) if retry_job["output_path"] else None,
        Path(retry_job["error_path"]) if retry_job["error_path"] else None,
    )
    output_target = original.output_target
    errors_target = errors_path_for(output_target)
    output, errors = merge_attempts(
        output_target,
        errors_target,
        original.input_path,
        [(original.output, original.errors), retried],
    )
    merged = []
    for kind, path, saved in (("output", output_target, output), ("error", errors_target, errors)):
        if saved is None and not original.is_job and original.row[f"{kind}_file_id"]:
            # Every line it held has a newer outcome in the other file. The batch still has
            # that file on the API: an empty one here keeps it saved, so that no sweep
            # fetches the stale lines back.
            prepare_target(path)
            saved = save_chunks(path, [])
        elif saved is None and path.exists():
            path.unlink()  # every line it held has a newer outcome in the other file
        _record(ctx, original, kind, path if saved else None, saved, retry_job["job_id"])
        merged.append((kind, path, saved))
    if original.is_job:  # its counts: what its results hold now
        from batchledger.jobs import result_lines

        ctx.ledger.record_job_counts(
            original.row["id"],
            result_lines(output_target if output else None),
            result_lines(errors_target if errors else None),
        )
    return merged


def _record(
    ctx: Context, original: Original, kind: str, path: Path | None, saved: Saved | None, by: str
) -> None:
    ledger = ctx.ledger
    size, sha256 = (saved.size, saved.sha256) if saved else (None, None)
    if original.is_job:
        ledger.record_job_results(original.row["id"], kind, path, size, sha256)
    else:
        ledger.record_merge(original.row["id"], kind, path, size, sha256, f"merged with {by}")
