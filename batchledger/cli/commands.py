"""The commands that call the API on a batch (or on all of them): create, status, retrieve,
cancel, sync and retry. Each turns its arguments into calls of the batch steps (batch.py)
and the sweep (sweep.py), and the results into output; given a job's id, each hands over
to job_commands."""

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from batchledger.batches import JobRef
from batchledger.cli import estimate_commands, job_commands
from batchledger.cli.defaults import DEFAULT_WATCH_MAX_INTERVAL
from batchledger.cli.reports import warn_input_changed, warn_saved
from batchledger.cli.targets import out_dir, out_path, target
from batchledger.context import Context
from batchledger.details import CreateDetails, check_metadata
from batchledger.errors import ExitCode, UsageError
from batchledger.estimate import record_scanned, scan_in_background
from batchledger.inputs import check_input, count_lines, hash_input_in_background
from batchledger.redaction import redact
from batchledger.render import json_text, row_json, saved_line, status_lines, sweep_table
from batchledger.rows import RESULT_KINDS, saved_columns
from batchledger.split import split_wanted
from batchledger.token_budget import TokenPlan, plan_parts_by_tokens

if TYPE_CHECKING:
    from concurrent.futures import Future

    from batchledger.details import CostEstimate
    from batchledger.ledger import InputFile


def create(args: argparse.Namespace, ctx: Context) -> ExitCode:
    details = create_details(args)  # before anything is read, written or sent
    ctx.account.profile.check_window(args.completion_window)
    inline = ctx.account.profile.inline_requests
    if inline and args.endpoint:
        raise UsageError(
            f"--endpoint does not apply to account {ctx.account.name!r} "
            f"({ctx.account.profile.name}): its input lines name their own requests"
        )
    if args.dry_run:
        return estimate_commands.estimate(args, ctx)
    path = check_input(args.input)
    if inline:
        # Every line's shape, and no custom_id twice in the whole input, before the ledger
        # is written or anything sent (a job's parts are each checked again as they go).
        from batchledger.inline import scan_requests

        scan_requests(path)
    guard = None
    if args.max_cost is not None or ctx.account.max_cost_per_day is not None:  # budgets
        # before the key, the ledger's writes, any upload
        estimate = estimate_commands.check_max_cost(args, ctx)
        details = dataclasses.replace(details, estimate=estimate)
        # and the day's budget again with the claim, under the ledger's write lock
        guard = estimate_commands.claim_guard(args, ctx, estimate)
    elif args.prices:
        raise UsageError("--prices prices an estimate: it goes with --dry-run or --max-cost")
    hashing = hash_input_in_background(path, args.input)
    from batchledger import batch  # start-up: only commands that call the API load it

    ctx.start_api_command()
    # A provider whose batches name no endpoint (its profile has no default) records none.
    endpoint = args.endpoint or ctx.account.default_endpoint or ""
    input_ = count_lines(hashing.result(), args.input)  # after the import: see count_lines
    split = split_wanted(input_, ctx.account.limits, args.max_requests, args.max_bytes)
    planned = token_plan(args, ctx, input_, split)  # issue 22: parts cut by counted tokens
    if split is not None or (planned is not None and len(planned.parts) > 1):
        split = split or ctx.account.limits
        scanning = scan_unless_estimated(ctx, input_, details)
        return job_commands.create(
            args, ctx, input_, endpoint, split, details, planned, guard, scanning
        )
    if args.max_in_flight is not None:
        raise UsageError("--max-in-flight is for inputs split into parts (a job)")
    scanning = scan_unless_estimated(ctx, input_, details)
    submitted = batch.submit(
        ctx,
        input_,
        endpoint,
        args.completion_window,
        force=args.force,
        details=details,
        guard=guard,
    )
    record_scanned(ctx.ledger, "batches", submitted.row["id"], scanning)
    if submitted.recovered:
        ctx.warn(
            f"{submitted.batch['id']} was created by an earlier run that was cut off; "
            "recorded it instead of creating another batch"
        )
    if args.json:
        ctx.print(json_text(row_json(submitted.row)))
    else:
        if not inline:  # requests sent inline were uploaded as no file
            ctx.print(f"file_id: {submitted.file_id}")
        ctx.print(f"batch_id: {submitted.batch['id']}")
    return ExitCode.OK


def scan_unless_estimated(
    ctx: Context, input_: "InputFile", details: CreateDetails
) -> "Future[CostEstimate] | None":
    """Every create records an estimate (issue 22): one made before anything was sent (a
    budget), else one scanned in a thread beside the upload, recorded once the batch is
    made. The ledger is opened here, by this thread, not by the scan's."""
    if details.estimate is not None:
        return None
    return scan_in_background(input_.path, input_.size, ctx.ledger)


def token_plan(
    args: argparse.Namespace, ctx: Context, input_: "InputFile", split: tuple[int, int] | None
) -> TokenPlan | None:
    """With a token budget (the account's `enqueued_tokens`, or --max-tokens): the input
    cut by counted tokens (one pass that parses every line), else None (cut by newlines)."""
    max_tokens = getattr(args, "max_tokens", None)
    if not ctx.account.enqueued_tokens and max_tokens is None:
        return None
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
    from batchledger import batch  # start-up: only commands that call the API load it

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
    report.warning = report.warning or batch.retention_warning(ctx, report.row)
    if args.json:
        ctx.print(json_text(row_json(report.row or {})))
    else:
        for item in report.saved:
            ctx.print(saved_line(item.kind, item.path, item.size))
    warn_saved(ctx, report)
    return ExitCode.OK


def sweep(args: argparse.Namespace, ctx: Context) -> ExitCode:
    ledger = ctx.open_ledger(create=False)
    if ledger is None or not ledger.batches.has_work_to_sweep(include_synced=args.include_synced):
        # Nothing to poll: no key, no network, and not even the import of openai.
        ctx.print("[]" if args.json else "No pending batches in the ledger.")
        if ledger is not None:
            warn_input_changed(ctx, ledger, set())
        return ExitCode.OK
    from batchledger import sweep  # start-up: its jobs and batch steps, ~20 ms, only for sweeps

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
    warn_input_changed(ctx, ledger, {job.job_id for job in swept.jobs})
    failures = [report for report in reports if report.error]
    for report in failures:
        assert report.error is not None
        ctx.stderr.write(f"batchledger: error: {report.batch_id}: {redact(report.error.message)}\n")
    return ExitCode.FAILURE if failures else ExitCode.OK


def retrieve(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from batchledger import batch  # start-up: only commands that call the API load it

    ref = target(ctx, args.batch_id)
    if isinstance(ref, JobRef):
        return job_commands.retrieve(args, ctx, ref)
    out = out_path(args, ref)
    ctx.start_api_command(ref.account)
    report = batch.retrieve(ctx, ref, out, again=args.force)
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
    from batchledger import batch  # start-up: only commands that call the API load it

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
    from batchledger import sweep  # start-up: its jobs and batch steps, ~20 ms, only for sweeps

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
