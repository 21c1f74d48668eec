"""Validating a batch input file and running its requests, both streaming line by line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import injected
from .models import BatchError, RequestCounts, Usage
from .synth import hex_digest, response_body

MAX_REPORTED_ERRORS = 100
ERROR_MODEL = "emulator-error"
"""A request whose body.model is this fails with a 400 model_not_found in the error file."""


LINE_OUTCOMES = ("expired", "cancelled", "500", "529", "429", "400", "missing")
"""What a test can force on one request: expire or cancel it, fail it with that HTTP status, or
lose it (in neither file, counted only in the total). The anthropic flavour answers each as
Anthropic's result types: expired, canceled, errored (an error of that status's type)."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_lines: int


@dataclass(frozen=True)
class Interruption:
    """Why the unexecuted rest of an expired or cancelled batch was not run."""

    code: str
    message: str


EXPIRED = Interruption(
    "batch_expired", "This request could not be executed before the completion window expired."
)
CANCELLED = Interruption(
    "batch_cancelled", "This request was not executed: the batch was cancelled."
)


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, line without its line ending), reading the file lazily."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, raw.rstrip(b"\r\n")


def first_model(path: Path) -> str | None:
    """body.model of the first line, which the live API reports as the batch's model."""
    with path.open("rb") as handle:
        first = handle.readline(1024 * 1024)
    try:
        request = json.loads(first)
    except ValueError:
        return None
    body = request.get("body") if isinstance(request, dict) else None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


DEFAULT_TOKEN_LIMIT = 90_000


def token_limit_message(model: str | None, limit: int) -> str:
    """The live API's words when a model's enqueued tokens would pass the limit."""
    return (
        f"Enqueued token limit reached for {model or 'the model'} in organization org-emulator."
        f" Limit: {limit:,} enqueued tokens. Please try again once some in_progress batches have"
        " been completed."
    )


def forced_failure(model: str | None, limit: int = DEFAULT_TOKEN_LIMIT) -> BatchError:
    """The error of a batch that failed on the token limit: the most common live failure."""
    return BatchError(code="token_limit_exceeded", message=token_limit_message(model, limit))


def _file_errors(size: int, lines: int, limits: Limits) -> list[BatchError]:
    if size > limits.max_bytes:
        message = (
            f"The input file is {size} bytes; a batch input file can be at most"
            f" {limits.max_bytes} bytes."
        )
        return [BatchError("file_too_large", message)]
    if lines > limits.max_lines:
        message = (
            f"The input file has {lines} lines; a batch can contain at most"
            f" {limits.max_lines} requests."
        )
        return [BatchError("too_many_lines", message)]
    if lines == 0:
        return [BatchError("empty_file", "The input file is empty.")]
    return []


def _line_error(raw: bytes, number: int, endpoint: str, seen: set[str]) -> BatchError | None:
    """Check one input line the way the live validator does; None if it is fine."""
    try:
        request = json.loads(raw)
    except ValueError:
        return BatchError("invalid_json_line", f"Line {number} is not valid JSON.", number)
    if not isinstance(request, dict):
        return BatchError("invalid_json_line", f"Line {number} is not a JSON object.", number)
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        message = f"Line {number} has no custom_id; every request needs a unique string custom_id."
        return BatchError("missing_custom_id", message, number, "custom_id")
    if custom_id in seen:
        message = f"The custom_id {custom_id!r} on line {number} is used by an earlier line."
        return BatchError("duplicate_custom_id", message, number, "custom_id")
    seen.add(custom_id)
    if request.get("method") != "POST":
        message = f"Line {number} has method {request.get('method')!r}; only 'POST' is supported."
        return BatchError("invalid_method", message, number, "method")
    if request.get("url") != endpoint:
        message = (
            f"Line {number} has url {request.get('url')!r}, which does not match the batch"
            f" endpoint {endpoint!r}."
        )
        return BatchError("mismatched_endpoint", message, number, "url")
    if not isinstance(request.get("body"), dict):
        message = f"Line {number} has no body object."
        return BatchError("invalid_body", message, number, "body")
    return None


def validate_input(
    path: Path, size: int, lines: int, endpoint: str, limits: Limits
) -> list[BatchError]:
    """The errors that fail the batch at validation, at most MAX_REPORTED_ERRORS of them."""
    errors = _file_errors(size, lines, limits)
    if errors:
        return errors
    seen: set[str] = set()
    for number, raw in iter_lines(path):
        error = _line_error(raw, number, endpoint, seen)
        if error is not None:
            errors.append(error)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    return errors


