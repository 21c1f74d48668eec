"""The commands on a job (an input split into parts): what `status`, `watch`, `retrieve`,
`cancel` and `show` do when they are given a job (each a call of the API's Job handle),
`retry`'s output, and how a job's parts are printed (`create` of a job too)."""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from batchledger.batches import JobRef
from batchledger.cli.defaults import DEFAULT_WATCH_MAX_INTERVAL, first_watch_interval
from batchledger.cli.process import interrupt_taken
from batchledger.context import Context
from batchledger.errors import ExitCode
from batchledger.paths import default_results_path
from batchledger.render import Progress, display_path, json_text, saved_line
from batchledger.render_jobs import PartProgress, job_progress, show_job_lines
from batchledger.rows import RESULT_KINDS, saved_columns

if TYPE_CHECKING:
    from batchledger.api import Batch, Job
    from batchledger.jobs import JobReport


def print_job(ctx: Context, report: "JobReport", *, as_json: bool = False) -> None:
    from batchledger.jobs import (
        job_json,
        job_lines,
    )  # start-up: jobs only

    if as_json:
        ctx.print(json_text(job_json(report)))
        return
    ctx.print("\n".join(job_lines(report)))
    job = report.job
    for kind in RESULT_KINDS:
        if (saved := saved_columns(job, kind))["path"]:
            ctx.print(saved_line(kind, saved["path"], saved["bytes"]))
    warn(ctx, report)


def summary_line(report: "JobReport") -> str:
    """One line per job in a sweep: its status, parts and where its results are."""
    job = report.job
    failed = f" ({report.requests_failed} failed)" if report.requests_failed else ""
    line = (
        f"{report.job_id}: {job['status']}, {report.parts_done}/{len(report.parts)} parts done, "
        f"{report.requests_completed}/{job['input_requests']} requests{failed}"
    )
    if report.submitted:
        line += f", {len(report.submitted)} sent now"
    if job["output_path"]:
        line += f"; saved: {display_path(job['output_path'])} ({job['output_bytes']} bytes)"
    return line


def summary_lines(report: "JobReport") -> list[str]:
    """summary_line, and below it the errors of the job's parts (at the job's lines)."""
    from batchledger.jobs import job_notes  # start-up: jobs only

    return [summary_line(report)] + [f"  {note}" for note in job_notes(report.parts)]


def warn(ctx: Context, report: "JobReport") -> None:
    for item in report.saved:
        if item.replaced:
            ctx.warn(f"overwrote existing file {display_path(item.path)}")
    for line in report.warnings:
        ctx.warn(line)


def status(args: argparse.Namespace, ctx: Context, job: "Job") -> ExitCode:
    out = Path(args.out) if getattr(args, "out", None) else None
    print_job(ctx, job.refresh(out=out).report, as_json=getattr(args, "json", False))
    return ExitCode.OK


def retrieve(args: argparse.Namespace, ctx: Context, job: "Job") -> ExitCode:
    """As for a batch: the results at --out (or the default name); saved already and
    unchanged, not written again unless --force; a missing or changed file is rebuilt."""
    job.retrieve(out_target(args, JobRef(job.id)), force=args.force)
    if job.already_saved:
        for kind in RESULT_KINDS:
            if (saved := saved_columns(job.row, kind))["path"]:
                ctx.print(saved_line(kind, saved["path"], saved["bytes"], already=True))
        ctx.warn("unchanged since it was saved; not written again (--force to write anyway)")
        return ExitCode.OK
    for item in job.report.saved:
        ctx.print(saved_line(item.kind, item.path, item.size))
    warn(ctx, job.report)
    return ExitCode.OK


def out_target(args: argparse.Namespace, ref: JobRef) -> Path | None:
    """--out: a file, or (an existing folder) the job's default name in it."""
    if not getattr(args, "out", None):
        return None
    out = Path(args.out).expanduser()
    return out / default_results_path(ref.job_id) if out.is_dir() else out


