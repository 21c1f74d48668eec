"""A job's parts as the layers above see them: each part with its last attempt (`PartView`),
a job's report, whether its input is still the one it was split from, and how a job is
shown (`status`, `--json`)."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchledger.batch import SavedFile
from batchledger.batches import (
    FINAL_STATUSES,
    SAVABLE_STATUSES,
    BatchStatus,
    PartState,
    bounced_off_token_limit,
    results_saved,
)
from batchledger.context import Context
from batchledger.details import CreateDetails
from batchledger.inputs import sha256_of
from batchledger.rows import BatchRow, JobRow, PartRow

# How a part the enqueued-token limit bounced is shown: it is not over, it goes out again.
REQUEUED_LABEL = "queued (token limit; sent again later)"


@dataclass
class PartView:
    """A part and where it stands."""

    part: PartRow
    attempt: BatchRow | None  # its last attempt
    # Input lines before the part's first (its line n is the job's line_offset + n); None
    # for a retry's part, whose lines are scattered through the input.
    line_offset: int | None = None

    @property
    def label(self) -> str:
        if self.part["state"] == PartState.CANCELLED:
            return "cancelled"
        if self.part["state"] == PartState.QUEUED:
            return "queued" if not self.part["requeues"] else REQUEUED_LABEL
        if self.attempt is None:
            return "queued"
        if bounced_off_token_limit(self.attempt):
            return REQUEUED_LABEL
        return self.attempt["status"] or "submitting"

    @property
    def ready(self) -> bool:
        """Done, and whatever results it has are saved (or gone from the API): mergeable."""
        attempt = self.attempt
        if not self.done or attempt is None or attempt["status"] not in SAVABLE_STATUSES:
            return self.done
        return results_saved(attempt) or attempt["results_gone_at"] is not None

    @property
    def done(self) -> bool:
        """Final: nothing more will happen to it."""
        if self.part["state"] == PartState.CANCELLED:
            return True
        if self.part["state"] != PartState.SENT or self.attempt is None:
            return False
        if bounced_off_token_limit(self.attempt):
            return False  # it goes back to the queue
        return (
            self.attempt["status"] in FINAL_STATUSES
            or self.attempt["status"] == BatchStatus.REJECTED
        )

    @property
    def requests_done(self) -> int:
        """Requests that have an outcome, success or failure: how far the part has come."""
        return self.requests_completed + self.requests_failed

    @property
    def requests_completed(self) -> int:
        return int(self.attempt["requests_completed"] or 0) if self.attempt else 0

    @property
    def requests_failed(self) -> int:
        return int(self.attempt["requests_failed"] or 0) if self.attempt else 0


@dataclass
class JobReport:
    job: JobRow
    parts: list[PartView] = field(default_factory=list)
    submitted: list[PartView] = field(default_factory=list)  # sent by this run
    saved: list[SavedFile] = field(default_factory=list)  # the merged results, if merged now
    warnings: list[str] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return str(self.job["job_id"])

    @property
    def parts_done(self) -> int:
        return sum(view.done for view in self.parts)

    @property
    def requests_done(self) -> int:
        return sum(view.requests_done for view in self.parts)

    @property
    def requests_completed(self) -> int:
        """Requests with a successful result: the merged results' count once merged (a
        retry's answers merged in count there), else the parts' last attempts'."""
        stored = self.job.get("requests_completed")
        if stored is not None:
            return int(stored)
        return sum(view.requests_completed for view in self.parts)

    @property
    def requests_failed(self) -> int:
        stored = self.job.get("requests_failed")
        if stored is not None:
            return int(stored)
        return sum(view.requests_failed for view in self.parts)


def details_of(job: JobRow) -> CreateDetails:
    return CreateDetails(
        metadata=json.loads(job["metadata"]) if job["metadata"] else {},
        input_expires_after=job["input_expires_after"],
        output_expires_after=job["output_expires_after"],
    )


def views(ctx: Context, job: JobRow) -> list[PartView]:
    attempts: dict[int | None, BatchRow] = {}
    for row in ctx.ledger.jobs.attempts_of_job(job["id"]):
        attempts[row["part"]] = row  # oldest first: the last one stays
    found = []
    offset: int | None = 0
    for part in ctx.ledger.jobs.job_parts(job["id"]):
        if part["ranges"]:
            offset = None  # a retry's lines: not a run of the input
        found.append(PartView(part, attempts.get(part["id"]), offset))
        if offset is not None:
            offset += part["requests"]
    return found


