"""The command line: parse arguments, call the workflow, print what it returns."""

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from batchledger import __version__
from batchledger.errors import BatchledgerError, ExitCode
from batchledger.ledger import (
    FINAL_STATUSES,
    BatchFilter,
    Ledger,
    iso_utc,
    open_ledger,
    resolve_batch_id,
)
from batchledger.logs import close_logger, redact, setup_logger
from batchledger.paths import default_log_path, ledger_path
from batchledger.render import (
    Progress,
    display_path,
    json_text,
    list_table,
    missing_requests,
    requests_text,
    row_json,
    saved_line,
    show_lines,
    status_lines,
    sweep_table,
)

if TYPE_CHECKING:
    from openai import OpenAI

    from batchledger.workflow import BatchReport

DEFAULT_ENDPOINT = "/v1/responses"
DEFAULT_WINDOW = "24h"
DEFAULT_LIST_LIMIT = 50
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_RETRIES = 2
DEFAULT_TIMEOUT = 600.0
DEFAULT_WATCH_INTERVAL = 10.0
DEFAULT_WATCH_MAX_INTERVAL = 300.0


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


def since_moment(text: str) -> str:
    """`--since`: an age like 7d, 12h, 30m, 2w, or a date / ISO time; as ISO 8601 UTC."""
    units = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if len(text) > 1 and text[-1] in units and text[:-1].isdigit():
        return iso_utc(datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]]))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an age like 7d, 12h, 30m or a date like 2026-11-01, got {text!r}"
        ) from None
    return iso_utc(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def build_parser() -> Parser:
    common = common_options()
    parser = Parser(
        prog="batchledger",
        description="Drive the OpenAI Batch API and keep a local ledger of every batch.",
        epilog="A batch ID may be a full id, a unique prefix of one in the ledger, or 'last'.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"batchledger {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    def command(name: str, help_: str, handler: Callable[["Run"], ExitCode]) -> Parser:
        sub: Parser = commands.add_parser(name, parents=[common], help=help_, description=help_)
        sub.set_defaults(handler=handler)
        return sub

    def json_option(sub: Parser) -> None:
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")

    def auto_save_option(sub: Parser) -> None:
        sub.add_argument(
            "--auto-save",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="save the results of a finished batch (default: on)",
        )

    create = command("create", "upload a JSONL file and create a batch", cmd_create)
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
    json_option(create)

    status = command(
        "status", "check a batch (or all pending ones), saving finished results", cmd_status
    )
    which = status.add_mutually_exclusive_group(required=True)
    which.add_argument("--batch-id", metavar="ID", help="the batch to check")
    which.add_argument(
        "--all", action="store_true", help="check every ledger batch not final or not saved"
    )
    auto_save_option(status)
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
    json_option(status)

    retrieve = command("retrieve", "save the results of a finished batch", cmd_retrieve)
    retrieve.add_argument("--batch-id", required=True, metavar="ID", help="the batch")
    retrieve.add_argument(
        "--out", metavar="PATH", help="where to save (default: results_<batch_id>.jsonl)"
    )
    retrieve.add_argument(
        "--force", action="store_true", help="download again even if already saved and unchanged"
    )

    watch = command("watch", "follow batches until they finish, then save them", cmd_watch)
    followed = watch.add_mutually_exclusive_group(required=True)
    followed.add_argument("--batch-id", metavar="ID", help="the batch to follow")
    followed.add_argument("--all", action="store_true", help="follow every unfinished batch")
    auto_save_option(watch)
    watch.add_argument(
        "--interval",
        type=positive_float,
        default=DEFAULT_WATCH_INTERVAL,
        metavar="SECONDS",
        help=f"first pause between checks (default: {DEFAULT_WATCH_INTERVAL:g})",
    )
    watch.add_argument(
        "--max-interval",
        type=positive_float,
        default=DEFAULT_WATCH_MAX_INTERVAL,
        metavar="SECONDS",
        help=f"longest pause while nothing changes (default: {DEFAULT_WATCH_MAX_INTERVAL:g})",
    )

    cancel = command("cancel", "cancel a batch and wait until it is cancelled", cmd_cancel)
    cancel.add_argument("--batch-id", required=True, metavar="ID", help="the batch")
    cancel.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until the batch is cancelled (default: on)",
    )
    cancel.add_argument(
        "--interval",
        type=positive_float,
        default=DEFAULT_WATCH_INTERVAL,
        metavar="SECONDS",
        help=f"pause between checks while waiting (default: {DEFAULT_WATCH_INTERVAL:g})",
    )

    command("sync", "add the account's batches to the ledger (also those made elsewhere)", cmd_sync)

    show = command("show", "everything the ledger knows about one batch", cmd_show)
    show.add_argument("batch_id", metavar="ID", help="the batch")
    json_option(show)

    list_ = command("list", "show the batches in the ledger (no API key needed)", cmd_list)
    shown = list_.add_mutually_exclusive_group()
    shown.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIST_LIMIT,
        metavar="N",
        help=f"show the newest N batches (default: {DEFAULT_LIST_LIMIT})",
    )
    shown.add_argument("--all", action="store_true", help="show every batch")
    list_.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="STATUS",
        help="only batches in this status (repeat, or separate with commas)",
    )
    list_.add_argument(
        "--since",
        type=since_moment,
        metavar="AGE|DATE",
        help="only batches recorded since then: 7d, 12h, 30m, 2w, or a date",
    )
    list_.add_argument("--endpoint", help="only batches sent to this endpoint")
    json_option(list_)
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

    def start_api_command(self) -> tuple["OpenAI", Ledger]:
        """The client (failing early on a missing key), the log, and the ledger."""
        client = self.client()
        self.start_log()
        return client, self.writable_ledger()

    def batch_id(self, text: str) -> str:
        return resolve_batch_id(self.ledger, text)

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        if self.logger is not None:
            close_logger(self.logger)


