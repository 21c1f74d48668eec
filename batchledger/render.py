"""Turning batches and ledger rows into the lines, tables and JSON a user reads."""

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tabulate import tabulate

from batchledger.ledger import BATCH_TIMESTAMPS, Row

LIST_COLUMNS = ("batch_id", "status", "recorded", "input", "requests", "saved")
SWEEP_COLUMNS = ("batch_id", "status", "requests", "saved", "note")


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


def status_lines(row: Row) -> list[str]:
    """The succinct `key: value` lines for one batch, timestamps in ISO 8601 UTC."""
    lines = [f"batch_id: {row['batch_id']}", f"status: {row['status']}"]
    lines += [f"{name}: {row[name]}" for name in BATCH_TIMESTAMPS if row.get(name)]
    if row.get("requests_total") is not None:
        lines.append(
            f"requests: {row['requests_completed'] or 0} completed, "
            f"{row['requests_failed'] or 0} failed, {row['requests_total']} total"
        )
    for error in json.loads(row["errors"]) if row.get("errors") else []:
        where = f"line {error['line']}: " if error.get("line") is not None else ""
        lines.append(f"error: {where}{error.get('code') or ''}: {error.get('message') or ''}")
    return lines


def list_table(rows: Iterable[Row]) -> str:
    table = [
        [
            row["batch_id"] or "(not created)",
            row["status"] or "",
            row["recorded_at"],
            Path(row["input_path"]).name if row["input_path"] else "",
            requests_text(row),
            display_path(row["output_path"]),
        ]
        for row in rows
    ]
    return tabulate(table, headers=LIST_COLUMNS)


def sweep_table(entries: Iterable[tuple[str, str, str, str, str]]) -> str:
    return tabulate(list(entries), headers=SWEEP_COLUMNS)


def json_text(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
