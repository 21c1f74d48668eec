"""`main`: parse the arguments, run the command, and turn what it raised into an exit code."""

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from batchledger.cli.commands import Handler
from batchledger.cli.parser import build_parser
from batchledger.cli.process import interrupt_taken
from batchledger.context import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Context
from batchledger.errors import BatchledgerError, ExitCode
from batchledger.paths import default_log_path, ledger_path
from batchledger.redaction import redact


def context_for(args: argparse.Namespace) -> Context:
    """The run's context, from the options every command takes."""
    log_file = getattr(args, "log_file", None) or default_log_path(datetime.now())
    return Context(
        command=args.command,
        ledger_path=ledger_path(getattr(args, "db", None)),
        log_file=Path(log_file),
        max_retries=getattr(args, "max_retries", DEFAULT_MAX_RETRIES),
        timeout=getattr(args, "timeout", DEFAULT_TIMEOUT),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    ctx: Context | None = None
    try:
        args = build_parser().parse_args(argv)
        ctx = context_for(args)
        handler: Handler = args.handler
        return int(handler(args, ctx))
    except BatchledgerError as exc:
        if ctx is not None and ctx.logger is not None:
            ctx.logger.error("ERROR %s", exc.message, exc_info=True)
        print(f"batchledger: error: {redact(exc.message)}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        interrupt_taken()
        if ctx is not None and ctx.logger is not None:
            ctx.logger.warning("INTERRUPTED by the user")
        print("batchledger: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`batchledger list | head`): stop quietly, as cat would.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  # Python flushes stdout at exit
        return int(ExitCode.OK)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except Exception as exc:
        where = ""
        if ctx is not None and ctx.logger is not None:
            ctx.logger.exception("UNEXPECTED %s", type(exc).__name__)
            where = f"; details in {ctx.log_file}"
        print(
            f"batchledger: error: unexpected {type(exc).__name__}: {redact(str(exc))}{where}",
            file=sys.stderr,
        )
        return int(ExitCode.FAILURE)
    finally:
        if ctx is not None:
            ctx.close()
