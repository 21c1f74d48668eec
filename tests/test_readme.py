"""The README's options table names every option that `--help` shows."""

import argparse
import re
from pathlib import Path

from batchledger.cli.parser import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"


def options_table() -> dict[str, str]:
    """Each row of the README's options table: the command cell to the options cell."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Options", 1)[1]
    rows = {}
    for line in section.splitlines()[3:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())]
        command, options = cells[1], cells[2]
        rows[command.strip("`")] = options
    return rows


def test_every_option_of_every_command_is_in_the_readme():
    parser = build_parser()
    table = options_table()
    common = table["every command (before or after its name)"]
    subparsers = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    missing = []
    for name, sub in subparsers.choices.items():
        assert name in table, f"no row for {name!r} in the README's options table"
        for action in sub._actions:
            for option in action.option_strings:
                if option in ("-h", "--help") or not option.startswith("--"):
                    continue
                pattern = re.compile(rf"`{re.escape(option)}[` ]")
                if not pattern.search(table[name]) and not pattern.search(common):
                    missing.append(f"{name} {option}")
    assert missing == []
