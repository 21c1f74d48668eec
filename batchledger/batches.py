"""The batch vocabulary: what each status means, and an API batch as a ledger row."""

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from batchledger.rows import BatchRow
from batchledger.times import epoch_of, iso_from_epoch, utc_now

# A row the code has not typed yet (rows.py types the ledger's tables).
Row = Mapping[str, Any]


class BatchStatus(StrEnum):
    """A batch's status: the API's (in OpenAI's words; a provider's profile maps its own to
    them), then the ledger's own two. The values are what the ledger stores."""

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    # A row whose create the API refused (a 4xx): there is no batch to follow.
    REJECTED = "rejected"
    # A row whose create made no batch (nothing was found on the server): sweeps stop
    # looking for it; a create of the same input starts it again, reusing its upload.
    ABANDONED = "abandoned"


class JobStatus(StrEnum):
    """A job's status. Running until every part is final and its results are merged."""

    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    # The input changed after the job was split: its queued parts are not sent (they would
    # be read from other bytes) until the input is as it was again.
    INPUT_CHANGED = "input_changed"


class PartState(StrEnum):
    """A part waits in the queue, or has been sent (its last attempt tells how it went)."""

    QUEUED = "queued"
    SENT = "sent"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
# Ended before every request ran, keeping the part that did.
ENDED_EARLY_STATUSES = frozenset({BatchStatus.EXPIRED, BatchStatus.CANCELLED})
# A batch in one of these states may hold result files: completed, or ended early.
SAVABLE_STATUSES = frozenset({BatchStatus.COMPLETED}) | ENDED_EARLY_STATUSES
# Batches in these states hold no work worth keeping, so the same input may be sent again.
RESUBMITTABLE_STATUSES = frozenset({BatchStatus.FAILED}) | ENDED_EARLY_STATUSES
JOB_STATUSES = tuple(JobStatus)
TOKEN_LIMIT_CODE = "token_limit_exceeded"
# `status` warns of results not saved this long before their provider deletes them.
RETENTION_WARNING_SECONDS = 86400


def attempt_is_open(row: BatchRow) -> bool:
    """A part's attempt that is still live: being created, or a batch not final yet."""
    if row["batch_id"] is None:
        return row["status"] is None  # being made (or cut off: recovery decides)
    return row["status"] not in FINAL_STATUSES and row["not_found_at"] is None


def bounced_off_token_limit(row: BatchRow) -> bool:
    """The attempt failed (or its create was refused) for the enqueued-token limit."""
    if row["status"] not in (BatchStatus.FAILED, BatchStatus.REJECTED):
        return False
    errors = json.loads(row["errors"]) if row["errors"] else []
    return any(error.get("code") == TOKEN_LIMIT_CODE for error in errors)


BATCH_TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "expires_at",
)
REF_KEY = "batchledger_ref"  # the batch metadata key that carries a ledger row's ref


@dataclass(frozen=True)
class JobRef:
    """A job of the ledger: its parts' batches are on the job's account."""

    job_id: str


@dataclass(frozen=True)
class BatchRef:
    """A batch as the API knows it: its id is unique on its account only."""

    account: str
    batch_id: str

    @classmethod
    def of(cls, row: BatchRow) -> "BatchRef":
        """The batch of a row the API has answered for (its batch_id is known)."""
        batch_id = row["batch_id"]
        assert batch_id is not None, f"ledger row {row['id']} has no batch id yet"
        return cls(account=row["account"], batch_id=batch_id)


def ref_of(batch: Mapping[str, Any]) -> str | None:
    """The ledger ref a create tagged the batch with, if any."""
    ref = (batch.get("metadata") or {}).get(REF_KEY)
    return ref if isinstance(ref, str) else None


def user_metadata(batch: Mapping[str, Any]) -> dict[str, str]:
    """The batch's metadata without the ledger's ref: what the user tagged it with."""
    metadata = batch.get("metadata") or {}
    return {key: value for key, value in metadata.items() if key != REF_KEY}


def has_results(batch: Mapping[str, Any]) -> bool:
    """The batch is over and left a file to save: its output, its errors, or both."""
    return batch["status"] in SAVABLE_STATUSES and bool(
        batch.get("output_file_id") or batch.get("error_file_id")
    )


def progress_of(batch: Mapping[str, Any]) -> tuple[int, int, int]:
    """(completed, failed, total) requests of a batch."""
    counts = batch.get("request_counts") or {}
    return (counts.get("completed") or 0, counts.get("failed") or 0, counts.get("total") or 0)


def fields_from_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The ledger columns that mirror an API Batch object."""
    counts = batch.get("request_counts") or {}
    errors = batch.get("errors") or {}
    fields: dict[str, Any] = {
        "batch_id": batch["id"],
        "status": batch.get("status"),
        "requests_total": counts.get("total"),
        "requests_completed": counts.get("completed"),
        "requests_failed": counts.get("failed"),
        "output_file_id": batch.get("output_file_id"),
        "error_file_id": batch.get("error_file_id"),
        "errors": json.dumps(errors["data"]) if errors.get("data") else None,
        "usage": json.dumps(batch["usage"]) if batch.get("usage") else None,
        "checked_at": utc_now(),
    }
    for name in BATCH_TIMESTAMPS:
        fields[name] = iso_from_epoch(batch.get(name))
    # A batch made from requests sent inline names no input file: the ledger keeps what its
    # create recorded there (the check before the send, see providers/anthropic).
    # A provider's own counts (Anthropic's by result type), kept beside the mapped ones.
    if counts.get("by_result"):
        fields["result_counts"] = json.dumps(counts["by_result"])
    if "input_file_id" in batch:
        fields["input_file_id"] = batch["input_file_id"]
    # Only what the API knows: a model learned once is not erased by an answer without one.
    if batch.get("model"):
        fields["model"] = batch["model"]
    # Likewise metadata: some providers drop it, and the ledger keeps what the user gave.
    if batch.get("metadata") is not None:
        user = user_metadata(batch)
        fields["metadata"] = json.dumps(user, sort_keys=True) if user else None
    return fields


def results_saved(row: BatchRow) -> bool:
    """Every result file the batch has is saved locally."""
    return (row["output_file_id"] is None or row["output_path"] is not None) and (
        row["error_file_id"] is None or row["error_path"] is not None
    )


def missing_requests(row: Mapping[str, Any]) -> int:
    """Requests of the batch with no successful result."""
    return int((row.get("requests_total") or 0) - (row.get("requests_completed") or 0))


def retention_note(row: BatchRow, retention: int | None, now: float | None = None) -> str | None:
    """A warning when a batch's results, not saved yet, are within a day of the end of the
    `retention` (seconds from its creation) its provider keeps them for; else None."""
    if retention is None or row["batch_id"] is None or not row["created_at"]:
        return None
    if row["results_gone_at"] or results_saved(row):
        return None
    ends = epoch_of(row["created_at"]) + retention
    left = ends - (time.time() if now is None else now)
    if left > RETENTION_WARNING_SECONDS:
        return None
    if left <= 0:
        return (
            f"{row['batch_id']}: its results were kept until {iso_from_epoch(ends)} and may be gone"
        )
    return (
        f"{row['batch_id']}: its results are kept only until {iso_from_epoch(ends)} "
        f"({left / 3600:.0f} h from now) and are not saved; "
        f"'batchledger retrieve {row['batch_id']}' saves them"
    )
