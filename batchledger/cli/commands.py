"""The commands: each turns its arguments into workflow calls and the results into output."""

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from batchledger.batches import FINAL_STATUSES, JOB_INPUT_CHANGED, BatchRef, JobRef
from batchledger.cli import estimate_commands, job_commands
from batchledger.context import Context
from batchledger.details import CreateDetails, check_metadata
from batchledger.errors import ExitCode, UsageError
from batchledger.paths import default_results_path
from batchledger.redaction import redact
from batchledger.render import (
    Progress,
    json_text,
    report_lines,
    row_json,
    saved_line,
    saved_warnings,
    status_lines,
    sweep_table,
)
from batchledger.resolve import resolve

if TYPE_CHECKING:
    from batchledger.batch import BatchReport
    from batchledger.ledger import InputFile, Ledger
    from batchledger.token_budget import TokenPlan

Handler = Callable[[argparse.Namespace, Context], ExitCode]


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
    from batchledger.inputs import check_input, count_lines, hash_input_in_background

    details = create_details(args)  # before anything is read, written or sent
    ctx.account.profile.check_window(args.completion_window)
    if args.dry_run:
        return estimate_commands.estimate(args, ctx)
    path = check_input(args.input)
    if args.max_cost is not None or ctx.account.max_cost_per_day is not None:  # budgets
        # before the key, the ledger's writes, any upload
        estimate = estimate_commands.check_max_cost(args, ctx)
        details = dataclasses.replace(details, estimate=estimate)
    elif args.prices:
        raise UsageError("--prices prices an estimate: it goes with --dry-run or --max-cost")
    hashing = hash_input_in_background(path, args.input)
    from batchledger import batch
    from batchledger.split import split_wanted

    ctx.start_api_command()  # imports the provider's SDK, while the input is hashed
    # A provider whose batches name no endpoint (its profile has no default) records none.
    endpoint = args.endpoint or ctx.account.default_endpoint or ""
    input_ = count_lines(hashing.result(), args.input)  # after the import: see count_lines
    split = split_wanted(input_, ctx.account.limits, args.max_requests, args.max_bytes)
    planned = token_plan(args, ctx, input_, split)  # issue 22: parts cut by counted tokens
    if split is not None or (planned is not None and len(planned.parts) > 1):
        split = split or ctx.account.limits
        return job_commands.create(args, ctx, input_, endpoint, split, details, planned)
    if args.max_in_flight is not None:
        raise UsageError("--max-in-flight is for inputs split into parts (a job)")
    submitted = batch.submit(
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


def token_plan(
    args: argparse.Namespace, ctx: Context, input_: "InputFile", split: tuple[int, int] | None
) -> "TokenPlan | None":
    """With a token budget (the account's `enqueued_tokens`, or --max-tokens): the input
    cut by counted tokens (one pass that parses every line), else None (cut by newlines)."""
    max_tokens = getattr(args, "max_tokens", None)
    if not ctx.account.enqueued_tokens and max_tokens is None:
        return None
    from batchledger.token_budget import plan_parts_by_tokens

    limits = split or ctx.account.limits
    return plan_parts_by_tokens(
        input_.path,
        max_requests=limits[0],
        max_bytes=limits[1],
        limits=ctx.account.enqueued_tokens,
        max_tokens=max_tokens,
    )


def status(args: argparse.Namespace, ctx: Context) -> ExitCode:
    if args.all:
        if args.out:
            raise UsageError("--out names one file; it cannot be used with --all (--out-dir)")
        return sweep(args, ctx)
    from batchledger import batch

    if args.out_dir or args.include_synced:
        raise UsageError("--out-dir and --include-synced go with --all; --out names one file")
    ref = target(ctx, args.batch_id)
    if isinstance(ref, JobRef):
        return job_commands.status(args, ctx, ref)
    out = out_path(args, ref)
    ctx.start_api_command(ref.account)
    report = batch.look_up(ctx, ref)
    if not args.json:  # the status first: whatever the save does, the user sees it
        ctx.print("\n".join(status_lines(report.row or {})))
    if args.auto_save:
        batch.save_if_finished(ctx, report, out=out)
    if args.json:
        ctx.print(json_text(row_json(report.row or {})))
    else:
        for item in report.saved:
            ctx.print(saved_line(item.kind, item.path, item.size))
    warn_saved(ctx, report)
    return ExitCode.OK


def sweep(args: argparse.Namespace, ctx: Context) -> ExitCode:
    ledger = ctx.open_ledger(create=False)
    if ledger is None or not ledger.has_work_to_sweep(include_synced=args.include_synced):
        # Nothing to poll: no key, no network, and not even the import of openai.
        ctx.print("[]" if args.json else "No pending batches in the ledger.")
        if ledger is not None:
            warn_input_changed(ctx, ledger, set())
        return ExitCode.OK
    from batchledger import sweep

    swept = sweep.sweep_all(
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
        warn_input_changed(ctx, ledger, set())
        return ExitCode.OK
    reports = swept.reports
    if args.json:
        # One document: the batches checked (a job's parts among them), then each job
        # moved on, its row with its parts and requests (`"kind": "job"`).
        from batchledger.jobs import job_json

        ctx.print(
            json_text(
                [row_json(report.row) for report in reports if report.row]
                + [job_json(job) for job in swept.jobs]
            )
        )
    else:
        if reports:
            ctx.print(sweep_table(reports))
        for job in swept.jobs:
            ctx.print("\n".join(job_commands.summary_lines(job)))
    for report in reports:
        warn_saved(ctx, report)
    for job in swept.jobs:
        job_commands.warn(ctx, job)
    warn_input_changed(ctx, ledger, {job.job_id for job in swept.jobs})
    failures = [report for report in reports if report.error]
    for report in failures:
        assert report.error is not None
        ctx.stderr.write(f"batchledger: error: {report.batch_id}: {redact(report.error.message)}\n")
    return ExitCode.FAILURE if failures else ExitCode.OK


def warn_input_changed(ctx: Context, ledger: "Ledger", told: set[str]) -> None:
    """A sweep leaves jobs whose input changed alone; each sweep reminds of them."""
    for job in ledger.jobs_in_status(JOB_INPUT_CHANGED):
        if job["job_id"] not in told:
            ctx.warn(
                f"{job['job_id']}: input_changed: its queued parts wait for "
                f"{Path(job['input_path']).name} as it was split (then 'batchledger status "
                f"--batch-id {job['job_id']}'), or cancel it"
            )


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
    from batchledger import batch

    ref = target(ctx, args.batch_id)
    if isinstance(ref, JobRef):
        return job_commands.retrieve(args, ctx, ref)
    out = out_path(args, ref)
    ctx.start_api_command(ref.account)
    report = batch.retrieve(ctx, ref, out, again=args.force)
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
    from batchledger import batch
    from batchledger.cli.parser import DEFAULT_WATCH_INTERVAL, DEMO_WATCH_INTERVAL
    from batchledger.cli.process import interrupt_taken

    if args.all:
        interval = args.interval or (
            DEMO_WATCH_INTERVAL if ctx.account.kind == "emulator" else DEFAULT_WATCH_INTERVAL
        )
        return watch_all(args, ctx, interval)
    if args.out_dir or args.include_synced:
        raise UsageError("--out-dir and --include-synced go with --all")
    ref = target(ctx, args.batch_id)
    if isinstance(ref, JobRef):
        return job_commands.watch(args, ctx, ref)
    refs = [ref]
    ctx.start_api_command(ref.account)
    interval = args.interval or (
        DEMO_WATCH_INTERVAL
        if ctx.account_named(ref.account).kind == "emulator"
        else DEFAULT_WATCH_INTERVAL
    )
    progress = Progress(ctx.stderr)
    checks = batch.follow(
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


def watch_all(args: argparse.Namespace, ctx: Context, interval: float) -> ExitCode:
    """`watch --all`: sweep (batches, then jobs: their queued parts sent, their results
    merged) round after round, backing off while nothing moves, until nothing is left."""
    from batchledger import sweep
    from batchledger.batches import progress_of
    from batchledger.cli.parser import DEFAULT_CONCURRENCY
    from batchledger.cli.process import interrupt_taken
    from batchledger.errors import Transient
    from batchledger.polling import Backoff

    ledger = ctx.open_ledger(create=False)
    if ledger is None or not ledger.has_work_to_sweep(include_synced=args.include_synced):
        ctx.print("No pending batches in the ledger.")
        return ExitCode.OK
    progress = Progress(ctx.stderr)
    seen: dict[str, tuple[object, ...]] = {}
    warned: set[str] = set()
    backoff = Backoff(interval, args.max_interval)
    first = True
    try:
        while True:
            swept = sweep.sweep_all(
                ctx,
                auto_save=args.auto_save,
                concurrency=DEFAULT_CONCURRENCY,
                include_synced=args.include_synced,
                out_dir=out_dir(args),
            )
            if swept is None or not (swept.reports or swept.jobs):
                if first:
                    for line in swept.skipped if swept else []:
                        ctx.warn(line)
                    ctx.print("No pending batches in the ledger.")
                return ExitCode.OK
            for line in swept.skipped:
                if line not in warned:
                    warned.add(line)
                    ctx.warn(line)
            first = False
            moved = False
            for report in swept.reports:
                if report.error is not None:
                    progress.end_line()
                    if not isinstance(report.error, Transient):
                        raise report.error
                    ctx.warn(f"{report.batch_id}: {redact(report.error.message)}; still watching")
                    continue
                if report.batch is None:
                    progress.end_line()
                    warn_saved(ctx, report)
                    continue
                state = (report.batch["status"], *progress_of(report.batch))
                moved = moved or seen.get(report.batch_id) != state
                seen[report.batch_id] = state
                progress.show(report.batch)
                part = report.row is not None and report.row["part"] is not None
                if report.batch["status"] in FINAL_STATUSES and not part:
                    progress.end_line()
                    print_report(ctx, report)
            for job in swept.jobs:
                moved = moved or bool(job.submitted) or job.job["status"] != "running"
                if job.job["status"] != "running":
                    progress.end_line()
                    ctx.print("\n".join(job_commands.summary_lines(job)))
                    job_commands.warn(ctx, job)
            backoff.wait(moved)
    except KeyboardInterrupt:
        interrupt_taken()
        progress.end_line()
        ctx.stderr.write("batchledger: stopped watching; the batches keep running on the server\n")
        return ExitCode.INTERRUPTED


def cancel(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import batch
    from batchledger.cli.parser import DEFAULT_WATCH_MAX_INTERVAL

    ref = target(ctx, args.batch_id)
    if isinstance(ref, JobRef):
        return job_commands.cancel(args, ctx, ref)
    ctx.start_api_command(ref.account)
    report = batch.cancel(ctx, ref)
    assert report.batch is not None
    ctx.print(f"batch_id: {report.batch_id}")
    ctx.print(f"status: {report.batch['status']}")
    if args.wait:
        for status_ in batch.wait_for_cancel(
            ctx, report, interval=args.interval, max_interval=DEFAULT_WATCH_MAX_INTERVAL
        ):
            ctx.print(f"status: {status_}")
    return ExitCode.OK


def sync(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import sweep

    ctx.start_api_command()
    report = sweep.sync(ctx)
    ctx.print(f"added: {len(report.added)}")
    ctx.print(f"updated: {len(report.updated)}")
    ctx.print(f"recovered: {len(report.recovered)}")
    ctx.print(f"unchanged: {report.unchanged}")
    return ExitCode.OK


def retry(args: argparse.Namespace, ctx: Context) -> ExitCode:
    return job_commands.retry(args, ctx, target(ctx, args.batch_id))


def create_details(args: argparse.Namespace) -> CreateDetails:
    """`create`'s metadata and expiry options, checked against the API's limits."""
    return CreateDetails(
        metadata=check_metadata(args.metadata),
        input_expires_after=args.input_expires_after,
        output_expires_after=args.output_expires_after,
    )
