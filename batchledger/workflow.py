"""What the commands do, in plain values: the API calls and the ledger writes, in order.

Nothing here prints; the CLI turns the returned values into output.
"""

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchledger.batches import (
    FINAL_STATUSES,
    SAVABLE_STATUSES,
    BatchRef,
    Row,
    has_results,
    progress_of,
    results_saved,
)
from batchledger.claims import claimed_by_another_run
from batchledger.context import Context
from batchledger.details import CreateDetails
from batchledger.errors import (
    BatchledgerError,
    NotFound,
    Refused,
    Rejected,
    Transient,
)
from batchledger.inputs import sha256_of
from batchledger.ledger import InputFile
from batchledger.paths import default_results_path, errors_path_for
from batchledger.providers import STOP_DOWNLOADS, Provider, Uploaded, upload_name
from batchledger.times import epoch_of

if TYPE_CHECKING:
    from batchledger.jobs import JobReport


# An unfinished create whose batch is not found is given up on after this long, even where
# the search could not look back far enough to prove that no batch was made.
ABANDON_AFTER_SECONDS = 7 * 86400
# A sweep reads its batches from the account's listing when looking each up would take at
# least this many rounds of `concurrency` requests.
LIST_FROM_ROUNDS = 3


@dataclass(frozen=True)
class Submitted:
    file_id: str
    batch: dict[str, Any]
    row: Row
    recovered: bool = False  # the batch was made by an earlier create that was cut off


@dataclass(frozen=True)
class SavedFile:
    kind: str  # "output" or "error"
    path: Path
    size: int
    replaced: bool  # a file was already at `path` and has been overwritten


@dataclass
class BatchReport:
    """What a status check or a retrieve found and did for one batch."""

    ref: BatchRef
    batch: dict[str, Any] | None = None
    row: Row | None = None
    saved: list[SavedFile] = field(default_factory=list)
    already_saved: bool = False  # retrieve found the results saved and unchanged
    error: BatchledgerError | None = None  # the check failed
    warning: str | None = None  # the check went on, but the user should know this

    @property
    def batch_id(self) -> str:
        return self.ref.batch_id


def record(
    ctx: Context,
    ref: BatchRef,
    batch: dict[str, Any],
    *,
    action: str,
    row_id: int | None = None,
    origin: str = "lookup",
) -> Row:
    """Store what the API said of a batch of `ref`'s account."""
    return ctx.ledger.record_batch(
        batch,
        action=action,
        row_id=row_id,
        account=ref.account,
        base_url=ctx.account_named(ref.account).location,
        origin=origin,
    )


def submit(
    ctx: Context,
    input_: InputFile,
    endpoint: str,
    window: str,
    *,
    force: bool,
    details: CreateDetails | None = None,
) -> Submitted:
    """Upload `input_` and create its batch on the run's account, recording each step as
    soon as it is known.

    A create of the same input that was cut off earlier is resumed, not repeated: its
    batch is looked for on the server (by the ledger ref in its metadata, or by its input
    file), and its upload is reused.
    """
    account = ctx.account
    provider = ctx.provider()
    details = details or CreateDetails()
    row, resumed = ctx.ledger.claim_submission(
        input_,
        endpoint,
        window,
        account=account.name,
        base_url=account.location,
        force=force,
        details=details,
    )
    try:
        return _submit_claimed(ctx, provider, input_, row, resumed, details)
    finally:
        # A claim that cannot be released is harmless once this process has ended; the
        # error that got us here is the one to report.
        with contextlib.suppress(BatchledgerError):
            ctx.ledger.release_claim(row["id"])


