"""One batch's steps, in plain values: send (upload once, create with the ledger's ref),
look up, check, retrieve, save its results, cancel, follow; each API answer recorded.

Nothing here prints; the CLI turns the returned values into output. A part of a job is sent
by the same two steps (`upload_once`, `create_with_ref`): jobs/moves.py.
"""

import contextlib
import json
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchledger.batches import (
    FINAL_STATUSES,
    SAVABLE_STATUSES,
    BatchRef,
    has_results,
    progress_of,
    results_saved,
    retention_note,
)
from batchledger.context import Context
from batchledger.details import CreateDetails
from batchledger.errors import BatchledgerError, NotFound, Refused, Rejected, Transient
from batchledger.inputs import sha256_of
from batchledger.ledger import ClaimGuard, InputFile
from batchledger.lost_create import Ambiguous
from batchledger.ordering import order_results
from batchledger.paths import default_results_path, errors_path_for
from batchledger.polling import Backoff
from batchledger.prices import PriceList
from batchledger.providers import Inline, Provider, Uploaded, upload_name
from batchledger.rows import BatchRow, JobRow, Kind, saved_columns
from batchledger.savefile import save_chunks
from batchledger.usage import batch_cost, usage_of_results


@dataclass(frozen=True)
class Submitted:
    file_id: str
    batch: dict[str, Any]
    row: BatchRow
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
    row: BatchRow | None = None
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
) -> BatchRow:
    """Store what the API said of a batch of `ref`'s account."""
    return ctx.ledger.batches.record_batch(
        batch,
        action=action,
        row_id=row_id,
        account=ref.account,
        base_url=ctx.account_named(ref.account).location,
        origin=origin,
        actual_cost=final_cost(ctx, batch, row_id, ref.account),
    )


def final_cost(
    ctx: Context, batch: dict[str, Any], row_id: int | None, account: str
) -> float | None:
    """A final batch's cost, priced from the usage the API reported (issue 22); None while
    it is not final, has no usage, or its model has no price."""
    if not batch.get("usage") or batch.get("status") not in FINAL_STATUSES:
        return None
    model = batch.get("model")
    if not model:  # an answer without its model: the one the ledger learned before
        row = (
            ctx.ledger.batches.get_row(row_id)
            if row_id is not None
            else ctx.ledger.batches.row_of(batch, account)
        )
        model = row["model"] if row is not None else None
    return batch_cost({"model": model, "usage": batch["usage"]}, PriceList())


