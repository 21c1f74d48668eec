"""A retry's answers merged into its original (once the retry job is done): the original's
results hold one line per input custom_id, its success if any attempt got one, else its
last error. Also what a retry starts from (`Original`) and the checks of its files.

Below both jobs/results.py (a retry job's merge ends with this) and retry.py (which plans
and sends a retry).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from batchledger.batch import save_results, saved_unchanged
from batchledger.batches import (
    FINAL_STATUSES,
    SAVABLE_STATUSES,
    BatchRef,
    JobRef,
    JobStatus,
    results_saved,
)
from batchledger.context import Context
from batchledger.errors import Refused, UsageError
from batchledger.inputs import sha256_of
from batchledger.jobs.parts import part_results_path, result_lines, views
from batchledger.paths import default_results_path, errors_path_for
from batchledger.redo import Attempt, merge_attempts
from batchledger.rows import RESULT_KINDS, BatchRow, JobRow, Kind, file_id, saved_columns
from batchledger.savefile import Saved, prepare_target, save_chunks


@dataclass
class Original:
    """What a retry starts from: a batch or a job, its input and its saved results."""

    retry_of: str  # the batch id or job id
    row: BatchRow | JobRow  # its ledger row (batches or jobs)
    input_path: Path
    output: Path | None
    errors: Path | None
    # Its row again, by what it is: one of the two is None.
    batch: BatchRow | None = None
    job: JobRow | None = None

    @property
    def is_job(self) -> bool:
        return self.job is not None

    @property
    def output_target(self) -> Path:
        """Where its merged output is (or would be) saved."""
        if self.output is not None:
            return self.output
        if self.errors is not None:
            return self.errors.with_name(self.errors.name.replace(".errors.jsonl", ".jsonl"))
        return default_results_path(self.retry_of).absolute()


def original_of(ctx: Context, target: BatchRef | JobRef) -> Original:
    """The batch or job to retry, with its results saved; Refused (exit 3) if they are not."""
    ledger = ctx.ledger
    if isinstance(target, JobRef):
        job = ledger.jobs.find_job(target.job_id)
        if job is None:
            raise UsageError(f"no job {target.job_id} in the ledger")
        if job["retry_of"]:  # a retry of a retry retries the original
            return original_of(ctx, _ref_of(ctx, job["retry_of"]))
        if job["status"] == JobStatus.RUNNING:
            raise Refused(
                f"job {job['job_id']} is still running; its results are not merged yet: "
                f"'batchledger watch --batch-id {job['job_id']}' first"
            )
        return Original(
            job["job_id"],
            job,
            Path(job["input_path"]),
            Path(job["output_path"]) if job["output_path"] else None,
            Path(job["error_path"]) if job["error_path"] else None,
            job=job,
        )
    row = ledger.batches.find_batch(target.batch_id, target.account)
    if row is None:
        raise UsageError(f"{target.batch_id} is not in the ledger")
    if row["part"] is not None:
        job, _ = ledger.jobs.job_of_part(row["part"])
        raise UsageError(f"{target.batch_id} is a part of {job['job_id']}: retry the job")
    retrieve = f"'batchledger retrieve --batch-id {target.batch_id}'"
    if row["status"] not in FINAL_STATUSES or not results_saved(row):
        raise Refused(f"the results of batch {target.batch_id} are not saved; run {retrieve} first")
    if not row["input_path"]:
        raise UsageError(f"the ledger does not know the input of {target.batch_id}")
    return Original(
        target.batch_id,
        row,
        Path(row["input_path"]),
        Path(row["output_path"]) if row["output_path"] else None,
        Path(row["error_path"]) if row["error_path"] else None,
        batch=row,
    )


def _ref_of(ctx: Context, retry_of: str) -> BatchRef | JobRef:
    if retry_of.startswith("job_"):
        return JobRef(retry_of)
    rows = ctx.ledger.batches.find_batches(retry_of)
    return BatchRef.of(rows[0]) if rows else BatchRef(ctx.account.name, retry_of)


def check_input(original: Original) -> str:
    """The input's sha256, once it is known to be the file that was sent (as the ledger
    recorded it): lines of another input would be sent, and merged, as the original's."""
    path = original.input_path
    if not path.is_file():
        raise UsageError(f"the input of {original.retry_of}, {path}, is gone")
    row = original.row
    size, sha256 = path.stat().st_size, None
    if row["input_bytes"] is None or size == row["input_bytes"]:
        sha256 = sha256_of(path)
    if sha256 is None or (row["input_sha256"] and sha256 != row["input_sha256"]):
        raise Refused(
            f"the input of {original.retry_of} ({path}) has changed since it was sent; "
            "retry sends again lines of the input as it was: put that file back"
        )
    return sha256


def changed_results(original: Original) -> list[Path]:
    """The original's saved results that are not the files the ledger saved (changed or
    gone)."""
    row = original.row
    return [
        Path(path)
        for kind in RESULT_KINDS
        if (path := saved_columns(row, kind)["path"]) and not saved_unchanged(row, kind, Path(path))
    ]


