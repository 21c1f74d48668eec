"""Jobs: an input past one batch's limits, split at line boundaries into parts, each part
its own batch; parts wait in a queue (--max-in-flight, the enqueued-token limit) and are
sent as earlier ones finish; once every part is final, their results are merged.

Nothing here prints. Every step is recorded before and after it happens, as for one batch:
a part's upload is named with its own ref (found again if its answer is lost), and each
attempt of a part is a batch row written before its create (found by ref or input file).
"""

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchledger import api
from batchledger.batches import (
    ABANDONED,
    ENDED_EARLY_STATUSES,
    FINAL_STATUSES,
    JOB_CANCELLED,
    JOB_DONE,
    JOB_INPUT_CHANGED,
    JOB_RUNNING,
    PART_CANCELLED,
    PART_QUEUED,
    PART_SENT,
    REJECTED,
    SAVABLE_STATUSES,
    TOKEN_LIMIT_CODE,
    BatchRef,
    Row,
    attempt_is_open,
    bounced_off_token_limit,
    results_saved,
)
from batchledger.claims import claimed_by_another_run
from batchledger.context import Context
from batchledger.details import CreateDetails
from batchledger.errors import BatchledgerError, Refused, Rejected
from batchledger.ledger import InputFile
from batchledger.times import epoch_of, iso_utc

if TYPE_CHECKING:
    from openai import OpenAI

    from batchledger.token_budget import TokenPlan
    from batchledger.workflow import SavedFile

# How a part the enqueued-token limit bounced is shown: it is not over, it goes out again.
REQUEUED_LABEL = "queued (token limit; sent again later)"

# A part the enqueued-token limit bounced is sent again once another batch of the account
# has finished, or after this long (doubled at each bounce, up to the maximum).
REQUEUE_BACKOFF_SECONDS = 60
MAX_REQUEUE_BACKOFF_SECONDS = 1800


@dataclass
class PartView:
    """A part and where it stands."""

    part: Row
    attempt: Row | None  # its last attempt
    # Input lines before the part's first (its line n is the job's line_offset + n); None
    # for a retry's part, whose lines are scattered through the input.
    line_offset: int | None = None

    @property
    def label(self) -> str:
        if self.part["state"] == PART_CANCELLED:
            return "cancelled"
        if self.part["state"] == PART_QUEUED:
            return "queued" if not self.part["requeues"] else REQUEUED_LABEL
        if self.attempt is None:
            return "queued"
        if bounced_off_token_limit(self.attempt):
            return REQUEUED_LABEL
        return self.attempt["status"] or "submitting"

    @property
    def ready(self) -> bool:
        """Done, and whatever results it has are saved (or gone from the API): mergeable."""
        attempt = self.attempt
        if not self.done or attempt is None or attempt["status"] not in SAVABLE_STATUSES:
            return self.done
        return results_saved(attempt) or attempt["results_gone_at"] is not None

    @property
    def done(self) -> bool:
        """Final: nothing more will happen to it."""
        if self.part["state"] == PART_CANCELLED:
            return True
        if self.part["state"] != PART_SENT or self.attempt is None:
            return False
        if bounced_off_token_limit(self.attempt):
            return False  # it goes back to the queue
        return self.attempt["status"] in FINAL_STATUSES or self.attempt["status"] == REJECTED

    @property
    def requests_done(self) -> int:
        """Requests that have an outcome, success or failure: how far the part has come."""
        return self.requests_completed + self.requests_failed

    @property
    def requests_completed(self) -> int:
        return int((self.attempt or {}).get("requests_completed") or 0)

    @property
    def requests_failed(self) -> int:
        return int((self.attempt or {}).get("requests_failed") or 0)


