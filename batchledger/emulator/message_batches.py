"""Anthropic's Message Batches in the emulator: the object, its create body, and its results.

The create body `{"requests": [{"custom_id", "params"}, ...]}` is read from disk one request at
a time (json's raw_decode over a sliding window), so a 256 MB batch never sits in memory as
objects. Results are written in a deterministic order different from the input's, as
Anthropic makes no promise of order and its clients must match lines by custom_id.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from .errors import ApiError, anthropic_error, invalid_request
from .lifecycle import ERROR_MODEL, JsonlWriter, Written, iter_lines
from .synth import anthropic_message

MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1024 * 1024
RESULTS_TTL_SECONDS = 29 * 24 * 3600
"""Results are kept 29 days after the batch was created; then the batch is archived."""
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_READ_CHARS = 1024 * 1024
_WHITESPACE = " \t\n\r"


def rfc3339(timestamp: float | None) -> str | None:
    """A time as Anthropic writes it: 2024-08-20T18:37:24.100435Z."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class MessageCounts:
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "processing": self.processing,
            "succeeded": self.succeeded,
            "errored": self.errored,
            "canceled": self.canceled,
            "expired": self.expired,
        }


@dataclass
class StoredMessageBatch:
    """A Message Batch; times are the server clock's seconds (floats, shown as RFC 3339)."""

    id: str
    created_at: float
    expires_at: float
    requests: int
    input_path: Path | None
    """The requests as JSONL ({"custom_id", "params"} per line) until the batch ends."""
    outcome: str = "completed"
    processing_status: str = "in_progress"
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    results_path: Path | None = None
    request_counts: MessageCounts = field(default_factory=MessageCounts)
    last_step_at: float = 0.0

    @property
    def is_final(self) -> bool:
        return self.processing_status == "ended"

    @property
    def archive_at(self) -> float:
        return self.created_at + RESULTS_TTL_SECONDS

    def archived(self, now: float) -> bool:
        """Whether its results are gone: 29 days after creation."""
        return now >= self.archive_at

    def to_json(self, now: float, results_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": self.request_counts.to_json(),
            "ended_at": rfc3339(self.ended_at),
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "archived_at": rfc3339(self.archive_at) if self.archived(now) else None,
            "cancel_initiated_at": rfc3339(self.cancel_initiated_at),
            "results_url": results_url if self.is_final else None,
        }


# Reading the create body


