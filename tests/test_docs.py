"""The README's options table names every command and option that `--help` shows."""

import argparse
import re
from pathlib import Path

import pytest

from batchledger.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
EVERY_COMMAND = "every command"  # the row of the options every command takes
PROGRAM = "batchledger"  # the row of the options taken only before a command


def options_table() -> dict[str, str]:
    """The README's "### Options" table: row name (a command, or EVERY_COMMAND) -> options."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("### Options")
    rows: dict[str, str] = {}
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if not line.startswith("|") or line.startswith("|---"):
            continue
        name, options = (cell.strip() for cell in line.strip("|").split("|", 1))
        if name == "command":  # the header
            continue
        row = re.match(r"`([^`]+)`", name)
        rows[EVERY_COMMAND if name.startswith(EVERY_COMMAND) else row[1] if row else name] = options
    return rows


def shown(parser: argparse.ArgumentParser) -> list[str]:
    """What `--help` lists for a parser: its option flags and its positionals' names."""
    names = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        names.extend(action.option_strings or [action.metavar or action.dest])
    return names


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def documented_options() -> list[tuple[str, str]]:
    """(row, flag) for every option and positional: where in the table it must appear."""
    program = shown(build_parser())
    commands = {name: shown(sub) for name, sub in command_parsers().items()}
    common = [flag for flag in program if all(flag in flags for flags in commands.values())]
    wanted = [(EVERY_COMMAND, flag) for flag in common]
    wanted += [(PROGRAM, flag) for flag in program if flag not in common]
    for name, flags in commands.items():
        wanted += [(name, flag) for flag in flags if flag not in common]
    return wanted


@pytest.mark.parametrize("command", command_parsers())
def test_command_is_in_the_options_table(command: str):
    assert command in options_table()


@pytest.mark.parametrize(
    ("row", "option"), documented_options(), ids=[" ".join(w) for w in documented_options()]
)
def test_option_is_in_its_row(row: str, option: str):
    options = options_table().get(row, "")
    # `--flag`, or `--flag METAVAR`: the flag right after a backtick, then a space or one.
    assert re.search(rf"`{re.escape(option)}[ `]", options), f"{option} not in README row {row!r}"