@dataclass
class JobReport:
    job: Row
    parts: list[PartView] = field(default_factory=list)
    submitted: list[PartView] = field(default_factory=list)  # sent by this run
    saved: list["SavedFile"] = field(default_factory=list)  # the merged results, if merged now
    warnings: list[str] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return str(self.job["job_id"])

    @property
    def parts_done(self) -> int:
        return sum(view.done for view in self.parts)

    @property
    def requests_done(self) -> int:
        return sum(view.requests_done for view in self.parts)

    @property
    def requests_completed(self) -> int:
        """Requests with a successful result: the merged results' count once merged (a
        retry's answers merged in count there), else the parts' last attempts'."""
        stored = self.job.get("requests_completed")
        if stored is not None:
            return int(stored)
        return sum(view.requests_completed for view in self.parts)

    @property
    def requests_failed(self) -> int:
        stored = self.job.get("requests_failed")
        if stored is not None:
            return int(stored)
        return sum(view.requests_failed for view in self.parts)


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
    planned: "TokenPlan | None" = None,
) -> JobReport:
    """Split `input_` into parts and send as many as --max-in-flight lets; the rest wait."""
    from batchledger.split import plan_parts

    # issue 22: parts cut by counted tokens (token_budget.plan_parts_by_tokens) when planned
    parts = (
        planned.parts
        if planned
        else plan_parts(input_.path, max_requests=split[0], max_bytes=split[1])
    )
    account = ctx.account
    job, resumed = ctx.ledger.claim_job(
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
    )
    if planned is not None:  # issue 22: each part's counted tokens, for the token budget
        ctx.ledger.record_part_tokens(job["id"], planned)
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
            ctx.ledger.release_job_claim(job["id"])


def details_of(job: Row) -> CreateDetails:
    return CreateDetails(
        metadata=json.loads(job["metadata"]) if job["metadata"] else {},
        input_expires_after=job["input_expires_after"],
        output_expires_after=job["output_expires_after"],
    )


def views(ctx: Context, job: Row) -> list[PartView]:
    attempts: dict[int, Row] = {}
    for row in ctx.ledger.attempts_of_job(job["id"]):
        attempts[row["part"]] = row  # oldest first: the last one stays
    found = []
    offset: int | None = 0
    for part in ctx.ledger.job_parts(job["id"]):
        if part["ranges"]:
            offset = None  # a retry's lines: not a run of the input
        found.append(PartView(part, attempts.get(part["id"]), offset))
        if offset is not None:
            offset += part["requests"]
    return found


