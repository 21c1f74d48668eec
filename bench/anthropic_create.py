"""Create of a 256 MB Anthropic input: the whole command, the streaming function alone, the
SDK and httpx, against one local sink.

    .venv/bin/python bench/anthropic_create.py [--quick]

A local sink server (a thread of this process) answers what the senders ask of Message
Batches (see Sink): it reads each create request's body to the end, counts its bytes and
requests, and answers a MessageBatch. Each sender runs in a child of its own, whose peak
RSS and wall time are measured (run_measured); the senders take turns, run by run:

- batchledger create: the whole command, `python -m batchledger --account sink create --in
  big.jsonl --force`, with an accounts.toml naming `kind = "anthropic"` and the sink as its
  `base_url`, its key in an environment variable, BATCHLEDGER_DB and BATCHLEDGER_CONFIG in
  the bench's temporary folder (made once, before the runs: `--force` sends the same input
  again), the log under it. The command checks every line's shape (inline.scan_requests),
  hashes the input in a thread, scans an estimate beside the send, reads the server's
  clock (a one-item listing), streams the create, records the batch (a look-up). Each run
  is checked: the batch id printed is the sink's newest, its body whole, the ledger's row
  holds it with every request, the log names CREATE_BATCH and holds no key;
- create_batch_streaming: `batchledger.inline.create_batch_streaming` alone (scan, then the
  body streamed through the SDK's post);
- bare SDK: `client.messages.batches.create(requests=...)`, the only way the SDK's batch API
  takes requests: each line parsed into objects (json.loads), then encoded again by the SDK;
- httpx: `httpx2.post` of the very same body, pre-built in a file, streamed from it: the
  transfer with no check and no objects (the floor for a sender of these bytes).

Import floors: the command's, a child that imports what the command imports before it
reads a byte (COMMAND_FLOOR); the function's, anthropic and batchledger.inline.

Targets (issue 21): peak RSS at most 30 MB above the import floor; wall time at most 1.15x
the bare SDK; for the command and for the function. The SDK cannot send the lines without
building objects, so the ratio to httpx posting the same bytes is reported too.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from _common import (
    MB,
    Report,
    Run,
    child_env,
    median,
    megabytes,
    parse_args,
    progress,
    run_measured,
)
from _common import seconds as fmt

from batchledger.ledger import open_ledger

RSS_MARGIN_KIB = 30 * 1024
SDK_RATIO = 1.15
LINE_BYTES = 2600  # 256 MB in about 98,000 requests: under both of a batch's limits
RUNS = 3
KEY_ENV = "BENCH_ANTHROPIC_KEY"
KEY = "sk-ant-bench-key-0123456789"

FLOOR = "import anthropic, batchledger.inline"
# What `create` on an anthropic account imports (checked with `python -X importtime -m
# batchledger --account sink create ...`): the command line, the SDK and the provider, the
# API's create and the steps it calls, and genai_prices (the estimate's thread prices the
# model with it; claude models have no tokenizer here, so quicktok is not loaded).
COMMAND_FLOOR = (
    "import anthropic, genai_prices, batchledger.cli.main, batchledger.api.client, "
    "batchledger.batch, batchledger.providers.anthropic, batchledger.estimate, "
    "batchledger.inputs, batchledger.token_budget"
)
OURS = """
import sys, anthropic
from pathlib import Path
from batchledger.inline import create_batch_streaming
client = anthropic.Anthropic(api_key="sk-ant-test", base_url=sys.argv[1], max_retries=0)
batch = create_batch_streaming(client, Path(sys.argv[2]))
print(batch["request_counts"]["processing"])
"""
SDK = """
import json, sys, anthropic
client = anthropic.Anthropic(api_key="sk-ant-test", base_url=sys.argv[1], max_retries=0)
with open(sys.argv[2], "rb") as lines:
    requests = [json.loads(line) for line in lines if line.strip()]
