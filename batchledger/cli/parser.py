"""The argparse parser: every command and its options, as data. It imports no command:
`args.command` names the command, and main.py's table maps that name to its function."""

import argparse
from typing import NoReturn

from batchledger.cli.defaults import (
    DEFAULT_CONCURRENCY,
    DEFAULT_ENDPOINT,
    DEFAULT_LIST_LIMIT,
    DEFAULT_WATCH_INTERVAL,
    DEFAULT_WATCH_MAX_INTERVAL,
    DEFAULT_WINDOW,
    DEMO_WATCH_INTERVAL,
)
from batchledger.cli.types import (
    expiry_duration,
    metadata_pair,
    non_negative_int,
    positive_float,
    positive_int,
    since_moment,
)
from batchledger.context import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from batchledger.errors import UsageError
from batchledger.version import __version__


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one-line usage errors (exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


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
        "--account",
        metavar="NAME",
        help="the account to work on (default: $BATCHLEDGER_ACCOUNT or 'default')",
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
        epilog="A batch ID may be a full id, a unique prefix of one in the ledger, or 'last'.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"batchledger {__version__}")
    # `args.command` is the name of the command given: main.py's HANDLERS runs it.
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    def command(name: str, help_: str) -> Parser:
        sub: Parser = commands.add_parser(name, parents=[common], help=help_, description=help_)
        return sub

    def sweep_options(sub: Parser) -> None:
        sub.add_argument(
            "--out-dir",
            metavar="DIR",
            help="with --all: save results into DIR (default: the working directory)",
        )
        sub.add_argument(
            "--include-synced",
            action="store_true",
            help="with --all: also save the results of batches found by sync",
        )

    def json_option(sub: Parser) -> None:
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")

    def estimate_options(sub: Parser) -> None:
        sub.add_argument(
            "--prices",
            metavar="FILE",
            help="TOML prices per model, over genai-prices' batch prices (as usage --prices)",
        )

    def auto_save_option(sub: Parser) -> None:
        sub.add_argument(
            "--auto-save",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="save the results of a finished batch (default: on)",
        )

    create = command("create", "upload a JSONL file and create a batch")
    create.add_argument("--in", dest="input", required=True, metavar="PATH", help="JSONL input")
    create.add_argument(
        "--endpoint",
        help=f"API endpoint (default: {DEFAULT_ENDPOINT}; /chat/completions on Azure)",
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
    create.add_argument(
        "--max-requests",
        type=positive_int,
        metavar="N",
        help="split into parts of at most N requests (default: the account's limit)",
    )
    create.add_argument(
        "--max-bytes",
        type=positive_int,
        metavar="N",
        help="split into parts of at most N bytes (default: the account's limit)",
    )
    create.add_argument(
        "--max-in-flight",
        type=positive_int,
        metavar="N",
        help="send at most N parts at once; the others wait, sent by later status or watch",
    )
    create.add_argument(
        "--max-tokens",
        type=positive_int,
        metavar="N",
        help="split into parts of at most N input tokens per model, counted offline",
    )
    create.add_argument(
        "--metadata",
        type=metadata_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="tag the batch (repeat; at most 15 pairs, keys up to 64 and values up to 512 chars)",
    )
    create.add_argument(
        "--output-expires-after",
        type=expiry_duration,
        metavar="DURATION",
        help="the API deletes the result files this long after the batch is made (1h to 30d)",
    )
    create.add_argument(
        "--input-expires-after",
        type=expiry_duration,
        metavar="DURATION",
        help="the API deletes the uploaded input this long after the upload (1h to 30d)",
    )
    estimate_options(create)
    create.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and the cost estimate (as estimate does); send and record nothing",
    )
    create.add_argument(
        "--max-cost",
        type=positive_float,
        metavar="USD",
        help="refuse (exit 3), before any upload, when the upper cost estimate is above USD",
    )
    json_option(create)

    estimate = command(
        "estimate",
        "the plan, the tokens and the cost range of an input; nothing sent (no API key needed)",
    )
    estimate.add_argument("--in", dest="input", required=True, metavar="PATH", help="JSONL input")
    estimate.add_argument(
        "--max-requests",
        type=positive_int,
        metavar="N",
        help="as create: parts of at most N requests",
    )
    estimate.add_argument(
        "--max-bytes", type=positive_int, metavar="N", help="as create: parts of at most N bytes"
    )
    estimate_options(estimate)
    json_option(estimate)

    status = command("status", "check a batch (or all pending ones), saving finished results")
    which = status.add_mutually_exclusive_group(required=True)
    which.add_argument("--batch-id", metavar="ID", help="the batch to check")
    which.add_argument(
        "--all", action="store_true", help="check every ledger batch not final or not saved"
    )
    auto_save_option(status)
    status.add_argument(
        "--out", metavar="PATH", help="where to save results (default: results_<batch_id>.jsonl)"
    )
    sweep_options(status)
    status.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"batches checked at once with --all (default: {DEFAULT_CONCURRENCY})",
    )
    json_option(status)

    retrieve = command("retrieve", "save the results of a finished batch")
    retrieve.add_argument("--batch-id", required=True, metavar="ID", help="the batch")
    retrieve.add_argument(
        "--out", metavar="PATH", help="where to save (default: results_<batch_id>.jsonl)"
    )
    retrieve.add_argument(
        "--force", action="store_true", help="download again even if already saved and unchanged"
    )

    watch = command("watch", "follow batches until they finish, then save them")
    followed = watch.add_mutually_exclusive_group(required=True)
    followed.add_argument("--batch-id", metavar="ID", help="the batch to follow")
    followed.add_argument("--all", action="store_true", help="follow every unfinished batch")
    auto_save_option(watch)
    sweep_options(watch)
    watch.add_argument(
        "--interval",
        type=positive_float,
        metavar="SECONDS",
        help=f"first pause between checks (default: {DEFAULT_WATCH_INTERVAL:g}; "
        f"{DEMO_WATCH_INTERVAL:g} on an emulator account such as demo)",
    )
    watch.add_argument(
        "--max-interval",
        type=positive_float,
        default=DEFAULT_WATCH_MAX_INTERVAL,
        metavar="SECONDS",
        help=f"longest pause while nothing changes (default: {DEFAULT_WATCH_MAX_INTERVAL:g})",
    )

    cancel = command("cancel", "cancel a batch and wait until it is cancelled")
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

    command("sync", "add the account's batches to the ledger (also those made elsewhere)")

    show = command("show", "everything the ledger knows about one batch")
    show.add_argument("batch_id", metavar="ID", help="the batch")
    json_option(show)

    list_ = command("list", "show the batches in the ledger (no API key needed)")
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
    list_.add_argument(
        "--parts", action="store_true", help="also the batches of jobs' parts (one row each)"
    )
    list_.add_argument("--model", metavar="NAME", help="only batches of this model")
    list_.add_argument(
        "--metadata",
        type=metadata_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only batches tagged so (repeat: all must match)",
    )
    json_option(list_)

    retry = command(
        "retry", "send again the requests of a batch or job that got no successful response"
    )
    retry.add_argument("batch_id", metavar="ID", help="the batch or job")
    retry.add_argument(
        "--all-failed",
        action="store_true",
        help="also requests that failed for other reasons (a 4xx): not only expired, "
        "cancelled, timed out, 429, 5xx or missing",
    )
    retry.add_argument(
        "--max-in-flight", type=positive_int, metavar="N", help="send at most N parts at once"
    )
    json_option(retry)

    accounts = command("accounts", "the accounts batches can be made on")
    json_option(accounts)

    where = command("where", "where the ledger, the accounts file and the logs are")
    json_option(where)

    prune = command(
        "prune", "delete from the account the files of final batches whose results are saved"
    )
    prune.add_argument(
        "--older-than",
        type=since_moment,
        metavar="AGE|DATE",
        help="only batches made before then: 7d, 12h, 30m, 2w, or a date",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="show what would be deleted; delete nothing"
    )
    json_option(prune)

    usage = command("usage", "requests and tokens summed from the ledger (no API key needed)")
    usage.add_argument(
        "--since",
        type=since_moment,
        metavar="AGE|DATE",
        help="only batches made since then: 7d, 12h, 30m, 2w, or a date",
    )
    usage.add_argument(
        "--by",
        choices=("model", "day", "account"),
        default="model",
        help="one line per model (default), per day or per account",
    )
    usage.add_argument(
        "--prices",
        metavar="FILE",
        help="TOML prices per model (input, cached_input, output per million tokens), "
        "over genai-prices' batch prices",
    )
    json_option(usage)

    export = command("export", "one row per input request with its result, as CSV or JSONL")
    export.add_argument("batch_id", metavar="ID", help="the batch")
    export.add_argument(
        "--format", choices=("csv", "jsonl"), default="csv", help="csv (default) or jsonl"
    )
    export.add_argument(
        "--out",
        metavar="PATH",
        help="where to write (default: export_<batch_id>.<format>; - for stdout)",
    )
    return parser
