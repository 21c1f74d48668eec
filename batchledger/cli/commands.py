"""The commands that call the API on a batch (or on all of them): create, status, retrieve,
cancel, sync and retry. Each turns its arguments into calls of the Python API (`api(ctx)`,
batchledger/api/; `sweep()` for `status --all`), and the results into output; given a
job's id, each hands over to job_commands."""

import argparse
from pathlib import Path

from batchledger.cli import estimate_commands, job_commands
from batchledger.cli.defaults import DEFAULT_WATCH_MAX_INTERVAL
from batchledger.cli.reports import warn_input_changed, warn_saved
from batchledger.cli.targets import api, out_dir, out_path
from batchledger.context import Context
from batchledger.details import CreateDetails, check_metadata
from batchledger.errors import ExitCode, UsageError
from batchledger.inputs import check_input
from batchledger.redaction import redact
from batchledger.render import json_text, row_json, saved_line, status_lines, sweep_table
from batchledger.render_jobs import PartProgress
from batchledger.rows import RESULT_KINDS, saved_columns


def create(args: argparse.Namespace, ctx: Context) -> ExitCode:
    create_details(args)  # before anything is read, written or sent
    ctx.account.profile.check_window(args.completion_window)
    inline = ctx.account.profile.inline_requests
    if inline and args.endpoint:
        raise UsageError(
            f"--endpoint does not apply to account {ctx.account.name!r} "
            f"({ctx.account.profile.name}): its input lines name their own requests"
        )
    if args.dry_run:
        return estimate_commands.estimate(args, ctx)
    if args.prices and args.max_cost is None and ctx.account.max_cost_per_day is None:
        check_input(args.input)  # a missing input is told first, as always
        raise UsageError("--prices prices an estimate: it goes with --dry-run or --max-cost")
    progress = PartProgress(ctx.stderr)  # a job's uploads, part by part
    ctx.on_part_uploaded = progress
    if not args.json:
        # At once: a run stopped during the uploads has told the user which job to resume.
        def claimed(job_id: str) -> None:
            ctx.print(f"job_id: {job_id}")
            ctx.stdout.flush()

        ctx.on_job_claimed = claimed
    from batchledger.api import Job  # start-up: `status --all` does not load the handles

    made = api(ctx).create(
        args.input,
        endpoint=args.endpoint,
        window=args.completion_window,
        metadata=args.metadata,
        force=args.force,
        max_requests=args.max_requests,
        max_bytes=args.max_bytes,
        max_in_flight=args.max_in_flight,
        max_tokens=getattr(args, "max_tokens", None),
        max_cost=args.max_cost,
        prices=args.prices,
        input_expires_after=args.input_expires_after,
        output_expires_after=args.output_expires_after,
    )
    if isinstance(made, Job):
        from batchledger.jobs import job_json  # start-up: jobs only

        progress.end_line()
        if args.json:
            ctx.print(json_text(job_json(made.report)))
        else:
            job_commands.print_parts(ctx, made.report, job_id_shown=True)
        return ExitCode.OK
    for warning in made.warnings:
        ctx.warn(warning)
    if args.json:
        ctx.print(json_text(row_json(made.row)))
    else:
        if not ctx.account.profile.inline_requests:  # requests sent inline: no file
            ctx.print(f"file_id: {made.row['input_file_id']}")
        ctx.print(f"batch_id: {made.id}")
    return ExitCode.OK


