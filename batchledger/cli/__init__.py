"""The command line: parser.py defines it, commands.py runs each command, dispatch.py maps
errors to exit codes, process.py is the console script's entry, exit and Ctrl-C."""

from batchledger.cli.dispatch import main
from batchledger.cli.parser import build_parser
from batchledger.cli.process import entry

__all__ = ["build_parser", "entry", "main"]
