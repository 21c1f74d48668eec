"""Jobs moved on: a job split and claimed, its live parts checked (their results saved),
the part rules (rules.py) asked and carried out, queued parts sent, the job merged once
every part is final (results.py); cancel and follow.

Nothing here prints. Every step is recorded before and after it happens, as for one batch:
a part's upload is named with its own ref (found again if its answer is lost), and each
attempt of a part is a batch row written before its create (found by ref or input file).
"""

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from batchledger import token_budget
from batchledger.batch import check, create_with_ref, record, upload_once
from batchledger.batches import (
    SAVABLE_STATUSES,
    TOKEN_LIMIT_CODE,
    BatchRef,
    JobStatus,
    PartState,
    attempt_is_open,
    results_saved,
)
from batchledger.claims import claimed_by_another_run
from batchledger.context import Context
from batchledger.details import CreateDetails
from batchledger.errors import BatchledgerError, Rejected
from batchledger.jobs import results
from batchledger.jobs.parts import (
    JobReport,
    PartView,
    details_of,
    input_changed,
    input_changed_warning,
    part_ranges,
    part_results_path,
    views,
)
from batchledger.jobs.rules import Do, Next, next_step
from batchledger.ledger import ClaimGuard, InputFile
from batchledger.polling import Backoff
from batchledger.providers import Inline, Provider
from batchledger.recovery import recover_unfinished
from batchledger.rows import JobRow, PartRow
from batchledger.split import plan_parts
from batchledger.times import epoch_of
from batchledger.token_budget import TokenPlan


def create_job(
    ctx: Context,
    input_: InputFile,
    endpoint: str,
    window: str,
    *,
    split: tuple[int, int],
    max_in_flight: int | None,
    details: CreateDetails,
    force: bool,
    planned: TokenPlan | None = None,
    guard: ClaimGuard | None = None,
) -> JobReport:
    """Split `input_` into parts and send as many as --max-in-flight lets; the rest wait.
    `guard`: checked with the claim (`claim_job`)."""
    # issue 22: parts cut by counted tokens (token_budget.plan_parts_by_tokens) when planned
    parts = (
        planned.parts
        if planned
        else plan_parts(input_.path, max_requests=split[0], max_bytes=split[1])
    )
    account = ctx.account
    job, resumed = ctx.ledger.jobs.claim_job(
        input_,
        endpoint,
        window,
        account=account.name,
        base_url=account.location,
        limits=split,
        max_in_flight=max_in_flight,
        parts=[(part.start, part.end, part.requests, None) for part in parts],
        details=details,
        force=force,
        guard=guard,
    )
    if planned is not None:  # issue 22: each part's counted tokens, for the token budget
        ctx.ledger.jobs.record_part_tokens(
            job["id"],
            [
                (part.index, part.start, part.end, tokens)
                for part, tokens in zip(planned.parts, planned.tokens, strict=True)
            ],
        )
    if ctx.on_job_claimed is not None:
        ctx.on_job_claimed(job["job_id"])
    if job["input_sha256"] == input_.sha256:
        # Hashed by this run a moment ago: the parts it sends now need no second hash.
        with contextlib.suppress(OSError):
            stat = input_.path.stat()
            if stat.st_size == input_.size:
                ctx.checked_inputs[job["id"]] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    try:
        return advance(ctx, job, check=resumed, details=details, search_uploads=resumed)
    finally:
        with contextlib.suppress(BatchledgerError):
            ctx.ledger.release_claim("jobs", job["id"])


