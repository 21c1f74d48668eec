"""A job's results: its parts' merged once every part is final (a retry's answers then
merged into its original: retry_merge.py), and rebuilt on request."""

from pathlib import Path

from batchledger.batch import SavedFile
from batchledger.batches import (
    ENDED_EARLY_STATUSES,
    SAVABLE_STATUSES,
    BatchStatus,
    JobStatus,
    PartState,
)
from batchledger.context import Context
from batchledger.errors import Refused
from batchledger.inputs import sha256_of
from batchledger.jobs import retry_merge
from batchledger.jobs.parts import JobReport, input_changed, result_lines
from batchledger.merge import concat
from batchledger.paths import default_results_path, errors_path_for
from batchledger.redo import merge_attempts
from batchledger.rows import RESULT_KINDS, BatchRow, JobRow, Kind, saved_columns
from batchledger.savefile import Saved, prepare_target
from batchledger.usage import job_cost


def merge_parts(
    ctx: Context, job: JobRow, report: JobReport, out: Path | None, out_dir: Path | None
) -> None:
    """Every part is final: its results, in part order, into the job's one output file
    (and one error file), saved atomically."""
    target = (out or (out_dir or Path()) / default_results_path(job["job_id"])).expanduser()
    target = target.absolute()
    sources: dict[Kind, list[Path]] = {"output": [], "error": []}
    missing = 0
    for view in report.parts:
        attempt = view.attempt
        if attempt is None or attempt["status"] not in SAVABLE_STATUSES:
            missing += view.part["requests"]  # never ran: failed, refused or cancelled
            continue
        for kind in sources:
            if recorded := saved_columns(attempt, kind)["path"]:
                sources[kind].append(Path(recorded))
        if attempt["status"] in ENDED_EARLY_STATUSES:  # as for one batch: no success
            missing += (attempt["requests_total"] or view.part["requests"]) - (
                attempt["requests_completed"] or 0
            )
    files: tuple[tuple[Kind, Path], ...] = (("output", target), ("error", errors_path_for(target)))
    for kind, path in files:
        if not sources[kind]:
            ctx.ledger.jobs.record_job_results(job["id"], kind, None, None, None)
            continue
        replaced = path.exists()
        prepare_target(path)
        saved = concat(path, sources[kind])
        ctx.ledger.jobs.record_job_results(job["id"], kind, path, saved.size, saved.sha256)
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
    ctx.ledger.jobs.record_job_counts(job["id"], completed, failed)
    if job["retry_of"]:
        # A retry is finished only once its answers are in its original's results: a run
        # cut off before (killed, Ctrl-C) leaves it running, and the next one merges again.
        retry_job = ctx.ledger.jobs.get_job(job["id"])
        for kind, path, merged in retry_merge.merge_into_original(ctx, retry_job):
            if merged is not None:
                report.saved.append(SavedFile(kind, path, merged.size, replaced=False))
        report.warnings.append(
            f"{job['retry_of']}: its results now hold each request's last answer "
            f"(merged with {job['job_id']})"
        )
    cancelled = any(
        view.part["state"] == PartState.CANCELLED
        or (view.attempt is not None and view.attempt["status"] == BatchStatus.CANCELLED)
        for view in report.parts
    )
    status = JobStatus.CANCELLED if cancelled else JobStatus.DONE
    # issue 22: the job's cost, the sum of its attempts' recorded costs
    ctx.ledger.jobs.finish_job(
        job["id"], status, cost=job_cost(ctx.ledger.jobs.attempts_of_job(job["id"]))
    )


def recorded_intact(job_or_row: BatchRow | JobRow, kind: Kind) -> Path | None:
    """The `kind` file the ledger recorded, if it is still there with the same bytes."""
    saved = saved_columns(job_or_row, kind)
    if not saved["path"]:
        return None
    path = Path(saved["path"])
    try:
        if path.stat().st_size != saved["bytes"]:
            return None
        return path if sha256_of(path) == saved["sha256"] else None
    except OSError:
        return None


def rebuild_job_results(
    ctx: Context, job: JobRow, target: Path, *, download: bool
) -> list[SavedFile]:
    """A finished job's results saved again at `target` (its errors beside it), and
    recorded there: copied from the merged files the ledger recorded when they are intact
    (same size and sha256), else merged again from the parts' results in jobs/<job_id>/,
    in part order, or (once retries were merged into it) one line per custom_id from its
    parts' results and its retries' (their merged results, or their parts'), as `retry`
    merged them. A part's file that is gone or changed is downloaded again if `download`
    (retrieve), else refused naming it (retry, which must not read the API to plan)."""
    targets: dict[Kind, Path] = {"output": target, "error": errors_path_for(target)}
    kinds = [kind for kind in targets if saved_columns(job, kind)["path"]]
    intact = {kind: recorded_intact(job, kind) for kind in kinds}
    saved: list[SavedFile] = []
    if all(intact.values()):
        for kind in kinds:
            source = intact[kind]
            assert source is not None
            replaced = targets[kind].exists() and targets[kind] != source
            copy = concat(targets[kind], [source])
            ctx.ledger.jobs.record_job_results(
                job["id"], kind, targets[kind], copy.size, copy.sha256
            )
            saved.append(SavedFile(kind, targets[kind], copy.size, replaced))
        return saved
    retries = retry_merge.merged_retries(ctx, job["job_id"])
    if retries:
        changed = input_changed(ctx, job)
        if changed is not None:
            raise Refused(
                f"cannot rebuild the results of {job['job_id']}: {changed}, and its retries' "
                "answers are merged in by the input's lines"
            )
    if_changed: retry_merge.IfChanged = "download" if download else "refuse"
    attempts = retry_merge.part_files(ctx, job, if_changed)
    for retry in retries:
        # A retry's merged results are its parts' (a retry has no retries of its own):
        # those as they were merged into the job while they are intact, else its parts'.
        merged = {kind: recorded_intact(retry, kind) for kind in RESULT_KINDS}
        if all(merged[kind] for kind in RESULT_KINDS if saved_columns(retry, kind)["path"]):
            attempts.append((merged["output"], merged["error"]))
        else:
            attempts += retry_merge.part_files(ctx, retry, if_changed)
    existed = {kind: path.exists() for kind, path in targets.items()}
    results: dict[Kind, Saved | None] = {}
    if retries:
        results["output"], results["error"] = merge_attempts(
            targets["output"], targets["error"], Path(job["input_path"]), attempts
        )
    else:
        for index, (kind, path) in enumerate(targets.items()):
            sources = [source for pair in attempts if (source := pair[index]) is not None]
            results[kind] = concat(path, sources) if sources else None
    for kind, path in targets.items():
        result = results[kind]
        if result is None:
            if retries:  # every line it held has a newer outcome in the other file
                path.unlink(missing_ok=True)
            ctx.ledger.jobs.record_job_results(job["id"], kind, None, None, None)
            continue
        ctx.ledger.jobs.record_job_results(job["id"], kind, path, result.size, result.sha256)
        saved.append(SavedFile(kind, path, result.size, existed[kind]))
    if retries:
        ctx.ledger.jobs.record_job_counts(
            job["id"],
            result_lines(targets["output"] if results["output"] else None),
            result_lines(targets["error"] if results["error"] else None),
        )
    return saved
