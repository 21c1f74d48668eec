"""`results()`: one dict per input line, in input order, joined from the saved result files.

Memory stays bounded whatever the batch's size, as for `export` and `retry`: every result
line is indexed by custom_id in a scratch SQLite file (results_index.ScratchIndex) with
where its bytes are (file, offset, size), never the line itself; the input is then read
line by line, and each request's result line is read back from its file and parsed.

A result line is OpenAI's (`{"custom_id", "response": {"status_code", "body"}, "error"}`)
or Anthropic's (`{"custom_id", "result": {"type": "succeeded" | "errored" | "canceled" |
"expired", ...}}`): both come out as the same dict.
"""

import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypedDict

from batchledger.errors import UsageError
from batchledger.inputs import read_as_sent
from batchledger.results_index import READ_BYTES, ScratchIndex, index_results, json_object

ResultStatus = Literal["ok", "error", "missing"]

# Anthropic's ended-early types, as OpenAI's error codes for the same (redo.py reads these).
_ENDED_CODES = {"canceled": "batch_cancelled", "expired": "batch_expired"}


class ResultRow(TypedDict):
    """One input request and its result, as `Batch.results()` and `Job.results()` yield.

    `status` is `ok` (a successful response), `error` (the request failed; `error` says
    why) or `missing` (no result line for it). `response` is the response as OpenAI's
    results have it: `{"status_code", "request_id", "body"}` (an Anthropic success's
    `message` is its `body`). `error` is the error object (`code`, `message`, ...).
    """

    line: int  # the request's line number in the input (1-based)
    custom_id: str | None
    status: ResultStatus
    response: dict[str, Any] | None
    error: dict[str, Any] | None


def result_rows(
    input_path: Path, results: Sequence[Path], input_sha256: str | None = None
) -> Iterator[ResultRow]:
    """Each non-blank input line with its result; a custom_id answered twice keeps its
    success over an error (as export does). `input_sha256`: the input as it was sent; an
    input edited in place since (its size the same) raises UsageError after its last row,
    as export refuses it: those rows paired answers with requests that were not sent."""
    return read_as_sent(
        input_path,
        input_sha256,
        lambda stream: _joined(stream, results),
        ": the rows above joined answers to requests that were not sent",
        READ_BYTES,
    )


def _joined(stream: BinaryIO, results: Sequence[Path]) -> Iterator[ResultRow]:
    with ScratchIndex(prefix="batchledger-results-") as index:
        index.conn.execute(
            "CREATE TABLE results (custom_id TEXT PRIMARY KEY, ok INTEGER, file INTEGER,"
            " offset INTEGER, size INTEGER) WITHOUT ROWID"
        )
        index_results(
            index.conn,
            "INSERT INTO results VALUES (?, ?, ?, ?, ?) ON CONFLICT (custom_id) DO UPDATE"
            " SET ok = excluded.ok, file = excluded.file, offset = excluded.offset,"
            " size = excluded.size WHERE results.ok = 0",
            results,
            lambda number, offset, raw, record: (
                record["custom_id"],
                row_of(record, 0)["status"] == "ok",
                number,
                offset,
                len(raw),
            ),
        )
        files = [path.open("rb") for path in results]
        try:
            for number, raw in enumerate(stream, start=1):
                if not raw.strip():
                    continue
                custom_id = json_object(raw).get("custom_id")
                found = None
                if isinstance(custom_id, str):
                    found = index.conn.execute(
                        "SELECT file, offset, size FROM results WHERE custom_id = ?",
                        (custom_id,),
                    ).fetchone()
                if found is None:
                    yield ResultRow(
                        line=number,
                        custom_id=custom_id if isinstance(custom_id, str) else None,
                        status="missing",
                        response=None,
                        error=None,
                    )
                    continue
                yield row_of(json_object(_read(files[found[0]], found[1], found[2])), number)
        finally:
            for opened in files:
                opened.close()


def _read(source: BinaryIO, offset: int, size: int) -> bytes:
    source.seek(offset)
    data = source.read(size)
    if len(data) != size:
        raise OSError(f"{source.name} changed while its results were read")
    return data


def row_of(record: dict[str, Any], line: int) -> ResultRow:
    """A result line (OpenAI's or Anthropic's) as a ResultRow."""
    custom_id = record.get("custom_id")
    custom_id = custom_id if isinstance(custom_id, str) else None
    result = record.get("result")
    if isinstance(result, dict) and "response" not in record:  # Anthropic's
        kind = result.get("type")
        if kind == "succeeded":
            message = {"status_code": 200, "request_id": None, "body": result.get("message")}
            return ResultRow(
                line=line, custom_id=custom_id, status="ok", response=message, error=None
            )
        return ResultRow(
            line=line,
            custom_id=custom_id,
            status="error",
            response=None,
            error=_anthropic_error(result),
        )
    response: dict[str, Any] | None = (
        record["response"] if isinstance(record.get("response"), dict) else None
    )
    body = response.get("body") if response is not None else None
    error = record.get("error") or (body.get("error") if isinstance(body, dict) else None)
    status_code = response.get("status_code") if response is not None else None
    ok = not error and isinstance(status_code, int) and 200 <= status_code < 300
    if error is not None and not isinstance(error, dict):
        error = {"code": None, "message": str(error)}
    if not ok and error is None:
        error = {"code": None, "message": f"HTTP {status_code}"}
    return ResultRow(
        line=line,
        custom_id=custom_id,
        status="ok" if ok else "error",
        response=response,
        error=error,
    )


def _anthropic_error(result: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic result that is not a success as an error object: `code` and `message`
    (`errored`: the API's error type and message; ended early: OpenAI's code for it)."""
    kind = result.get("type")
    if kind in _ENDED_CODES:
        return {"code": _ENDED_CODES[str(kind)], "message": f"the request was {kind}"}
    outer = result.get("error") if isinstance(result.get("error"), dict) else {}
    assert isinstance(outer, dict)
    inner = outer.get("error") if isinstance(outer.get("error"), dict) else outer
    assert isinstance(inner, dict)
    return {"code": inner.get("type"), "message": inner.get("message")}


def to_pandas(rows: Iterator[ResultRow]) -> Any:
    """The rows as a pandas DataFrame (pandas is the optional extra `batchledger[pandas]`)."""
    try:
        # Imported here: pandas is optional, and heavy. By name: it ships no types.
        pandas = importlib.import_module("pandas")
    except ImportError:
        raise UsageError("to_pandas() needs pandas: pip install 'batchledger[pandas]'") from None
    return pandas.DataFrame.from_records(
        rows, columns=["line", "custom_id", "status", "response", "error"]
    )