def advance(
    ctx: Context,
    job: Row,
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
    if job["status"] == JOB_INPUT_CHANGED and check:
        changed = input_changed(ctx, job)
        if changed is None:
            ctx.ledger.set_job_status(
                job["id"], JOB_RUNNING, "input_restored", "the input is as it was split again"
            )
            job = report.job = ctx.ledger.get_job(job["id"])
        else:
            report.warnings.append(input_changed_warning(job, changed))
    if job["status"] != JOB_RUNNING:
        report.parts = views(ctx, job)
        return report
    client = ctx.client_for(job["account"])
    if check:
        _check_parts(ctx, job, report)
    now = datetime.now(UTC)
    for view in views(ctx, job):
        if view.part["state"] == PART_SENT and view.attempt and view.attempt["status"] == ABANDONED:
            # Its create was cut off and made no batch: the part goes out again.
            ctx.ledger.reset_part(view.part["id"])
        elif (
            view.part["state"] == PART_SENT
            and view.attempt
            and bounced_off_token_limit(view.attempt)
        ):
            wait = min(
                REQUEUE_BACKOFF_SECONDS * 2 ** view.part["requeues"], MAX_REQUEUE_BACKOFF_SECONDS
            )
            ctx.ledger.requeue_part(
                view.part["id"],
                iso_utc(now + timedelta(seconds=wait)),
                f"part {view.part['part_index']} bounced off the enqueued-token limit",
            )
    parts = views(ctx, job)
    open_parts = sum(
        1
        for view in parts
        if view.part["state"] == PART_SENT and view.attempt and attempt_is_open(view.attempt)
    )
    limit = job["max_in_flight"]
    for view in parts:
        if view.part["state"] != PART_QUEUED or (limit is not None and open_parts >= limit):
            continue
        if not _may_send(ctx, job, view.part, now):
            continue
        # A part is read from the input now: only if it is the input the job was split from.
        changed = input_changed(ctx, job)
        if changed is not None:
            ctx.ledger.set_job_status(job["id"], JOB_INPUT_CHANGED, "input_changed", changed)
            report.job = ctx.ledger.get_job(job["id"])
            report.warnings.append(input_changed_warning(job, changed))
            break
        sent = _send_part(ctx, client, job, view.part, len(parts), details, search_uploads)
        if sent is not None:
            open_parts += 1
            report.submitted.append(sent)
    report.parts = views(ctx, job)
    if all(view.ready for view in report.parts):
        _merge(ctx, job, report, out, out_dir)
        report.job = ctx.ledger.get_job(job["id"])
    return report


def input_changed(ctx: Context, job: Row) -> str | None:
    """Why the job's input is no longer the one it was split from; None if it still is.

    Hashed once per run (a big input takes a while): again only if its size, mtime or
    inode has moved since. A retry's job holds the sha256 of the whole input (its size is
    that of the lines it sends): only the sha256 is compared.
    """
    from batchledger.inputs import sha256_of

    path = Path(job["input_path"])
    try:
        stat = path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if ctx.checked_inputs.get(job["id"]) == stamp:
            return None
        if not job["retry_of"] and stat.st_size != job["input_bytes"]:
            return f"{path} is now {stat.st_size} bytes, not the {job['input_bytes']} it had"
        if job["input_sha256"] and sha256_of(path) != job["input_sha256"]:
            return f"{path} has changed since the job was split (its sha256 differs)"
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    ctx.checked_inputs[job["id"]] = stamp
    return None


def input_changed_warning(job: Row, why: str) -> str:
    return (
        f"{job['job_id']}: input_changed: {why}; its queued parts are not sent (put the input "
        f"back as it was and run 'batchledger status --batch-id {job['job_id']}', or cancel it)"
    )


def _may_send(ctx: Context, job: Row, part: Row, now: datetime) -> bool:
    """A queued part goes now, unless the token limit bounced it and neither its backoff
    has passed nor another batch of the account has finished since."""
    from batchledger import token_budget

    if not token_budget.may_send(ctx, job, part):  # issue 22: the account's enqueued_tokens
        return False
    if not part["requeues"] or part["not_before"] is None:
        return True
    if now.timestamp() >= epoch_of(part["not_before"]):
        return True
    return ctx.ledger.batch_finished_since(job["account"], part["requeued_at"])


def _send_part(
    ctx: Context,
    client: "OpenAI",
    job: Row,
    part: Row,
    total: int,
    details: CreateDetails,
    search_uploads: bool,
) -> PartView | None:
    """Upload the part (once: later attempts reuse it) and create its next attempt."""
    from batchledger import workflow

    ledger = ctx.ledger
    input_path = Path(job["input_path"])
    name = f"{input_path.stem}.part{part['part_index']}of{total}.{part['ref']}.jsonl"
    ranges = part_ranges(part)
    size = sum(end - start for start, end in ranges)
    uploaded: api.Uploaded | None = None
    if part["input_file_id"] is not None:
        file = api.get_file(client, part["input_file_id"])
        if file is not None:
            uploaded = api.Uploaded(file["id"], file["created_at"])
    elif search_uploads or part["upload_started_at"]:
        # An upload was begun and its answer never recorded: it may have arrived.
        uploaded = api.find_uploaded_file(client, name, size, max_age=None)
    if uploaded is None:
        if not part["upload_started_at"]:
            ledger.mark_upload_started(part["id"])
        started = time.monotonic()
        uploaded = api.upload_file(
            client,
            input_path,
            name,
            expires_after=details.input_expires_after,
            ranges=ranges,
        )
        if ctx.on_part_uploaded is not None:
            ctx.on_part_uploaded(part["part_index"], total, size, time.monotonic() - started)
    if uploaded.id != part["input_file_id"]:
        ledger.record_part_upload(part["id"], uploaded.id, uploaded.created_at)
        part = {**part, "input_file_id": uploaded.id}
    row = ledger.start_attempt(part, job, details)
    if row is None:
        return None  # another run is sending it
    try:
        batch = api.create_batch(
            client,
            uploaded.id,
            job["endpoint"],
            job["completion_window"],
            row["ref"],
            file_created_at=uploaded.created_at,
            user_metadata=details.metadata,
            output_expires_after=details.output_expires_after,
            exclude=ledger.batch_ids_made_from({uploaded.id}),
        )
    except Rejected as exc:
        ledger.mark_rejected(row["id"], exc.message, exc.code)
        if exc.code != TOKEN_LIMIT_CODE:
            raise
        return PartView(part, ledger.get_row(row["id"]))
    finally:
        with contextlib.suppress(BatchledgerError):
            ledger.release_claim(row["id"])
    ref = BatchRef(job["account"], batch["id"])
    row = workflow.record(ctx, ref, batch, action="create", row_id=row["id"])
    return PartView(part, row)


def part_ranges(part: Row) -> list[tuple[int, int]]:
    """The byte ranges of the input a part holds: one, or a retry's lines."""
    if part["ranges"]:
        return [(start, end) for start, end in json.loads(part["ranges"])]
    return [(part["start_byte"], part["end_byte"])]


def part_results_path(ctx: Context, job_id: str, part_index: int, batch_id: str) -> Path:
    """Where a part's results are kept until (and after) they are merged: beside the ledger."""
    folder = ctx.ledger_path.parent / "jobs" / job_id
    return folder / f"part{part_index:04d}.{batch_id}.jsonl"


def _check_parts(ctx: Context, job: Row, report: JobReport) -> None:
    """Check the job's live attempts and save the results of finished ones."""
    from batchledger import workflow

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
        checked = workflow.check(ctx, ref, auto_save=True, out=out)
        if checked.warning:
            report.warnings.append(checked.warning)
        if checked.error is not None:
            report.warnings.append(f"{checked.batch_id}: {checked.error.message}")
    if unfinished:
        swept = workflow.SweepReport()
        workflow.recover_unfinished(ctx, job["account"], unfinished, swept)


def _merge(
    ctx: Context, job: Row, report: JobReport, out: Path | None, out_dir: Path | None
) -> None:
    """Every part is final: its results, in part order, into the job's one output file
    (and one error file), saved atomically."""
    from batchledger.merge import concat
    from batchledger.paths import default_results_path, errors_path_for
    from batchledger.savefile import prepare_target
    from batchledger.workflow import SavedFile

    target = (out or (out_dir or Path()) / default_results_path(job["job_id"])).expanduser()
    target = target.absolute()
    sources: dict[str, list[Path]] = {"output": [], "error": []}
    missing = 0
    for view in report.parts:
        attempt = view.attempt
        if attempt is None or attempt["status"] not in SAVABLE_STATUSES:
            missing += view.part["requests"]  # never ran: failed, refused or cancelled
            continue
        for kind in sources:
            if attempt[f"{kind}_path"]:
                sources[kind].append(Path(attempt[f"{kind}_path"]))
        if attempt["status"] in ENDED_EARLY_STATUSES:  # as for one batch: no success
            missing += (attempt["requests_total"] or view.part["requests"]) - (
                attempt["requests_completed"] or 0
            )
    for kind, path in (("output", target), ("error", errors_path_for(target))):
        if not sources[kind]:
            ctx.ledger.record_job_results(job["id"], kind, None, None, None)
            continue
        replaced = path.exists()
        prepare_target(path)
        saved = concat(path, sources[kind])
        ctx.ledger.record_job_results(job["id"], kind, path, saved.size, saved.sha256)
        report.saved.append(SavedFile(kind=kind, path=path, size=saved.size, replaced=replaced))
    if missing:
        report.warnings.append(
            f"{job['job_id']}: {missing} of {job['input_requests']} requests have no result "
            "(parts that failed, expired or were cancelled); 'batchledger retry' sends them again"
        )
    completed = failed = 0
    for view in report.parts:
        if view.attempt is not None and view.attempt["status"] in SAVABLE_STATUSES:
            completed += view.requests_completed
            failed += view.requests_failed
    ctx.ledger.record_job_counts(job["id"], completed, failed)
    if job["retry_of"]:
        # A retry is finished only once its answers are in its original's results: a run
        # cut off before (killed, Ctrl-C) leaves it running, and the next one merges again.
        from batchledger.retry import merge_into_original

        for kind, path, merged in merge_into_original(ctx, ctx.ledger.get_job(job["id"])):
            if merged is not None:
                report.saved.append(SavedFile(kind, path, merged.size, replaced=False))
        report.warnings.append(
            f"{job['retry_of']}: its results now hold each request's last answer "
            f"(merged with {job['job_id']})"
        )
    cancelled = any(
        view.part["state"] == PART_CANCELLED
        or (view.attempt is not None and view.attempt["status"] == "cancelled")
        for view in report.parts
    )
    ctx.ledger.finish_job(job["id"], JOB_CANCELLED if cancelled else JOB_DONE)


def result_lines(path: Path | None) -> int:
    """The lines of a results file (each ends with a newline once merged); 0 if none."""
    if path is None:
        return 0
    lines = 0
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            lines += chunk.count(b"\n")
    return lines


def recorded_intact(job_or_row: Row, kind: str) -> Path | None:
    """The `kind` file the ledger recorded, if it is still there with the same bytes."""
    from batchledger.inputs import sha256_of

    recorded = job_or_row[f"{kind}_path"]
    if not recorded:
        return None
    path = Path(recorded)
    try:
        if path.stat().st_size != job_or_row[f"{kind}_bytes"]:
            return None
        return path if sha256_of(path) == job_or_row[f"{kind}_sha256"] else None
    except OSError:
        return None


def rebuild_job_results(ctx: Context, job: Row, target: Path) -> list["SavedFile"]:
    """A finished job's results saved again at `target` (its errors beside it), and
    recorded there: copied from the merged files the ledger recorded when they are intact
    (same size and sha256), else merged again from the parts' results in jobs/<job_id>/
    (a part's downloaded again when it is gone or changed), with the answers of the job's
    retries merged in as `retry` merged them."""
    from batchledger import workflow
    from batchledger.merge import concat
    from batchledger.paths import errors_path_for
    from batchledger.workflow import SavedFile

    targets = {"output": target, "error": errors_path_for(target)}
    kinds = [kind for kind in targets if job[f"{kind}_path"]]
    intact = {kind: recorded_intact(job, kind) for kind in kinds}
    saved: list[SavedFile] = []
    if all(intact.values()):
        for kind in kinds:
            source = intact[kind]
            assert source is not None
            replaced = targets[kind].exists() and targets[kind] != source
            copy = concat(targets[kind], [source])
            ctx.ledger.record_job_results(job["id"], kind, targets[kind], copy.size, copy.sha256)
            saved.append(SavedFile(kind, targets[kind], copy.size, replaced))
        return saved
    retries = [run for run in ctx.ledger.retries_of(job["job_id"]) if run["status"] == JOB_DONE]
    if retries:
        changed = input_changed(ctx, job)
        if changed is not None:
            raise Refused(
                f"cannot rebuild the results of {job['job_id']}: {changed}, and its retries' "
                "answers are merged in by the input's lines"
            )
    sources: dict[str, list[Path]] = {"output": [], "error": []}
    for view in views(ctx, job):
        attempt = view.attempt
        if attempt is None or attempt["status"] not in SAVABLE_STATUSES:
            continue
        here = part_results_path(ctx, job["job_id"], view.part["part_index"], attempt["batch_id"])
        wanted = [kind for kind in sources if attempt[f"{kind}_file_id"]]
        if not all(recorded_intact(attempt, kind) for kind in wanted):
            batch = {
                "id": attempt["batch_id"],
                **{f"{k}_file_id": attempt[f"{k}_file_id"] for k in sources},
            }
            workflow.save_results(ctx, BatchRef.of(attempt), batch, attempt, here)
            attempt = ctx.ledger.get_row(attempt["id"])
        for kind in wanted:
            sources[kind].append(Path(attempt[f"{kind}_path"]))
    for kind, path in targets.items():
        if not sources[kind]:
            continue
        replaced = path.exists()
        merged = concat(path, sources[kind])
        ctx.ledger.record_job_results(job["id"], kind, path, merged.size, merged.sha256)
        saved.append(SavedFile(kind, path, merged.size, replaced))
    if retries:
        from batchledger.redo import merge_attempts

        attempts: list[tuple[Path | None, Path | None]] = [
            (
                targets["output"] if sources["output"] else None,
                targets["error"] if sources["error"] else None,
            )
        ]
        # Each retry's answers, as merged after it; a retry's file that is gone or changed
        # is left out (its lines keep the original's outcome).
        attempts += [
            (recorded_intact(retry, "output"), recorded_intact(retry, "error")) for retry in retries
        ]
        output, errors = merge_attempts(
            targets["output"], targets["error"], Path(job["input_path"]), attempts
        )
        saved = []
        for kind, result in (("output", output), ("error", errors)):
            size, sha256 = (result.size, result.sha256) if result else (None, None)
            if result is None:
                targets[kind].unlink(missing_ok=True)
            ctx.ledger.record_job_results(
                job["id"], kind, targets[kind] if result else None, size, sha256
            )
            if result is not None:
                saved.append(SavedFile(kind, targets[kind], result.size, replaced=False))
        ctx.ledger.record_job_counts(
            job["id"],
            result_lines(targets["output"] if output else None),
            result_lines(targets["error"] if errors else None),
        )
    return saved


def cancel_job(ctx: Context, job: Row) -> JobReport:
    """Cancel the job's live batches; its queued parts are never sent."""
    ctx.ledger.cancel_queued_parts(job["id"])
    if job["status"] == JOB_INPUT_CHANGED:  # nothing is read from the input any more
        ctx.ledger.set_job_status(job["id"], JOB_RUNNING, "cancel", "its input had changed")
    client = ctx.client_for(job["account"])
    from batchledger import workflow

    for view in views(ctx, job):
        attempt = view.attempt
        if attempt is None or attempt["batch_id"] is None or not attempt_is_open(attempt):
            continue
        batch = api.cancel_batch(client, attempt["batch_id"])
        if batch is not None:
            workflow.record(ctx, BatchRef.of(attempt), batch, action="cancel", row_id=attempt["id"])
    return JobReport(job=ctx.ledger.get_job(job["id"]), parts=views(ctx, job))


def follow_job(
    ctx: Context,
    job: Row,
    *,
    interval: float,
    max_interval: float,
    out: Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[JobReport]:
    """Advance the job until it is done, yielding a report after each round."""
    pause = interval
    last: tuple[int, int] | None = None
    while True:
        report = advance(ctx, ctx.ledger.get_job(job["id"]), out=out)
        yield report
        if report.job["status"] != JOB_RUNNING:
            return
        seen = (report.parts_done, report.requests_done)
        pause = interval if seen != last else min(pause * 1.5, max_interval)
        last = seen
        sleep(pause)


def job_lines(report: JobReport) -> list[str]:
    """`status` of a job: its id, status, parts and requests, a line per part, its errors."""
    job = report.job
    total = len(report.parts)
    queued = sum(1 for view in report.parts if view.label.startswith("queued"))
    lines = [
        f"job_id: {job['job_id']}",
        f"status: {job['status']}",
        *([f"retry of: {job['retry_of']}"] if job["retry_of"] else []),
        f"parts: {report.parts_done}/{total} done, {queued} queued",
        f"requests: {report.requests_completed}/{job['input_requests']} completed, "
        f"{report.requests_failed} failed",
    ]
    for view in report.parts:
        attempt = view.attempt
        batch = f"{attempt['batch_id']} " if attempt is not None and attempt["batch_id"] else ""
        lines.append(f"part {view.part['part_index']}/{total}: {batch}{view.label}")
    return lines + job_notes(report.parts)


def job_notes(parts: list[PartView]) -> list[str]:
    """`error: …` for each error the API gave a part's batch, at the job's own line number
    (a part's line n is n lines into the part)."""
    notes = []
    for view in parts:
        attempt = view.attempt
        if attempt is None or not attempt.get("errors") or bounced_off_token_limit(attempt):
            continue
        index = view.part["part_index"]
        for error in json.loads(attempt["errors"]):
            line = error.get("line")
            if line is None:
                where = f"part {index}"
            elif view.line_offset is None:
                where = f"part {index}, its line {line}"
            else:
                where = f"line {view.line_offset + line} (part {index}, its line {line})"
            reason = ": ".join(
                str(item) for item in (error.get("code"), error.get("message")) if item
            )
            notes.append(f"error: {where}: {reason or 'no reason given'}")
    return notes


def job_json(report: JobReport) -> dict[str, Any]:
    """A job for --json: its row, its counts, and each part with its last attempt."""
    return {
        **report.job,
        "kind": "job",
        "parts_done": report.parts_done,
        "parts_total": len(report.parts),
        "requests_total": report.job["input_requests"],
        "requests_completed": report.requests_completed,
        "requests_failed": report.requests_failed,
        "errors": job_notes(report.parts) or None,
        "parts": [
            {
                **view.part,
                "label": view.label,
                "batch_id": view.attempt["batch_id"] if view.attempt else None,
                "batch_status": view.attempt["status"] if view.attempt else None,
            }
            for view in report.parts
        ],
    }
