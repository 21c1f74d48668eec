"""A checked batch told to the user: its lines on stdout, what to know on stderr."""

from pathlib import Path
from typing import TYPE_CHECKING

from batchledger.batches import JobStatus
from batchledger.context import Context
from batchledger.render import report_lines, saved_warnings

if TYPE_CHECKING:
    from batchledger.api.client import BatchLedger
    from batchledger.batch import BatchReport


def print_report(ctx: Context, report: "BatchReport") -> None:
    """A checked batch on stdout: its status lines and saved files."""
    ctx.print("\n".join(report_lines(report)))
    warn_saved(ctx, report)


def warn_saved(ctx: Context, report: "BatchReport") -> None:
    for warning in saved_warnings(report):
        ctx.warn(warning)
    if report.warning:
        ctx.warn(report.warning)


def warn_input_changed(ctx: Context, batch_ledger: "BatchLedger", told: set[str]) -> None:
    """A sweep leaves jobs whose input changed alone; each sweep reminds of them."""
    changed = batch_ledger.listing(status=JobStatus.INPUT_CHANGED).jobs()
    for job in reversed(changed):  # oldest first
        if job["job_id"] not in told:
            ctx.warn(
                f"{job['job_id']}: input_changed: its queued parts wait for "
                f"{Path(job['input_path']).name} as it was split (then 'batchledger status "
                f"--batch-id {job['job_id']}'), or cancel it"
            )
