"""Jobs, their parts, their history, and the attempts (batch rows) of each part."""

import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from batchledger.batches import JobStatus, PartState, attempt_is_open
from batchledger.claims import new_claim
from batchledger.details import CreateDetails
from batchledger.ledger.batch_store import BatchStore
from batchledger.ledger.store import (
    UNSENT,
    ClaimGuard,
    Connection,
    InputFile,
    details_fields,
    input_fields,
    refuse_duplicates,
    refuse_if_held,
    same_input,
    saved_file_fields,
)
from batchledger.rows import BatchRow, JobHistoryRow, JobRow, PartRow
from batchledger.times import utc_now


class JobStore:
    """The `jobs`, `parts` and `job_history` tables; a part's attempts are rows of
    `batches`, made and read through the batch store."""

    def __init__(self, conn: Connection, batches: BatchStore) -> None:
        self.conn = conn
        self.batches = batches

    def _jobs(self, sql: str, params: tuple[Any, ...] = ()) -> list[JobRow]:
        """Rows of `jobs` (SELECT *): SQLite's dicts, typed once here."""
        return cast(list[JobRow], self.conn.rows(sql, params))

    def _parts(self, sql: str, params: tuple[Any, ...] = ()) -> list[PartRow]:
        """Rows of `parts` (SELECT *), typed once here."""
        return cast(list[PartRow], self.conn.rows(sql, params))

    def claim_job(
        self,
        input_: InputFile,
        endpoint: str,
        window: str,
        *,
        account: str,
        base_url: str,
        limits: tuple[int, int],
        max_in_flight: int | None,
        parts: Sequence[tuple[int, int, int, list[tuple[int, int]] | None]],
        details: CreateDetails,
        force: bool,
        retry_of: str | None = None,
        guard: ClaimGuard | None = None,
    ) -> tuple[JobRow, bool]:
        """Start (or resume) the job of `input_`: its row and whether it resumed.

        `parts` are (start byte, end byte, requests, and for a retry the byte ranges of its
        lines). `retry_of`: the batch or job whose lines this job sends again; a retry is
        never taken for a duplicate of what it retries. One transaction decides, as for one
        batch: an input already sent (as a job or a batch) is refused unless `force`; a job
        of it that is not wholly sent yet is resumed, unless another run holds it; then
        `guard`, if given, may refuse it (the day budget, under the same lock).
        """
        with self.conn.writing():
            if not (force or retry_of):
                refuse_duplicates(self.conn, input_, endpoint, window, account, base_url)
            job = self.find_unsent_job(input_, endpoint, window, account, base_url, limits)
            refuse_if_held(input_, job)
            if guard is not None:
                guard("jobs", job)
            if job is not None:
                self.conn.db.table("jobs").update(job["id"], new_claim())
                self.conn.job_history(job["id"], "resume", "resuming the submission of its parts")
                return self.get_job(job["id"]), True
            job_row_id = (
                self.conn.db.table("jobs")
                .insert(
                    {
                        "job_id": f"job_{uuid.uuid4().hex[:24]}",
                        **input_fields(input_, endpoint, window, account, base_url),
                        "input_requests": input_.lines,
                        "max_requests": limits[0],
                        "max_bytes": limits[1],
                        "max_in_flight": max_in_flight,
                        **details_fields(details),
                        "status": JobStatus.RUNNING,
                        "recorded_at": utc_now(),
                        "retry_of": retry_of,
                        **new_claim(),
                    }
                )
                .last_pk
            )
            assert isinstance(job_row_id, int)
            self.conn.db.table("parts").insert_all(
                {
                    "job": job_row_id,
                    "part_index": index,
                    "start_byte": start,
                    "end_byte": end,
                    "ranges": json.dumps(ranges) if ranges is not None else None,
                    "requests": requests,
                    "ref": f"bl_{uuid.uuid4().hex}",
                    "state": PartState.QUEUED,
                }
                for index, (start, end, requests, ranges) in enumerate(parts, start=1)
            )
            self.conn.job_history(job_row_id, "split", f"{len(parts)} parts of {input_.path}")
            return self.get_job(job_row_id), False

    def record_part_tokens(
        self, job_row_id: int, planned: Sequence[tuple[int, int, int, Mapping[str, int]]]
    ) -> None:
        """Each part's counted input tokens per model (issue 22), where the job's part has
        the planned bytes and none recorded yet (a resumed job keeps what it has).

        `planned`: (part index, start byte, end byte, tokens per model) of each part."""
        with self.conn.writing():
            for index, start, end, tokens in planned:
                self.conn.db.conn.execute(
                    "UPDATE parts SET input_tokens = ? WHERE job = ? AND part_index = ? "
                    "AND start_byte = ? AND end_byte = ? AND input_tokens IS NULL",
                    (json.dumps(tokens, sort_keys=True), job_row_id, index, start, end),
                )

    def mark_upload_started(self, part_id: int) -> None:
        with self.conn.writing():
            self.conn.db.table("parts").update(part_id, {"upload_started_at": utc_now()})

    def record_part_upload(self, part_id: int, file_id: str, created_at: int | None) -> None:
        with self.conn.writing():
            self.conn.db.table("parts").update(
                part_id, {"input_file_id": file_id, "input_file_created_at": created_at}
            )

    def start_attempt(self, part: PartRow, job: JobRow, details: CreateDetails) -> BatchRow | None:
        """A new batch row for the next attempt of `part`, claimed by this run; None if the
        part has an attempt that is live, or being made by another run."""
        with self.conn.writing():
            last = self.last_attempt(part["id"])
            if last is not None and attempt_is_open(last):
                return None
            row_id = (
                self.conn.db.table("batches")
                .insert(
                    {
                        "ref": f"bl_{uuid.uuid4().hex}",
                        "account": job["account"],
                        "base_url": job["base_url"],
                        "origin": "create",
                        "part": part["id"],
                        "input_path": job["input_path"],
                        "input_bytes": part["end_byte"] - part["start_byte"],
                        "input_file_id": part["input_file_id"],
                        "endpoint": job["endpoint"],
                        "completion_window": job["completion_window"],
                        "metadata": json.dumps(details.metadata, sort_keys=True)
                        if details.metadata
                        else None,
                        "output_expires_after": details.output_expires_after,
                        "recorded_at": utc_now(),
                        **new_claim(),
                    }
                )
                .last_pk
            )
            assert isinstance(row_id, int)
            self.conn.db.table("parts").update(part["id"], {"state": PartState.SENT})
            self.conn.history(row_id, "submit", f"part {part['part_index']} of {job['job_id']}")
            return self.batches.get_row(row_id)

    def requeue_part(self, part_id: int, not_before: str, reason: str) -> None:
        """Back to the queue (the enqueued-token limit): sent again after `not_before`, or
        once another batch of the account has finished."""
        with self.conn.writing():
            self.conn.db.execute(
                "UPDATE parts SET state = ?, requeues = requeues + 1, requeued_at = ?, "
                "not_before = ? WHERE id = ?",
                (PartState.QUEUED, utc_now(), not_before, part_id),
            )
            job = self.conn.rows("SELECT job FROM parts WHERE id = ?", (part_id,))[0]["job"]
            self.conn.job_history(job, "requeue", reason)

    def reset_part(self, part_id: int) -> None:
        """Back to the queue: its last attempt made no batch (a create cut off, abandoned)."""
        with self.conn.writing():
            self.conn.db.table("parts").update(part_id, {"state": PartState.QUEUED})

    def cancel_queued_parts(self, job_row_id: int) -> None:
        with self.conn.writing():
            self.conn.db.execute(
                "UPDATE parts SET state = ? WHERE job = ? AND state = ?",
                (PartState.CANCELLED, job_row_id, PartState.QUEUED),
            )
            self.conn.job_history(job_row_id, "cancel", "queued parts cancelled")

    def record_job_results(
        self, job_row_id: int, kind: str, path: Path | None, size: int | None, sha256: str | None
    ) -> None:
        """The job's merged `kind` file ("output" or "error"), or None: it has none."""
        with self.conn.writing():
            self.conn.db.table("jobs").update(
                job_row_id,
                saved_file_fields(kind, path, size, sha256),
            )
            if path is not None:
                self.conn.job_history(job_row_id, f"merge_{kind}", f"saved {size} bytes to {path}")

    def record_job_counts(self, job_row_id: int, completed: int, failed: int) -> None:
        """The requests with a success and with a failure in the job's merged results."""
        with self.conn.writing():
            self.conn.db.table("jobs").update(
                job_row_id, {"requests_completed": completed, "requests_failed": failed}
            )

    def set_job_status(self, job_row_id: int, status: JobStatus, action: str, detail: str) -> None:
        """A running job stopped (its input changed) or going on again."""
        with self.conn.writing():
            self.conn.db.table("jobs").update(job_row_id, {"status": status})
            self.conn.job_history(job_row_id, action, detail)

    def finish_job(self, job_row_id: int, status: JobStatus, *, cost: float | None) -> None:
        """The job is over; `cost`: its attempts' sum (issue 22, `usage.job_cost`)."""
        with self.conn.writing():
            self.conn.db.table("jobs").update(
                job_row_id,
                {
                    "status": status,
                    "finished_at": utc_now(),
                    "merged_at": utc_now(),
                    "actual_cost": cost,
                },
            )
            self.conn.job_history(job_row_id, "finish", f"status {status}")

    def get_job(self, job_row_id: int) -> JobRow:
        return self._jobs("SELECT * FROM jobs WHERE id = ?", (job_row_id,))[0]

    def find_job(self, job_id: str) -> JobRow | None:
        rows = self._jobs("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return rows[0] if rows else None

    def latest_job(self, account: str | None = None) -> JobRow | None:
        where = "WHERE account = ? " if account is not None else ""
        rows = self._jobs(
            f"SELECT * FROM jobs {where}ORDER BY recorded_at DESC, id DESC LIMIT 1",
            (account,) if account is not None else (),
        )
        return rows[0] if rows else None

    def find_unsent_job(
        self,
        input_: InputFile,
        endpoint: str,
        window: str,
        account: str,
        base_url: str,
        limits: tuple[int, int],
    ) -> JobRow | None:
        """A job of the same input and split whose submission is not over (cut off, or
        waiting for --max-in-flight): running `create` again goes on with it."""
        where, params = same_input(input_, endpoint, window, account, base_url)
        rows = self._jobs(
            f"SELECT * FROM jobs WHERE {where} "
            f"AND max_requests = ? AND max_bytes = ? AND status IN (?, ?) AND ({UNSENT}) "
            "ORDER BY id DESC LIMIT 1",
            (
                *params,
                *limits,
                JobStatus.RUNNING,
                JobStatus.INPUT_CHANGED,  # its input as it was again: it goes on
                PartState.QUEUED,
            ),
        )
        return rows[0] if rows else None

    def find_unsent_job_by_id(self, job_row_id: int) -> JobRow | None:
        """The job, if its submission is not over (a part never sent, a create cut off)."""
        rows = self._jobs(
            f"SELECT * FROM jobs WHERE id = ? AND ({UNSENT})", (job_row_id, PartState.QUEUED)
        )
        return rows[0] if rows else None

    def jobs_in_status(self, status: str) -> list[JobRow]:
        return self._jobs("SELECT * FROM jobs WHERE status = ? ORDER BY id", (status,))

    def retries_of(self, retry_of: str) -> list[JobRow]:
        """The jobs that send again lines of the batch or job `retry_of`, oldest first."""
        return self._jobs("SELECT * FROM jobs WHERE retry_of = ? ORDER BY id", (retry_of,))

    def unfinished_jobs(self) -> list[JobRow]:
        return self._jobs("SELECT * FROM jobs WHERE status = ? ORDER BY id", (JobStatus.RUNNING,))

    def job_parts(self, job_row_id: int) -> list[PartRow]:
        return self._parts("SELECT * FROM parts WHERE job = ? ORDER BY part_index", (job_row_id,))

    def attempts_of_job(self, job_row_id: int) -> list[BatchRow]:
        """Every batch row of the job's parts, oldest first."""
        return self.batches.select(
            "SELECT batches.* FROM batches JOIN parts ON batches.part = parts.id "
            "WHERE parts.job = ? ORDER BY batches.id",
            (job_row_id,),
        )

    def last_attempt(self, part_id: int) -> BatchRow | None:
        rows = self.batches.select(
            "SELECT * FROM batches WHERE part = ? ORDER BY id DESC LIMIT 1", (part_id,)
        )
        return rows[0] if rows else None

    def job_of_part(self, part_id: int) -> tuple[JobRow, PartRow]:
        """The job and the part a part id names."""
        part = self._parts("SELECT * FROM parts WHERE id = ?", (part_id,))[0]
        return self.get_job(part["job"]), part

    def job_history(self, job_row_id: int) -> list[JobHistoryRow]:
        rows = self.conn.rows("SELECT * FROM job_history WHERE job = ? ORDER BY id", (job_row_id,))
        return cast(list[JobHistoryRow], rows)
