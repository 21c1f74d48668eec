"""What `retry` sends again, and the merge of every attempt's results after it.

The one place input lines are parsed: each line's `custom_id` is what joins it to its
results. Memory stays bounded whatever the job's size: every result line is indexed by
custom_id in a temporary SQLite file (its outcome, and where its bytes are: file, offset,
size; never the line itself), the input's custom_ids and offsets go into the same file,
and SQLite joins the two in input order. A dict or a set of a million custom_ids would
hold a hundred megabytes or more.

Attempts are given oldest first. A custom_id's outcome is its successful response (HTTP
200) from any attempt, else its last failure: a later attempt's line replaces an earlier
one unless the earlier one succeeded.
"""

import itertools
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchledger.errors import UsageError
from batchledger.results_index import READ_BYTES, ScratchIndex, index_results
from batchledger.results_index import json_object as _json_object
from batchledger.results_index import lines as _lines
from batchledger.savefile import Saved, prepare_target, save_chunks

# What a failure is called, by the result line's error.code.
REASON_BY_ERROR_CODE = {
    "batch_expired": "expired",
    "batch_cancelled": "cancelled",
    "request_timeout": "timeout",
}
# Sent again by default: failures that say nothing about the request itself.
DEFAULT_REASONS = frozenset({"expired", "cancelled", "timeout", "429", "5xx", "missing"})
# Other failures (a 4xx, another error code) are "failed": sent again with all_failed only.
OTHER_FAILURE = "failed"
MISSING = "missing"

INSERT_BATCH = 2_000  # input rows written to the index per statement

# (output file, error file) of one attempt; either may be absent.
Attempt = tuple[Path | None, Path | None]


@dataclass
class RedoPlan:
    """The input lines to send again, as byte ranges of the input (for split.Segments)."""

    ranges: list[tuple[int, int]] = field(default_factory=list)  # adjacent lines coalesced
    lines: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    kept: int = 0  # lines with a successful response already
    not_sent: int = 0  # failed lines left out (their reason needs all_failed)


def plan_redo(input_path: Path, results: Sequence[Attempt], *, all_failed: bool) -> RedoPlan:
    """The input lines with no successful response whose last outcome calls for another try.

    UsageError when a line is not JSON, has no custom_id or repeats one (naming the first
    such line by its line number in the input).
    """
    plan = RedoPlan()
    with _Index() as index:
        index.add_results(results)
        index.add_input(input_path)
        (plan.kept,) = index.conn.execute(
            "SELECT COUNT(*) FROM inputs i JOIN results r ON r.custom_id = i.custom_id"
            " WHERE r.ok = 1"
        ).fetchone()
        for offset, size, reason in index.conn.execute(
            "SELECT i.offset, i.size, r.reason FROM inputs i"
            " LEFT JOIN results r ON r.custom_id = i.custom_id"
            " WHERE r.ok IS NOT 1 ORDER BY i.line"
        ):
            reason = reason or MISSING
            if reason not in DEFAULT_REASONS and not all_failed:
                plan.not_sent += 1
                continue
            plan.lines += 1
            plan.by_reason[reason] += 1
            if plan.ranges and plan.ranges[-1][1] == offset:
                plan.ranges[-1] = (plan.ranges[-1][0], offset + size)
            else:
                plan.ranges.append((offset, offset + size))
    return plan


