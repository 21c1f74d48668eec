"""The sweep (`status --all`, `watch --all`): every batch and job still to follow, on every
account, checked and saved, the cut-off creates recovered, the jobs moved on; the listing
of an account's batches that saves it round trips; and `sync`.

Nothing here prints; the CLI turns the returned values into output.
"""

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from batchledger.batch import BatchReport, check, record
from batchledger.batches import FINAL_STATUSES, BatchRef
from batchledger.claims import claimed_by_another_run
from batchledger.context import Context
from batchledger.errors import BatchledgerError, Transient
from batchledger.jobs import JobReport, advance, part_results_path, views
from batchledger.providers import downloads_stopped_by
from batchledger.recovery import recover_unfinished
from batchledger.rows import BatchRow, JobRow
from batchledger.times import epoch_of

# A sweep reads its batches from the account's listing when looking each up would take at
# least this many rounds of `concurrency` requests.
LIST_FROM_ROUNDS = 3

# What `followable` sorts by account: batches, jobs, or both.
Followed = TypeVar("Followed", bound=BatchRow | JobRow)


@dataclass
class SyncReport:
    """What `sync` did: the batch ids added to the ledger, updated, recovered; how many were
    unchanged."""

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
        row = ledger.batches.row_of(batch, account)
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
    """What one sweep did: the cut-off creates it recovered or marked abandoned, the accounts
    it skipped (why, one line each), a report per batch checked, and one per job moved on."""

    recovered: list[BatchRow] = field(default_factory=list)  # batches of cut-off creates, found
    abandoned: list[BatchRow] = field(default_factory=list)  # cut-off creates that made none
    skipped: list[str] = field(default_factory=list)  # why some accounts were left out
    reports: list[BatchReport] = field(default_factory=list)
    jobs: list[JobReport] = field(default_factory=list)


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
    for row in ledger.batches.unsent_submissions():
        if not claimed_by_another_run(row):
            ledger.batches.mark_abandoned(
                row["id"],
                "cut off before its upload was recorded, so no batch was made; "
                "'batchledger create' of the same input sends it (reusing the upload if it "
                "arrived)",
            )
            report.abandoned.append(row)
    pending = ledger.batches.batches_to_sweep(include_synced=include_synced)
    unfinished = ledger.batches.unfinished_submissions()
    jobs = ledger.jobs.unfinished_jobs()
    if not (pending or unfinished or jobs):
        return report if report.abandoned else None
    everything: list[BatchRow | JobRow] = [*pending, *unfinished, *jobs]
    reachable, report.skipped = followable(ctx, everything)
    if not reachable:
        return report
    ctx.start_log()
    unfinished = [row for row in reachable if "job_id" not in row and row["batch_id"] is None]
    for account in sorted({row["account"] for row in unfinished}):
        rows = [row for row in unfinished if row["account"] == account]
        found = recover_unfinished(ctx, account, rows)
        report.recovered += found.recovered
        report.abandoned += found.abandoned
    pending, _ = followable(ctx, ledger.batches.batches_to_sweep(include_synced=include_synced))
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
    job_ids = {row["job_id"] for row in reachable if "batch_id" not in row}  # the jobs
    report.jobs = advance_jobs(ctx, job_ids, out_dir=out_dir)
    return report


def advance_jobs(ctx: Context, job_ids: set[str], *, out_dir: Path | None) -> list[JobReport]:
    """Move on the running jobs of `job_ids`: their parts were checked by the sweep."""
    reports = []
    for job in ctx.ledger.jobs.unfinished_jobs():
        if job["job_id"] not in job_ids or claimed_by_another_run(job):
            continue
        try:
            reports.append(advance(ctx, job, check=False, out_dir=out_dir))
        except Exception as exc:  # one job's trouble must not stop the sweep
            # Whatever went wrong with this job (the API, its input, a bug), the other
            # batches and jobs were swept: a warning for it, and the sweep exits as it would.
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


def followable(ctx: Context, rows: Sequence[Followed]) -> tuple[list[Followed], list[str]]:
    """The rows whose account can be reached now, and one line per account that cannot:
    an account no longer configured, one with no key set, or batches made on another base
    URL than the account's now (followed there, they would only be 404s)."""
    reachable: list[Followed] = []
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


def sweep(
    ctx: Context,
    rows: list[BatchRow],
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

    stop = threading.Event()  # this sweep's: set when it is interrupted

    def check_row(row: BatchRow) -> BatchReport:
        save = auto_save and (include_synced or row["origin"] != "sync")
        out = parts.get(row["id"])  # a part's results are kept with its job's
        ref = BatchRef.of(row)
        with downloads_stopped_by(stop):
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
        reports = [_result(future) for future in [pool.submit(check_row, row) for row in rows]]
    except BaseException:
        # Ctrl-C: stop now. Checks not started are dropped; this sweep's downloads in
        # flight stop at their next chunk and remove their temporary files. Downloads of
        # other threads go on: a Python session goes on after a Ctrl-C.
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return reports


# How often the main thread wakes while it waits on the workers (see _result).
WAKE_SECONDS = 0.2


def _result(future: "Future[BatchReport]") -> BatchReport:
    """The future's result, waited for in short sleeps, so that a Ctrl-C is seen at once.

    The kernel hands a process's SIGINT to any thread that does not block it, and a worker
    may take it (a thread it starts unblocks signals as it begins: a download's writer).
    CPython then only flags it for the main thread, whose Python handler runs when that
    thread next runs Python code: asleep on a lock with no timeout, it would not until the
    worker's check returned (a stalled download: minutes; tests/test_faults.py).
    """
    while not future.done():
        wait([future], timeout=WAKE_SECONDS)
    return future.result()


def list_batches(
    ctx: Context, account: str, rows: list[BatchRow], concurrency: int
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
    provider = ctx.provider_for(account)
    if rounds < LIST_FROM_ROUNDS or account in ctx.cannot_list:
        return {}
    if not provider.profile.can_list_batches:
        return {}
    made = [moment for moment in map(_made_at, live) if moment is not None]
    since = min(made) if len(made) == len(live) else None  # else: the page budget alone
    wanted = {row["batch_id"] for row in live if row["batch_id"] is not None}
    pages = max(1, rounds // 2)
    listed = provider.list_by_id(wanted, since, pages)
    if listed.error is not None and not isinstance(listed.error, Transient):
        ctx.cannot_list.add(account)  # refused, or no list page: not asked again this run
    return {
        BatchRef(account, batch_id): batch
        for batch_id, batch in listed.batches.items()
        if batch["status"] not in FINAL_STATUSES
    }


def _made_at(row: BatchRow) -> float | None:
    """When the API says the row's batch was made; None if the ledger does not know."""
    if row["created_at"] is None:
        return None
    try:
        return epoch_of(row["created_at"])
    except ValueError:
        return None


def part_result_paths(ctx: Context, rows: list[BatchRow]) -> dict[int, Path]:
    """Where the results of the rows that are parts of jobs are saved, by row id."""
    paths = {}
    for row in rows:
        if row["part"] is not None and row["batch_id"] is not None:
            job, part = ctx.ledger.jobs.job_of_part(row["part"])
            paths[row["id"]] = part_results_path(
                ctx, job["job_id"], part["part_index"], row["batch_id"]
            )
    return paths