def advance(
    ctx: Context,
    job: JobRow,
    *,
    check: bool = True,
    out: Path | None = None,
    out_dir: Path | None = None,
    details: CreateDetails | None = None,
    search_uploads: bool = False,
) -> JobReport:
    """Move a job on: check its live parts (saving their results), send again the parts
    the enqueued-token limit bounced, send queued parts up to --max-in-flight, and merge
    the results once every part is final."""
    details = details or details_of(job)
    report = JobReport(job=job)
    if job["status"] == JobStatus.INPUT_CHANGED and check:
        changed = input_changed(ctx, job)
        if changed is None:
            ctx.ledger.jobs.set_job_status(
                job["id"], JobStatus.RUNNING, "input_restored", "the input is as it was split again"
            )
            job = report.job = ctx.ledger.jobs.get_job(job["id"])
        else:
            report.warnings.append(input_changed_warning(job, changed))
    if job["status"] != JobStatus.RUNNING:
        report.parts = views(ctx, job)
        return report
    provider = ctx.provider_for(job["account"])
    if check:
        _check_parts(ctx, job, report)
    now = datetime.now(UTC)
    for view in views(ctx, job):
        if view.part["state"] != PartState.SENT:
            continue  # the queued are asked below, within --max-in-flight
        step = _next(ctx, job, view, now)
        if step.do == Do.RESET:
            ctx.ledger.jobs.reset_part(view.part["id"])
        elif step.do == Do.REQUEUE:
            assert step.not_before is not None
            ctx.ledger.jobs.requeue_part(view.part["id"], step.not_before, step.reason)
    parts = views(ctx, job)
    open_parts = sum(
        1
        for view in parts
        if view.part["state"] == PartState.SENT and view.attempt and attempt_is_open(view.attempt)
    )
    limit = job["max_in_flight"]
    for view in parts:
        if view.part["state"] != PartState.QUEUED or (limit is not None and open_parts >= limit):
            continue
        if _next(ctx, job, view, now).do != Do.SEND:
            continue
        # A part is read from the input now: only if it is the input the job was split from.
        changed = input_changed(ctx, job)
        if changed is not None:
            ctx.ledger.jobs.set_job_status(
                job["id"], JobStatus.INPUT_CHANGED, "input_changed", changed
            )
            report.job = ctx.ledger.jobs.get_job(job["id"])
            report.warnings.append(input_changed_warning(job, changed))
            break
        sent = _send_part(ctx, provider, job, view.part, len(parts), details, search_uploads)
        if sent is not None:
            open_parts += 1
            report.submitted.append(sent)
    report.parts = views(ctx, job)
    if all(view.ready for view in report.parts):
        results.merge_parts(ctx, job, report, out, out_dir)
        report.job = ctx.ledger.jobs.get_job(job["id"])
    return report


def _next(ctx: Context, job: JobRow, view: PartView, now: datetime) -> Next:
    """The part rules' answer for `view`, with the ledger's facts they need: whether a
    queued part fits the account's token budget (issue 22), and whether a batch of the
    account has finished since it was requeued (asked only when that decides)."""
    part = view.part
    queued = part["state"] == PartState.QUEUED
    fits = not queued or token_budget.may_send(ctx, job, part)
    finished = (
        queued
        and fits
        and bool(part["requeues"])
        and part["not_before"] is not None
        and part["requeued_at"] is not None
        and now.timestamp() < epoch_of(part["not_before"])
        and ctx.ledger.batches.batch_finished_since(job["account"], part["requeued_at"])
    )
    return next_step(part, view.attempt, now, fits_budget=fits, finished_since=finished)


