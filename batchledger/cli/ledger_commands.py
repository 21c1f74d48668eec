"""The commands that read the ledger, and those around a batch: show, list, accounts,
where, prune, usage and export. Each turns its arguments into calls, the results into output."""

import argparse
import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from batchledger.batches import BatchStatus, JobStatus
from batchledger.cli import job_commands
from batchledger.cli.targets import api
from batchledger.context import Context
from batchledger.errors import ExitCode, UsageError
from batchledger.redaction import redact
from batchledger.render import (
    LIST_FIELDS,
    accounts_table,
    display_path,
    json_text,
    list_table,
    prune_json,
    prune_table,
    row_json,
    show_lines,
    usage_table,
)
from batchledger.rows import JobListingRow

if TYPE_CHECKING:
    from batchledger.api.listing import Listing


def show(args: argparse.Namespace, ctx: Context) -> ExitCode:
    ledger = ctx.open_ledger(create=False)
    if ledger is None:
        ctx.print("null" if args.json else "No batches in the ledger yet.")
        return ExitCode.OK
    from batchledger.api import Job  # start-up: `list` does not load the handles

    found = api(ctx).get(args.batch_id)
    if isinstance(found, Job):
        return job_commands.show(args, ctx, found)
    if not found.recorded:
        raise not_in_ledger(found.id)
    row, history = found.row, found.history()
    if args.json:
        ctx.print(json_text({**row_json(row), "history": history}))
    else:
        ctx.print("\n".join(show_lines(row, history)))
    return ExitCode.OK


# What `list --status` matches: a batch's statuses (the API's, and the ledger's own for a
# create refused or abandoned), then a job's.
LISTED_STATUSES = (
    *BatchStatus,
    *(status for status in JobStatus if status != JobStatus.CANCELLED),
)


def list_(args: argparse.Namespace, ctx: Context) -> ExitCode:
    statuses = tuple(s.strip() for text in args.status for s in text.split(",") if s.strip())
    unknown = [status for status in statuses if status not in LISTED_STATUSES]
    if unknown:
        raise UsageError(
            f"--status {unknown[0]!r} is not a status; the statuses are "
            f"{', '.join(LISTED_STATUSES)}"
        )
    listing = api(ctx).listing(
        statuses,
        args.since,
        getattr(args, "account", None),
        endpoint=args.endpoint,
        model=args.model,
        metadata=args.metadata,
        limit=None if args.all else args.limit,
        parts=args.parts,
    )
    if args.json:
        return list_json(ctx, listing)
    rows = listing.rows(LIST_FIELDS)
    if listing.jobs():  # a job is one line, among the batches by when it was made
        rows = [job_list_row(cast(JobListingRow, row)) if "job_id" in row else row for row in rows]
    if not rows:
        ctx.print("No batches match." if listing.filtered else "No batches in the ledger yet.")
    else:
        ctx.print(list_table(rows, with_account=len(listing.accounts_in_use()) > 1))
    warn_if_cut(ctx, listing, len(rows))
    return ExitCode.OK


JSON_ROWS_PER_WRITE = 1000  # rows of `list --json` joined before each write


def list_json(ctx: Context, listing: "Listing") -> ExitCode:
    """`list --json`: one JSON array, a row per line, written as SQLite makes the rows."""
    shown = 0
    docs = listing.json_documents()
    while chunk := list(itertools.islice(docs, JSON_ROWS_PER_WRITE)):
        ctx.write_bytes((b"[\n" if not shown else b",\n") + b",\n".join(chunk))
        shown += len(chunk)
    ctx.write_bytes(b"\n]\n" if shown else b"[]\n")
    warn_if_cut(ctx, listing, shown)
    return ExitCode.OK


def warn_if_cut(ctx: Context, listing: "Listing", shown: int) -> None:
    """On stderr: the listing stopped at --limit, and how many batches there are."""
    if listing.limit is not None and shown == listing.limit:
        total = listing.count()
        if total > shown:
            ctx.stderr.write(
                f"batchledger: showing the newest {shown} of {total} batches; "
                "use --all or --limit N for more\n"
            )


def job_list_row(job: JobListingRow) -> dict[str, Any]:
    """A job as `list` shows it: one line, its id where a batch's would be, its parts done
    beside its status, its requests completed (failures apart) as a batch's are."""
    return {
        **job,
        "batch_id": job["job_id"],
        "status": f"{job['status']}, {job['parts_done']}/{job['parts_total']} parts",
        "created_at": job["recorded_at"],
        "requests_total": job["input_requests"],
        "requests_completed": job["requests_done"],
        "requests_failed": job["requests_failed_now"],
        "model": None,
        "kind": "job",
    }