def part_ranges(part: PartRow) -> list[tuple[int, int]]:
    """The byte ranges of the input a part holds: one, or a retry's lines."""
    if part["ranges"]:
        return [(start, end) for start, end in json.loads(part["ranges"])]
    return [(part["start_byte"], part["end_byte"])]


def part_results_path(ctx: Context, job_id: str, part_index: int, batch_id: str) -> Path:
    """Where a part's results are kept until (and after) they are merged: beside the ledger."""
    folder = ctx.ledger_path.parent / "jobs" / job_id
    return folder / f"part{part_index:04d}.{batch_id}.jsonl"


def job_lines(report: JobReport) -> list[str]:
    """`status` of a job: its id, status, parts and requests, a line per part, its errors."""
    job = report.job
    total = len(report.parts)
    queued = sum(1 for view in report.parts if view.label.startswith("queued"))
    lines = [
        f"job_id: {job['job_id']}",
        f"status: {job['status']}",
        *([f"retry of: {job['retry_of']}"] if job["retry_of"] else []),
        f"parts: {report.parts_done}/{total} done, {queued} queued",
        f"requests: {report.requests_completed}/{job['input_requests']} completed, "
        f"{report.requests_failed} failed",
    ]
    for view in report.parts:
        attempt = view.attempt
        batch = f"{attempt['batch_id']} " if attempt is not None and attempt["batch_id"] else ""
        lines.append(f"part {view.part['part_index']}/{total}: {batch}{view.label}")
    return lines + job_notes(report.parts)


def job_notes(parts: list[PartView]) -> list[str]:
    """`error: …` for each error the API gave a part's batch, at the job's own line number
    (a part's line n is n lines into the part)."""
    notes = []
    for view in parts:
        attempt = view.attempt
        if attempt is None or not attempt["errors"] or bounced_off_token_limit(attempt):
            continue
        index = view.part["part_index"]
        for error in json.loads(attempt["errors"]):
            line = error.get("line")
            if line is None:
                where = f"part {index}"
            elif view.line_offset is None:
                where = f"part {index}, its line {line}"
            else:
                where = f"line {view.line_offset + line} (part {index}, its line {line})"
            reason = ": ".join(
                str(item) for item in (error.get("code"), error.get("message")) if item
            )
            notes.append(f"error: {where}: {reason or 'no reason given'}")
    return notes


def job_json(report: JobReport) -> dict[str, Any]:
    """A job for --json: its row, its counts, and each part with its last attempt."""
    return {
        **report.job,
        "kind": "job",
        "parts_done": report.parts_done,
        "parts_total": len(report.parts),
        "requests_total": report.job["input_requests"],
        "requests_completed": report.requests_completed,
        "requests_failed": report.requests_failed,
        "errors": job_notes(report.parts) or None,
        "parts": [
            {
                **view.part,
                "label": view.label,
                "batch_id": view.attempt["batch_id"] if view.attempt else None,
                "batch_status": view.attempt["status"] if view.attempt else None,
            }
            for view in report.parts
        ],
    }


def result_lines(path: Path | None) -> int:
    """The lines of a results file (each ends with a newline once merged); 0 if none."""
    if path is None:
        return 0
    lines = 0
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            lines += chunk.count(b"\n")
    return lines


def input_changed(ctx: Context, job: JobRow) -> str | None:
    """Why the job's input is no longer the one it was split from; None if it still is.

    Hashed once per run (a big input takes a while): again only if its size, mtime or
    inode has moved since. A retry's job holds the sha256 of the whole input (its size is
    that of the lines it sends): only the sha256 is compared.
    """
    path = Path(job["input_path"])
    try:
        stat = path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if ctx.checked_inputs.get(job["id"]) == stamp:
            return None
        if not job["retry_of"] and stat.st_size != job["input_bytes"]:
            return f"{path} is now {stat.st_size} bytes, not the {job['input_bytes']} it had"
        if job["input_sha256"] and sha256_of(path) != job["input_sha256"]:
            return f"{path} has changed since the job was split (its sha256 differs)"
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    ctx.checked_inputs[job["id"]] = stamp
    return None


def input_changed_warning(job: JobRow, why: str) -> str:
    return (
        f"{job['job_id']}: input_changed: {why}; its queued parts are not sent (put the input "
        f"back as it was and run 'batchledger status --batch-id {job['job_id']}', or cancel it)"
    )
