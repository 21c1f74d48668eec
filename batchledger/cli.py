"""The command line: parse arguments, call the workflow, print what it returns."""

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from batchledger import __version__
from batchledger.errors import BatchledgerError, ExitCode
from batchledger.ledger import Ledger, open_ledger
from batchledger.logs import close_logger, setup_logger
from batchledger.paths import default_log_path, ledger_path
from batchledger.render import (
    display_path,
    json_text,
    list_table,
    requests_text,
    status_lines,
    sweep_table,
)

if TYPE_CHECKING:
    from openai import OpenAI

    from batchledger.workflow import BatchReport, SavedFile

DEFAULT_ENDPOINT = "/v1/responses"
DEFAULT_WINDOW = "24h"
DEFAULT_LIST_LIMIT = 50
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_RETRIES = 2
DEFAULT_TIMEOUT = 600.0


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one-line usage errors (exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise BatchledgerError(f"{message} (see '{self.prog} --help')", ExitCode.USAGE)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected more than 0 seconds, got {text}")
    return value


def common_options() -> Parser:
    """Options every command takes, before or after the command name."""
    # SUPPRESS keeps a later, unset copy of an option from erasing an earlier value.
    common = Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--log-file", metavar="PATH", help="log file (default: logs/batch_<timestamp>.log)"
    )
    common.add_argument(
        "--db", metavar="PATH", help="ledger file (default: $BATCHLEDGER_DB or per-user data dir)"
    )
    common.add_argument(
        "--max-retries",
        type=non_negative_int,
        metavar="N",
        help=f"retries of a failed API request (default: {DEFAULT_MAX_RETRIES})",
    )
    common.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help=f"timeout of one API request (default: {DEFAULT_TIMEOUT:g})",
    )
    return common


def build_parser() -> Parser:
    common = common_options()
    parser = Parser(
        prog="batchledger",
        description="Drive the OpenAI Batch API and keep a local ledger of every batch.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"batchledger {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    create = commands.add_parser(
        "create", parents=[common], help="upload a JSONL file and create a batch"
    )
    create.add_argument("--in", dest="input", required=True, metavar="PATH", help="JSONL input")
    create.add_argument(
        "--endpoint", default=DEFAULT_ENDPOINT, help=f"API endpoint (default: {DEFAULT_ENDPOINT})"
    )
    create.add_argument(
        "--completion-window",
        default=DEFAULT_WINDOW,
        metavar="WINDOW",
        help=f"completion window (default: {DEFAULT_WINDOW})",
    )
    create.add_argument(
        "--force", action="store_true", help="submit even if the same input is already in flight"
    )
    create.set_defaults(handler=cmd_create)

    status = commands.add_parser(
        "status", parents=[common], help="check a batch (or all pending), saving finished results"
    )
    which = status.add_mutually_exclusive_group(required=True)
    which.add_argument("--batch-id", metavar="ID", help="the batch to check")
    which.add_argument(
        "--all", action="store_true", help="check every ledger batch not final or not saved"
    )
    status.add_argument(
        "--auto-save",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="save the results of a completed batch (default: on)",
    )
    status.add_argument(
        "--out", metavar="PATH", help="where to save results (default: results_<batch_id>.jsonl)"
    )
    status.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"batches checked at once with --all (default: {DEFAULT_CONCURRENCY})",
    )
    status.set_defaults(handler=cmd_status)

    retrieve = commands.add_parser(
        "retrieve", parents=[common], help="save the results of a completed batch"
    )
    retrieve.add_argument("--batch-id", required=True, metavar="ID", help="the batch")
    retrieve.add_argument(
        "--out", metavar="PATH", help="where to save (default: results_<batch_id>.jsonl)"
    )
    retrieve.set_defaults(handler=cmd_retrieve)

    list_ = commands.add_parser(
        "list", parents=[common], help="show the batches in the ledger (no API key needed)"
    )
    shown = list_.add_mutually_exclusive_group()
    shown.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIST_LIMIT,
        metavar="N",
        help=f"show the newest N batches (default: {DEFAULT_LIST_LIMIT})",
    )
    shown.add_argument("--all", action="store_true", help="show every batch")
    list_.add_argument("--json", action="store_true", help="print JSON instead of a table")
    list_.set_defaults(handler=cmd_list)
    return parser