def accounts(args: argparse.Namespace, ctx: Context) -> ExitCode:
    rows = api(ctx).accounts()
    ctx.print(json_text(rows) if args.json else accounts_table(rows))
    for row in rows:
        if row["kind"] is None:
            ctx.warn(
                f"the ledger has batches of account {row['name']!r}, which accounts.toml "
                "does not name"
            )
    return ExitCode.OK


def where(args: argparse.Namespace, ctx: Context) -> ExitCode:
    places = api(ctx).places()
    if args.json:
        ctx.print(json_text(places))
    else:
        for place in places:
            note = "" if place["exists"] else " (not there yet)"
            ctx.print(f"{place['what']}: {place['path']}{note}")
    return ExitCode.OK


def prune(args: argparse.Namespace, ctx: Context) -> ExitCode:
    batch_ledger = api(ctx)
    if not batch_ledger.path.exists():
        ctx.print("[]" if args.json else "Nothing to prune: no batches in the ledger yet.")
        return ExitCode.OK
    planned = batch_ledger.prune(args.older_than, dry_run=args.dry_run)
    if planned.kept_unsaved:
        batches = (
            "1 final batch"
            if planned.kept_unsaved == 1
            else f"{planned.kept_unsaved} final batches"
        )
        ctx.warn(
            f"kept the files of {batches} whose results are not saved (or changed on disk); "
            "'batchledger retrieve' saves them"
        )
    items = planned.items
    if not items:
        ctx.print("[]" if args.json else "Nothing to prune: no final batch with files to delete.")
        return ExitCode.OK
    if args.json:
        ctx.print(json_text([prune_json(item) for item in items]))
    else:
        ctx.print(prune_table(items))
        freed = sum(item.freed for item in items)
        ctx.print(f"{'would free' if args.dry_run else 'freed'}: {freed} bytes")
    failed = [item for item in items if item.outcome.startswith("failed")]
    for item in failed:
        ctx.stderr.write(f"batchledger: error: {item.file_id}: {redact(item.outcome)}\n")
    return ExitCode.FAILURE if failed else ExitCode.OK


def usage(args: argparse.Namespace, ctx: Context) -> ExitCode:
    # Here, not at the top: `list` and `show` start without it (start-up time).
    from batchledger import usage as totals

    # Batch prices from genai-prices where it knows the model; a prices file over them.
    lines = api(ctx).usage(by=args.by, since=args.since, prices=args.prices)
    unpriced = sorted(set().union(*(line.unpriced for line in lines)))
    if unpriced:
        where = f"in {args.prices} or " if args.prices else ""
        ctx.warn(
            f"no price for {', '.join(unpriced)} {where}in genai-prices: cost not shown for it "
            "(give one with --prices FILE)"
        )
    if args.json:
        ctx.print(json_text([totals.usage_json(line, args.by, True) for line in lines]))
    elif not lines:
        ctx.print("No batches in the ledger yet." if args.since is None else "No batches match.")
    else:
        shown = [*lines, totals.total_of(lines)] if len(lines) > 1 else lines
        ctx.print(usage_table(shown, args.by, priced=True))
    return ExitCode.OK


def export(args: argparse.Namespace, ctx: Context) -> ExitCode:
    # Here, not at the top: `list` and `show` start without it (start-up time).
    from batchledger.api import Batch
    from batchledger.export import ExportCounts, default_export_path

    found = api(ctx).get(args.batch_id)
    if isinstance(found, Batch) and not found.recorded:
        raise not_in_ledger(found.id)
    counts = ExportCounts()
    if args.out == "-":
        for chunk in found.export_bytes(format=args.format, counts=counts):
            ctx.write_bytes(chunk)
        return ExitCode.OK
    default = default_export_path(found.id, args.format)
    out = Path(args.out).expanduser() if args.out else default
    if out.is_dir():  # as for retrieve and status: the default name, inside the folder
        out = out / default
    out = out.absolute()
    replaced = out.exists()
    saved = found.export(out, format=args.format, counts=counts)
    if replaced:
        ctx.warn(f"overwrote existing file {display_path(out)}")
    statuses = ", ".join(f"{n} {status}" for status, n in counts.by_status.items())
    ctx.print(
        f"exported: {display_path(out)} ({saved.stat().st_size} bytes; {counts.rows} requests: "
        f"{statuses})"
    )
    return ExitCode.OK


def not_in_ledger(batch_id: str) -> UsageError:
    """A batch id the ledger has not seen, given to a command that reads only the ledger."""
    return UsageError(
        f"{batch_id} is not in the ledger; 'batchledger status --batch-id {batch_id}' "
        "or 'batchledger sync' adds it"
    )