@dataclass
class Written:
    """Size of a JSONL file written by execute()."""

    lines: int = 0
    bytes: int = 0


@dataclass
class JsonlWriter:
    """Appends JSON lines to a file and counts them."""

    handle: BinaryIO
    written: Written = field(default_factory=Written)

    def write(self, record: dict[str, Any]) -> None:
        data = json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n"
        self.handle.write(data)
        self.written.lines += 1
        self.written.bytes += len(data)


@dataclass
class Execution:
    """Counts and usage of a run, and the sizes of the output and error files it wrote."""

    counts: RequestCounts = field(default_factory=RequestCounts)
    usage: Usage = field(default_factory=Usage)
    output: Written = field(default_factory=Written)
    errors: Written = field(default_factory=Written)


def _result_line(seed: str, custom_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    response = {"status_code": status, "request_id": hex_digest(seed + ":request"), "body": body}
    return {
        "id": f"batch_req_{hex_digest(seed)}",
        "custom_id": custom_id,
        "response": response,
        "error": None,
    }


def _model_error_body(model: str) -> dict[str, Any]:
    message = f"The model `{model}` does not exist or you do not have access to it."
    error = {
        "message": message,
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    return {"error": error}


def _unexecuted_line(seed: str, custom_id: str, why: Interruption) -> dict[str, Any]:
    return {
        "id": f"batch_req_{hex_digest(seed)}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": why.code, "message": why.message},
    }


@dataclass(frozen=True)
class RunPlan:
    """What to run: the batch's input, where results go, and where to stop if interrupted."""

    batch_id: str
    endpoint: str
    input_path: Path
    output_path: Path
    error_path: Path
    created: int
    executed: int | None = None
    """How many leading lines run; the rest go to the error file. None runs all."""
    interruption: Interruption | None = None
    line_outcome: Callable[[str], str | None] | None = None
    """Called with each executed custom_id: a LINE_OUTCOMES value to force, or None."""


def _forced_outcome(plan: RunPlan, index: int, custom_id: str) -> str | None:
    """ "interrupted" past the executed lines, else a forced LINE_OUTCOMES value, else None."""
    if plan.executed is not None and index >= plan.executed:
        return "interrupted"
    if plan.line_outcome is not None:
        return plan.line_outcome(custom_id)
    return None


def _forced_line(
    seed: str, custom_id: str, forced: str, interruption: Interruption | None
) -> dict[str, Any] | None:
    """The error-file line of a forced outcome; None for a missing line."""
    if forced == "missing":
        return None
    if forced == "interrupted":
        return _unexecuted_line(seed, custom_id, interruption or EXPIRED)
    if forced == "expired":
        return _unexecuted_line(seed, custom_id, EXPIRED)
    if forced == "cancelled":
        return _unexecuted_line(seed, custom_id, CANCELLED)
    status = int(forced)
    return _result_line(seed, custom_id, status, injected(status, None).body())


def execute(plan: RunPlan) -> Execution:
    """Run every validated input line, in order, into the output or the error file."""
    run = Execution()
    with plan.output_path.open("wb") as out, plan.error_path.open("wb") as err:
        output, errors = JsonlWriter(out), JsonlWriter(err)
        for index, (_number, raw) in enumerate(iter_lines(plan.input_path)):
            request = json.loads(raw)
            custom_id: str = request["custom_id"]
            body: dict[str, Any] = request["body"]
            seed = f"{plan.batch_id}:{custom_id}"
            forced = _forced_outcome(plan, index, custom_id)
            if forced is not None:
                line = _forced_line(seed, custom_id, forced, plan.interruption)
                # A missing line is in neither file and counts only in the total.
                if line is not None:
                    errors.write(line)
                    run.counts.failed += 1
            elif body.get("model") == ERROR_MODEL:
                errors.write(_result_line(seed, custom_id, 400, _model_error_body(ERROR_MODEL)))
                run.counts.failed += 1
            else:
                answer, usage = response_body(plan.endpoint, body, seed, plan.created)
                output.write(_result_line(seed, custom_id, 200, answer))
                run.counts.completed += 1
                run.usage.add(usage)
            run.counts.total += 1
    run.output, run.errors = output.written, errors.written
    return run
