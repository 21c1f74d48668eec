"""`main`: parse the arguments, run the command its table names, and turn what it raised
into an exit code; `entry`, the console script around it."""

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from batchledger.accounts import (
    ACCOUNT_ENV,
    DEFAULT,
    Account,
    InvalidAccountsFile,
    builtin_accounts,
    choose_account,
    load_accounts,
)
from batchledger.cli.parser import build_parser
from batchledger.cli.process import exit_now, install_interrupt_handler, interrupt_taken
from batchledger.context import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Context
from batchledger.errors import BatchledgerError, ExitCode, UsageError
from batchledger.paths import default_log_path, ledger_path
from batchledger.redaction import redact

Handler = Callable[[argparse.Namespace, Context], ExitCode]

# Each command of the parser (`args.command`), and the module of batchledger.cli and the
# function that run it. The module is imported when its command runs (start-up time: `list`
# does not load what `create` or `estimate` need, nor `create` what `export` does).
HANDLERS: dict[str, tuple[str, str]] = {
    "create": ("commands", "create"),
    "estimate": ("estimate_commands", "estimate"),
    "status": ("commands", "status"),
    "retrieve": ("commands", "retrieve"),
    "watch": ("watch_commands", "watch"),
    "cancel": ("commands", "cancel"),
    "sync": ("commands", "sync"),
    "show": ("ledger_commands", "show"),
    "list": ("ledger_commands", "list_"),
    "retry": ("commands", "retry"),
    "accounts": ("ledger_commands", "accounts"),
    "where": ("ledger_commands", "where"),
    "prune": ("ledger_commands", "prune"),
    "usage": ("ledger_commands", "usage"),
    "export": ("ledger_commands", "export"),
}


def handler(command: str) -> Handler:
    """The function that runs `command`, its module imported now."""
    module, function = HANDLERS[command]
    found: Handler = getattr(importlib.import_module(f"batchledger.cli.{module}"), function)
    return found


# Commands that read only the ledger: an accounts.toml they cannot use is a warning.
LEDGER_ONLY_COMMANDS = frozenset({"list", "show", "usage", "export", "where"})


def context_for(args: argparse.Namespace) -> Context:
    """The run's context, from the options every command takes and accounts.toml."""
    if not _working_directory_exists():
        raise UsageError("the working directory no longer exists; cd into one that does")
    log_option = getattr(args, "log_file", None)
    named = getattr(args, "account", None) or os.environ.get(ACCOUNT_ENV) or None
    try:
        accounts = load_accounts()
        account = choose_account(accounts, named)
    except InvalidAccountsFile as exc:
        if args.command not in LEDGER_ONLY_COMMANDS:
            raise
        # They read only the ledger, where an account is a name: an accounts.toml that
        # cannot be used does not stop them.
        print(f"batchledger: warning: {redact(exc.message)}", file=sys.stderr)
        accounts = builtin_accounts()
        account = accounts.get(named or DEFAULT) or Account(name=named or DEFAULT)
    return Context(
        command=args.command,
        ledger_path=ledger_path(getattr(args, "db", None)),
        log_file=Path(log_option) if log_option else default_log_path(datetime.now(UTC)),
        own_log_file=not log_option,
        accounts=accounts,
        account=account,
        named_account=named,
        max_retries=getattr(args, "max_retries", DEFAULT_MAX_RETRIES),
        timeout=getattr(args, "timeout", DEFAULT_TIMEOUT),
    )


def _working_directory_exists() -> bool:
    try:
        os.getcwd()
    except FileNotFoundError:
        return False
    return True


def entry() -> None:
    """The console script."""
    install_interrupt_handler()
    exit_now(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    ctx: Context | None = None
    try:
        args = build_parser().parse_args(argv)
        ctx = context_for(args)
        return int(handler(args.command)(args, ctx))
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
            try:
                ctx.close()
            except KeyboardInterrupt:
                # The work is done and recorded; only the closing was interrupted.
                interrupt_taken()