class Run:
    """What one invocation shares between its steps: options, ledger, log, client."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = datetime.now()
        self.log_file = Path(getattr(args, "log_file", None) or default_log_path(self.started))
        self.logger: logging.Logger | None = None
        self.ledger: Ledger | None = None

    def start_log(self) -> logging.Logger:
        """Open the log file; only commands that call the API keep a log."""
        self.logger = setup_logger(self.log_file)
        self.logger.info("RUN command=%s version=%s", self.args.command, __version__)
        return self.logger

    def open_ledger(self, *, create: bool = True) -> Ledger | None:
        self.ledger = open_ledger(ledger_path(getattr(self.args, "db", None)), create=create)
        return self.ledger

    def writable_ledger(self) -> Ledger:
        ledger = self.open_ledger(create=True)
        assert ledger is not None
        return ledger

    def client(self) -> "OpenAI":
        from batchledger import api

        return api.make_client(
            max_retries=getattr(self.args, "max_retries", DEFAULT_MAX_RETRIES),
            timeout=getattr(self.args, "timeout", DEFAULT_TIMEOUT),
        )

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        if self.logger is not None:
            close_logger(self.logger)


def cmd_create(run: Run) -> ExitCode:
    from batchledger import workflow

    input_ = workflow.read_input(run.args.input)
    client = run.client()
    run.start_log()
    submitted = workflow.submit(
        client,
        run.writable_ledger(),
        input_,
        run.args.endpoint,
        run.args.completion_window,
        run.log_file,
        force=run.args.force,
    )
    if submitted.recovered:
        print(
            f"batchledger: warning: {submitted.batch['id']} was created by an earlier run that "
            "was cut off; recorded it instead of creating another batch",
            file=sys.stderr,
        )
    print(f"file_id: {submitted.file_id}")
    print(f"batch_id: {submitted.batch['id']}")
    return ExitCode.OK


def cmd_status(run: Run) -> ExitCode:
    from batchledger import workflow

    if run.args.all:
        if run.args.out:
            raise BatchledgerError(
                "--out names one file; it cannot be used with --all", ExitCode.USAGE
            )
        return sweep_all(run)
    client = run.client()
    run.start_log()
    report = workflow.check_status(
        client,
        run.writable_ledger(),
        run.args.batch_id,
        run.log_file,
        auto_save=run.args.auto_save,
        out=Path(run.args.out) if run.args.out else None,
    )
    assert report.row is not None
    print("\n".join(status_lines(report.row)))
    print_saved(report.saved)
    return ExitCode.OK


def sweep_all(run: Run) -> ExitCode:
    from batchledger import workflow

    ledger = run.open_ledger(create=False)
    if ledger is None or not (ledger.batches_to_sweep() or ledger.unfinished_submissions()):
        print("No pending batches in the ledger.")
        return ExitCode.OK
    client = run.client()
    logger = run.start_log()
    for row in workflow.recover_unfinished(client, ledger, run.log_file):
        print(
            f"batchledger: warning: found {row['batch_id']}, created by a create that was cut "
            "off; it is in the ledger now",
            file=sys.stderr,
        )
    pending = ledger.batches_to_sweep()
    logger.info("SWEEP batches=%d", len(pending))
    reports = workflow.sweep(
        client,
        ledger,
        pending,
        run.log_file,
        auto_save=run.args.auto_save,
        concurrency=run.args.concurrency,
    )
    print(sweep_table(sweep_entry(report) for report in reports))
    for report in reports:
        print_saved(report.saved, to_stdout=False)
    failures = [report for report in reports if report.error]
    for report in failures:
        assert report.error is not None
        print(f"batchledger: error: {report.batch_id}: {report.error.message}", file=sys.stderr)
    return ExitCode.FAILURE if failures else ExitCode.OK


def sweep_entry(report: "BatchReport") -> tuple[str, str, str, str, str]:
    row = report.row or {}
    saved = ", ".join(display_path(item.path) for item in report.saved if item.kind == "output")
    note = "error: see below" if report.error else ""
    if not saved and row.get("output_path"):
        saved = display_path(row["output_path"])
    return (report.batch_id, row.get("status") or "", requests_text(row), saved, note)


def print_saved(saved: Sequence["SavedFile"], *, to_stdout: bool = True) -> None:
    for item in saved:
        if item.replaced:
            print(
                f"batchledger: warning: overwrote existing file {display_path(item.path)}",
                file=sys.stderr,
            )
        if to_stdout:
            label = "saved" if item.kind == "output" else "saved errors"
            print(f"{label}: {display_path(item.path)} ({item.size} bytes)")


def cmd_retrieve(run: Run) -> ExitCode:
    from batchledger import workflow

    client = run.client()
    run.start_log()
    report = workflow.retrieve(
        client,
        run.writable_ledger(),
        run.args.batch_id,
        Path(run.args.out) if run.args.out else None,
        run.log_file,
    )
    print_saved(report.saved)
    return ExitCode.OK


def cmd_list(run: Run) -> ExitCode:
    ledger = run.open_ledger(create=False)
    limit = None if run.args.all else run.args.limit
    rows = ledger.list_batches(limit) if ledger is not None else []
    if run.args.json:
        print(json_text(rows))
    elif not rows:
        print("No batches in the ledger yet.")
    else:
        print(list_table(rows))
        total = ledger.count_batches() if ledger is not None else 0
        if len(rows) < total:
            print(
                f"batchledger: showing the newest {len(rows)} of {total} batches; "
                "use --all or --limit N for more",
                file=sys.stderr,
            )
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    run: Run | None = None
    try:
        args = build_parser().parse_args(argv)
        run = Run(args)
        handler: Callable[[Run], ExitCode] = args.handler
        return int(handler(run))
    except BatchledgerError as exc:
        if run is not None and run.logger is not None:
            run.logger.error("ERROR %s", exc.message, exc_info=True)
        print(f"batchledger: error: {exc.message}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        if run is not None and run.logger is not None:
            run.logger.warning("INTERRUPTED by the user")
        print("batchledger: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except Exception as exc:
        where = ""
        if run is not None and run.logger is not None:
            run.logger.exception("UNEXPECTED %s", type(exc).__name__)
            where = f"; details in {run.log_file}"
        print(f"batchledger: error: unexpected {type(exc).__name__}: {exc}{where}", file=sys.stderr)
        return int(ExitCode.FAILURE)
    finally:
        if run is not None:
            run.close()


def entry() -> None:
    """The console script."""
    sys.exit(main())