def _submit_claimed(
    ctx: Context,
    provider: Provider,
    input_: InputFile,
    row: Row,
    resumed: bool,
    details: CreateDetails,
) -> Submitted:
    ledger = ctx.ledger
    name = upload_name(input_.path, row["ref"])
    uploaded: Uploaded | None = None
    if resumed and row["input_file_id"] is not None:
        # The upload was recorded, so a batch may have been made from it.
        file = provider.get_file(row["input_file_id"])
        since = file["created_at"] if file else None
        known = ctx.ledger.batch_ids_made_from({row["input_file_id"]})
        found = provider.find_batches({row["ref"]: row["input_file_id"]}, since, known).found
        if row["ref"] in found:
            batch = found[row["ref"]]
            ref = BatchRef(row["account"], batch["id"])
            row = record(ctx, ref, batch, action="recover", row_id=row["id"])
            return Submitted(file_id=batch["input_file_id"], batch=batch, row=row, recovered=True)
        if file is not None:
            uploaded = Uploaded(file["id"], file["created_at"])
    elif resumed:
        # Cut off during the upload: it may have arrived all the same.
        uploaded = provider.find_upload(name, input_.size, max_age=None)
        if uploaded is not None:
            ledger.record_upload(row["id"], uploaded.id)
    if uploaded is None:
        uploaded = provider.upload(input_.path, name, expires_after=details.input_expires_after)
        ledger.record_upload(row["id"], uploaded.id)
    # The ledger's ref travels with the batch, so the batch can be found again by
    # listing the account's batches if the response to this request is lost.
    try:
        batch = provider.create(
            uploaded.id,
            row["endpoint"],
            row["completion_window"],
            row["ref"],
            file_created_at=uploaded.created_at,
            user_metadata=details.metadata,
            output_expires_after=details.output_expires_after,
        )
    except Rejected as exc:
        ledger.mark_rejected(row["id"], exc.message, exc.code)
        raise
    row = record(
        ctx, BatchRef(row["account"], batch["id"]), batch, action="create", row_id=row["id"]
    )
    return Submitted(file_id=uploaded.id, batch=batch, row=row)


def look_up(
    ctx: Context, ref: BatchRef, action: str = "status", *, listed: dict[str, Any] | None = None
) -> BatchReport:
    """Fetch a batch from its account (unless a listing just showed it) and record it."""
    batch = listed or ctx.provider_for(ref.account).get(ref.batch_id)
    return BatchReport(ref=ref, batch=batch, row=record(ctx, ref, batch, action=action))


def save_if_finished(
    ctx: Context, report: BatchReport, *, out: Path | None = None, out_dir: Path | None = None
) -> None:
    """Save whatever results a looked-up batch has and the ledger does not, into `report`.

    A result already saved is not fetched again unless the user names a place for it; one
    the API no longer has is noted in the ledger and in `report.warning`, not an error.
    """
    batch, row = report.batch, report.row
    assert batch is not None and row is not None
    if not has_results(batch) or (out is None and (results_saved(row) or row["results_gone_at"])):
        return
    try:
        report.saved = save_results(ctx, report.ref, batch, row, out, out_dir)
    except NotFound as exc:
        report.warning = f"{report.batch_id}: its results are gone from the API ({exc.message})"
    report.row = ctx.ledger.get_row(row["id"])


def check(
    ctx: Context,
    ref: BatchRef,
    *,
    auto_save: bool,
    out_dir: Path | None = None,
    out: Path | None = None,
    listed: dict[str, Any] | None = None,
) -> BatchReport:
    """Look up a batch and save its results, for sweeps and watches: a failure is reported
    in the result, and a batch its account does not know is noted and left alone after.

    `listed`: the batch as a listing of its account has just shown it, not looked up again.
    """
    try:
        report = look_up(ctx, ref, listed=listed)
        if auto_save:
            save_if_finished(ctx, report, out=out, out_dir=out_dir)
        return report
    except NotFound as exc:
        for row in ctx.ledger.find_batches(ref.batch_id, ref.account):
            ctx.ledger.mark_not_found(row["id"], exc.message)
        return BatchReport(
            ref=ref,
            row=ctx.ledger.find_batch(ref.batch_id, ref.account),
            warning=f"{ref.batch_id}: account {ref.account!r} does not know it (not checked again)",
        )
    except BatchledgerError as exc:
        return BatchReport(ref=ref, row=ctx.ledger.find_batch(ref.batch_id, ref.account), error=exc)