class _Source:
    """A JSON text read from a file in windows; values are decoded one at a time."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self._buffer = ""
        self._pos = 0
        self._eof = False
        self._decoder = json.JSONDecoder()

    def _more(self, chars: int = _READ_CHARS) -> bool:
        if self._eof:
            return False
        data = self._handle.read(chars)
        if not data:
            self._eof = True
            return False
        if self._pos > _READ_CHARS:
            self._buffer, self._pos = self._buffer[self._pos :], 0
        self._buffer += data
        return True

    def peek(self) -> str:
        """The next character that is not whitespace, or "" at the end."""
        while True:
            while self._pos < len(self._buffer) and self._buffer[self._pos] in _WHITESPACE:
                self._pos += 1
            if self._pos < len(self._buffer) or not self._more():
                return self._buffer[self._pos : self._pos + 1]

    def expect(self, *chars: str) -> str:
        char = self.peek()
        if char not in chars or not char:
            raise _unparseable()
        self._pos += 1
        return char

    def value(self) -> Any:
        """Decode the next value, reading more until it is whole."""
        return self.value_and_text()[0]

    def value_and_text(self) -> tuple[Any, str]:
        """The next value decoded, and its JSON text as it came."""
        self.peek()
        chars = _READ_CHARS
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buffer, self._pos)
            except json.JSONDecodeError:
                if not self._more(chars):
                    raise _unparseable() from None
                chars *= 2
                continue
            # A number cut at the window's edge decodes too (12 of 123): read on to be sure.
            if end == len(self._buffer) and self._more():
                continue
            start, self._pos = self._pos, end
            return value, self._buffer[start:end]


def _unparseable() -> ApiError:
    return invalid_request("The request body is not valid JSON.")


def iter_requests(handle: TextIO) -> Iterator[tuple[Any, str]]:
    """Each element of the body's "requests" array, in order, with its JSON text; 400 on any
    other shape."""
    source = _Source(handle)
    seen_requests = False
    source.expect("{")
    if source.peek() != "}":
        while True:
            key = source.value()
            if not isinstance(key, str):
                raise _unparseable()
            source.expect(":")
            if key != "requests":
                source.value()
                raise invalid_request(f"{key}: Extra inputs are not permitted")
            seen_requests = True
            source.expect("[")
            if source.peek() == "]":
                source.expect("]")
            else:
                while True:
                    yield source.value_and_text()
                    if source.expect(",", "]") == "]":
                        break
            if source.expect(",", "}") == "}":
                break
    else:
        source.expect("}")
    if source.peek():
        raise _unparseable()
    if not seen_requests:
        raise invalid_request("requests: Field required")


def check_request(index: int, request: Any, seen: set[str]) -> str:
    """The request's custom_id, once its shape is right; 400 naming the request otherwise."""
    where = f"requests.{index}"
    if not isinstance(request, dict):
        raise invalid_request(f"{where}: Input should be a valid dictionary")
    for name in request:
        if name not in ("custom_id", "params"):
            raise invalid_request(f"{where}.{name}: Extra inputs are not permitted")
    custom_id = request.get("custom_id")
    if custom_id is None:
        raise invalid_request(f"{where}.custom_id: Field required")
    if not isinstance(custom_id, str) or CUSTOM_ID.fullmatch(custom_id) is None:
        raise invalid_request(
            f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        )
    if custom_id in seen:
        raise invalid_request(
            f"Duplicate custom_id {custom_id!r}: each request in a batch needs a unique custom_id."
        )
    seen.add(custom_id)
    params = request.get("params")
    if params is None:
        raise invalid_request(f"{where}.params: Field required")
    if not isinstance(params, dict):
        raise invalid_request(f"{where}.params: Input should be a valid dictionary")
    for name, kind, words in (
        ("model", str, "a valid string"),
        ("max_tokens", int, "a valid integer"),
        ("messages", list, "a valid list"),
    ):
        value = params.get(name)
        if value is None:
            raise invalid_request(f"{where}.params.{name}: Field required")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise invalid_request(f"{where}.params.{name}: Input should be {words}")
    return custom_id


def save_body(chunks: Iterator[bytes], path: Path, max_bytes: int) -> int:
    """Stream a request body to `path`; 413 past max_bytes."""
    size = 0
    with path.open("wb") as out:
        for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise anthropic_error(
                    413, f"Request exceeds the maximum allowed size of {max_bytes} bytes."
                )
            out.write(chunk)
    return size


def normalize_requests(body: Path, target: Path, max_requests: int) -> int:
    """Check the create body at `body` and write its requests to `target` as JSONL."""
    seen: set[str] = set()
    count = 0
    with body.open(encoding="utf-8") as handle, target.open("w", encoding="utf-8") as out:
        try:
            for index, (request, text) in enumerate(iter_requests(handle)):
                if index >= max_requests:
                    raise invalid_request(
                        f"requests: a Message Batch can contain at most {max_requests} requests."
                    )
                check_request(index, request, seen)
                # Line breaks in JSON text are whitespace between tokens (never inside a
                # string), so the request's own text makes one JSONL line without re-encoding.
                out.write(text.replace("\n", " ").replace("\r", " "))
                out.write("\n")
                count = index + 1
        except UnicodeDecodeError:
            raise _unparseable() from None
    if count == 0:
        raise invalid_request("requests: List should have at least 1 item after validation")
    return count


# Processing


