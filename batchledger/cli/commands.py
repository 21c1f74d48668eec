"""The commands: each turns its arguments into workflow calls and the results into output."""

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchledger.batches import FINAL_STATUSES, BatchRef, JobRef
from batchledger.cli import job_commands
from batchledger.context import Context
from batchledger.details import CreateDetails, check_metadata
from batchledger.errors import ExitCode, UsageError
from batchledger.ledger import BatchFilter
from batchledger.paths import config_path, default_results_path
from batchledger.redaction import redact
from batchledger.render import (
    Progress,
    accounts_table,
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
    status_lines,
    sweep_table,
    usage_table,
)
from batchledger.resolve import resolve, resolve_batch

if TYPE_CHECKING:
    from batchledger.workflow import BatchReport

Handler = Callable[[argparse.Namespace, Context], ExitCode]


def batch_ref(ctx: Context, text: str) -> BatchRef:
    return resolve_batch(
        ctx.open_ledger(create=False), text, named=ctx.named_account, current=ctx.account.name
    )


def target(ctx: Context, text: str) -> BatchRef | JobRef:
    """A batch or a job: wherever a batch id is taken, a job id is too."""
    return resolve(
        ctx.open_ledger(create=False), text, named=ctx.named_account, current=ctx.account.name
    )


def out_path(args: argparse.Namespace, ref: BatchRef) -> Path | None:
    """Where `--out` says to save: a file, or (an existing folder) the default name in it."""
    if not args.out:
        return None
    out = Path(args.out).expanduser()
    return out / default_results_path(ref.batch_id) if out.is_dir() else out