def retrieve(ctx: Context, ref: BatchRef, out: Path | None, *, again: bool = False) -> BatchReport:
    """Save a finished batch's results; refuse (exit 3) while it has none.

    An expired or cancelled batch keeps what it finished: that is saved too. A result
    already saved at the same place, unchanged on disk, is not downloaded again unless
    `again`.
    """
    report = look_up(ctx, ref, action="retrieve")
    batch, row = report.batch, report.row
    assert batch is not None and row is not None
    if not has_results(batch):
        ctx.ledger.record_event(row["id"], "retrieve_refused", f"status {batch['status']}")
        if batch["status"] in SAVABLE_STATUSES:
            reason = f"batch {ref.batch_id} is {batch['status']} with no result files"
        else:
            reason = f"batch {ref.batch_id} is {batch['status']}, not completed"
        raise Refused(f"{reason}; nothing was saved")
    wanted = result_paths(batch, out)
    if not again and all(saved_unchanged(row, kind, path) for kind, _, path in wanted):
        report.already_saved = True
        return report
    report.saved = save_results(ctx, ref, batch, row, out)
    report.row = ctx.ledger.get_row(row["id"])
    return report


def result_paths(
    batch: dict[str, Any], out: Path | None, out_dir: Path | None = None
) -> list[tuple[str, str, Path]]:
    """(kind, file id, local path) of each result file the batch has."""
    out_path = out or (out_dir or Path()) / default_results_path(batch["id"])
    out_path = out_path.expanduser().absolute()
    candidates = [
        ("output", batch.get("output_file_id"), out_path),
        ("error", batch.get("error_file_id"), errors_path_for(out_path)),
    ]
    return [(kind, file_id, path) for kind, file_id, path in candidates if file_id]


def saved_unchanged(row: Row, kind: str, path: Path) -> bool:
    """The ledger saved this file at `path`, and the bytes there are still the same."""
    if row[f"{kind}_path"] != str(path) or not path.is_file():
        return False
    if path.stat().st_size != row[f"{kind}_bytes"]:
        return False
    return bool(sha256_of(path) == row[f"{kind}_sha256"])


def save_results(
    ctx: Context,
    ref: BatchRef,
    batch: dict[str, Any],
    row: Row,
    out: Path | None,
    out_dir: Path | None = None,
) -> list[SavedFile]:
    """Download the output file and the error file beside it, and record both."""
    saved: list[SavedFile] = []
    for kind, file_id, path in result_paths(batch, out, out_dir):
        replaced = path.exists()
        operation = "DOWNLOAD_RESULTS" if kind == "output" else "DOWNLOAD_ERRORS"
        try:
            download = ctx.provider_for(ref.account).download(file_id, path, operation)
        except NotFound as exc:
            ctx.ledger.mark_results_gone(row["id"], exc.message)
            raise
        except BatchledgerError as exc:
            ctx.ledger.record_event(row["id"], f"save_{kind}_failed", exc.message)
            raise
        except KeyboardInterrupt:
            ctx.ledger.record_event(row["id"], f"save_{kind}_interrupted", str(path))
            raise
        ctx.ledger.record_download(row["id"], kind, path, download.size, download.sha256)
        saved.append(SavedFile(kind=kind, path=path, size=download.size, replaced=replaced))
    return saved


def cancel(ctx: Context, ref: BatchRef) -> BatchReport:
    """Ask the API to cancel a batch; refuse (exit 3) if it is already past that."""
    provider = ctx.provider_for(ref.account)
    batch = provider.cancel(ref.batch_id)
    if batch is None:
        batch = provider.get(ref.batch_id)
        record(ctx, ref, batch, action="cancel_refused")
        raise Refused(
            f"batch {ref.batch_id} is already {batch['status']}; there is nothing to cancel"
        )
    return BatchReport(ref=ref, batch=batch, row=record(ctx, ref, batch, action="cancel"))


def wait_for_cancel(
    ctx: Context, cancelling: BatchReport, *, interval: float, max_interval: float
) -> Iterator[str]:
    """Follow a batch being cancelled until it is final; yields each new status it reaches."""
    assert cancelling.batch is not None
    status = cancelling.batch["status"]
    if status in FINAL_STATUSES:
        return
    checks = follow(
        ctx,
        [cancelling.ref],
        auto_save=False,
        interval=interval,
        max_interval=max(interval, max_interval),
    )
    for checked in checks:
        if checked.batch is None:  # a passing failure; follow tries again
            continue
        if checked.batch["status"] != status:
            status = checked.batch["status"]
            yield status


