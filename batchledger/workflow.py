"""What the commands do, in plain values: the API calls and the ledger writes, in order.

Nothing here prints; the CLI turns the returned values into output.
"""

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchledger import api
from batchledger.batches import (
    FINAL_STATUSES,
    SAVABLE_STATUSES,
    Row,
    has_results,
    progress_of,
    results_saved,
)
from batchledger.context import Context
from batchledger.details import CreateDetails
from batchledger.errors import BatchledgerError, NotFound, Refused, Rejected, Transient
from batchledger.inputs import sha256_of
from batchledger.ledger import InputFile
from batchledger.paths import default_results_path, errors_path_for
from batchledger.times import epoch_of


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

    batch_id: str
    batch: dict[str, Any] | None = None
    row: Row | None = None
    saved: list[SavedFile] = field(default_factory=list)
    already_saved: bool = False  # retrieve found the results saved and unchanged
    error: BatchledgerError | None = None


def submit(
    ctx: Context,
    input_: InputFile,
    endpoint: str,
    window: str,
    *,
    force: bool,
    details: CreateDetails | None = None,
) -> Submitted:
    """Upload `input_` and create its batch, recording each step as soon as it is known.

    A create of the same input that was cut off earlier is resumed, not repeated: its
    batch is looked for on the server (by the ledger ref in its metadata), and its upload
    is reused.
    """
    row, resumed = ctx.ledger.claim_submission(input_, endpoint, window, force=force)
    details = details or CreateDetails()
    try:
        ctx.ledger.record_create_details(row["id"], details)
        return _submit_claimed(ctx, input_, row, resumed, details)
    finally:
        # A claim that cannot be released is harmless once this process has ended; the
        # error that got us here is the one to report.
        with contextlib.suppress(BatchledgerError):
            ctx.ledger.release_claim(row["id"])


def _submit_claimed(
    ctx: Context, input_: InputFile, row: Row, resumed: bool, details: CreateDetails
) -> Submitted:
    client, ledger = ctx.client(), ctx.ledger
    upload_name = api.upload_name(input_.path, row["ref"])
    file_id: str | None = None
    if resumed:
        since = epoch_of(row["recorded_at"]) - api.CLOCK_SKEW_SECONDS
        found = api.find_batches_by_ref(client, {row["ref"]}, since).get(row["ref"])
        if found is not None:
            row = ledger.record_batch(found, action="recover", row_id=row["id"])
            return Submitted(file_id=found["input_file_id"], batch=found, row=row, recovered=True)
        file_id = row["input_file_id"]
        if file_id is not None and not api.file_exists(client, file_id):
            file_id = None
        if file_id is None:
            file_id = api.find_uploaded_file(client, upload_name, input_.size, since)
            if file_id is not None:
                ledger.record_upload(row["id"], file_id)
    if file_id is None:
        file_id = api.upload_file(
            client, input_.path, upload_name, expires_after=details.input_expires_after
        )
        ledger.record_upload(row["id"], file_id)
    # The ledger's ref travels with the batch, so the batch can be found again by
    # listing the account's batches if the response to this request is lost.
    try:
        batch = api.create_batch(
            client,
            file_id,
            row["endpoint"],
            row["completion_window"],
            row["ref"],
            user_metadata=details.metadata,
            output_expires_after=details.output_expires_after,
        )
    except Rejected as exc:
        ledger.mark_rejected(row["id"], exc.message)
        raise
    row = ledger.record_batch(batch, action="create", row_id=row["id"])
    return Submitted(file_id=file_id, batch=batch, row=row)


def check_status(
    ctx: Context, batch_id: str, *, auto_save: bool, out: Path | None = None
) -> BatchReport:
    """Fetch a batch and record it; with `auto_save`, save whatever results it has."""
    batch = api.get_batch_status(ctx.client(), batch_id)
    row = ctx.ledger.record_batch(batch, action="status", row_id=None)
    report = BatchReport(batch_id=batch_id, batch=batch, row=row)
    # A result already saved is not fetched again unless the user names a place for it.
    if auto_save and has_results(batch) and (out is not None or not results_saved(row)):
        report.saved = save_results(ctx, batch, row, out)
        report.row = ctx.ledger.get_row(row["id"])
    return report


def retrieve(ctx: Context, batch_id: str, out: Path | None, *, again: bool = False) -> BatchReport:
    """Save a finished batch's results; refuse (exit 3) while it has none.

    An expired or cancelled batch keeps what it finished: that is saved too. A result
    already saved at the same place, unchanged on disk, is not downloaded again unless
    `again`.
    """
    batch = api.get_batch_status(ctx.client(), batch_id)
    row = ctx.ledger.record_batch(batch, action="retrieve", row_id=None)
    if not has_results(batch):
        ctx.ledger.record_event(row["id"], "retrieve_refused", f"status {batch['status']}")
        if batch["status"] in SAVABLE_STATUSES:
            reason = f"batch {batch_id} is {batch['status']} with no result files"
        else:
            reason = f"batch {batch_id} is {batch['status']}, not completed"
        raise Refused(f"{reason}; nothing was saved")
    report = BatchReport(batch_id=batch_id, batch=batch, row=row)
    wanted = result_paths(batch, out)
    if not again and all(saved_unchanged(row, kind, path) for kind, _, path in wanted):
        report.already_saved = True
        return report
    report.saved = save_results(ctx, batch, row, out)
    report.row = ctx.ledger.get_row(row["id"])
    return report


