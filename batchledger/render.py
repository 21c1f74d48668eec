"""Turning batches and ledger rows into the lines, tables and JSON a user reads."""

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from batchledger.batches import (
    BATCH_TIMESTAMPS,
    ENDED_EARLY_STATUSES,
    FINAL_STATUSES,
    Row,
    missing_requests,
)

if TYPE_CHECKING:
    from batchledger.batch import BatchReport
    from batchledger.prune import PruneItem
    from batchledger.usage import UsageLine


def tabulate(table: Any, headers: Sequence[str], **options: Any) -> str:
    """tabulate's table; imported when a table is drawn, not by commands that draw none
    (create, status of one batch: ~15 ms of their start)."""
    from tabulate import tabulate as draw

    return draw(table, headers=headers, **options)


LIST_COLUMNS = ("batch_id", "status", "model", "created", "input", "requests", "saved")
# The ledger columns list_table reads.
LIST_FIELDS = (
    "id",
    "account",
    "batch_id",
    "status",
    "model",
    "created_at",
    "recorded_at",
    "input_path",
    "requests_total",
    "requests_completed",
    "requests_failed",
    "output_path",
)
SWEEP_COLUMNS = ("batch_id", "status", "requests", "saved", "note")
HISTORY_COLUMNS = ("at", "action", "detail", "log file")
ACCOUNT_COLUMNS: tuple[str, ...] = ("account", "kind", "base URL", "key variable", "key set")
ACCOUNT_COLUMNS += ("batches", "profile", "limits per batch")


def display_path(path: str | Path | None) -> str:
    """A path as the user would type it: relative when under the working dir."""
    if not path:
        return ""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def requests_text(row: Mapping[str, Any]) -> str:
    total = row.get("requests_total")
    if total is None:
        return ""
    text = f"{row.get('requests_completed') or 0}/{total}"
    failed = row.get("requests_failed") or 0
    return f"{text} ({failed} failed)" if failed else text


def saved_line(kind: str, path: str | Path, size: int | None, *, already: bool = False) -> str:
    """`saved: PATH (N bytes)`, for an output file or (`saved errors:`) an error file."""
    label = "saved" if kind == "output" else "saved errors"
    return f"{'already ' if already else ''}{label}: {display_path(path)} ({size} bytes)"


def status_lines(row: Row) -> list[str]:
    """The succinct `key: value` lines for one batch, timestamps in ISO 8601 UTC."""
    lines = [f"batch_id: {row['batch_id']}", f"status: {row['status']}"]
    return lines + timestamp_and_request_lines(row) + status_notes(row)


def timestamp_and_request_lines(row: Row) -> list[str]:
    """Every timestamp the batch has reached, and its request counts."""
    lines = [f"{name}: {row[name]}" for name in BATCH_TIMESTAMPS if row.get(name)]
    if row.get("requests_total") is not None:
        lines.append(
            f"requests: {row['requests_completed'] or 0} completed, "
            f"{row['requests_failed'] or 0} failed, {row['requests_total']} total"
        )
    return lines


def status_notes(row: Row) -> list[str]:
    """What went wrong with a batch: requests left without a result, the API's errors."""
    notes = []
    if row.get("status") in ENDED_EARLY_STATUSES and missing_requests(row):
        notes.append(f"missing: {missing_requests(row)} requests have no result")
    for error in json.loads(row["errors"]) if row.get("errors") else []:
        where = f"line {error['line']}: " if error.get("line") is not None else ""
        reason = ": ".join(str(part) for part in (error.get("code"), error.get("message")) if part)
        notes.append(f"error: {where}{reason or 'no reason given'}")
    return notes


SHOW_FIELDS = (
    "batch_id",
    "status",
    "account",
    "base_url",
    "model",
    "origin",
    "endpoint",
    "completion_window",
    "input_path",
    "input_bytes",
    "input_sha256",
    "input_file_id",
    "output_file_id",
    "error_file_id",
    "recorded_at",
    "checked_at",
    "estimated_input_tokens",
    "estimated_cost_min",
    "estimated_cost_max",
    "estimated_from",
    "actual_cost",
)