def submit(
    ctx: Context,
    input_: InputFile,
    endpoint: str,
    window: str,
    *,
    force: bool,
    details: CreateDetails | None = None,
    guard: ClaimGuard | None = None,
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
    row, resumed = ctx.ledger.batches.claim_submission(
        input_,
        endpoint,
        window,
        account=account.name,
        base_url=account.location,
        force=force,
        details=details,
        guard=guard,
    )
    try:
        return _submit_claimed(ctx, provider, input_, row, resumed, details, force=force)
    finally:
        # A claim that cannot be released is harmless once this process has ended; the
        # error that got us here is the one to report.
        with contextlib.suppress(BatchledgerError):
            ctx.ledger.release_claim("batches", row["id"])


def _submit_claimed(
    ctx: Context,
    provider: Provider,
    input_: InputFile,
    row: BatchRow,
    resumed: bool,
    details: CreateDetails,
    *,
    force: bool = False,
) -> Submitted:
    file: dict[str, Any] | None = None
    if resumed and row["input_file_id"] is not None:
        # The upload was recorded, so a batch may have been made from it.
        file = provider.get_file(row["input_file_id"])
        since = file["created_at"] if file else None
        made_from = ctx.ledger.batches.batch_ids_made_from({row["input_file_id"]})
        known = known_batches(ctx, provider, row, made_from)
        search = provider.find_batches({row["ref"]: row["input_file_id"]}, since, known)
        found = search.found
        if search.ambiguous and not force:
            raise Ambiguous(search.ambiguous).refusal()
        if row["ref"] in found:
            batch = found[row["ref"]]
            ref = BatchRef(row["account"], batch["id"])
            row = record(ctx, ref, batch, action="recover", row_id=row["id"])
            return Submitted(file_id=batch["input_file_id"], batch=batch, row=row, recovered=True)
    uploaded = upload_once(
        provider,
        input_.path,
        upload_name(input_.path, row["ref"]),
        input_.size,
        file_id=row["input_file_id"],
        file=file,
        # Cut off during the upload: it may have arrived all the same.
        search=resumed,
        expires_after=details.input_expires_after,
    )
    if uploaded.id != row["input_file_id"]:
        ctx.ledger.batches.record_upload(row["id"], uploaded.id)
    batch, row = create_with_ref(
        ctx,
        provider,
        row,
        uploaded,
        row["endpoint"],
        row["completion_window"],
        details,
        inline=Inline(input_.path, [(0, input_.size)]),
    )
    return Submitted(file_id=uploaded.id, batch=batch, row=row)


_NOT_FETCHED: Any = object()


def upload_once(
    provider: Provider,
    path: Path,
    name: str,
    size: int,
    *,
    file_id: str | None,
    file: dict[str, Any] | None = _NOT_FETCHED,
    search: bool,
    expires_after: int | None,
    ranges: list[tuple[int, int]] | None = None,
    before_upload: Callable[[], None] | None = None,
    after_upload: Callable[[float], None] | None = None,
) -> Uploaded:
    """The upload of an input (a batch's, or a part's byte `ranges`), made once: the one
    recorded (`file_id`) while the provider still has it (`file`: its file object, when
    already fetched); else, if `search`, one whose answer was lost (by `name` and `size`);
    else a new one (`before_upload`, `after_upload(seconds)` around it)."""
    uploaded: Uploaded | None = None
    if file_id is not None:
        if file is _NOT_FETCHED:
            file = provider.get_file(file_id)
        if file is not None:
            uploaded = Uploaded(file["id"], file["created_at"])
    elif search:
        uploaded = provider.find_upload(name, size, max_age=None)
    if uploaded is None:
        if before_upload is not None:
            before_upload()
        started = time.monotonic()
        uploaded = provider.upload(path, name, expires_after=expires_after, ranges=ranges)
        if after_upload is not None:
            after_upload(time.monotonic() - started)
    return uploaded


def create_with_ref(
    ctx: Context,
    provider: Provider,
    row: BatchRow,
    uploaded: Uploaded,
    endpoint: str,
    window: str,
    details: CreateDetails,
    exclude: Collection[str] = (),
    inline: Inline | None = None,
) -> tuple[dict[str, Any], BatchRow]:
    """Create the batch of ledger row `row` from `uploaded`, and record it.

    The ledger's ref travels with the batch, so the batch can be found again by listing the
    account's batches if the response to this request is lost (`exclude`: batches already
    recorded from the same upload). A refused create is recorded as rejected, and raised.
    Where the provider takes the requests inline (its profile says so), they are `inline`'s
    byte ranges, and `uploaded` is what its check answered.
    """
    if not provider.profile.inline_requests:
        inline = None
    exclude = known_batches(ctx, provider, row, exclude)
    try:
        batch = provider.create(
            uploaded.id,
            endpoint,
            window,
            row["ref"],
            file_created_at=uploaded.created_at,
            user_metadata=details.metadata,
            output_expires_after=details.output_expires_after,
            exclude=exclude,
            inline=inline,
        )
    except Rejected as exc:
        ctx.ledger.batches.mark_rejected(row["id"], exc.message, exc.code)
        raise
    ref = BatchRef(row["account"], batch["id"])
    return batch, record(ctx, ref, batch, action="create", row_id=row["id"])


def known_batches(
    ctx: Context, provider: Provider, row: BatchRow, known: Collection[str]
) -> Collection[str]:
    """The batches a search for what a lost create made must pass over: those recorded
    from the same upload; where batches carry no metadata (nothing tells them apart but
    when they were made and their size), every batch of the account the ledger holds."""
    if provider.profile.carries_metadata or not provider.profile.inline_requests:
        return known
    return {*known, *ctx.ledger.batches.batch_ids_of_account(row["account"])}


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
    report.row = ctx.ledger.batches.get_row(row["id"])


def retention_warning(ctx: Context, row: BatchRow | None) -> str | None:
    """A warning when a batch's results, not saved yet, are within a day of the end of the
    time its provider keeps them (batches.retention_note)."""
    account = ctx.accounts.get(row["account"]) if row is not None else None
    return retention_note(row, account.profile.retention) if row and account else None


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
        report.warning = report.warning or retention_warning(ctx, report.row)
        return report
    except NotFound as exc:
        for row in ctx.ledger.batches.find_batches(ref.batch_id, ref.account):
            ctx.ledger.batches.mark_not_found(row["id"], exc.message)
        return BatchReport(
            ref=ref,
            row=ctx.ledger.batches.find_batch(ref.batch_id, ref.account),
            warning=f"{ref.batch_id}: account {ref.account!r} does not know it (not checked again)",
        )
    except BatchledgerError as exc:
        return BatchReport(
            ref=ref, row=ctx.ledger.batches.find_batch(ref.batch_id, ref.account), error=exc
        )


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
        ctx.ledger.batches.record_event(row["id"], "retrieve_refused", f"status {batch['status']}")
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
    report.row = ctx.ledger.batches.get_row(row["id"])
    return report


def result_paths(
    batch: dict[str, Any], out: Path | None, out_dir: Path | None = None
) -> list[tuple[Kind, str, Path]]:
    """(kind, file id, local path) of each result file the batch has."""
    out_path = out or (out_dir or Path()) / default_results_path(batch["id"])
    out_path = out_path.expanduser().absolute()
    candidates: list[tuple[Kind, str | None, Path]] = [
        ("output", batch.get("output_file_id"), out_path),
        ("error", batch.get("error_file_id"), errors_path_for(out_path)),
    ]
    return [(kind, file_id, path) for kind, file_id, path in candidates if file_id]


def saved_unchanged(row: BatchRow | JobRow, kind: Kind, path: Path) -> bool:
    """The ledger saved this file at `path`, and the bytes there are still the same."""
    saved = saved_columns(row, kind)
    if saved["path"] != str(path) or not path.is_file():
        return False
    if path.stat().st_size != saved["bytes"]:
        return False
    return bool(sha256_of(path) == saved["sha256"])


def save_results(
    ctx: Context,
    ref: BatchRef,
    batch: dict[str, Any],
    row: BatchRow,
    out: Path | None,
    out_dir: Path | None = None,
) -> list[SavedFile]:
    """Download the output file and the error file beside it, and record both."""
    provider = ctx.provider_for(ref.account)
    if not provider.profile.results_in_input_order:
        return _save_in_input_order(ctx, provider, batch, row, out, out_dir)
    saved: list[SavedFile] = []
    for kind, file_id, path in result_paths(batch, out, out_dir):
        replaced = path.exists()
        operation = "DOWNLOAD_RESULTS" if kind == "output" else "DOWNLOAD_ERRORS"
        try:
            download = ctx.provider_for(ref.account).download(file_id, path, operation)
        except NotFound as exc:
            ctx.ledger.batches.mark_results_gone(row["id"], exc.message)
            raise
        except BatchledgerError as exc:
            ctx.ledger.batches.record_event(row["id"], f"save_{kind}_failed", exc.message)
            raise
        except KeyboardInterrupt:
            ctx.ledger.batches.record_event(row["id"], f"save_{kind}_interrupted", str(path))
            raise
        ctx.ledger.batches.record_download(row["id"], kind, path, download.size, download.sha256)
        saved.append(SavedFile(kind=kind, path=path, size=download.size, replaced=replaced))
    return saved


def _save_in_input_order(
    ctx: Context,
    provider: Provider,
    batch: dict[str, Any],
    row: BatchRow,
    out: Path | None,
    out_dir: Path | None,
) -> list[SavedFile]:
    """Results that come in any order, in one file (Anthropic's): streamed to disk, then
    put in the input's custom_id order, its successes into the output file and the rest
    into the error file beside it (ordering.py), and both recorded."""
    wanted = {kind: path for kind, _, path in result_paths(batch, out, out_dir)}
    url = str(batch.get("output_file_id") or batch.get("error_file_id"))
    output = wanted.get("output") or (
        out or (out_dir or Path()) / default_results_path(batch["id"])
    )
    output = output.expanduser().absolute()
    targets = {"output": output, "error": errors_path_for(output)}
    replaced = {kind: path.exists() for kind, path in targets.items()}
    raw = output.with_name(f".{output.name}.unordered")
    try:
        try:
            provider.download(url, raw, "DOWNLOAD_RESULTS")
        except NotFound as exc:
            ctx.ledger.batches.mark_results_gone(row["id"], exc.message)
            raise
        except BatchledgerError as exc:
            ctx.ledger.batches.record_event(row["id"], "save_output_failed", exc.message)
            raise
        except KeyboardInterrupt:
            ctx.ledger.batches.record_event(row["id"], "save_output_interrupted", str(output))
            raise
        ordered = order_results(
            Path(row["input_path"]) if row["input_path"] else None,  # None: made elsewhere
            raw,
            targets["output"],
            targets["error"],
            _sent_ranges(ctx, row),
        )
    finally:
        raw.unlink(missing_ok=True)
    saved: list[SavedFile] = []
    for kind, done in (("output", ordered.succeeded), ("error", ordered.errors)):
        if done is None:
            if kind not in wanted:
                continue
            # The API counted such results, but no line of them came (a request it lost):
            # an empty file stands for them, so the batch is saved.
            done = save_chunks(targets[kind], [])
        ctx.ledger.batches.record_download(row["id"], kind, targets[kind], done.size, done.sha256)
        saved.append(
            SavedFile(kind=kind, path=targets[kind], size=done.size, replaced=replaced[kind])
        )
    if ordered.succeeded is not None:
        # Such a batch reports no usage: its answers do, each its own.
        model, usage = usage_of_results(targets["output"])
        if usage is not None:
            with_usage = {**batch, "usage": usage, **({"model": model} if model else {})}
            record(
                ctx,
                BatchRef(row["account"], batch["id"]),
                with_usage,
                action="usage",
                row_id=row["id"],
            )
    return saved


def _sent_ranges(ctx: Context, row: BatchRow) -> list[tuple[int, int]] | None:
    """The byte ranges of its input a batch was sent: a part's, or all of it (None)."""
    if row["part"] is None:
        return None
    _, part = ctx.ledger.jobs.job_of_part(row["part"])
    if part["ranges"]:
        return [(start, end) for start, end in json.loads(part["ranges"])]
    return [(part["start_byte"], part["end_byte"])]


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
    sleep: Callable[[float], None] | None = None,
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
    backoff = Backoff(interval, max_interval, sleep)
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
            backoff.wait(moved)