def status(args: argparse.Namespace, ctx: Context) -> ExitCode:
    if args.all:
        if args.out:
            raise UsageError("--out names one file; it cannot be used with --all (--out-dir)")
        return sweep(args, ctx)
    if args.out_dir or args.include_synced:
        raise UsageError("--out-dir and --include-synced go with --all; --out names one file")
    from batchledger.api import Job  # start-up: `status --all` does not load the handles

    found = api(ctx).get(args.batch_id)
    if isinstance(found, Job):
        return job_commands.status(args, ctx, found)
    out = out_path(args, found.ref)
    found.refresh(save=False)
    if not args.json:  # the status first: whatever the save does, the user sees it
        ctx.print("\n".join(status_lines(found.row)))
    if args.auto_save:
        found.save(out)
    assert found.report is not None
    if args.json:
        ctx.print(json_text(row_json(found.row)))
    else:
        for item in found.report.saved:
            ctx.print(saved_line(item.kind, item.path, item.size))
    warn_saved(ctx, found.report)
    return ExitCode.OK


def sweep(args: argparse.Namespace, ctx: Context) -> ExitCode:
    folder = out_dir(args)
    batch_ledger = api(ctx)
    # None when nothing is to poll: no key, no network, and not even the import of openai.
    swept = batch_ledger.sweep(
        save=args.auto_save,
        concurrency=args.concurrency,
        include_synced=args.include_synced,
        out_dir=folder,
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
        warn_input_changed(ctx, batch_ledger, set())
        return ExitCode.OK
    reports = swept.reports
    if args.json:
        # One document: the batches checked (a job's parts among them), then each job
        # moved on, its row with its parts and requests (`"kind": "job"`).
        from batchledger.jobs import job_json  # start-up: jobs only

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
    warn_input_changed(ctx, batch_ledger, {job.job_id for job in swept.jobs})
    failures = [report for report in reports if report.error]
    for report in failures:
        assert report.error is not None
        ctx.stderr.write(f"batchledger: error: {report.batch_id}: {redact(report.error.message)}\n")
    return ExitCode.FAILURE if failures else ExitCode.OK


def retrieve(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger.api import Job  # start-up: `status --all` does not load the handles

    found = api(ctx).get(args.batch_id)
    if isinstance(found, Job):
        return job_commands.retrieve(args, ctx, found)
    out = out_path(args, found.ref)
    report = found.retrieve(out, force=args.force).report
    assert report is not None
    if report.already_saved:
        assert report.row is not None
        for kind in RESULT_KINDS:
            if (saved := saved_columns(report.row, kind))["path"]:
                ctx.print(saved_line(kind, saved["path"], saved["bytes"], already=True))
        ctx.warn("unchanged since it was saved; not downloaded again (--force to download anyway)")
        return ExitCode.OK
    for item in report.saved:
        ctx.print(saved_line(item.kind, item.path, item.size))
    warn_saved(ctx, report)
    return ExitCode.OK


def cancel(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger.api import Job  # start-up: `status --all` does not load the handles

    found = api(ctx).get(args.batch_id)
    if isinstance(found, Job):
        return job_commands.cancel(args, ctx, found)
    report = found.cancel().report
    assert report is not None and report.batch is not None
    ctx.print(f"batch_id: {report.batch_id}")
    ctx.print(f"status: {report.batch['status']}")
    if args.wait:
        for status_ in found.cancel_statuses(
            interval=args.interval, max_interval=DEFAULT_WATCH_MAX_INTERVAL
        ):
            ctx.print(f"status: {status_}")
    return ExitCode.OK


def sync(args: argparse.Namespace, ctx: Context) -> ExitCode:
    report = api(ctx).sync()
    ctx.print(f"added: {len(report.added)}")
    ctx.print(f"updated: {len(report.updated)}")
    ctx.print(f"recovered: {len(report.recovered)}")
    ctx.print(f"unchanged: {report.unchanged}")
    return ExitCode.OK


def retry(args: argparse.Namespace, ctx: Context) -> ExitCode:
    return job_commands.retry(args, ctx, api(ctx).get(args.batch_id))


def create_details(args: argparse.Namespace) -> CreateDetails:
    """`create`'s metadata and expiry options, checked against the API's limits."""
    return CreateDetails(
        metadata=check_metadata(args.metadata),
        input_expires_after=args.input_expires_after,
        output_expires_after=args.output_expires_after,
    )