COST_FIELDS = frozenset({"estimated_cost_min", "estimated_cost_max", "actual_cost"})


def field_text(name: str, value: Any) -> str:
    """A ledger value as `show` prints it: costs in US dollars to six decimals."""
    return f"{value:.6f} USD" if name in COST_FIELDS and value is not None else str(value)


def show_lines(row: Row, history: Sequence[Row]) -> list[str]:
    """Everything the ledger knows about one batch, as `key: value` lines and a history."""
    lines = [f"{name}: {row[name]}" for name in SHOW_FIELDS[:2]]
    lines += [
        f"{name}: {field_text(name, row[name])}"
        for name in SHOW_FIELDS[2:]
        if row.get(name) is not None
    ]
    lines += [f"metadata: {key}={value}" for key, value in metadata_of(row).items()]
    for kind in ("input", "output"):
        if row.get(f"{kind}_expires_after"):
            lines.append(
                f"{kind}_expires_after: {duration_text(row[f'{kind}_expires_after'])} "
                f"({row[f'{kind}_expires_after']} seconds)"
            )
    lines += timestamp_and_request_lines(row)
    if row.get("result_counts"):  # a provider's own counts (Anthropic's Message Batches)
        counts = json.loads(row["result_counts"])
        lines.append("results: " + ", ".join(f"{counts[name]} {name}" for name in counts))
    usage = json.loads(row["usage"]) if row.get("usage") else {}
    if usage.get("total_tokens"):
        lines.append(
            f"tokens: {usage.get('input_tokens') or 0} input, "
            f"{usage.get('output_tokens') or 0} output, {usage['total_tokens']} total"
        )
    for kind, label in (("output", "saved"), ("error", "saved errors")):
        if row.get(f"{kind}_path"):
            lines.append(
                f"{label}: {display_path(row[f'{kind}_path'])} ({row[f'{kind}_bytes']} bytes, "
                f"sha256 {row[f'{kind}_sha256']}, at {row[f'{kind}_saved_at']})"
            )
    lines += status_notes(row)
    lines.append("history:")
    table = [
        [event["at"], event["action"], event["detail"] or "", event["log_file"] or ""]
        for event in history
    ]
    lines += [
        "  " + line
        for line in tabulate(table, headers=HISTORY_COLUMNS, disable_numparse=True).splitlines()
    ]
    return lines


def row_json(row: Row) -> dict[str, Any]:
    """A ledger row for --json: the JSON columns as objects rather than strings."""
    return {
        **row,
        "errors": json.loads(row["errors"]) if row.get("errors") else None,
        "usage": json.loads(row["usage"]) if row.get("usage") else None,
        "metadata": metadata_of(row) or None,
        "result_counts": json.loads(row["result_counts"]) if row.get("result_counts") else None,
    }


def metadata_of(row: Mapping[str, Any]) -> dict[str, str]:
    """The user's metadata of a ledger row (never the ledger's own ref)."""
    metadata: dict[str, str] = json.loads(row["metadata"]) if row.get("metadata") else {}
    return metadata


class Progress:
    """Progress of watched batches on a stream: a bar on a terminal, plain lines otherwise."""

    BAR_WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.on_terminal = stream.isatty()
        self.last_line: dict[str, str] = {}
        self.open_line = False

    def show(self, batch: Mapping[str, Any]) -> None:
        counts = batch.get("request_counts") or {}
        done, failed, total = (counts.get(k) or 0 for k in ("completed", "failed", "total"))
        final = batch.get("final", batch["status"] in FINAL_STATUSES)
        percent = percent_done(done + failed, total, final=final)
        text = (
            f"{batch['id']} {batch['status']}: {done + failed}/{total} done, {failed} failed, "
            f"{percent} %"
        )
        if not final and total and done + failed >= total:
            text += " (finalizing: results not ready yet)"
        if self.on_terminal:
            filled = self.BAR_WIDTH * percent // 100
            bar = "#" * filled + "-" * (self.BAR_WIDTH - filled)
            self.stream.write(f"\r[{bar}] {text}\033[K")
            self.open_line = True
        elif self.last_line.get(batch["id"]) != text:
            self.stream.write(text + "\n")
        self.last_line[batch["id"]] = text
        self.stream.flush()

    def end_line(self) -> None:
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False