def follow(
    ctx: Context,
    refs: list[BatchRef],
    *,
    auto_save: bool,
    interval: float,
    max_interval: float,
    out_dir: Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[BatchReport]:
    """Check the batches until each is final, yielding every check; backs off while idle.

    The pause between rounds grows by half each round in which nothing moved, up to
    `max_interval`, and drops back to `interval` as soon as something does. A check that
    fails for a passing reason (the network, a 5xx, a rate limit) is yielded with its error
    and tried again next round: a watch may run for a day. A batch its account does not
    know is yielded with a warning and no longer followed; the others go on.
    """
    waiting = list(dict.fromkeys(refs))
    last_seen: dict[BatchRef, tuple[Any, ...]] = {}
    pause = interval
    while waiting:
        moved = False
        for ref in list(waiting):
            report = check(ctx, ref, auto_save=auto_save, out_dir=out_dir)
            if report.error is not None and not isinstance(report.error, Transient):
                raise report.error
            if report.batch is None:
                if report.error is None:  # not found: nothing more to follow
                    waiting.remove(ref)
                yield report
                continue
            seen = (report.batch["status"], *progress_of(report.batch))
            moved = moved or last_seen.get(ref) != seen
            last_seen[ref] = seen
            if report.batch["status"] in FINAL_STATUSES:
                waiting.remove(ref)
            yield report
        if waiting:
            pause = interval if moved else min(pause * 1.5, max_interval)
            sleep(pause)


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)  # made elsewhere, new to the ledger
    updated: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # made by a create that was cut off
    unchanged: int = 0


def sync(ctx: Context) -> SyncReport:
    """Bring every batch of the run's account into the ledger, marking those made elsewhere."""
    report = SyncReport()
    ledger, account = ctx.ledger, ctx.account.name
    for batch in ctx.provider().list_all():
        ref = BatchRef(account, batch["id"])
        row = ledger.row_of(batch, account)
        if row is None:
            record(ctx, ref, batch, action="sync", origin="sync")
            report.added.append(batch["id"])
        elif row["batch_id"] is None:
            record(ctx, ref, batch, action="recover", row_id=row["id"])
            report.recovered.append(batch["id"])
        elif (row["status"], row["requests_completed"], row["requests_failed"]) != (
            batch["status"],
            (batch.get("request_counts") or {}).get("completed"),
            (batch.get("request_counts") or {}).get("failed"),
        ):
            record(ctx, ref, batch, action="sync", row_id=row["id"])
            report.updated.append(batch["id"])
        else:
            report.unchanged += 1
    return report


@dataclass
class SweepReport:
    recovered: list[Row] = field(default_factory=list)  # batches of cut-off creates, found
    abandoned: list[Row] = field(default_factory=list)  # cut-off creates that made none
    skipped: list[str] = field(default_factory=list)  # why some accounts were left out
    reports: list[BatchReport] = field(default_factory=list)
    jobs: list["JobReport"] = field(default_factory=list)


def sweep_all(
    ctx: Context,
    *,
    auto_save: bool,
    concurrency: int,
    include_synced: bool = False,
    out_dir: Path | None = None,
) -> SweepReport | None:
    """`status --all`: recover cut-off creates, then check every batch still to follow,
    each on its own account.

    None when the ledger has nothing to sweep: then no key, log or network is needed.
    """
    ledger = ctx.open_ledger(create=False)
    if ledger is None:
        return None
    report = SweepReport()
    for row in ledger.unsent_submissions():
        if not claimed_by_another_run(row):
            ledger.mark_abandoned(
                row["id"],
                "cut off before its upload was recorded, so no batch was made; "
                "'batchledger create' of the same input sends it (reusing the upload if it "
                "arrived)",
            )
            report.abandoned.append(row)
    pending = ledger.batches_to_sweep(include_synced=include_synced)
    unfinished = ledger.unfinished_submissions()
    jobs = ledger.unfinished_jobs()
    if not (pending or unfinished or jobs):
        return report if report.abandoned else None
    reachable, report.skipped = followable(ctx, pending + unfinished + jobs)
    if not reachable:
        return report
    ctx.start_log()
    unfinished = [row for row in reachable if "job_id" not in row and row["batch_id"] is None]
    for account in sorted({row["account"] for row in unfinished}):
        rows = [row for row in unfinished if row["account"] == account]
        recover_unfinished(ctx, account, rows, report)
    pending, _ = followable(ctx, ledger.batches_to_sweep(include_synced=include_synced))
    assert ctx.logger is not None
    ctx.logger.info("SWEEP batches=%d", len(pending))
    report.reports = sweep(
        ctx,
        pending,
        auto_save=auto_save,
        concurrency=concurrency,
        include_synced=include_synced,
        out_dir=out_dir,
    )
    job_ids = {row["job_id"] for row in reachable if "job_id" in row}
    report.jobs = advance_jobs(ctx, job_ids, out_dir=out_dir)
    return report