def out_path(run: Run) -> Path | None:
    return Path(run.args.out) if run.args.out else None


def cmd_create(run: Run) -> ExitCode:
    from batchledger.inputs import check_input, hash_input_in_background

    path = check_input(run.args.input)
    hashing = hash_input_in_background(path, run.args.input)
    from batchledger import workflow  # imports openai, while the input is hashed

    client, ledger = run.start_api_command()
    input_ = hashing.result()
    submitted = workflow.submit(
        client,
        ledger,
        input_,
        run.args.endpoint,
        run.args.completion_window,
        run.log_file,
        force=run.args.force,
    )
    if submitted.recovered:
        warn(
            f"{submitted.batch['id']} was created by an earlier run that was cut off; "
            "recorded it instead of creating another batch"
        )
    if run.args.json:
        print(json_text(row_json(submitted.row)))
    else:
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
    client, ledger = run.start_api_command()
    report = workflow.check_status(
        client,
        ledger,
        run.batch_id(run.args.batch_id),
        run.log_file,
        auto_save=run.args.auto_save,
        out=out_path(run),
    )
    print_report(report, as_json=run.args.json)
    return ExitCode.OK


def sweep_all(run: Run) -> ExitCode:
    from batchledger import workflow

    ledger = run.open_ledger(create=False)
    if ledger is None or not (ledger.batches_to_sweep() or ledger.unfinished_submissions()):
        print("[]" if run.args.json else "No pending batches in the ledger.")
        return ExitCode.OK
    client = run.client()
    logger = run.start_log()
    for row in workflow.recover_unfinished(client, ledger, run.log_file):
        warn(f"found {row['batch_id']}, created by a create that was cut off; recorded it")
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
    if run.args.json:
        print(json_text([row_json(report.row) for report in reports if report.row]))
    else:
        print(sweep_table(sweep_entry(report) for report in reports))
    for report in reports:
        warn_saved(report)
    failures = [report for report in reports if report.error]
    for report in failures:
        assert report.error is not None
        print(
            f"batchledger: error: {report.batch_id}: {redact(report.error.message)}",
            file=sys.stderr,
        )
    return ExitCode.FAILURE if failures else ExitCode.OK


def sweep_entry(report: "BatchReport") -> tuple[str, str, str, str, str]:
    row = report.row or {}
    saved = ", ".join(display_path(item.path) for item in report.saved if item.kind == "output")
    if not saved and row.get("output_path"):
        saved = display_path(row["output_path"])
    note = "error: see below" if report.error else ""
    if not note and report.saved and any(item.kind == "error" for item in report.saved):
        note = "errors saved"
    return (report.batch_id, row.get("status") or "", requests_text(row), saved, note)


