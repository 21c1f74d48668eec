"""The ledger's rows as the code reads them: one `TypedDict` per table, the columns and
types of migrations/ (m001-m009; a column that may be NULL is `X | None`). SQLite hands a
row over as a plain dict; the stores (ledger/) say once which of these it is.

A status is the text the ledger stores (batches.py's enums compare equal to it).
"""

from typing import Literal, TypedDict

# A saved results file: the output (the answers) or the error file beside it.
Kind = Literal["output", "error"]
RESULT_KINDS: tuple[Kind, Kind] = ("output", "error")


class BatchRow(TypedDict):
    """`batches`: a batch the ledger knows, or an attempt of a job's part (`part`)."""

    id: int
    ref: str
    account: str
    base_url: str | None
    batch_id: str | None  # NULL until the create's answer is recorded
    origin: str  # "create", "lookup" or "sync"
    input_path: str | None
    input_bytes: int | None
    input_sha256: str | None
    input_file_id: str | None
    endpoint: str
    completion_window: str
    status: str | None  # NULL while its create is being made
    created_at: str | None
    in_progress_at: str | None
    finalizing_at: str | None
    completed_at: str | None
    failed_at: str | None
    expired_at: str | None
    cancelling_at: str | None
    cancelled_at: str | None
    expires_at: str | None
    requests_total: int | None
    requests_completed: int | None
    requests_failed: int | None
    output_file_id: str | None
    error_file_id: str | None
    errors: str | None  # JSON
    usage: str | None  # JSON
    output_path: str | None
    output_bytes: int | None
    output_sha256: str | None
    output_saved_at: str | None
    error_path: str | None
    error_bytes: int | None
    error_sha256: str | None
    error_saved_at: str | None
    recorded_at: str
    checked_at: str | None
    claimed_by: str | None
    claimed_at: str | None
    claim_expires_at: str | None
    results_gone_at: str | None
    not_found_at: str | None
    # m004
    model: str | None
    metadata: str | None  # JSON
    input_expires_after: int | None
    output_expires_after: int | None
    input_file_gone_at: str | None
    output_file_gone_at: str | None
    error_file_gone_at: str | None
    # m005
    part: int | None
    # m008
    estimated_input_tokens: int | None
    estimated_cost_min: float | None
    estimated_cost_max: float | None
    # m009
    actual_cost: float | None
    # m010: a provider's own request counts (JSON: Anthropic's, by result type)
    result_counts: str | None
    # m011: "tokens" or "bytes"
    estimated_from: str | None


class JobRow(TypedDict):
    """`jobs`: an input split into parts, or a retry of a batch or job (`retry_of`)."""

    id: int
    job_id: str
    account: str
    base_url: str | None
    input_path: str
    input_bytes: int
    input_sha256: str
    input_requests: int
    endpoint: str
    completion_window: str
    max_requests: int
    max_bytes: int
    max_in_flight: int | None
    metadata: str | None  # JSON
    input_expires_after: int | None
    output_expires_after: int | None
    status: str
    recorded_at: str
    finished_at: str | None
    output_path: str | None
    output_bytes: int | None
    output_sha256: str | None
    error_path: str | None
    error_bytes: int | None
    error_sha256: str | None
    merged_at: str | None
    retry_of: str | None
    claimed_by: str | None
    claimed_at: str | None
    claim_expires_at: str | None
    # m007
    requests_completed: int | None
    requests_failed: int | None
    # m008
    estimated_input_tokens: int | None
    estimated_cost_min: float | None
    estimated_cost_max: float | None
    # m009
    actual_cost: float | None
    # m011: "tokens" or "bytes"
    estimated_from: str | None


class JobListingRow(JobRow):
    """A job as `list` reads it (ReportStore.list_jobs): its row and its counts."""

    parts_total: int
    parts_done: int
    requests_done: int
    requests_failed_now: int


class PartRow(TypedDict):
    """`parts`: a byte range of a job's input, sent as one batch (its attempts)."""

    id: int
    job: int
    part_index: int
    start_byte: int
    end_byte: int
    ranges: str | None  # JSON: a retry's byte ranges
    requests: int
    ref: str
    input_file_id: str | None
    input_file_created_at: int | None
    upload_started_at: str | None
    state: str
    requeues: int
    requeued_at: str | None
    not_before: str | None
    # m009
    input_tokens: str | None  # JSON: model -> tokens


class HistoryRow(TypedDict):
    """`history`: what was done to a batch."""

    id: int
    batch: int
    at: str
    action: str
    detail: str | None
    log_file: str | None


class JobHistoryRow(TypedDict):
    """`job_history`: what was done to a job as a whole."""

    id: int
    job: int
    at: str
    action: str
    detail: str | None
    log_file: str | None


class UsageTotalsRow(TypedDict):
    """A (group, model) of `usage` (ReportStore.usage_totals)."""

    grp: str  # usage.GROUPS: never NULL
    model: str | None
    batches: int
    requests: int
    input: int | None
    cached: int | None
    output: int | None
    reasoning: int | None
    recorded_cost: float | None
    unrecorded: int | None


class SavedColumns(TypedDict):
    """The columns of a saved results file, for either kind (`saved_columns`)."""

    path: str | None
    bytes: int | None
    sha256: str | None


def saved_columns(row: BatchRow | JobRow, kind: Kind) -> SavedColumns:
    """Where the ledger saved a row's `kind` file, how big, its sha256 (None: not saved)."""
    if kind == "output":
        return {
            "path": row["output_path"],
            "bytes": row["output_bytes"],
            "sha256": row["output_sha256"],
        }
    return {"path": row["error_path"], "bytes": row["error_bytes"], "sha256": row["error_sha256"]}


def file_id(row: BatchRow, kind: Kind) -> str | None:
    """The API's id of a batch's `kind` file (None: it has none)."""
    return row["output_file_id"] if kind == "output" else row["error_file_id"]