def merge_attempts(
    output_target: Path, errors_target: Path, input_path: Path, results: Sequence[Attempt]
) -> tuple[Saved | None, Saved | None]:
    """One result line per input custom_id, in input order, bytes as the API sent them.

    Into `output_target`: each successful response (from whichever attempt got it); into
    `errors_target`: the last failure of each of the others. A custom_id no attempt
    answered has no line in either. A file that would have no line is not written (None).
    A result line the API ended without a newline (at its file's end) gets one.
    """
    with _Index() as index:
        paths = index.add_results(results)
        index.add_input(input_path)
        saved: list[Saved | None] = []
        for target, ok in ((output_target, 1), (errors_target, 0)):
            rows = index.conn.execute(
                "SELECT r.file, r.offset, r.size, r.newline FROM inputs i"
                " JOIN results r ON r.custom_id = i.custom_id WHERE r.ok = ? ORDER BY i.line",
                (ok,),
            )
            first = rows.fetchone()
            if first is None:
                saved.append(None)
                continue
            prepare_target(target)
            saved.append(save_chunks(target, _line_bytes(paths, itertools.chain([first], rows))))
    return saved[0], saved[1]


# Anthropic's result lines: why an `errored` one failed, by its error's type. Those that
# say nothing about the request are sent again by default; the rest (invalid_request_error,
# not_found_error, ...) are "failed".
REASON_BY_ANTHROPIC_ERROR = {
    "overloaded_error": "5xx",
    "api_error": "5xx",
    "rate_limit_error": "429",
}
REASON_BY_ANTHROPIC_RESULT = {"canceled": "cancelled", "expired": "expired"}


def outcome(record: dict[str, Any]) -> str | None:
    """None for a successful response (status 200), else the reason it failed."""
    result = record.get("result")
    if isinstance(result, dict) and "response" not in record:
        return anthropic_outcome(result)
    response = record.get("response")
    status = response.get("status_code") if isinstance(response, dict) else None
    if status == 200:
        return None
    error = record.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code in REASON_BY_ERROR_CODE:
        return REASON_BY_ERROR_CODE[code]
    if status == 429:
        return "429"
    if isinstance(status, int) and 500 <= status <= 599:
        return "5xx"
    return OTHER_FAILURE


def anthropic_outcome(result: dict[str, Any]) -> str | None:
    """None for a `succeeded` Message Batches result, else the reason it failed."""
    kind = result.get("type")
    if kind == "succeeded":
        return None
    if kind in REASON_BY_ANTHROPIC_RESULT:
        return REASON_BY_ANTHROPIC_RESULT[str(kind)]
    return REASON_BY_ANTHROPIC_ERROR.get(str(anthropic_error(result)[0]), OTHER_FAILURE)


def anthropic_error(result: dict[str, Any]) -> tuple[str | None, str | None]:
    """(type, message) of an `errored` result's error: {"type": "error", "error": {...}}."""
    error = result.get("error")
    inner = error.get("error") if isinstance(error, dict) else None
    if isinstance(inner, dict):
        error = inner
    if not isinstance(error, dict):
        return None, None
    kind, message = error.get("type"), error.get("message")
    return (
        kind if isinstance(kind, str) else None,
        message if isinstance(message, str) else None,
    )