def advance_jobs(ctx: Context, job_ids: set[str], *, out_dir: Path | None) -> list["JobReport"]:
    """Move on the running jobs of `job_ids`: their parts were checked by the sweep."""
    from batchledger.jobs import advance, views

    reports = []
    for job in ctx.ledger.unfinished_jobs():
        if job["job_id"] not in job_ids or claimed_by_another_run(job):
            continue
        try:
            reports.append(advance(ctx, job, check=False, out_dir=out_dir))
        except Exception as exc:  # one job's trouble must not stop the sweep
            # Whatever went wrong with this job (the API, its input, a bug), the other
            # batches and jobs were swept: a warning for it, and the sweep exits as it would.
            from batchledger.jobs import JobReport

            if ctx.logger is not None:
                ctx.logger.error("ADVANCE job=%s failed", job["job_id"], exc_info=True)
            message = (
                exc.message if isinstance(exc, BatchledgerError) else f"{type(exc).__name__}: {exc}"
            )
            reports.append(
                JobReport(
                    job=job,
                    parts=views(ctx, job),
                    warnings=[f"{job['job_id']}: could not be moved on this time: {message}"],
                )
            )
    return reports


def followable(ctx: Context, rows: list[Row]) -> tuple[list[Row], list[str]]:
    """The rows whose account can be reached now, and one line per account that cannot:
    an account no longer configured, one with no key set, or batches made on another base
    URL than the account's now (followed there, they would only be 404s)."""
    reachable: list[Row] = []
    skipped: list[str] = []
    for name in sorted({row["account"] for row in rows}):
        of_account = [row for row in rows if row["account"] == name]
        account = ctx.accounts.get(name)
        if account is None:
            skipped.append(
                f"skipped {batches_text(len(of_account))} of account {name!r}, which accounts.toml "
                "no longer names"
            )
            continue
        if account.needs_key() and not account.key():
            skipped.append(
                f"skipped {batches_text(len(of_account))} of account {name!r}: "
                f"{account.api_key_env} is not set"
            )
            continue
        here = [row for row in of_account if row["base_url"] in (None, account.location)]
        elsewhere = [row for row in of_account if row not in here]
        if elsewhere:
            skipped.append(
                f"skipped {batches_text(len(elsewhere))} of account {name!r} made on "
                f"{elsewhere[0]['base_url']}; the account now points at {account.location}"
            )
        reachable += here
    return reachable, skipped


def batches_text(count: int) -> str:
    """`1 batch`, `2 batches`."""
    return f"{count} batch" if count == 1 else f"{count} batches"


def recover_unfinished(ctx: Context, account: str, rows: list[Row], report: SweepReport) -> None:
    """Give creates of `account` that were cut off after their upload an end: record the
    batch one made, or mark it abandoned once no batch can have been made."""
    rows = [row for row in rows if not claimed_by_another_run(row)]
    if not rows:
        return
    provider = ctx.provider_for(account)
    files = {row["ref"]: provider.get_file(row["input_file_id"]) for row in rows}
    made_at = [file["created_at"] for file in files.values() if file is not None]
    # A batch is made after its input file: back to the oldest upload, by the server's
    # clock. With an upload gone, the search can only look through the newest batches.
    since = min(made_at) if len(made_at) == len(rows) else None
    wanted = {row["ref"]: row["input_file_id"] for row in rows}
    known = ctx.ledger.batch_ids_made_from({row["input_file_id"] for row in rows})
    search = provider.find_batches(wanted, since, known)
    now = time.time()
    for row in rows:
        batch = search.found.get(row["ref"])
        if batch is not None:
            ref = BatchRef(account, batch["id"])
            report.recovered.append(record(ctx, ref, batch, action="recover", row_id=row["id"]))
        elif (
            search.complete
            or files[row["ref"]] is None
            or (now - epoch_of(row["recorded_at"]) > ABANDON_AFTER_SECONDS)
        ):
            why = "its upload is gone" if files[row["ref"]] is None else "no batch was made"
            ctx.ledger.mark_abandoned(
                row["id"], f"{why}; 'batchledger create' of the same input sends it again"
            )
            report.abandoned.append(row)