def result_paths(batch: dict[str, Any], out: Path | None) -> list[tuple[str, str, Path]]:
    """(kind, file id, local path) of each result file the batch has."""
    out_path = (out or default_results_path(batch["id"])).expanduser().absolute()
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
    ctx: Context, batch: dict[str, Any], row: Row, out: Path | None
) -> list[SavedFile]:
    """Download the output file and the error file beside it, and record both."""
    saved: list[SavedFile] = []
    for kind, file_id, path in result_paths(batch, out):
        replaced = path.exists()
        operation = "DOWNLOAD_RESULTS" if kind == "output" else "DOWNLOAD_ERRORS"
        try:
            download = api.download_results(ctx.client(), file_id, path, operation)
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


def cancel(ctx: Context, batch_id: str) -> BatchReport:
    """Ask the API to cancel a batch; refuse (exit 3) if it is already past that."""
    batch = api.cancel_batch(ctx.client(), batch_id)
    if batch is None:
        batch = api.get_batch_status(ctx.client(), batch_id)
        ctx.ledger.record_batch(batch, action="cancel_refused", row_id=None)
        raise Refused(f"batch {batch_id} is already {batch['status']}; there is nothing to cancel")
    row = ctx.ledger.record_batch(batch, action="cancel", row_id=None)
    return BatchReport(batch_id=batch_id, batch=batch, row=row)


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
        [cancelling.batch_id],
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


def batches_to_watch(ctx: Context) -> list[str]:
    """What `watch --all` follows: every ledger batch not final, or final but not saved."""
    return [row["batch_id"] for row in ctx.ledger.batches_to_sweep()]


def follow(
    ctx: Context,
    batch_ids: list[str],
    *,
    auto_save: bool,
    interval: float,
    max_interval: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[BatchReport]:
    """Check the batches until each is final, yielding every check; backs off while idle.

    The pause between rounds grows by half each round in which nothing moved, up to
    `max_interval`, and drops back to `interval` as soon as something does. A check that
    fails for a passing reason (the network, a 5xx, a rate limit) is yielded with its error
    and tried again next round: a watch may run for a day.
    """
    waiting = list(dict.fromkeys(batch_ids))
    last_seen: dict[str, tuple[Any, ...]] = {}
    pause = interval
    while waiting:
        moved = False
        for batch_id in list(waiting):
            try:
                report = check_status(ctx, batch_id, auto_save=auto_save)
            except Transient as exc:
                yield BatchReport(batch_id=batch_id, error=exc)
                continue
            assert report.batch is not None
            seen = (report.batch["status"], *progress_of(report.batch))
            moved = moved or last_seen.get(batch_id) != seen
            last_seen[batch_id] = seen
            if report.batch["status"] in FINAL_STATUSES:
                waiting.remove(batch_id)
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
    """Bring every batch of the account into the ledger, marking those made elsewhere."""
    report = SyncReport()
    ledger = ctx.ledger
    for batch in api.list_batches(ctx.client()):
        row = ledger.row_of(batch)
        if row is None:
            ledger.record_batch(batch, action="sync", row_id=None, origin="sync")
            report.added.append(batch["id"])
        elif row["batch_id"] is None:
            ledger.record_batch(batch, action="recover", row_id=row["id"])
            report.recovered.append(batch["id"])
        elif (row["status"], row["requests_completed"], row["requests_failed"]) != (
            batch["status"],
            (batch.get("request_counts") or {}).get("completed"),
            (batch.get("request_counts") or {}).get("failed"),
        ):
            ledger.record_batch(batch, action="sync", row_id=row["id"])
            report.updated.append(batch["id"])
        else:
            report.unchanged += 1
    return report


def recover_unfinished(ctx: Context) -> list[Row]:
    """Record the batches that cut-off creates made on the server; the rows it recovered."""
    ledger = ctx.ledger
    rows = ledger.unfinished_submissions()
    if not rows:
        return []
    since = min(epoch_of(row["recorded_at"]) for row in rows) - api.CLOCK_SKEW_SECONDS
    found = api.find_batches_by_ref(ctx.client(), {row["ref"] for row in rows}, since)
    return [
        ledger.record_batch(found[row["ref"]], action="recover", row_id=row["id"])
        for row in rows
        if row["ref"] in found
    ]


@dataclass
class SweepReport:
    recovered: list[Row] = field(default_factory=list)  # batches of cut-off creates, found
    reports: list[BatchReport] = field(default_factory=list)


def sweep_all(ctx: Context, *, auto_save: bool, concurrency: int) -> SweepReport | None:
    """`status --all`: recover cut-off creates, then check every batch still to follow.

    None when the ledger has nothing to sweep: then no key, log or network is needed.
    """
    ledger = ctx.open_ledger(create=False)
    if ledger is None or not (ledger.batches_to_sweep() or ledger.unfinished_submissions()):
        return None
    ctx.client()
    logger = ctx.start_log()
    report = SweepReport(recovered=recover_unfinished(ctx))
    pending = ledger.batches_to_sweep()
    logger.info("SWEEP batches=%d", len(pending))
    report.reports = sweep(ctx, pending, auto_save=auto_save, concurrency=concurrency)
    return report


def sweep(ctx: Context, rows: list[Row], *, auto_save: bool, concurrency: int) -> list[BatchReport]:
    """Check the batches of `rows`, `concurrency` at a time, sharing one client."""

    def check(row: Row) -> BatchReport:
        try:
            return check_status(ctx, row["batch_id"], auto_save=auto_save)
        except BatchledgerError as exc:
            return BatchReport(batch_id=row["batch_id"], row=row, error=exc)

    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        reports = list(pool.map(check, rows))
    except BaseException:
        # Ctrl-C: stop now. Checks not started are dropped; downloads in flight stop at
        # their next chunk and remove their temporary files.
        api.STOP_DOWNLOADS.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return reports
