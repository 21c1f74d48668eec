"""The commands: each turns its arguments into workflow calls and the results into output."""

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from batchledger.batches import FINAL_STATUSES
from batchledger.context import Context
from batchledger.details import CreateDetails, check_metadata
from batchledger.errors import ExitCode, UsageError
from batchledger.ledger import BatchFilter
from batchledger.redaction import redact
from batchledger.render import (
    Progress,
    display_path,
    json_text,
    list_table,
    prune_json,
    prune_table,
    report_lines,
    row_json,
    saved_line,
    saved_warnings,
    show_lines,
    sweep_table,
    usage_table,
)
from batchledger.resolve import resolve_batch_id

if TYPE_CHECKING:
    from batchledger.workflow import BatchReport

Handler = Callable[[argparse.Namespace, Context], ExitCode]


def batch_id(ctx: Context, text: str) -> str:
    return resolve_batch_id(ctx.open_ledger(create=False), text)


def out_path(args: argparse.Namespace) -> Path | None:
    return Path(args.out) if args.out else None


def create(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger.inputs import check_input, hash_input_in_background

    details = create_details(args)  # before anything is read, written or sent
    path = check_input(args.input)
    hashing = hash_input_in_background(path, args.input)
    from batchledger import workflow  # imports openai, while the input is hashed

    ctx.start_api_command()
    submitted = workflow.submit(
        ctx,
        hashing.result(),
        args.endpoint,
        args.completion_window,
        force=args.force,
        details=details,
    )
    if submitted.recovered:
        ctx.warn(
            f"{submitted.batch['id']} was created by an earlier run that was cut off; "
            "recorded it instead of creating another batch"
        )
    if args.json:
        ctx.print(json_text(row_json(submitted.row)))
    else:
        ctx.print(f"file_id: {submitted.file_id}")
        ctx.print(f"batch_id: {submitted.batch['id']}")
    return ExitCode.OK


def status(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import workflow

    if args.all:
        if args.out:
            raise UsageError("--out names one file; it cannot be used with --all")
        return sweep(args, ctx)
    ctx.start_api_command()
    report = workflow.check_status(
        ctx, batch_id(ctx, args.batch_id), auto_save=args.auto_save, out=out_path(args)
    )
    print_report(ctx, report, as_json=args.json)
    return ExitCode.OK


def sweep(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import workflow

    swept = workflow.sweep_all(ctx, auto_save=args.auto_save, concurrency=args.concurrency)
    if swept is None:
        ctx.print("[]" if args.json else "No pending batches in the ledger.")
        return ExitCode.OK
    for row in swept.recovered:
        ctx.warn(f"found {row['batch_id']}, created by a create that was cut off; recorded it")
    reports = swept.reports
    if args.json:
        ctx.print(json_text([row_json(report.row) for report in reports if report.row]))
    else:
        ctx.print(sweep_table(reports))
    for report in reports:
        warn_saved(ctx, report)
    failures = [report for report in reports if report.error]
    for report in failures:
        assert report.error is not None
        ctx.stderr.write(f"batchledger: error: {report.batch_id}: {redact(report.error.message)}\n")
    return ExitCode.FAILURE if failures else ExitCode.OK


def print_report(ctx: Context, report: "BatchReport", *, as_json: bool) -> None:
    """A checked batch on stdout: its status lines and saved files, or one JSON object."""
    assert report.row is not None
    ctx.print(json_text(row_json(report.row)) if as_json else "\n".join(report_lines(report)))
    warn_saved(ctx, report)


def warn_saved(ctx: Context, report: "BatchReport") -> None:
    for warning in saved_warnings(report):
        ctx.warn(warning)


def retrieve(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import workflow

    ctx.start_api_command()
    report = workflow.retrieve(ctx, batch_id(ctx, args.batch_id), out_path(args), again=args.force)
    if report.already_saved:
        assert report.row is not None
        for kind in ("output", "error"):
            if report.row[f"{kind}_path"]:
                path, size = report.row[f"{kind}_path"], report.row[f"{kind}_bytes"]
                ctx.print(saved_line(kind, path, size, already=True))
        ctx.warn("unchanged since it was saved; not downloaded again (--force to download anyway)")
        return ExitCode.OK
    for item in report.saved:
        ctx.print(saved_line(item.kind, item.path, item.size))
    warn_saved(ctx, report)
    return ExitCode.OK


def watch(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import workflow
    from batchledger.cli.process import interrupt_taken

    ctx.start_api_command()
    if args.all:
        batch_ids = workflow.batches_to_watch(ctx)
        if not batch_ids:
            ctx.print("No pending batches in the ledger.")
            return ExitCode.OK
    else:
        batch_ids = [batch_id(ctx, args.batch_id)]
    progress = Progress(ctx.stderr)
    checks = workflow.follow(
        ctx,
        batch_ids,
        auto_save=args.auto_save,
        interval=args.interval,
        max_interval=args.max_interval,
    )
    try:
        for report in checks:
            if report.error is not None:
                progress.end_line()
                ctx.warn(f"{report.batch_id}: {redact(report.error.message)}; still watching")
                continue
            assert report.batch is not None
            progress.show(report.batch)
            if report.batch["status"] in FINAL_STATUSES:
                progress.end_line()
                print_report(ctx, report, as_json=False)
    except KeyboardInterrupt:
        interrupt_taken()
        progress.end_line()
        ctx.stderr.write("batchledger: stopped watching; the batches keep running on the server\n")
        return ExitCode.INTERRUPTED
    return ExitCode.OK


def cancel(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import workflow
    from batchledger.cli.parser import DEFAULT_WATCH_MAX_INTERVAL

    ctx.start_api_command()
    report = workflow.cancel(ctx, batch_id(ctx, args.batch_id))
    assert report.batch is not None
    ctx.print(f"batch_id: {report.batch_id}")
    ctx.print(f"status: {report.batch['status']}")
    if args.wait:
        for status_ in workflow.wait_for_cancel(
            ctx, report, interval=args.interval, max_interval=DEFAULT_WATCH_MAX_INTERVAL
        ):
            ctx.print(f"status: {status_}")
    return ExitCode.OK


def sync(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import workflow

    ctx.start_api_command()
    report = workflow.sync(ctx)
    ctx.print(f"added: {len(report.added)}")
    ctx.print(f"updated: {len(report.updated)}")
    ctx.print(f"recovered: {len(report.recovered)}")
    ctx.print(f"unchanged: {report.unchanged}")
    return ExitCode.OK


def show(args: argparse.Namespace, ctx: Context) -> ExitCode:
    ledger = ctx.open_ledger(create=False)
    if ledger is None:
        ctx.print("null" if args.json else "No batches in the ledger yet.")
        return ExitCode.OK
    batch_id_ = batch_id(ctx, args.batch_id)
    row = ledger.find_batch(batch_id_)
    if row is None:
        raise UsageError(
            f"{batch_id_} is not in the ledger; 'batchledger status --batch-id {batch_id_}' "
            "or 'batchledger sync' adds it"
        )
    history = ledger.history(row["id"])
    if args.json:
        ctx.print(json_text({**row_json(row), "history": history}))
    else:
        ctx.print("\n".join(show_lines(row, history)))
    return ExitCode.OK


def list_(args: argparse.Namespace, ctx: Context) -> ExitCode:
    ledger = ctx.open_ledger(create=False)
    statuses = tuple(s.strip() for text in args.status for s in text.split(",") if s.strip())
    filters = BatchFilter(
        statuses=statuses,
        since=args.since,
        endpoint=args.endpoint,
        model=args.model,
        metadata=tuple(args.metadata),
    )
    limit = None if args.all else args.limit
    rows = ledger.list_batches(filters, limit) if ledger is not None else []
    if args.json:
        ctx.print(json_text([row_json(row) for row in rows]))
    elif not rows:
        ctx.print("No batches match." if filters.active else "No batches in the ledger yet.")
    else:
        ctx.print(list_table(rows))
    if ledger is not None and limit is not None and len(rows) == limit:
        total = ledger.count_batches(filters)
        if total > len(rows):
            ctx.stderr.write(
                f"batchledger: showing the newest {len(rows)} of {total} batches; "
                "use --all or --limit N for more\n"
            )
    return ExitCode.OK


def create_details(args: argparse.Namespace) -> CreateDetails:
    """`create`'s metadata and expiry options, checked against the API's limits."""
    return CreateDetails(
        metadata=check_metadata(args.metadata),
        input_expires_after=args.input_expires_after,
        output_expires_after=args.output_expires_after,
    )


def prune(args: argparse.Namespace, ctx: Context) -> ExitCode:
    ledger = ctx.open_ledger(create=False)
    if ledger is None:
        ctx.print("[]" if args.json else "Nothing to prune: no batches in the ledger yet.")
        return ExitCode.OK
    from batchledger import prune as pruning  # imports openai

    planned = pruning.plan(ledger, args.older_than)
    if planned.kept_unsaved:
        ctx.warn(
            f"kept the files of {planned.kept_unsaved} final batches whose results are not "
            "saved (or changed on disk); 'batchledger retrieve' saves them"
        )
    if not planned.items:
        ctx.print("[]" if args.json else "Nothing to prune: no final batch with files to delete.")
        return ExitCode.OK
    ctx.start_api_command()
    items = pruning.prune(ctx, planned.items, dry_run=args.dry_run)
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
    from batchledger import usage as totals

    prices = totals.load_prices(Path(args.prices)) if args.prices else None
    lines = totals.usage_lines(ctx.open_ledger(create=False), args.by, args.since, prices)
    unpriced = sorted(set().union(*(line.unpriced for line in lines)))
    if unpriced:
        ctx.warn(f"no price for {', '.join(unpriced)} in {args.prices}: cost not shown for it")
    if args.json:
        ctx.print(
            json_text([totals.usage_json(line, args.by, prices is not None) for line in lines])
        )
    elif not lines:
        ctx.print("No batches in the ledger yet." if args.since is None else "No batches match.")
    else:
        shown = [*lines, totals.total_of(lines)] if len(lines) > 1 else lines
        ctx.print(usage_table(shown, args.by, priced=prices is not None))
    return ExitCode.OK


def export(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import export as exporting
    from batchledger.savefile import prepare_target, save_chunks

    ledger = ctx.open_ledger(create=False)
    batch_id_ = batch_id(ctx, args.batch_id)
    row = ledger.find_batch(batch_id_) if ledger is not None else None
    if row is None:
        raise UsageError(
            f"{batch_id_} is not in the ledger; 'batchledger status --batch-id {batch_id_}' "
            "or 'batchledger sync' adds it"
        )
    input_path, results = exporting.check_exportable(row)
    counts = exporting.ExportCounts()
    rows = exporting.export_rows(input_path, results, counts)
    chunks = exporting.csv_chunks(rows) if args.format == "csv" else exporting.jsonl_chunks(rows)
    if args.out == "-":
        for chunk in chunks:
            ctx.stdout.write(chunk.decode("utf-8"))
        return ExitCode.OK
    target = Path(args.out or exporting.default_export_path(batch_id_, args.format))
    target = target.expanduser().absolute()
    replaced = target.exists()
    prepare_target(target)
    saved = save_chunks(target, chunks)
    if replaced:
        ctx.warn(f"overwrote existing file {display_path(target)}")
    statuses = ", ".join(f"{n} {status}" for status, n in counts.by_status.items())
    ctx.print(
        f"exported: {display_path(target)} ({saved.size} bytes; {counts.rows} requests: {statuses})"
    )
    return ExitCode.OK
