"""python -m batchledger.emulator: serve the emulator until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence
from types import FrameType

from .message_batches import MAX_BODY_BYTES, MAX_REQUESTS
from .models import FLAVORS, TOKEN_LIMIT_CHECKS
from .server import EmulatorServer
from .state import AZURE_MAX_INPUT_LINES, DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_INPUT_LINES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batchledger.emulator",
        description="Serve a local emulator of the OpenAI Files and Batches API"
        " (or of Anthropic's Message Batches).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--data-dir", help="where file bytes live (default: a temporary dir)")
    parser.add_argument("--api-key", help="accept only this bearer token (default: any)")
    parser.add_argument(
        "--step-seconds",
        type=float,
        help="advance batches one step per N seconds (default: one step per retrieve)",
    )
    parser.add_argument(
        "--max-input-bytes",
        type=int,
        help=f"default: {DEFAULT_MAX_INPUT_BYTES} ({MAX_BODY_BYTES} with --flavor anthropic)",
    )
    parser.add_argument(
        "--max-input-lines",
        type=int,
        help=f"default: {DEFAULT_MAX_INPUT_LINES} ({AZURE_MAX_INPUT_LINES} with --flavor azure,"
        f" {MAX_REQUESTS} requests with --flavor anthropic)",
    )
    parser.add_argument(
        "--flavor",
        choices=FLAVORS,
        default="openai",
        help="azure serves Azure OpenAI's classic /openai/... paths with api-key auth;"
        " anthropic serves Anthropic's /v1/messages/batches with x-api-key auth",
    )
    parser.add_argument(
        "--enqueued-token-limit",
        type=_positive_int,
        metavar="N",
        help="fail batches past N enqueued tokens per model (input bytes / 4; default: none)",
    )
    parser.add_argument(
        "--token-limit-at",
        choices=TOKEN_LIMIT_CHECKS,
        default="validate",
        help="check the token limit when a batch leaves validating, or refuse the create",
    )
    parser.add_argument(
        "--no-metadata",
        dest="keep_metadata",
        action="store_false",
        help="ignore batch metadata, like a provider without it (batches show null)",
    )
    parser.add_argument(
        "--no-file-listing",
        dest="list_files",
        action="store_false",
        help="answer GET of the files list with 404, like a provider that cannot list files",
    )
    parser.add_argument(
        "--persist",
        action="store_true",
        help="keep files and batches in DATA_DIR/state.json, shared with other emulators on it",
    )
    parser.add_argument(
        "--relative-results-url",
        action="store_true",
        help="anthropic: send results_url as a path, not an absolute URL, as some proxies do",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Stop on SIGINT and SIGTERM alike, along the clean path that removes a temp data dir."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server = EmulatorServer(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        api_key=args.api_key,
        step_seconds=args.step_seconds,
        max_input_bytes=args.max_input_bytes,
        max_input_lines=args.max_input_lines,
        verbose=args.verbose,
        enqueued_token_limit=args.enqueued_token_limit,
        token_limit_at=args.token_limit_at,
        flavor=args.flavor,
        keep_metadata=args.keep_metadata,
        list_files=args.list_files,
        persist=args.persist,
        relative_results_url=args.relative_results_url,
    )
    # Set explicitly: a shell script's `&` starts us with SIGINT ignored, and scripts that
    # stop the emulator with kill -INT should still work.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        server.start()
        print(f"batchledger emulator listening on {server.base_url}", flush=True)
        while True:
            # A join with a timeout stays responsive to signals.
            server.wait(timeout=1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
