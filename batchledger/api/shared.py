"""What the Batch and Job handles of the Python API share: their request counts, the
pauses of their waits (cut at a timeout), the progress bar, and the calls of retry and
export that both make."""

import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from batchledger.batches import (
    BatchRef,
    JobRef,
)
from batchledger.context import Context
from batchledger.errors import UsageError, WaitTimeout
from batchledger.rows import BatchRow, JobRow

if TYPE_CHECKING:
    from batchledger.details import CostEstimate
    from batchledger.export import ExportCounts
    from batchledger.ledger import ClaimGuard
    from batchledger.retry import Pricing, RetryReport

log = logging.getLogger("batchledger")

# How long `wait` pauses between checks at first: an emulator's batches move every few
# seconds, a provider's in minutes or hours. The pause grows while nothing moves.
EMULATOR_INTERVAL = 1.0
PROVIDER_INTERVAL = 10.0
MAX_INTERVAL = 300.0

ExportFormat = Literal["csv", "jsonl"]


class RequestCounts(TypedDict):
    """A batch's or job's requests: all of them, those that succeeded, those that failed."""

    total: int
    completed: int
    failed: int


def first_interval(ctx: Context, account: str) -> float:
    """The first pause of a wait, for the account's kind."""
    kind = ctx.account_named(account).kind
    return EMULATOR_INTERVAL if kind == "emulator" else PROVIDER_INTERVAL


def deadline_sleep(timeout: float | None) -> Callable[[float], None] | None:
    """The polling loops' sleep, cut short at the deadline and raising WaitTimeout there;
    None (plain time.sleep) without a timeout."""
    if timeout is None:
        return None
    deadline = time.monotonic() + timeout

    def sleep(seconds: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"still running after {timeout:g} s; it goes on on the server")
        time.sleep(min(seconds, left))

    return sleep


def progress_bar() -> Any:
    from batchledger.render import Progress  # start-up: only a wait with progress draws

    return Progress(sys.stderr)


def send_retry(
    ctx: Context,
    target: BatchRef | JobRef,
    account_hint: str,
    all_failed: bool,
    max_in_flight: int | None,
) -> "RetryReport":
    """Sent from the original's account (a retry is sent where the original was)."""
    from batchledger.retry import retry  # start-up: retry and jobs, only for retry

    ledger = ctx.open_ledger(create=False)
    if isinstance(target, BatchRef):
        account = target.account
    else:
        row = ledger.jobs.find_job(target.job_id) if ledger is not None else None
        account = row["account"] if row is not None else account_hint
    ctx.start_api_command(account)
    return retry(
        ctx,
        target,
        all_failed=all_failed,
        max_in_flight=max_in_flight,
        pricing=retry_pricing(ctx, account),
    )


def retry_pricing(ctx: Context, account_name: str) -> "Pricing":
    """A retry's estimate, recorded on its job as every create's is, and its account's
    `max_cost_per_day`, which it is held to as a create is: under a budget the lines it
    sends again are counted and priced (the library's batch prices), and the retry refused
    (exit 3) before its job is recorded if they could take the day's spend above it;
    without one they are scanned (bytes / 4), as a plain create's input is."""
    account = ctx.account_named(account_name)
    limit = account.max_cost_per_day

    def pricing(
        path: Path, ranges: list[tuple[int, int]]
    ) -> "tuple[CostEstimate | None, ClaimGuard | None]":
        # Imported here (start-up: tokenizers, prices).
        from batchledger.estimate import estimate_ranges, scan_ranges
        from batchledger.prices import KeptPrices, PriceList
        from batchledger.spend import day_budget_guard

        if limit is None:
            try:
                return scan_ranges(path, ranges, KeptPrices(ctx.ledger)), None
            except Exception:  # a rough figure missing must not stop the retry
                log.warning("the retry's estimate could not be made", exc_info=True)
                return None, None
        prices = PriceList()
        estimate = estimate_ranges(path, ranges, prices)
        guard = day_budget_guard(
            lambda: ctx.ledger,
            account.name,
            limit,
            prices,
            estimate.cost_max,
            estimate.cost_min,
            what="this retry",
        )
        return estimate, guard

    return pricing


def export_chunks(
    batch_row: BatchRow | None, job_row: JobRow | None, format_: str, counts: "ExportCounts | None"
) -> Iterator[bytes]:
    """The export's bytes; what keeps it from being made is raised now, not when read."""
    from batchledger import export as exporting  # start-up: only export loads it

    if format_ not in ("csv", "jsonl"):
        raise UsageError(f"format {format_!r} is not csv or jsonl")
    sent: str | None  # the input's sha256 as it was sent
    if job_row is not None:
        input_path, results = exporting.check_job_exportable(job_row)
        sent = job_row["input_sha256"]
    else:
        assert batch_row is not None
        input_path, results = exporting.check_exportable(batch_row)
        sent = batch_row["input_sha256"]
    rows = exporting.export_rows(input_path, results, counts or exporting.ExportCounts(), sent)
    return exporting.csv_chunks(rows) if format_ == "csv" else exporting.jsonl_chunks(rows)


def save_export(id_: str, chunks: Iterator[bytes], path: str | Path | None, format_: str) -> Path:
    from batchledger import export as exporting  # start-up: only export loads it
    from batchledger.savefile import prepare_target, save_chunks

    default = exporting.default_export_path(id_, format_)
    out = Path(path).expanduser() if path is not None else default
    if out.is_dir():  # as for retrieve and status: the default name, inside the folder
        out = out / default
    out = out.absolute()
    prepare_target(out)
    save_chunks(out, chunks)
    return out
