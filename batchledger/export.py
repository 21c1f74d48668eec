"""`export`: one row per input request, in input order, joined by custom_id with its result.

Memory stays bounded whatever the batch's size. The saved results are indexed by custom_id
in a temporary SQLite file, holding only the fields an export shows (never whole lines);
SQLite keeps a small page cache and the rest on disk. The input is then read line by line
and each request looks up its result. Byte offsets into the result files would need a seek
and a second parse per request; a dict of custom_ids would grow with the batch.
"""

import base64
import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from batchledger.batches import FINAL_STATUSES, JobStatus, results_saved
from batchledger.errors import Refused, UsageError
from batchledger.inputs import read_as_sent
from batchledger.redo import anthropic_error
from batchledger.results_index import ScratchIndex, index_results
from batchledger.results_index import json_object as _json_object
from batchledger.rows import RESULT_KINDS, BatchRow, JobRow, saved_columns

COLUMNS = (
    "line",
    "custom_id",
    "status",
    "http_status",
    "text",
    "input_tokens",
    "output_tokens",
    "error_code",
    "error_message",
)
RESULT_COLUMNS = COLUMNS[2:]
CSV_FLUSH_ROWS = 1_000  # rows encoded before they are handed on as bytes


@dataclass
class ExportCounts:
    rows: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0, "missing": 0})


def check_exportable(row: BatchRow) -> tuple[Path, list[Path]]:
    """The batch's input and its saved result files; Refused (exit 3) if they are not saved."""
    batch_id = row["batch_id"]
    retrieve = f"'batchledger retrieve --batch-id {batch_id}'"
    if row["status"] not in FINAL_STATUSES:
        raise Refused(
            f"batch {batch_id} is {row['status']}: its results are not saved yet; "
            f"once it has finished, run {retrieve} first"
        )
    if not results_saved(row):
        raise Refused(f"the results of batch {batch_id} are not saved; run {retrieve} first")
    results = []
    for kind in RESULT_KINDS:
        if recorded := saved_columns(row, kind)["path"]:
            path = Path(recorded)
            if not path.is_file():
                raise Refused(
                    f"the saved {kind} file of batch {batch_id} is gone from {path}; "
                    f"run 'batchledger retrieve --batch-id {batch_id} --force' first"
                )
            results.append(path)
    input_path = Path(row["input_path"]) if row["input_path"] else None
    if input_path is None or not input_path.is_file():
        where = f"at {input_path}" if input_path else "on this machine"
        raise UsageError(
            f"the input of batch {batch_id} is not {where}; export lists its requests from it"
        )
    if row["input_bytes"] is not None and input_path.stat().st_size != row["input_bytes"]:
        raise UsageError(
            f"the input of batch {batch_id} ({input_path}) has changed since it was sent"
        )
    return input_path, results


def check_job_exportable(job: JobRow) -> tuple[Path, list[Path]]:
    """A job's input and its merged result files; Refused (exit 3) while it is running."""
    job_id = job["job_id"]
    if job["retry_of"]:
        raise UsageError(
            f"job {job_id} retries {job['retry_of']}, whose results now hold every request's "
            f"last answer: export {job['retry_of']}"
        )
    if job["status"] == JobStatus.RUNNING:
        raise Refused(
            f"job {job_id} is still running: its results are not merged yet; "
            f"'batchledger watch --batch-id {job_id}' first"
        )
    results = [Path(saved) for kind in RESULT_KINDS if (saved := saved_columns(job, kind)["path"])]
    for path in results:
        if not path.is_file():
            raise Refused(f"the merged results of job {job_id} are gone from {path}")
    input_path = Path(job["input_path"])
    if not input_path.is_file() or input_path.stat().st_size != job["input_bytes"]:
        raise UsageError(f"the input of job {job_id} ({input_path}) is gone or has changed")
    return input_path, results


def export_rows(
    input_path: Path, results: list[Path], counts: ExportCounts, input_sha256: str | None = None
) -> Iterator[list[Any]]:
    """Each input request with its result (or `missing`), as a row of COLUMNS.

    `input_sha256`: the input as it was sent. The input is hashed in a thread beside the
    export; one changed in place since (its size the same) is a UsageError once the last
    row is made, before the export's file is renamed into place: no export is left of it.
    """

    def rows(stream: BinaryIO) -> Iterator[list[Any]]:
        with ScratchIndex(prefix="batchledger-export-") as index:
            build_index(index.conn, results)
            yield from joined_rows(index.conn, stream, counts)

    return read_as_sent(input_path, input_sha256, rows, "; nothing was exported")


def build_index(index: sqlite3.Connection, results: list[Path]) -> None:
    """custom_id -> the fields an export shows, from every result file.

    A custom_id answered twice keeps its successful answer over an error.
    """
    placeholders = ", ".join("?" for _ in range(len(RESULT_COLUMNS) + 1))
    updates = ", ".join(f"{name} = excluded.{name}" for name in RESULT_COLUMNS)
    index.execute(
        f"CREATE TABLE results (custom_id TEXT PRIMARY KEY, {', '.join(RESULT_COLUMNS)})"
        " WITHOUT ROWID"
    )
    insert = (
        f"INSERT INTO results VALUES ({placeholders}) ON CONFLICT (custom_id) DO UPDATE SET "
        f"{updates} WHERE results.status != 'ok'"
    )
    index_results(
        index,
        insert,
        results,
        lambda _, __, ___, record: (record["custom_id"], *result_fields(record)),
    )