def print_report(report: "BatchReport", *, as_json: bool) -> None:
    """A checked batch on stdout: its status lines and saved files, or one JSON object."""
    assert report.row is not None
    if as_json:
        print(json_text(row_json(report.row)))
    else:
        print("\n".join(status_lines(report.row)))
        for item in report.saved:
            print(saved_line(item.kind, item.path, item.size))
    warn_saved(report)


def warn_saved(report: "BatchReport") -> None:
    """Warnings about what was saved: overwritten files, a batch that ended early."""
    for item in report.saved:
        if item.replaced:
            warn(f"overwrote existing file {display_path(item.path)}")
    row = report.row or {}
    if report.saved and row.get("status") in ("expired", "cancelled"):
        warn(
            f"{report.batch_id} is {row['status']}: saved the results it finished; "
            f"{missing_requests(row)} of {row.get('requests_total') or 0} requests have none"
        )


def warn(message: str) -> None:
    print(f"batchledger: warning: {message}", file=sys.stderr)


def cmd_retrieve(run: Run) -> ExitCode:
    from batchledger import workflow

    client, ledger = run.start_api_command()
    report = workflow.retrieve(
        client,
        ledger,
        run.batch_id(run.args.batch_id),
        out_path(run),
        run.log_file,
        again=run.args.force,
    )
    if report.already_saved:
        assert report.row is not None
        for kind in ("output", "error"):
            if report.row[f"{kind}_path"]:
                path, size = report.row[f"{kind}_path"], report.row[f"{kind}_bytes"]
                print(saved_line(kind, path, size, already=True))
        warn("unchanged since it was saved; not downloaded again (--force to download anyway)")
        return ExitCode.OK
    for item in report.saved:
        print(saved_line(item.kind, item.path, item.size))
    warn_saved(report)
    return ExitCode.OK


def cmd_watch(run: Run) -> ExitCode:
    from batchledger import workflow

    client, ledger = run.start_api_command()
    if run.args.all:
        batch_ids = [row["batch_id"] for row in ledger.batches_to_sweep()]
        if not batch_ids:
            print("No pending batches in the ledger.")
            return ExitCode.OK
    else:
        batch_ids = [run.batch_id(run.args.batch_id)]
    progress = Progress(sys.stderr)
    try:
        for report in workflow.follow(
            client,
            ledger,
            batch_ids,
            run.log_file,
            auto_save=run.args.auto_save,
            interval=run.args.interval,
            max_interval=run.args.max_interval,
        ):
            if report.error is not None:
                progress.end_line()
                warn(f"{report.batch_id}: {redact(report.error.message)}; still watching")
                continue
            assert report.batch is not None
            progress.show(report.batch)
            if report.batch["status"] in FINAL_STATUSES:
                progress.end_line()
                print_report(report, as_json=False)
    except KeyboardInterrupt:
        _interrupt_taken()
        progress.end_line()
        print(
            "batchledger: stopped watching; the batches keep running on the server",
            file=sys.stderr,
        )
        return ExitCode.INTERRUPTED
    return ExitCode.OK


def cmd_cancel(run: Run) -> ExitCode:
    from batchledger import workflow

    client, ledger = run.start_api_command()
    report = workflow.cancel(client, ledger, run.batch_id(run.args.batch_id), run.log_file)
    assert report.batch is not None
    print(f"batch_id: {report.batch_id}")
    print(f"status: {report.batch['status']}")
    if not run.args.wait or report.batch["status"] in FINAL_STATUSES:
        return ExitCode.OK
    for checked in workflow.follow(
        client,
        ledger,
        [report.batch_id],
        run.log_file,
        auto_save=False,
        interval=run.args.interval,
        max_interval=max(run.args.interval, DEFAULT_WATCH_MAX_INTERVAL),
    ):
        if checked.batch is None:  # a passing failure; follow tries again
            continue
        if checked.batch["status"] != report.batch["status"]:
            print(f"status: {checked.batch['status']}")
            report = checked
    return ExitCode.OK