def percent_done(done: int, total: int, *, final: bool) -> int:
    """How far a batch (or a job) has come, in whole percent of its requests: 100 only once
    it is final, so that a batch `finalizing` (every request answered, its results not yet
    written) shows 99, never 100."""
    if not total:
        return 100 if final else 0
    percent = min(100 * done // total, 100)
    return percent if final else min(percent, 99)


def list_table(rows: Iterable[Row], *, with_account: bool = False) -> str:
    """`list`: a row per batch; the account column when the ledger holds several."""
    name_of, path_of = _input_names(), _display_paths()
    table = [
        [
            *([row["account"]] if with_account else []),
            row["batch_id"] or "(not created)",
            row["status"] or "",
            row["model"] or "",
            row["created_at"] or row["recorded_at"],
            name_of(row["input_path"]) if row["input_path"] else "",
            requests_text(row),
            path_of(row["output_path"]),
        ]
        for row in rows
    ]
    headers = (("account",) if with_account else ()) + LIST_COLUMNS
    return plain_table(table, headers)


def accounts_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """`accounts`: name, kind, where, the key's variable and whether it is set, batches,
    its provider's profile and limits (requests, bytes, completion windows)."""
    table = [
        [
            row["name"],
            row["kind"] or "(not configured)",
            row["base_url"] or "",
            row["api_key_env"] or "",
            {True: "yes", False: "no", None: ""}[row["key_set"]],
            str(row["batches"]),
            row["profile"] or "",
            _limits_text(row),
        ]
        for row in rows
    ]
    return tabulate(table, headers=ACCOUNT_COLUMNS, disable_numparse=True)


def _limits_text(row: Mapping[str, Any]) -> str:
    """`50000 requests, 209715200 bytes, 24h`: an account's limits per batch."""
    if row["max_requests"] is None:
        return ""
    windows = row["completion_windows"]
    return f"{row['max_requests']} requests, {row['max_bytes']} bytes, " + (
        "any window" if windows is None else "/".join(windows)
    )


def _input_names() -> Callable[[str], str]:
    """`Path(path).name`, without building a Path per row where the last part is plain."""
    if os.name != "posix":
        return lambda path: Path(path).name

    def name_of(path: str) -> str:
        name = path.rpartition("/")[2]
        return name if name and name != "." else Path(path).name

    return name_of


def _display_paths() -> Callable[[str | None], str]:
    """display_path, working out each folder's relative form once (a big listing repeats them).

    relpath(folder/name) is relpath(folder)/name unless the folder is the working dir's
    parent or an ancestor of it (then name may be a step back down): those, and anything
    unusual, take display_path itself.
    """
    if os.name != "posix":
        return display_path
    folders: dict[str, str | None] = {}

    def path_of(path: str | None) -> str:
        if not path or not isinstance(path, str):
            return display_path(path)
        folder, _, name = path.rpartition("/")
        if not folder or name in ("", ".", ".."):
            return display_path(path)
        if folder not in folders:
            from_here = os.path.relpath(folder)
            upward = all(part == ".." for part in from_here.split("/"))
            folders[folder] = None if upward else from_here
        relative = folders[folder]
        if relative is None:
            return display_path(path)
        return name if relative == "." else f"{relative}/{name}"

    return path_of


# Cells that tabulate treats specially: escape codes (invisible), line breaks (multiline
# rows), its separating-line marker; and other control characters, to be safe.
_SPECIAL_CELL_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain_table(table: list[list[str]], headers: Sequence[str]) -> str:
    """`tabulate(table, headers, disable_numparse=True)`, byte for byte, in a fraction of the time.

    tabulate inspects every cell several times (types, escape codes, widths); on 100,000
    rows that is most of `list --all`. Cells of plain one-line text are laid out here,
    with tabulate's own rules (cells stripped, left-aligned, columns at least the header
    plus its MIN_PADDING, trailing spaces cut, wide characters as tabulate measures them);
    any other table goes to tabulate itself. tests/test_render.py compares the two.
    """
    import tabulate as tabulate_module  # its settings, read as tabulate would read them

    try:
        columns = [list(column) for column in zip(*table, strict=True)]
        everything = "".join("".join(column) for column in columns)
    except (TypeError, ValueError):  # a cell that is not text, rows of different lengths
        columns, everything = [], ""
    if (
        not columns
        or len(columns) != len(headers)
        or tabulate_module.PRESERVE_WHITESPACE
        or _SPECIAL_CELL_TEXT.search(everything)
        or _SPECIAL_CELL_TEXT.search("".join(headers))
    ):
        return tabulate(table, headers=headers, disable_numparse=True)
    # tabulate measures by display width when wcwidth is installed (an optional extra).
    wcwidth = getattr(tabulate_module, "wcwidth", None)
    width_of: Callable[[str], int] = len
    if not everything.isascii() and wcwidth is not None and tabulate_module.WIDE_CHARS_MODE:
        width_of = wcwidth.wcswidth
    columns = [[cell.strip() for cell in column] for column in columns]
    header_widths = [width_of(header) + tabulate_module.MIN_PADDING for header in headers]
    if width_of is not len:
        return _wide_table(columns, list(headers), header_widths, width_of)
    widths = [
        max(header_width, max(map(len, column)))
        for header_width, column in zip(header_widths, columns, strict=True)
    ]
    row_format = "  ".join(f"{{:<{width}}}" for width in widths)
    lines = [row_format.format(*headers).rstrip(), "  ".join("-" * width for width in widths)]
    lines += [row_format.format(*row).rstrip() for row in zip(*columns, strict=True)]
    return "\n".join(lines)


def _wide_table(
    columns: list[list[str]],
    headers: list[str],
    header_widths: list[int],
    width_of: Callable[[str], int],
) -> str:
    """plain_table where tabulate measures cells by display width (wcwidth installed)."""
    padded: list[list[str]] = []
    widths: list[int] = []
    for column, header_width in zip(columns, header_widths, strict=True):
        shown = [width_of(cell) for cell in column]
        if min(shown) < 0:  # wcwidth cannot measure it: tabulate's own rules apply
            table = [list(row) for row in zip(*columns, strict=True)]
            return tabulate(table, headers=headers, disable_numparse=True)
        width = max(header_width, max(shown))
        # As tabulate does: pad by characters, less what wide characters take up.
        padded.append(
            [cell.ljust(width - (w - len(cell))) for cell, w in zip(column, shown, strict=True)]
        )
        widths.append(max(header_width, max(width_of(cell) for cell in padded[-1])))
    head = [
        header.ljust(width + len(header) - width_of(header))
        for header, width in zip(headers, widths, strict=True)
    ]
    lines = ["  ".join(head).rstrip(), "  ".join("-" * width for width in widths)]
    lines += ["  ".join(row).rstrip() for row in zip(*padded, strict=True)]
    return "\n".join(lines)


def report_lines(report: "BatchReport") -> list[str]:
    """A checked batch: its status lines, then a line per file saved."""
    assert report.row is not None
    lines = status_lines(report.row)
    return lines + [saved_line(item.kind, item.path, item.size) for item in report.saved]


def saved_warnings(report: "BatchReport") -> list[str]:
    """Warnings about what was saved: overwritten files, a batch that ended early."""
    warnings = [
        f"overwrote existing file {display_path(item.path)}"
        for item in report.saved
        if item.replaced
    ]
    row: Row = report.row or {}
    if report.saved and row.get("status") in ENDED_EARLY_STATUSES:
        warnings.append(
            f"{report.batch_id} is {row['status']}: saved the results it finished; "
            f"{missing_requests(row)} of {row.get('requests_total') or 0} requests have none"
        )
    return warnings


def sweep_table(reports: Iterable["BatchReport"]) -> str:
    """`status --all`: a row per batch checked."""
    entries = [sweep_entry(report) for report in reports]
    return tabulate(entries, headers=SWEEP_COLUMNS, disable_numparse=True)


def sweep_entry(report: "BatchReport") -> tuple[str, str, str, str, str]:
    row: Row = report.row or {}
    saved = ", ".join(display_path(item.path) for item in report.saved if item.kind == "output")
    if not saved and row.get("output_path"):
        saved = display_path(row["output_path"])
    note = "error: see below" if report.error else first_error_note(row)
    if not note and report.saved and any(item.kind == "error" for item in report.saved):
        note = "errors saved"
    return (report.batch_id, row.get("status") or "", requests_text(row), saved, note)


SWEEP_NOTE_CHARS = 60  # a failed batch's first reason, cut to this in the sweep's table


def first_error_note(row: Row) -> str:
    """A failed batch's first reason, short (`show` has them all): `line 4: code: message`."""
    notes = [note.removeprefix("error: ") for note in status_notes(row) if note.startswith("error")]
    if not notes:
        return ""
    note = notes[0]
    if len(note) > SWEEP_NOTE_CHARS:
        cut = note[: SWEEP_NOTE_CHARS - 3]
        if " " in cut[SWEEP_NOTE_CHARS // 2 :]:  # at a word's end, where there is one
            cut = cut.rsplit(" ", 1)[0]
        note = cut.rstrip(" ,.:;") + "..."
    return note + (f" (+{len(notes) - 1} more)" if len(notes) > 1 else "")


def json_text(value: Any) -> str:
    """One JSON document. A listing is an array with one row per line: json's C encoder
    only runs without `indent`, and on 100,000 rows the pure-Python one takes seconds."""
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return "[\n" + ",\n".join(json.dumps(item, sort_keys=True) for item in value) + "\n]"
    return json.dumps(value, indent=2, sort_keys=True)


def duration_text(seconds: int) -> str:
    """Seconds as the largest whole unit of d, h, m that fits: 7d, 36h, 90m."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


PRUNE_COLUMNS = ("batch_id", "file", "file_id", "bytes", "result")


def prune_json(item: "PruneItem") -> dict[str, Any]:
    return {
        "batch_id": item.batch_id,
        "file": item.kind,
        "file_id": item.file_id,
        "bytes": item.size,
        "result": item.outcome,
    }


def prune_table(items: Iterable["PruneItem"]) -> str:
    """`prune`: a row per remote file, and what was (or would be) done with it."""
    table = [
        [
            item.batch_id,
            item.kind,
            item.file_id,
            "" if item.size is None else str(item.size),
            "failed" if item.outcome.startswith("failed") else item.outcome,
        ]
        for item in items
    ]
    return tabulate(table, headers=PRUNE_COLUMNS, disable_numparse=True)


def usage_table(lines: Iterable["UsageLine"], by: str, *, priced: bool) -> str:
    """`usage`: a row per group; cost to six decimals, empty where a price is missing."""
    headers = [by, "batches", "requests", "input", "cached", "output", "reasoning"]
    table = []
    for line in lines:
        cells = [line.group, str(line.batches), str(line.requests)]
        cells += [str(line.tokens[kind]) for kind in ("input", "cached", "output", "reasoning")]
        if priced:
            cells.append("" if line.cost is None else f"{line.cost:.6f}")
        table.append(cells)
    return tabulate(
        table,
        headers=[*headers, "cost"] if priced else headers,
        disable_numparse=True,
        colalign=("left",) + ("right",) * (len(headers) - 1 + priced),
    )
