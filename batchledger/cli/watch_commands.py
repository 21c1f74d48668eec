"""`watch`: follow one batch, or every unfinished one (`--all`), until it is final, saving
the results as they come; a job's id hands over to job_commands."""

import argparse

from batchledger.batches import FINAL_STATUSES, JobStatus, progress_of
from batchledger.cli import job_commands
from batchledger.cli.defaults import DEFAULT_CONCURRENCY, first_watch_interval
from batchledger.cli.process import interrupt_taken
from batchledger.cli.reports import print_report, warn_saved
from batchledger.cli.targets import api, out_dir
from batchledger.context import Context
from batchledger.errors import ExitCode, Transient, UsageError
from batchledger.polling import Backoff
from batchledger.redaction import redact
from batchledger.render import Progress


def watch(args: argparse.Namespace, ctx: Context) -> ExitCode:
    if args.all:
        interval = args.interval or first_watch_interval(ctx.account.kind)
        return watch_all(args, ctx, interval)
    if args.out_dir or args.include_synced:
        raise UsageError("--out-dir and --include-synced go with --all")
    from batchledger.api import Job  # start-up: only commands that call the API load it

    found = api(ctx).get(args.batch_id)
    if isinstance(found, Job):
        return job_commands.watch(args, ctx, found)
    interval = args.interval or first_watch_interval(ctx.account_named(found.account).kind)
    progress = Progress(ctx.stderr)
    checks = found.follow(
        interval=interval,
        max_interval=args.max_interval,
        save=args.auto_save,
        out_dir=out_dir(args),
    )
    try:
        for checked in checks:
            report = checked.report
            assert report is not None
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
    batch_ledger = api(ctx)
    folder = out_dir(args)
    progress = Progress(ctx.stderr)
    seen: dict[str, tuple[object, ...]] = {}
    warned: set[str] = set()
    backoff = Backoff(interval, args.max_interval)
    first = True
    try:
        while True:
            swept = batch_ledger.sweep(
                save=args.auto_save,
                concurrency=DEFAULT_CONCURRENCY,
                include_synced=args.include_synced,
                out_dir=folder,
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
                moved = moved or bool(job.submitted) or job.job["status"] != JobStatus.RUNNING
                if job.job["status"] != JobStatus.RUNNING:
                    progress.end_line()
                    ctx.print("\n".join(job_commands.summary_lines(job)))
                    job_commands.warn(ctx, job)
            backoff.wait(moved)
    except KeyboardInterrupt:
        interrupt_taken()
        progress.end_line()
        ctx.stderr.write("batchledger: stopped watching; the batches keep running on the server\n")
        return ExitCode.INTERRUPTED