_LINE_ERRORS = {
    "400": ("invalid_request_error", "Emulated invalid request."),
    "429": ("rate_limit_error", "Number of request tokens has exceeded your rate limit."),
    "500": ("api_error", "Internal server error"),
    "529": ("overloaded_error", "Overloaded"),
}
"""Forced line outcomes (lifecycle.LINE_OUTCOMES) as Anthropic's errored results."""


def _params_error(params: dict[str, Any]) -> tuple[str, str] | None:
    """What makes well-shaped params invalid in content, as Anthropic reports it per request."""
    max_tokens = params["max_tokens"]
    if max_tokens < 1:
        return "invalid_request_error", "max_tokens: Input should be greater than or equal to 1"
    if not params["messages"]:
        return "invalid_request_error", "messages: at least one message is required"
    if params["model"] == ERROR_MODEL:
        return "not_found_error", f"model: {ERROR_MODEL}"
    return None


def _errored(seed: str, error_type: str, message: str) -> dict[str, Any]:
    return {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": f"req_{seed[-24:]}",
        },
    }


@dataclass(frozen=True)
class MessageRun:
    """What to run: the batch's requests, and where a cancel or an expiry stops them."""

    batch_id: str
    input_path: Path
    results_path: Path
    executed: int | None = None
    """How many leading requests run; the rest end `unexecuted`. None runs all."""
    unexecuted: str = "expired"
    """canceled or expired."""
    fail_all: bool = False
    """Every executed request errors with api_error (a batch whose outcome is failed)."""
    line_outcome: Callable[[str], str | None] | None = None


def _result(run: MessageRun, index: int, request: dict[str, Any]) -> dict[str, Any] | None:
    custom_id: str = request["custom_id"]
    seed = f"{run.batch_id}:{custom_id}"
    if run.executed is not None and index >= run.executed:
        return {"type": run.unexecuted}
    forced = None if run.line_outcome is None else run.line_outcome(custom_id)
    if forced == "missing":
        return None
    if forced in ("expired", "cancelled"):
        return {"type": "expired" if forced == "expired" else "canceled"}
    if forced is not None:
        error_type, message = _LINE_ERRORS.get(forced, _LINE_ERRORS["500"])
        return _errored(seed, error_type, message)
    if run.fail_all:
        return _errored(seed, *_LINE_ERRORS["500"])
    params: dict[str, Any] = request["params"]
    problem = _params_error(params)
    if problem is not None:
        return _errored(seed, *problem)
    return {"type": "succeeded", "message": anthropic_message(params, seed)}


def _shuffled(count: int, seed: str) -> list[int]:
    """A deterministic order of range(count) that differs from it whenever it can."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    if count > 1 and order == sorted(order):
        order = order[1:] + order[:1]
    return order


def run_batch(run: MessageRun) -> MessageCounts:
    """Process every request, then write the results in shuffled order; returns the counts."""
    counts = MessageCounts()
    in_order = run.results_path.with_name(run.results_path.name + ".tmp")
    offsets: list[int] = []
    with in_order.open("wb") as out:
        writer = JsonlWriter(out)
        for index, (_number, raw) in enumerate(iter_lines(run.input_path)):
            request = json.loads(raw)
            result = _result(run, index, request)
            if result is None:
                # Lost by the provider: in no result line, but counted, as the counts must add up.
                counts.errored += 1
                continue
            offsets.append(writer.written.bytes)
            writer.write({"custom_id": request["custom_id"], "result": result})
            setattr(counts, result["type"], getattr(counts, result["type"]) + 1)
        total = writer.written
    _write_shuffled(in_order, run.results_path, offsets, total, run.batch_id)
    in_order.unlink()
    return counts


def _write_shuffled(
    source: Path, target: Path, offsets: list[int], total: Written, seed: str
) -> None:
    ends = [*offsets[1:], total.bytes]
    with source.open("rb") as lines, target.open("wb") as out:
        for position in _shuffled(len(offsets), seed):
            lines.seek(offsets[position])
            out.write(lines.read(ends[position] - offsets[position]))
