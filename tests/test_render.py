"""The fast layouts of render.py give the same bytes as tabulate and json.dumps."""

import os
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import tabulate as tabulate_module
from tabulate import tabulate

from batchledger.render import LIST_COLUMNS, display_path, list_table, plain_table

AWKWARD_CELLS = [
    "",
    " ",
    "  padded  ",
    "wide 日本語の結果.jsonl",
    "\uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48",  # fullwidth letters
    "emoji 🚀 done",
    "combining e\u0301e\u0301",
    "zero\u200bwidth",
    "/home/ana/" + "very/long/path/" * 20 + "results.jsonl",
    "True",
    "False",
    "12345",
    "1,234.5",
    "-0.5e3",
    "nan",
    "(not created)",
    "café ümlaut",
    "ideographic\u3000space\u3000",
    "tab\tinside",
    "line\nbreak",
    "\x1b[31mred\x1b[0m",
    "\x01",
]


def awkward_tables() -> list[list[list[str]]]:
    """Tables of six columns: each awkward cell in each column, beside ordinary ones."""
    plain = ["batch_abc", "completed", "2026-11-25T14:03:07Z", "in.jsonl", "3/3", "out.jsonl"]
    tables = [[plain]]
    for cell in AWKWARD_CELLS:
        for column in range(6):
            row = list(plain)
            row[column] = cell
            tables.append([plain, row, plain])
    tables.append([[cell] * 6 for cell in AWKWARD_CELLS if "\n" not in cell])
    tables.append([["", "", "", "", "", ""], ["", "", "", "", "", ""]])
    return tables


def expected(table: list[list[str]]) -> str:
    return tabulate(table, headers=LIST_COLUMNS, disable_numparse=True)


@pytest.mark.parametrize("table", awkward_tables())
def test_plain_table_is_tabulate(table: list[list[str]]):
    assert plain_table(table, LIST_COLUMNS) == expected(table)


def fake_wcswidth(text: str) -> int:
    """A display width as wcwidth measures it: East Asian wide 2, combining 0, controls -1."""
    width = 0
    for char in text:
        if unicodedata.category(char) in ("Cc",):
            return -1
        if unicodedata.combining(char) or char == "\u200b":
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


class FakeWcwidth:
    wcswidth = staticmethod(fake_wcswidth)


@pytest.mark.parametrize("table", awkward_tables())
def test_plain_table_is_tabulate_with_wide_characters(
    table: list[list[str]], monkeypatch: pytest.MonkeyPatch
):
    """Where wcwidth is installed, tabulate pads by display width; so does plain_table."""
    monkeypatch.setattr(tabulate_module, "wcwidth", FakeWcwidth, raising=False)
    monkeypatch.setattr(tabulate_module, "WIDE_CHARS_MODE", True)
    assert plain_table(table, LIST_COLUMNS) == expected(table)


def test_plain_table_follows_tabulate_settings(monkeypatch: pytest.MonkeyPatch):
    table = [["  a  ", "b", "c", "d", "e", "f"]]
    monkeypatch.setattr(tabulate_module, "PRESERVE_WHITESPACE", True)
    assert plain_table(table, LIST_COLUMNS) == expected(table)
    monkeypatch.setattr(tabulate_module, "PRESERVE_WHITESPACE", False)
    monkeypatch.setattr(tabulate_module, "MIN_PADDING", 5)
    assert plain_table(table, LIST_COLUMNS) == expected(table)


def ledger_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "batch_id": "batch_1",
        "status": "completed",
        "model": "gpt-4o-mini",
        "created_at": "2026-11-25T14:03:07Z",
        "recorded_at": "2026-11-25T14:03:00Z",
        "input_path": "/data/in.jsonl",
        "requests_total": 3,
        "requests_completed": 3,
        "requests_failed": 0,
        "output_path": None,
    }
    return {**row, **values}


def test_list_table_paths_are_display_paths(isolated: Path):
    """Output paths relative to the working dir wherever they are, as display_path says."""
    work = isolated
    (work / "sub").mkdir()
    places = [
        work / "results.jsonl",
        work / "sub" / "results.jsonl",
        work.parent / "beside.jsonl",
        work.parent.parent / "above.jsonl",
        Path("/") / "root.jsonl",
        Path("relative") / "r.jsonl",
        Path("..") / "up.jsonl",
        Path(str(work) + "/"),
        Path(str(work.parent) + "/./x/../y.jsonl"),
    ]
    paths = [str(place) for place in places] + [
        str(work) + "//double.jsonl",
        str(work) + "/.",
        str(work) + "/..",
        str(work.parent) + "/" + work.name,
        "/",
        "x",
    ]
    rows = [ledger_row(output_path=path, input_path=path) for path in paths]
    table = [
        [
            "batch_1",
            "completed",
            "gpt-4o-mini",
            "2026-11-25T14:03:07Z",
            Path(path).name,
            "3/3",
            display_path(path),
        ]
        for path in paths
    ]
    assert list_table(rows) == expected(table)
    assert os.getcwd() == str(work)


def test_plain_table_lays_out_ordinary_and_wide_cells_itself(monkeypatch: pytest.MonkeyPatch):
    """The comparisons above are not all tabulate's fallback: plain text never reaches it."""
    table = [
        [cell, "b", "", "d", "e", "f", "g"]
        for cell in AWKWARD_CELLS
        if cell.isprintable() or cell == ""
    ]
    want = expected(table)
    import batchledger.render

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("tabulate called")

    monkeypatch.setattr(batchledger.render, "tabulate", refuse)
    assert plain_table(table, LIST_COLUMNS) == want