def _send_part(
    ctx: Context,
    provider: Provider,
    job: JobRow,
    part: PartRow,
    total: int,
    details: CreateDetails,
    search_uploads: bool,
) -> PartView | None:
    """Upload the part (once: later attempts reuse it) and create its next attempt."""
    ledger = ctx.ledger
    input_path = Path(job["input_path"])
    ranges = part_ranges(part)

    def started() -> None:
        if not part["upload_started_at"]:
            ledger.jobs.mark_upload_started(part["id"])

    def uploaded_in(seconds: float) -> None:
        if ctx.on_part_uploaded is not None:
            ctx.on_part_uploaded(part["part_index"], total, size, seconds)

    size = sum(end - start for start, end in ranges)
    uploaded = upload_once(
        provider,
        input_path,
        f"{input_path.stem}.part{part['part_index']}of{total}.{part['ref']}.jsonl",
        size,
        file_id=part["input_file_id"],
        # An upload was begun and its answer never recorded: it may have arrived.
        search=search_uploads or bool(part["upload_started_at"]),
        expires_after=details.input_expires_after,
        ranges=ranges,
        before_upload=started,
        after_upload=uploaded_in,
    )
    if uploaded.id != part["input_file_id"]:
        ledger.jobs.record_part_upload(part["id"], uploaded.id, uploaded.created_at)
        part = {**part, "input_file_id": uploaded.id}
    row = ledger.jobs.start_attempt(part, job, details)
    if row is None:
        return None  # another run is sending it
    try:
        _, row = create_with_ref(
            ctx,
            provider,
            row,
            uploaded,
            job["endpoint"],
            job["completion_window"],
            details,
            exclude=ledger.batches.batch_ids_made_from({uploaded.id}),
            inline=Inline(input_path, ranges),
        )
    except Rejected as exc:
        if exc.code != TOKEN_LIMIT_CODE:
            raise
        return PartView(part, ledger.batches.get_row(row["id"]))
    finally:
        with contextlib.suppress(BatchledgerError):
            ledger.release_claim("batches", row["id"])
    return PartView(part, row)


def _check_parts(ctx: Context, job: JobRow, report: JobReport) -> None:
    """Check the job's live attempts and save the results of finished ones."""
    unfinished = []
    for view in views(ctx, job):
        attempt = view.attempt
        if attempt is None:
            continue
        if attempt["batch_id"] is None:
            if attempt["status"] is None and not claimed_by_another_run(attempt):
                unfinished.append(attempt)
            continue
        needs_save = attempt["status"] in SAVABLE_STATUSES and not results_saved(attempt)
        if not attempt_is_open(attempt) and not needs_save:
            continue
        if attempt["results_gone_at"] is not None and not attempt_is_open(attempt):
            continue
        ref = BatchRef(attempt["account"], attempt["batch_id"])
        out = part_results_path(ctx, job["job_id"], view.part["part_index"], attempt["batch_id"])
        checked = check(ctx, ref, auto_save=True, out=out)
        if checked.warning:
            report.warnings.append(checked.warning)
        if checked.error is not None:
            report.warnings.append(f"{checked.batch_id}: {checked.error.message}")
    if unfinished:
        recover_unfinished(ctx, job["account"], unfinished)


def cancel_job(ctx: Context, job: JobRow) -> JobReport:
    """Cancel the job's live batches; its queued parts are never sent."""
    ctx.ledger.jobs.cancel_queued_parts(job["id"])
    if job["status"] == JobStatus.INPUT_CHANGED:  # nothing is read from the input any more
        ctx.ledger.jobs.set_job_status(
            job["id"], JobStatus.RUNNING, "cancel", "its input had changed"
        )
    provider = ctx.provider_for(job["account"])
    for view in views(ctx, job):
        attempt = view.attempt
        if attempt is None or attempt["batch_id"] is None or not attempt_is_open(attempt):
            continue
        batch = provider.cancel(attempt["batch_id"])
        if batch is not None:
            record(ctx, BatchRef.of(attempt), batch, action="cancel", row_id=attempt["id"])
    return JobReport(job=ctx.ledger.jobs.get_job(job["id"]), parts=views(ctx, job))


def follow_job(
    ctx: Context,
    job: JobRow,
    *,
    interval: float,
    max_interval: float,
    out: Path | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Iterator[JobReport]:
    """Advance the job until it is done, yielding a report after each round."""
    backoff = Backoff(interval, max_interval, sleep)
    last: tuple[int, int] | None = None
    while True:
        report = advance(ctx, ctx.ledger.jobs.get_job(job["id"]), out=out)
        yield report
        if report.job["status"] != JobStatus.RUNNING:
            return
        seen = (report.parts_done, report.requests_done)
        moved, last = seen != last, seen
        backoff.wait(moved)
