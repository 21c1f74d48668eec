"""The command line: parser.py declares it, main.py runs a command from its table and maps
errors to exit codes, the *_commands.py modules hold the commands, defaults.py their
defaults, process.py the process's exit and Ctrl-C."""

from batchledger.cli.main import entry, main
from batchledger.cli.parser import build_parser

__all__ = ["build_parser", "entry", "main"]