def watch(args: argparse.Namespace, ctx: Context, job: "Job") -> ExitCode:
    interval = args.interval or first_watch_interval(ctx.account_named(job.account).kind)
    progress = Progress(ctx.stderr)
    rounds = job.follow(interval=interval, max_interval=args.max_interval)
    try:
        for followed in rounds:
            # issue 22: every part's requests, sent or not
            progress.show(job_progress(followed.report))
    except KeyboardInterrupt:
        interrupt_taken()
        progress.end_line()
        ctx.stderr.write("batchledger: stopped watching; the job keeps running on the server\n")
        return ExitCode.INTERRUPTED
    progress.end_line()
    print_job(ctx, job.report)
    return ExitCode.OK


def cancel(args: argparse.Namespace, ctx: Context, job: "Job") -> ExitCode:
    """Cancel the job's live batches and its queue; as for a batch, wait (unless
    --no-wait) until every batch is cancelled (or ended otherwise) and the job is over."""
    ctx.print(f"job_id: {job.cancel().id}")
    ctx.print("status: cancelling")
    if not getattr(args, "wait", True):
        return ExitCode.OK
    interval = getattr(args, "interval", None) or 1.0
    report = job.wait(interval=interval, max_interval=DEFAULT_WATCH_MAX_INTERVAL).report
    ctx.print(f"status: {report.job['status']}")
    for kind in RESULT_KINDS:
        if (saved := saved_columns(report.job, kind))["path"]:
            ctx.print(saved_line(kind, saved["path"], saved["bytes"]))
    warn(ctx, report)
    return ExitCode.OK


def show(args: argparse.Namespace, ctx: Context, job: "Job") -> ExitCode:
    from batchledger.jobs import job_notes  # start-up: jobs only

    parts, attempts, history = job.parts(), job.attempts(), job.history()
    notes = job_notes(job.report.parts)
    if args.json:
        ctx.print(
            json_text(
                {
                    **job.row,
                    "errors": notes or None,
                    "parts": parts,
                    "attempts": attempts,
                    "history": history,
                }
            )
        )
    else:
        ctx.print("\n".join(show_job_lines(job.row, parts, attempts, history, notes)))
    return ExitCode.OK


def retry(args: argparse.Namespace, ctx: Context, retried: "Batch | Job") -> ExitCode:
    progress = PartProgress(ctx.stderr)
    ctx.on_part_uploaded = progress
    retried.retry(all_failed=args.all_failed, max_in_flight=args.max_in_flight)
    report = retried.retry_report
    assert report is not None
    progress.end_line()
    for line in report.warnings:
        ctx.warn(line)
    original = report.original.retry_of
    plan = report.plan
    if plan is not None and not plan.lines:
        others = (
            f"; {plan.not_sent} failed for other reasons (--all-failed sends them)"
            if plan.not_sent
            else ""
        )
        ctx.print(
            f"Nothing to retry: {plan.kept} requests of {original} have a successful response"
            f"{others}."
        )
        return ExitCode.OK
    assert report.job is not None
    if args.json:
        from batchledger.jobs import job_json  # start-up: jobs only

        ctx.print(json_text(job_json(report.job)))
        return ExitCode.OK
    if plan is not None:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(plan.by_reason.items()))
        ctx.print(f"retry of {original}: {plan.lines} requests ({reasons})")
    else:
        ctx.print(f"retry of {original}: resuming {report.job.job_id}")
    print_parts(ctx, report.job)
    return ExitCode.OK


def print_parts(ctx: Context, report: "JobReport", *, job_id_shown: bool = False) -> None:
    """`job_id: …` (unless printed already) and a line per part: its upload and batch, or
    `queued`."""
    total = len(report.parts)
    if not job_id_shown:
        ctx.print(f"job_id: {report.job_id}")
    for view in report.parts:
        attempt = view.attempt
        where = f"part {view.part['part_index']}/{total}:"
        if attempt is not None and attempt["batch_id"]:
            ctx.print(
                f"{where} file_id: {attempt['input_file_id']} batch_id: {attempt['batch_id']}"
            )
        else:
            ctx.print(f"{where} {view.label}")
    warn(ctx, report)
