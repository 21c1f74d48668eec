"""How a job is shown: its progress bar's counts, `show` of a job, its parts' uploads."""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from batchledger.batches import JobStatus, Row
from batchledger.render import display_path, field_text, tabulate

if TYPE_CHECKING:
    from batchledger.jobs import JobReport


def job_progress(report: "JobReport") -> dict[str, Any]:
    """A job as `Progress.show` draws it: its total is the requests of every part, those
    still queued (not yet sent) too, so that the bar never jumps when a part is sent; it is
    final (100 %) only once the job is over, its results merged."""
    every_part = sum(int(view.part["requests"]) for view in report.parts)
    return {
        "id": report.job_id,
        "status": f"{report.job['status']} ({report.parts_done}/{len(report.parts)} parts)",
        "final": report.job["status"] in (JobStatus.DONE, JobStatus.CANCELLED),
        "request_counts": {
            "completed": report.requests_completed,
            "failed": report.requests_failed,
            "total": max(every_part, int(report.job["input_requests"])),
        },
    }


def show_job_lines(
    job: Row,
    parts: Sequence[Row],
    attempts: Sequence[Row],
    history: Sequence[Row],
    notes: Sequence[str] = (),
) -> list[str]:
    """Everything the ledger knows about one job: its fields, parts, attempts, the errors of
    its parts (`notes`) and its history."""
    fields = (
        "job_id",
        "status",
        "retry_of",
        "account",
        "endpoint",
        "completion_window",
        "input_path",
        "input_bytes",
        "input_sha256",
        "input_requests",
        "max_requests",
        "max_bytes",
        "max_in_flight",
        "recorded_at",
        "finished_at",
        "estimated_input_tokens",
        "estimated_cost_min",
        "estimated_cost_max",
        "estimated_from",
        "actual_cost",
    )
    lines = [
        f"{name.replace('_', ' ') if name == 'retry_of' else name}: {field_text(name, job[name])}"
        for name in fields
        if job.get(name) is not None
    ]
    if job.get("requests_completed") is not None:
        lines.append(
            f"requests: {job['requests_completed']}/{job['input_requests']} completed, "
            f"{job['requests_failed'] or 0} failed"
        )
    if job.get("status") == JobStatus.INPUT_CHANGED:
        changed = [event["detail"] for event in history if event["action"] == "input_changed"]
        lines.append(f"reason: input changed: {changed[-1] if changed else 'see the history'}")
    for kind, label in (("output", "saved"), ("error", "saved errors")):
        if job.get(f"{kind}_path"):
            lines.append(
                f"{label}: {display_path(job[f'{kind}_path'])} ({job[f'{kind}_bytes']} bytes, "
                f"sha256 {job[f'{kind}_sha256']})"
            )
    tried = {part["id"]: [row for row in attempts if row["part"] == part["id"]] for part in parts}
    table = [
        [
            str(part["part_index"]),
            f"{part['start_byte']}-{part['end_byte']}",
            str(part["requests"]),
            part["state"],
            ", ".join(
                f"{row['batch_id'] or '(not created)'} {row['status'] or ''}".strip()
                for row in tried[part["id"]]
            ),
        ]
        for part in parts
    ]
    lines.append("parts:")
    lines += [
        "  " + line
        for line in tabulate(
            table, headers=("part", "bytes", "requests", "state", "attempts"), disable_numparse=True
        ).splitlines()
    ]
    lines += list(notes)
    lines.append("history:")
    events = [[event["at"], event["action"], event["detail"] or ""] for event in history]
    lines += [
        "  " + line
        for line in tabulate(
            events, headers=("at", "action", "detail"), disable_numparse=True
        ).splitlines()
    ]
    return lines


class PartProgress:
    """Uploads of a job's parts on a stream: a line kept up to date on a terminal (parts and
    bytes done, rate), one line per part otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.on_terminal = stream.isatty()
        self.sent = 0
        self.seconds = 0.0

    def __call__(self, part: int, parts: int, size: int, seconds: float) -> None:
        self.sent += size
        self.seconds += seconds
        rate = self.sent / self.seconds / 1e6 if self.seconds else 0.0
        text = (
            f"part {part}/{parts} uploaded: {size:,} bytes ({self.sent:,} in all, {rate:.1f} MB/s)"
        )
        if self.on_terminal:
            self.stream.write(f"\r{text}\033[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end_line(self) -> None:
        if self.on_terminal and self.sent:
            self.stream.write("\n")
            self.stream.flush()