def sweep(
    ctx: Context,
    rows: list[Row],
    *,
    auto_save: bool,
    concurrency: int,
    include_synced: bool = False,
    out_dir: Path | None = None,
) -> list[BatchReport]:
    """Check the batches of `rows`, `concurrency` at a time, one client per account.

    Batches that `sync` found are not saved unless `include_synced`: whoever made them
    may have saved them elsewhere.
    """
    listed: dict[BatchRef, dict[str, Any]] = {}
    for account in sorted({row["account"] for row in rows}):
        ctx.provider_for(account)  # made here, before the threads share them
        of_account = [row for row in rows if row["account"] == account]
        listed.update(list_batches(ctx, account, of_account, concurrency))

    parts = part_result_paths(ctx, rows)

    def check_row(row: Row) -> BatchReport:
        save = auto_save and (include_synced or row["origin"] != "sync")
        out = parts.get(row["id"])  # a part's results are kept with its job's
        ref = BatchRef.of(row)
        return check(
            ctx,
            ref,
            auto_save=save or out is not None,
            out_dir=out_dir,
            out=out,
            listed=listed.get(ref),
        )

    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        reports = list(pool.map(check_row, rows))
    except BaseException:
        # Ctrl-C: stop now. Checks not started are dropped; downloads in flight stop at
        # their next chunk and remove their temporary files.
        STOP_DOWNLOADS.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return reports


def list_batches(
    ctx: Context, account: str, rows: list[Row], concurrency: int
) -> dict[BatchRef, dict[str, Any]]:
    """The batches of `rows` (all of `account`) read from the account's listing, when that
    takes fewer round trips than looking each up, `concurrency` at a time.

    A page shows up to 100 batches, so the 200 newest batches are two requests instead of
    200. Only batches not final yet are read so: a batch the listing shows final, like one
    already final and not saved yet, is looked up (its results are fetched next anyway),
    so what decides a download is always a look-up's answer. The listing may read at most
    half the round trips the look-ups would take; what it does not show (older batches, a
    provider that cannot list) is looked up as before.
    """
    live = [row for row in rows if row["status"] not in FINAL_STATUSES]
    rounds = -(-len(live) // max(concurrency, 1))
    if rounds < LIST_FROM_ROUNDS or account in ctx.cannot_list:
        return {}
    made = [moment for moment in map(_made_at, live) if moment is not None]
    since = min(made) if len(made) == len(live) else None  # else: the page budget alone
    wanted = {row["batch_id"] for row in live}
    pages = max(1, rounds // 2)
    listed = ctx.provider_for(account).list_by_id(wanted, since, pages)
    if listed.error is not None and not isinstance(listed.error, Transient):
        ctx.cannot_list.add(account)  # refused, or no list page: not asked again this run
    return {
        BatchRef(account, batch_id): batch
        for batch_id, batch in listed.batches.items()
        if batch["status"] not in FINAL_STATUSES
    }


def _made_at(row: Row) -> float | None:
    """When the API says the row's batch was made; None if the ledger does not know."""
    try:
        return epoch_of(row["created_at"])
    except (TypeError, ValueError):
        return None


def part_result_paths(ctx: Context, rows: list[Row]) -> dict[int, Path]:
    """Where the results of the rows that are parts of jobs are saved, by row id."""
    from batchledger.jobs import part_results_path

    paths = {}
    for row in rows:
        if row["part"] is not None and row["batch_id"] is not None:
            job, part = ctx.ledger.job_of_part(row["part"])
            paths[row["id"]] = part_results_path(
                ctx, job["job_id"], part["part_index"], row["batch_id"]
            )
    return paths