def out_dir(args: argparse.Namespace) -> Path | None:
    """`--out-dir`: checked before anything is sent."""
    if not args.out_dir:
        return None
    folder = Path(args.out_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out-dir {args.out_dir} is a file, not a folder")
    return folder


def create(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger.inputs import check_input, hash_input_in_background

    details = create_details(args)  # before anything is read, written or sent
    path = check_input(args.input)
    hashing = hash_input_in_background(path, args.input)
    from batchledger import workflow  # imports openai, while the input is hashed
    from batchledger.jobs import split_wanted

    ctx.start_api_command()
    endpoint = args.endpoint or ctx.account.default_endpoint
    input_ = hashing.result()
    split = split_wanted(input_, ctx.account.limits, args.max_requests, args.max_bytes)
    if split is not None:
        return job_commands.create(args, ctx, input_, endpoint, split, details)
    if args.max_in_flight is not None:
        raise UsageError("--max-in-flight is for inputs split into parts (a job)")
    submitted = workflow.submit(
        ctx,
        input_,
        endpoint,
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
            raise UsageError("--out names one file; it cannot be used with --all (--out-dir)")
        return sweep(args, ctx)
    if args.out_dir or args.include_synced:
        raise UsageError("--out-dir and --include-synced go with --all; --out names one file")
    ref = target(ctx, args.batch_id)
    if isinstance(ref, JobRef):
        return job_commands.status(args, ctx, ref)
    out = out_path(args, ref)
    ctx.start_api_command()
    report = workflow.look_up(ctx, ref)
    if not args.json:  # the status first: whatever the save does, the user sees it
        ctx.print("\n".join(status_lines(report.row or {})))
    if args.auto_save:
        workflow.save_if_finished(ctx, report, out=out)
    if args.json:
        ctx.print(json_text(row_json(report.row or {})))
    else:
        for item in report.saved:
            ctx.print(saved_line(item.kind, item.path, item.size))
    warn_saved(ctx, report)
    return ExitCode.OK


def sweep(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import workflow

    swept = workflow.sweep_all(
        ctx,
        auto_save=args.auto_save,
        concurrency=args.concurrency,
        include_synced=args.include_synced,
        out_dir=out_dir(args),
    )
    if swept is not None:
        for line in swept.skipped:
            ctx.warn(line)
        for row in swept.recovered:
            ctx.warn(f"found {row['batch_id']}, created by a create that was cut off; recorded it")
        for row in swept.abandoned:
            ctx.warn(
                f"a create of {Path(row['input_path'] or '').name} made no batch; marked "
                "abandoned ('batchledger create' of the same input sends it again)"
            )
    if swept is None or not (swept.reports or swept.jobs):
        ctx.print("[]" if args.json else "No pending batches in the ledger.")
        return ExitCode.OK
    reports = swept.reports
    if args.json:
        ctx.print(json_text([row_json(report.row) for report in reports if report.row]))
    else:
        if reports:
            ctx.print(sweep_table(reports))
        for job in swept.jobs:
            ctx.print(job_commands.summary_line(job))
    for report in reports:
        warn_saved(ctx, report)
    for job in swept.jobs:
        job_commands.warn(ctx, job)
    failures = [report for report in reports if report.error]
    for report in failures:
        assert report.error is not None
        ctx.stderr.write(f"batchledger: error: {report.batch_id}: {redact(report.error.message)}\n")
    return ExitCode.FAILURE if failures else ExitCode.OK


def print_report(ctx: Context, report: "BatchReport") -> None:
    """A checked batch on stdout: its status lines and saved files."""
    ctx.print("\n".join(report_lines(report)))
    warn_saved(ctx, report)


def warn_saved(ctx: Context, report: "BatchReport") -> None:
    for warning in saved_warnings(report):
        ctx.warn(warning)
    if report.warning:
        ctx.warn(report.warning)


def retrieve(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import workflow

    ref = target(ctx, args.batch_id)
    if isinstance(ref, JobRef):
        return job_commands.retrieve(args, ctx, ref)
    out = out_path(args, ref)
    ctx.start_api_command()
    report = workflow.retrieve(ctx, ref, out, again=args.force)
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
    from batchledger.cli.parser import DEFAULT_WATCH_INTERVAL, DEMO_WATCH_INTERVAL
    from batchledger.cli.process import interrupt_taken

    if args.all:
        refs, skipped = workflow.batches_to_watch(ctx, include_synced=args.include_synced)
        for line in skipped:
            ctx.warn(line)
        if not refs:
            ctx.print("No pending batches in the ledger.")
            return ExitCode.OK
    else:
        if args.out_dir or args.include_synced:
            raise UsageError("--out-dir and --include-synced go with --all")
        ref = target(ctx, args.batch_id)
        if isinstance(ref, JobRef):
            return job_commands.watch(args, ctx, ref)
        refs = [ref]
    ctx.start_api_command()
    progress = Progress(ctx.stderr)
    interval = args.interval or (
        DEMO_WATCH_INTERVAL if ctx.account.kind == "emulator" else DEFAULT_WATCH_INTERVAL
    )
    checks = workflow.follow(
        ctx,
        refs,
        auto_save=args.auto_save,
        interval=interval,
        max_interval=args.max_interval,
        out_dir=out_dir(args),
    )
    try:
        for report in checks:
            if report.error is not None:
                progress.end_line()
                ctx.warn(f"{report.batch_id}: {redact(report.error.message)}; still watching")
                continue
            if report.batch is None:  # its account does not know it
                progress.end_line()
                warn_saved(ctx, report)
                continue
            progress.show(report.batch)
            if report.batch["status"] in FINAL_STATUSES:
                progress.end_line()
                print_report(ctx, report)
    except KeyboardInterrupt:
        interrupt_taken()
        progress.end_line()
        ctx.stderr.write("batchledger: stopped watching; the batches keep running on the server\n")
        return ExitCode.INTERRUPTED
    return ExitCode.OK


def cancel(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import workflow
    from batchledger.cli.parser import DEFAULT_WATCH_MAX_INTERVAL

    ref = target(ctx, args.batch_id)
    if isinstance(ref, JobRef):
        return job_commands.cancel(args, ctx, ref)
    ctx.start_api_command()
    report = workflow.cancel(ctx, ref)
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
    ref = target(ctx, args.batch_id)
    if isinstance(ref, JobRef):
        return job_commands.show(args, ctx, ref)
    row = ledger.find_batch(ref.batch_id, ref.account)
    if row is None:
        raise UsageError(
            f"{ref.batch_id} is not in the ledger; 'batchledger status --batch-id "
            f"{ref.batch_id}' or 'batchledger sync' adds it"
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
        account=getattr(args, "account", None),
        model=args.model,
        metadata=tuple(args.metadata),
        parts=args.parts,
    )
    limit = None if args.all else args.limit
    rows = ledger.list_batches(filters, limit) if ledger is not None else []
    jobs = ledger.list_jobs(filters, limit) if ledger is not None else []
    if jobs:  # a job is one line, among the batches by when it was made
        rows = sorted(
            rows + [job_list_row(job) for job in jobs],
            key=lambda row: row["created_at"] or row["recorded_at"],
            reverse=True,
        )[:limit]
    if args.json:
        ctx.print(json_text([row_json(row) for row in rows]))
    elif not rows:
        ctx.print("No batches match." if filters.active else "No batches in the ledger yet.")
    else:
        assert ledger is not None
        ctx.print(list_table(rows, with_account=len(ledger.accounts_in_use()) > 1))
    if ledger is not None and limit is not None and len(rows) == limit:
        total = ledger.count_batches(filters)
        if total > len(rows):
            ctx.stderr.write(
                f"batchledger: showing the newest {len(rows)} of {total} batches; "
                "use --all or --limit N for more\n"
            )
    return ExitCode.OK


def retry(args: argparse.Namespace, ctx: Context) -> ExitCode:
    return job_commands.retry(args, ctx, target(ctx, args.batch_id))


def job_list_row(job: dict[str, Any]) -> dict[str, Any]:
    """A job as `list` shows it: one line, its id where a batch's would be."""
    return {
        **job,
        "batch_id": job["job_id"],
        "created_at": job["recorded_at"],
        "requests_total": job["input_requests"],
        "requests_completed": job["requests_done"],
        "requests_failed": 0,
        "model": None,
        "kind": "job",
    }


def accounts(args: argparse.Namespace, ctx: Context) -> ExitCode:
    ledger = ctx.open_ledger(create=False)
    in_ledger = ledger.accounts_in_use() if ledger is not None else {}
    rows = [
        {
            "name": account.name,
            "kind": account.kind,
            "base_url": account.location,
            "api_key_env": account.api_key_env,
            "key_set": account.key() is not None if account.needs_key() else None,
            "batches": in_ledger.get(account.name, 0),
        }
        for account in ctx.accounts.values()
    ]
    gone = sorted(set(in_ledger) - set(ctx.accounts))
    rows += [
        {
            "name": name,
            "kind": None,
            "base_url": None,
            "api_key_env": None,
            "key_set": None,
            "batches": in_ledger[name],
        }
        for name in gone
    ]
    ctx.print(json_text(rows) if args.json else accounts_table(rows))
    for name in gone:
        ctx.warn(f"the ledger has batches of account {name!r}, which accounts.toml does not name")
    return ExitCode.OK


def where(args: argparse.Namespace, ctx: Context) -> ExitCode:
    places = [
        {"what": "ledger", "path": str(ctx.ledger_path), "exists": ctx.ledger_path.exists()},
        {"what": "accounts", "path": str(config_path()), "exists": config_path().exists()},
        {
            "what": "logs",
            "path": str(ctx.log_file.parent.absolute()),
            "exists": ctx.log_file.parent.is_dir(),
        },
    ]
    if args.json:
        ctx.print(json_text(places))
    else:
        for place in places:
            note = "" if place["exists"] else " (not there yet)"
            ctx.print(f"{place['what']}: {place['path']}{note}")
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

    planned = pruning.plan(ledger, args.older_than, ctx.account)
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
    ref = batch_ref(ctx, args.batch_id)
    batch_id_ = ref.batch_id
    row = ledger.find_batch(ref.batch_id, ref.account) if ledger is not None else None
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
