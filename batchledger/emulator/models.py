"""In-memory objects of the emulator and their JSON shapes (OpenAIFile, Batch, ...).

Null policy: like the live API, fields that have no value yet are sent as JSON null
(in_progress_at, completed_at, output_file_id, error_file_id, errors, model, metadata, ...),
even where the published spec types them as non-nullable. The SDK models them as Optional.
`usage` is always sent, with zeros until the batch has results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
"""Purposes a client may upload with (CreateFileRequest.purpose in the spec)."""

BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
"""CreateBatchRequest.endpoint in the spec."""

TOKEN_LIMIT_CHECKS = ("validate", "create")
"""When the enqueued-token limit is checked: as a batch leaves validating (as OpenAI does),
or at create, which is refused with a 400 (as some providers do)."""

AZURE_BATCH_ENDPOINTS = ("/chat/completions", "/embeddings", "/responses")
"""Batch endpoints of Azure OpenAI's classic data-plane API, which has no /v1."""

FLAVORS = ("openai", "azure", "anthropic")

OUTCOMES = ("completed", "failed", "expired", "cancelled")
FINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class StoredFile:
    """An uploaded or generated file; its bytes live on disk at `path`."""

    id: str
    filename: str
    purpose: str
    bytes: int
    lines: int
    created_at: int
    expires_at: int | None
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed}


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


@dataclass(frozen=True)
class BatchError:
    """One entry of Batch.errors.data; `line` is 1-based, None for whole-file problems."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass
class BatchResult:
    """What running a batch produced; published on the batch when it reaches a final state."""

    counts: RequestCounts
    usage: Usage
    output_file_id: str | None
    error_file_id: str | None


@dataclass
class StoredBatch:
    """A batch and where it is in its lifecycle."""

    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    expires_at: int
    metadata: dict[str, str] | None
    model: str | None
    output_expires_after: int | None
    """Seconds after creation at which output and error files expire, None for never."""
    input_path: Path | None
    """The batch's own link to the input bytes, so deleting the input file does not break
    a running batch; None once the batch is final."""
    input_bytes: int
    input_lines: int
    outcome: str = "completed"
    status: str = "validating"
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[BatchError] | None = None
    request_counts: RequestCounts = field(default_factory=RequestCounts)
    usage: Usage = field(default_factory=Usage)
    result: BatchResult | None = None
    last_step_at: float = 0.0
    """Clock time of the last transition; drives the step_seconds mode."""

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def estimated_tokens(self) -> int:
        """The batch's tokens for the enqueued-token limit: one per four input bytes."""
        return self.input_bytes // 4

    @property
    def is_enqueued(self) -> bool:
        """Past validation and not yet final: what counts against the enqueued-token limit."""
        return self.in_progress_at is not None and not self.is_final

    def to_json(self) -> dict[str, Any]:
        errors = None
        if self.errors is not None:
            errors = {"object": "list", "data": [error.to_json() for error in self.errors]}
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": self.request_counts.to_json(),
            "usage": self.usage.to_json(),
            "metadata": None if self.metadata is None else dict(self.metadata),
        }


RECORDED_HEADERS = (
    "content-type",
    "content-length",
    "transfer-encoding",
    "accept",
    "accept-encoding",
    "user-agent",
    "idempotency-key",
    "x-stainless-retry-count",
    "openai-organization",
    "openai-project",
    "anthropic-version",
)
"""Request headers kept in RecordedRequest.headers; Authorization and x-api-key never are."""


@dataclass(frozen=True)
class RecordedRequest:
    """One /v1 request as the emulator handled it; status is None if no response was sent."""

    method: str
    path: str
    query: dict[str, str]
    status: int | None
    headers: dict[str, str]
    has_authorization: bool
    fault: str | None
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": dict(self.query),
            "status": self.status,
            "headers": dict(self.headers),
            "has_authorization": self.has_authorization,
            "fault": self.fault,
            "at": self.at,
        }