def joined_rows(
    index: sqlite3.Connection, lines: BinaryIO, counts: ExportCounts
) -> Iterator[list[Any]]:
    """The rows of the input `lines` (open at its start), each joined to its result."""
    missing = ["missing"] + [None] * (len(RESULT_COLUMNS) - 1)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        custom_id = _json_object(raw).get("custom_id")
        found = None
        if isinstance(custom_id, str):
            found = index.execute(
                f"SELECT {', '.join(RESULT_COLUMNS)} FROM results WHERE custom_id = ?",
                (custom_id,),
            ).fetchone()
        fields = list(found) if found else missing
        counts.rows += 1
        counts.by_status[str(fields[0])] += 1
        yield [number, custom_id if isinstance(custom_id, str) else None, *fields]


def result_fields(record: dict[str, Any]) -> tuple[Any, ...]:
    """(status, http_status, text, input_tokens, output_tokens, error_code, error_message)."""
    result = record.get("result")
    if isinstance(result, dict) and "response" not in record:
        return anthropic_fields(result)
    response = record.get("response") if isinstance(record.get("response"), dict) else {}
    assert isinstance(response, dict)
    status_code = response.get("status_code")
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    assert isinstance(body, dict)
    error = record.get("error") or body.get("error")
    ok = not error and isinstance(status_code, int) and 200 <= status_code < 300
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    code = message = None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
    elif error:
        message = str(error)
    return (
        "ok" if ok else "error",
        status_code,
        answer_text(body) if ok else None,
        _first(usage, "input_tokens", "prompt_tokens"),
        _first(usage, "output_tokens", "completion_tokens"),
        code,
        message,
    )


def anthropic_fields(result: dict[str, Any]) -> tuple[Any, ...]:
    """The same fields of a Message Batches result: `succeeded` is ok (HTTP 200, the text
    blocks' text); `errored` names its error's type; `canceled` and `expired` are errors
    coded so (they have no HTTP status)."""
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message") if isinstance(result.get("message"), dict) else {}
        assert isinstance(message, dict)
        usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        text = "".join(
            str(block.get("text") or "")
            for block in message.get("content") or []
            if isinstance(block, dict) and block.get("type") == "text"
        )
        return ("ok", 200, text, usage.get("input_tokens"), usage.get("output_tokens"), None, None)
    if kind == "errored":
        code, reason = anthropic_error(result)
        return ("error", None, None, None, None, code, reason)
    return ("error", None, None, None, None, kind if isinstance(kind, str) else None, None)


def _first(usage: dict[str, Any], *names: str) -> Any:
    for name in names:
        if usage.get(name) is not None:
            return usage[name]
    return None


def answer_text(body: dict[str, Any]) -> str | int | None:
    """Responses: the output text; Chat Completions: the first choice's message content;
    Embeddings: the vector's length; anything else: nothing."""
    kind = body.get("object")
    if kind == "response":
        if isinstance(body.get("output_text"), str):
            return str(body["output_text"])
        return "".join(
            part.get("text") or ""
            for item in body.get("output") or []
            if isinstance(item, dict) and item.get("type") == "message"
            for part in item.get("content") or []
            if isinstance(part, dict) and part.get("type") == "output_text"
        )
    if kind == "chat.completion":
        choices = body.get("choices") or [{}]
        content = (choices[0].get("message") or {}).get("content")
        if isinstance(content, list):
            return "".join(str(part.get("text") or "") for part in content)
        return content if isinstance(content, str) else None
    if kind == "list":
        first = (body.get("data") or [{}])[0]
        if isinstance(first, dict) and first.get("object") == "embedding":
            vector = first.get("embedding")
            if isinstance(vector, str):  # encoding_format "base64": float32s
                return len(base64.b64decode(vector)) // 4
            return len(vector) if isinstance(vector, list) else None
    return None


def csv_chunks(rows: Iterator[list[Any]]) -> Iterator[bytes]:
    """RFC 4180 CSV (quoted where needed, CRLF line ends) in UTF-8, with a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for count, row in enumerate(rows, start=1):
        writer.writerow(["" if value is None else value for value in row])
        if count % CSV_FLUSH_ROWS == 0:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


def jsonl_chunks(rows: Iterator[list[Any]]) -> Iterator[bytes]:
    """One JSON object per line, keyed by COLUMNS."""
    for row in rows:
        yield (json.dumps(dict(zip(COLUMNS, row, strict=True)), ensure_ascii=False) + "\n").encode()


def default_export_path(batch_id: str, format_: str) -> Path:
    return Path(f"export_{batch_id}.{format_}")