def cmd_sync(run: Run) -> ExitCode:
    from batchledger import workflow

    client, ledger = run.start_api_command()
    report = workflow.sync(client, ledger, run.log_file)
    print(f"added: {len(report.added)}")
    print(f"updated: {len(report.updated)}")
    print(f"recovered: {len(report.recovered)}")
    print(f"unchanged: {report.unchanged}")
    return ExitCode.OK


def cmd_show(run: Run) -> ExitCode:
    ledger = run.open_ledger(create=False)
    if ledger is None:
        print("null" if run.args.json else "No batches in the ledger yet.")
        return ExitCode.OK
    batch_id = run.batch_id(run.args.batch_id)
    row = ledger.find_batch(batch_id)
    if row is None:
        raise BatchledgerError(
            f"{batch_id} is not in the ledger; 'batchledger status --batch-id {batch_id}' "
            "or 'batchledger sync' adds it",
            ExitCode.USAGE,
        )
    history = ledger.history(row["id"])
    if run.args.json:
        print(json_text({**row_json(row), "history": history}))
    else:
        print("\n".join(show_lines(row, history)))
    return ExitCode.OK


def cmd_list(run: Run) -> ExitCode:
    ledger = run.open_ledger(create=False)
    statuses = tuple(s.strip() for text in run.args.status for s in text.split(",") if s.strip())
    filters = BatchFilter(statuses=statuses, since=run.args.since, endpoint=run.args.endpoint)
    limit = None if run.args.all else run.args.limit
    rows = ledger.list_batches(filters, limit) if ledger is not None else []
    if run.args.json:
        print(json_text([row_json(row) for row in rows]))
    elif not rows:
        print("No batches match." if filters.active else "No batches in the ledger yet.")
    else:
        print(list_table(rows))
    if ledger is not None and limit is not None and len(rows) == limit:
        total = ledger.count_batches(filters)
        if total > len(rows):
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
        print(f"batchledger: error: {redact(exc.message)}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _interrupt_taken()
        if run is not None and run.logger is not None:
            run.logger.warning("INTERRUPTED by the user")
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
        if run is not None and run.logger is not None:
            run.logger.exception("UNEXPECTED %s", type(exc).__name__)
            where = f"; details in {run.log_file}"
        print(
            f"batchledger: error: unexpected {type(exc).__name__}: {redact(str(exc))}{where}",
            file=sys.stderr,
        )
        return int(ExitCode.FAILURE)
    finally:
        if run is not None:
            run.close()


def entry() -> None:
    """The console script."""
    install_interrupt_handler()
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown, as mypy's `hard_exit` does.

    Once `openai` is imported, tearing down its thousands of classes and modules adds
    about 0.1 s to every run (`python -c "import openai"`: 0.47 s; ending in `os._exit`:
    0.39 s). By now `main` has closed the ledger and
    the log; the standard streams are flushed here. A run with threads of its own still
    going (a sweep stopped by Ctrl-C, whose downloads are removing their temporary files)
    exits the usual way, which waits for them.
    """
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # the reader went away (`batchledger list | head`): stop quietly, as cat would
    except OSError as exc:  # a full disk, say: the output is incomplete, and must not pass
        with contextlib.suppress(OSError):
            print(
                f"batchledger: error: could not write the output: {exc.strerror}", file=sys.stderr
            )
        code = code or int(ExitCode.FAILURE)
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


# How long a Ctrl-C may go unanswered before it is raised again.
INTERRUPT_REPEAT_SECONDS = 1.0


def install_interrupt_handler() -> None:
    """Make Ctrl-C stick.

    Python drops an exception raised while a finaliser or weakref callback runs ("Exception
    ignored in: ..."), and a KeyboardInterrupt that lands there is lost: the run goes on
    waiting on the network (seen in tests/test_fault_campaign.py). So a Ctrl-C also arms a
    timer that raises it again until `main` has taken it.
    """
    if not hasattr(signal, "setitimer") or signal.getsignal(signal.SIGINT) is not (
        signal.default_int_handler
    ):
        return  # no timers here, or SIGINT is ignored or handled by whoever started us
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGALRM, _interrupted)


def _interrupted(signum: int, frame: object) -> None:
    signal.setitimer(signal.ITIMER_REAL, INTERRUPT_REPEAT_SECONDS)
    raise KeyboardInterrupt


def _interrupt_taken() -> None:
    """Disarm the repeat of a Ctrl-C: `main` has it."""
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)