batch = client.messages.batches.create(requests=requests)
print(batch.request_counts.processing)
"""
HTTPX = """
import sys, httpx2
with open(sys.argv[2], "rb") as body:
    response = httpx2.post(
        sys.argv[1] + "/v1/messages/batches", content=body, timeout=None,
        headers={"content-type": "application/json", "x-api-key": "sk-ant-test",
                 "anthropic-version": "2023-06-01"},
    )
response.raise_for_status()
print(response.json()["request_counts"]["processing"])
"""


class Sink(http.server.BaseHTTPRequestHandler):
    """What the senders ask of Message Batches, answered as the API does (the shapes of
    batchledger/emulator/anthropic_api.py), with the `Date` header `http.server` sends:

    - `POST /v1/messages/batches`: the body read to its end (fixed length or chunked), its
      bytes and its requests (occurrences of `"custom_id"`) counted and kept in `RECEIVED`
      under a new batch id; the answer an `in_progress` MessageBatch whose `processing`
      count is the requests received;
    - `GET /v1/messages/batches?limit=N`: a list page of the batches made, newest first
      (the command reads the server's clock from the Date of a one-item listing);
    - `GET /v1/messages/batches/{id}`: that batch (the command records it after the create).

    Each run is checked, by the bench, to have sent the whole body."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        if urlsplit(self.path).path != BATCHES:
            self.answer(404, {"type": "error", "error": {"type": "not_found_error"}})
            return
        size = requests = 0
        tail = b""
        for chunk in self.body_chunks():
            size += len(chunk)
            requests += (tail + chunk).count(CUSTOM_ID)
            tail = chunk[-(len(CUSTOM_ID) - 1) :]
        with LOCK:
            batch_id = f"msgbatch_bench{len(RECEIVED) + 1:06d}"
            RECEIVED[batch_id] = Received(size, requests, datetime.now(UTC))
        self.answer(200, message_batch(batch_id))

    def body_chunks(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while (length := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                yield self.rfile.read(length)
                self.rfile.readline()
            self.rfile.readline()
        else:
            left = int(self.headers["Content-Length"])
            while left:
                chunk = self.rfile.read(min(left, 1024 * 1024))
                if not chunk:
                    raise ConnectionError("the body ended early")
                left -= len(chunk)
                yield chunk

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == BATCHES:
            limit = int(parse_qs(parts.query).get("limit", ["20"])[0])
            with LOCK:
                newest = sorted(RECEIVED, reverse=True)
            data = [message_batch(batch_id) for batch_id in newest[:limit]]
            self.answer(
                200,
                {
                    "data": data,
                    "has_more": len(newest) > limit,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                },
            )
        elif parts.path.startswith(BATCHES + "/") and parts.path.count("/") == 4:
            batch_id = parts.path.rsplit("/", 1)[1]
            if batch_id in RECEIVED:
                self.answer(200, message_batch(batch_id))
            else:
                self.answer(404, {"type": "error", "error": {"type": "not_found_error"}})
        else:
            self.answer(404, {"type": "error", "error": {"type": "not_found_error"}})

    def answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)  # with Date: the server's clock
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@dataclass(frozen=True)
class Received:
    bytes: int
    requests: int
    at: datetime


BATCHES = "/v1/messages/batches"
CUSTOM_ID = b'"custom_id"'
LOCK = threading.Lock()
RECEIVED: dict[str, Received] = {}


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def message_batch(batch_id: str) -> dict[str, Any]:
    """A MessageBatch in progress, as the API answers a create or a look-up."""
    received = RECEIVED[batch_id]
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": "in_progress",
        "request_counts": {
            "processing": received.requests,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        },
        "created_at": rfc3339(received.at),
        "expires_at": rfc3339(received.at + timedelta(days=1)),
        "ended_at": None,
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": None,
    }


def write_input(path: Path, total: int) -> int:
    """Anthropic request lines of about LINE_BYTES, at most `total` bytes in all (the
    profile's 256 MB is a limit on the input: one byte more would make a job); their count."""
    head = b'{"custom_id": "request-%07d", "params": {"model": "claude-haiku-4-5", '
    tail = b'"max_tokens": 1024, "messages": [{"role": "user", "content": "Summarise: %s"}]}}\n'
    prose = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod " * 60
    filler = LINE_BYTES - len(head % 0) - len(tail % b"")
    written = lines = 0
    with path.open("wb") as out:
        while True:
            line = head % lines + tail % prose[lines % 50 : lines % 50 + filler]
            if written + len(line) > total:
                return lines
            out.write(line)
            written += len(line)
            lines += 1


def write_body(input_path: Path, body_path: Path) -> None:
    """The create request's body, as batchledger sends it, for httpx to post as bytes."""
    with input_path.open("rb") as lines, body_path.open("wb") as out:
        out.write(b'{"requests":[')
        for number, line in enumerate(lines):
            out.write((b"," if number else b"") + line)
        out.write(b"]}")


def newest() -> tuple[str, Received]:
    with LOCK:
        batch_id = max(RECEIVED)
        return batch_id, RECEIVED[batch_id]


@dataclass
class Sender:
    name: str
    cmd: list[str]
    env: dict[str, str]
    check: Callable[[Run], None]
    runs: list[Run]


def main() -> None:
    args = parse_args(__doc__ or "")
    total = (32 if args.quick else 256) * MB
    runs = 1 if args.quick else RUNS
    report = Report(f"Anthropic create of a {total // MB} MB input")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    env = child_env()
    with tempfile.TemporaryDirectory(prefix="bench-anthropic-") as folder:
        work = Path(folder)
        input_path, body_path = work / "claude.jsonl", work / "body.json"
        progress(f"writing {total // MB} MB of request lines")
        lines = write_input(input_path, total)
        write_body(input_path, body_path)
        size, body_size = input_path.stat().st_size, body_path.stat().st_size
        report.note(f"{lines} requests, {size} bytes, body {body_size} bytes")

        db, config = work / "ledger.db", work / "accounts.toml"
        config.write_text(
            f'[accounts.sink]\nkind = "anthropic"\nbase_url = "{base_url}"\n'
            f'api_key_env = "{KEY_ENV}"\n'
        )
        ledger = open_ledger(db)  # made once: each run's create, --force, finds it made
        assert ledger is not None
        ledger.close()
        command_env = {**env, KEY_ENV: KEY, "BATCHLEDGER_DB": str(db)}
        command_env["BATCHLEDGER_CONFIG"] = str(config)

        def sent_whole(name: str, near: float = 1.0) -> None:
            _, received = newest()
            if received.requests != lines or not near * body_size <= received.bytes <= body_size:
                raise SystemExit(
                    f"{name} sent {received.bytes} bytes and {received.requests} requests, "
                    f"not {body_size} and {lines}"
                )

        def check_printed(name: str, near: float = 1.0) -> Callable[[Run], None]:
            def check(run: Run) -> None:
                sent_whole(name, near)
                if int(run.stdout.read_text()) != lines:
                    raise SystemExit(f"{name} printed {run.stdout.read_text()!r}, not {lines}")

            return check

        def check_command(run: Run) -> None:
            sent_whole("batchledger create")
            batch_id, _ = newest()
            if batch_id not in run.stdout.read_text():
                raise SystemExit(f"create printed {run.stdout.read_text()!r}, not {batch_id}")
            conn = sqlite3.connect(db)
            try:
                row = conn.execute(
                    "SELECT account, status, requests_total FROM batches WHERE batch_id = ?",
                    (batch_id,),
                ).fetchone()
            finally:
                conn.close()
            if row != ("sink", "in_progress", lines):
                raise SystemExit(f"the ledger's row of {batch_id} is {row}")
            logs = sorted((work / "logs").glob("batch_*.log"), key=os.path.getmtime)
            text = logs[-1].read_text() if logs else ""
            if "CREATE_BATCH" not in text or KEY in text:
                raise SystemExit(f"the create's log {logs[-1:]} is not as it should be")

        python = sys.executable
        command = [python, "-m", "batchledger", "--account", "sink", "create"]
        senders = [
            Sender(
                "batchledger create",
                [*command, "--in", str(input_path), "--force"],
                command_env,
                check_command,
                [],
            ),
            Sender(
                "create_batch_streaming",
                [python, "-c", OURS, base_url, str(input_path)],
                env,
                check_printed("create_batch_streaming"),
                [],
            ),
            Sender(
                "httpx (same bytes)",
                [python, "-c", HTTPX, base_url, str(body_path)],
                env,
                check_printed("httpx"),
                [],
            ),
            # The SDK encodes the objects again (without the lines' spaces): nearly as long.
            Sender(
                "bare SDK (objects)",
                [python, "-c", SDK, base_url, str(input_path)],
                env,
                check_printed("the bare SDK", near=0.98),
                [],
            ),
        ]

        def floor_of(script: str) -> Run:
            """The median RSS of 3 runs, with their median wall."""
            measured = [run_measured([python, "-c", script], env, work) for _ in range(3)]
            middle = sorted(measured, key=lambda run: run.maxrss_kib)[1]
            return dataclasses.replace(middle, wall=median([run.wall for run in measured]))

        progress("import floors")
        command_floor, floor = floor_of(COMMAND_FLOOR), floor_of(FLOOR)
        for number in range(runs):
            for sender in senders:
                progress(f"{sender.name}, run {number + 1} of {runs}")
                run = run_measured(sender.cmd, sender.env, work)
                sender.check(run)
                sender.runs.append(run)
    server.shutdown()

    ours, function, httpx, sdk = (sender.runs for sender in senders)
    report.add("import floor of the command (COMMAND_FLOOR)", megabytes(command_floor.maxrss_kib))
    report.add("import floor of the function (anthropic + batchledger.inline)",
               megabytes(floor.maxrss_kib))  # fmt: skip
    report.add("import floors: wall, median", f"{fmt(command_floor.wall)}, {fmt(floor.wall)}")
    for name, measured, base in (
        ("batchledger create", ours, command_floor),
        ("create_batch_streaming", function, floor),
    ):
        peak = max(run.maxrss_kib for run in measured)
        over = peak - base.maxrss_kib
        report.add(f"{name}: peak RSS", megabytes(peak))
        report.add(
            f"{name}: peak RSS - its import floor",
            f"{over / 1024:+.1f} MB",
            f"<= {RSS_MARGIN_KIB // 1024} MB",
            over <= RSS_MARGIN_KIB,
        )
    report.add("bare SDK (objects): peak RSS", megabytes(max(run.maxrss_kib for run in sdk)))
    report.add("httpx (same bytes): peak RSS", megabytes(max(run.maxrss_kib for run in httpx)))
    for sender in senders:
        walls = [run.wall for run in sender.runs]
        cpus = [run.cpu for run in sender.runs]
        report.add(
            f"{sender.name}: wall, median (fastest - slowest); CPU, median",
            f"{fmt(median(walls))} ({fmt(min(walls))} - {fmt(max(walls))}); {fmt(median(cpus))}",
        )
    sdk_wall = median([run.wall for run in sdk])
    httpx_wall = median([run.wall for run in httpx])
    for name, measured, base in (
        ("batchledger create", ours, command_floor),
        ("create_batch_streaming", function, floor),
    ):
        wall = median([run.wall for run in measured])
        report.add(
            f"{name} / bare SDK",
            f"{wall / sdk_wall:.2f}x",
            f"<= {SDK_RATIO:.2f}x",
            wall / sdk_wall <= SDK_RATIO,
        )
        report.add(f"{name} / httpx posting the same bytes", f"{wall / httpx_wall:.2f}x")
        report.add(
            f"{name} after its imports / httpx (which imports no SDK)",
            f"{(wall - base.wall) / httpx_wall:.2f}x",
        )
    report.note("the bare SDK takes requests only as objects: each line json.loads'ed, re-encoded")
    report.print()


if __name__ == "__main__":
    main()