def results_of(ctx: Context, original: Original) -> list[Attempt]:
    """The results to plan (or merge) from, oldest first, each file checked against the
    size and sha256 the ledger recorded.

    A job's merged results that changed (or are gone) are replaced by its parts' results
    and those of the retries already merged into it, which must be intact
    (jobs/results.py `rebuild_job_results` saves them again from the same files); a
    batch's are refused (its results are on the API: `retrieve --force` fetches them again).
    """
    changed = changed_results(original)
    if original.job is None:
        if changed:
            raise Refused(
                f"the saved results of batch {original.retry_of}, {changed[0]}, are not the "
                "file the ledger saved (changed or missing); 'batchledger retrieve --batch-id "
                f"{original.retry_of} --force' fetches it again"
            )
        # The retries merged into it: their answers again, should the batch's results
        # have been fetched again from the API since (a part's changed file is left out).
        retried = [
            pair
            for job in merged_retries(ctx, original.retry_of)
            for pair in part_files(ctx, job, "leave out")
        ]
        return [(original.output, original.errors), *retried]
    if not changed:
        return [(original.output, original.errors)]
    chain = [original.job, *merged_retries(ctx, original.retry_of)]
    return [pair for job in chain for pair in part_files(ctx, job, "refuse")]


def merged_retries(ctx: Context, retry_of: str) -> list[JobRow]:
    """The retries of a batch or job whose merge into it is over (each finished job's
    merge ends with it: jobs/results.py `merge_parts`), oldest first."""
    return [
        job
        for job in ctx.ledger.jobs.retries_of(retry_of)
        if job["status"] in (JobStatus.DONE, JobStatus.CANCELLED)
    ]


# What `part_files` does with a part's file that is not the one the ledger saved.
IfChanged = Literal["download", "refuse", "leave out"]


def part_files(ctx: Context, job: JobRow, if_changed: IfChanged) -> list[Attempt]:
    """The saved results of each part of a job, in part order, each checked against the
    size and sha256 the ledger recorded for it. A part whose file fails is downloaded
    again ("download"), or Refused naming the file ("refuse"), or the file left out."""
    files: list[Attempt] = []
    for view in views(ctx, job):
        attempt = view.attempt
        if attempt is None or attempt["status"] not in SAVABLE_STATUSES:
            continue
        if if_changed == "download" and not all(
            (saved_at := saved_columns(attempt, kind)["path"])
            and saved_unchanged(attempt, kind, Path(saved_at))
            for kind in RESULT_KINDS
            if file_id(attempt, kind)
        ):
            ref = BatchRef.of(attempt)
            here = part_results_path(ctx, job["job_id"], view.part["part_index"], ref.batch_id)
            batch = {
                "id": ref.batch_id,
                "output_file_id": attempt["output_file_id"],
                "error_file_id": attempt["error_file_id"],
            }
            save_results(ctx, ref, batch, attempt, here)
            attempt = ctx.ledger.batches.get_row(attempt["id"])
        pair: list[Path | None] = []
        for kind in RESULT_KINDS:
            recorded = saved_columns(attempt, kind)["path"]
            path = Path(recorded) if recorded else None
            if path is not None and not saved_unchanged(attempt, kind, path):
                if if_changed != "leave out":
                    state = "has changed since it was saved" if path.exists() else "is missing"
                    raise Refused(
                        f"the results of {job['job_id']} cannot be rebuilt: {path} (the "
                        f"{kind} of its part {view.part['part_index']}, batch "
                        f"{attempt['batch_id']}) {state}"
                    )
                path = None
            pair.append(path)
        files.append((pair[0], pair[1]))
    return files


def merge_into_original(ctx: Context, retry_job: JobRow) -> list[tuple[Kind, Path, Saved | None]]:
    """After a retry job is done: the original's results hold one line per custom_id, its
    success if any attempt got one, else its last error. (kind, path, saved) of each."""
    assert retry_job["retry_of"] is not None  # a retry job
    original = original_of(ctx, _ref_of(ctx, retry_job["retry_of"]))
    retried = (
        Path(retry_job["output_path"]) if retry_job["output_path"] else None,
        Path(retry_job["error_path"]) if retry_job["error_path"] else None,
    )
    check_input(original)
    # Checked as for a retry: a merge cut off after the original's file was replaced, and
    # before the ledger knew, is done again from the parts' results.
    attempts = results_of(ctx, original)
    output_target = original.output_target
    errors_target = errors_path_for(output_target)
    output, errors = merge_attempts(
        output_target, errors_target, original.input_path, [*attempts, retried]
    )
    merged: list[tuple[Kind, Path, Saved | None]] = []
    results: tuple[tuple[Kind, Path, Saved | None], ...] = (
        ("output", output_target, output),
        ("error", errors_target, errors),
    )
    for kind, path, saved in results:
        if saved is None and original.batch is not None and file_id(original.batch, kind):
            # Every line it held has a newer outcome in the other file. The batch still has
            # that file on the API: an empty one here keeps it saved, so that no sweep
            # fetches the stale lines back.
            prepare_target(path)
            saved = save_chunks(path, [])
        elif saved is None and path.exists():
            path.unlink()  # every line it held has a newer outcome in the other file
        _record(ctx, original, kind, path if saved else None, saved, retry_job["job_id"])
        merged.append((kind, path, saved))
    if original.job is not None:  # its counts: what its results hold now
        ctx.ledger.jobs.record_job_counts(
            original.job["id"],
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
        ledger.jobs.record_job_results(original.row["id"], kind, path, size, sha256)
    else:
        ledger.batches.record_merge(
            original.row["id"], kind, path, size, sha256, f"merged with {by}"
        )