class _Index(ScratchIndex):
    """The temporary SQLite file that joins input lines and result lines by custom_id."""

    def __init__(self) -> None:
        super().__init__()
        self.conn.execute(
            "CREATE TABLE results (custom_id TEXT PRIMARY KEY, ok INTEGER, reason TEXT,"
            " file INTEGER, offset INTEGER, size INTEGER, newline INTEGER) WITHOUT ROWID"
        )
        self.conn.execute(
            "CREATE TABLE inputs (line INTEGER PRIMARY KEY, custom_id TEXT NOT NULL UNIQUE,"
            " offset INTEGER, size INTEGER)"
        )

    def __enter__(self) -> "_Index":
        return self

    def add_results(self, results: Sequence[Attempt]) -> list[Path]:
        """Index every result line; the result files, numbered as the index numbers them."""
        # A later line replaces an earlier one for the same custom_id, unless that one was
        # a success: so the index holds any success, else the last failure.
        insert = (
            "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (custom_id) DO UPDATE"
            " SET ok = excluded.ok, reason = excluded.reason, file = excluded.file,"
            " offset = excluded.offset, size = excluded.size, newline = excluded.newline"
            " WHERE results.ok = 0"
        )
        paths = [path for attempt in results for path in attempt if path is not None]

        def row_of(number: int, offset: int, raw: bytes, record: dict[str, Any]) -> tuple[Any, ...]:
            reason = outcome(record)
            newline = raw.endswith(b"\n")
            return (record["custom_id"], reason is None, reason, number, offset, len(raw), newline)

        # _lines as this module has it now (bench/jobs.py counts the bytes it reads).
        index_results(self.conn, insert, paths, row_of, read=_lines)
        return paths

    def add_input(self, input_path: Path) -> None:
        """Index each input line's custom_id, line number and bytes; blank lines are skipped."""
        insert = "INSERT INTO inputs VALUES (?, ?, ?, ?) ON CONFLICT (custom_id) DO NOTHING"
        with self.conn:
            pending: list[tuple[int, str, int, int]] = []
            for number, (offset, raw) in enumerate(_lines(input_path), start=1):
                if not raw.strip():
                    continue
                record = _json_object(raw)
                custom_id = record.get("custom_id") if record else None
                if not isinstance(custom_id, str):
                    raise UsageError(
                        f"line {number} of {input_path.name} {_fault_of(raw)}: "
                        "retry joins each request to its results by its custom_id"
                    )
                pending.append((number, custom_id, offset, len(raw)))
                if len(pending) >= INSERT_BATCH:
                    self._insert_inputs(insert, pending, input_path)
            self._insert_inputs(insert, pending, input_path)

    def _insert_inputs(
        self, insert: str, pending: list[tuple[int, str, int, int]], input_path: Path
    ) -> None:
        before = self.conn.total_changes
        self.conn.executemany(insert, pending)
        if self.conn.total_changes - before != len(pending):
            self._raise_duplicate(pending, input_path)
        pending.clear()

    def _raise_duplicate(self, pending: list[tuple[int, str, int, int]], input_path: Path) -> None:
        """The first line of `pending` whose custom_id an earlier line has (it was not stored)."""
        for number, custom_id, _, _ in pending:
            (first,) = self.conn.execute(
                "SELECT line FROM inputs WHERE custom_id = ?", (custom_id,)
            ).fetchone()
            if first != number:
                raise UsageError(
                    f"line {number} of {input_path.name} repeats the custom_id {custom_id!r} "
                    f"of line {first}: retry could not tell their results apart"
                )


def _fault_of(raw: bytes) -> str:
    """What keeps an input line from naming its custom_id."""
    try:
        value = json.loads(raw)
    except ValueError:
        return "is not valid JSON"
    return "has no custom_id" if isinstance(value, dict) else "is not a JSON object"


def _line_bytes(paths: list[Path], rows: Iterator[tuple[int, int, int, int]]) -> Iterator[bytes]:
    """The bytes of each (file, offset, size, newline) row; adjacent lines read at once."""
    files = [path.open("rb", buffering=0) for path in paths]
    try:
        run: list[int] | None = None  # [file, start, end] of adjacent lines not yet read
        for file, offset, size, newline in rows:
            if run is not None and run[0] == file and run[2] == offset:
                run[2] += size
            else:
                if run is not None:
                    yield from _read_range(files[run[0]], run[1], run[2])
                run = [file, offset, offset + size]
            if not newline:  # the last line of its file: end it here, not in the next line
                yield from _read_range(files[run[0]], run[1], run[2])
                yield b"\n"
                run = None
        if run is not None:
            yield from _read_range(files[run[0]], run[1], run[2])
    finally:
        for opened in files:
            opened.close()


def _read_range(source: Any, start: int, end: int) -> Iterator[bytes]:
    source.seek(start)
    while start < end:
        chunk = source.read(min(READ_BYTES, end - start))
        if not chunk:
            raise OSError(f"{source.name} changed while its results were merged")
        start += len(chunk)
        yield chunk
