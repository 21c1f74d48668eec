"""Create of a 256 MB Anthropic input, streamed (batchledger.inline), against the SDK and httpx.

    .venv/bin/python bench/anthropic_create.py [--quick]

A local sink server (a thread of this process) reads each create request's body to the end,
counts its bytes and answers a MessageBatch. Each sender runs in a child of its own, whose
peak RSS and wall time are measured (run_measured):

- import floor: a child that imports anthropic and batchledger.inline, and exits;
- batchledger: `create_batch_streaming` (scan, then the body streamed through the SDK's post);
- bare SDK: `client.messages.batches.create(requests=...)`, the only way the SDK's batch API
  takes requests: each line parsed into objects (json.loads), then encoded again by the SDK;
- httpx: `httpx2.post` of the very same body, pre-built in a file, streamed from it: the
  transfer with no check and no objects (the floor for a sender of these bytes).

Targets (issue 21): peak RSS at most 30 MB above the import floor; wall time at most 1.15x
the bare SDK. The SDK cannot send the lines without building objects, so the ratio to httpx
posting the same bytes is reported too.
"""

from __future__ import annotations

import http.server
import json
import sys
import tempfile
import threading
from pathlib import Path

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

RSS_MARGIN_KIB = 30 * 1024
SDK_RATIO = 1.15
LINE_BYTES = 2600  # 256 MB in about 98,000 requests: under both of a batch's limits
RUNS = 3

FLOOR = "import anthropic, batchledger.inline"
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
    """Reads the body (fixed length or chunked) and answers a batch whose `processing` count
    is the number of bytes received, for the sender to print: each run is checked to have
    sent the whole body."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        size = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while (length := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                chunk = self.rfile.read(length)
                size += len(chunk)
                self.rfile.readline()
            self.rfile.readline()
        else:
            left = int(self.headers["Content-Length"])
            while left:
                chunk = self.rfile.read(min(left, 1024 * 1024))
                size += len(chunk)
                left -= len(chunk)
        data = json.dumps(
            {
                "id": "msgbatch_bench",
                "type": "message_batch",
                "processing_status": "in_progress",
                "request_counts": {
                    "processing": size,
                    "succeeded": 0,
                    "errored": 0,
                    "canceled": 0,
                    "expired": 0,
                },
                "created_at": "2026-12-06T08:00:00Z",
                "expires_at": "2026-12-07T08:00:00Z",
                "ended_at": None,
                "archived_at": None,
                "cancel_initiated_at": None,
                "results_url": None,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def write_input(path: Path, total: int) -> int:
    """Anthropic request lines of about LINE_BYTES, `total` bytes in all; their count."""
    head = b'{"custom_id": "request-%07d", "params": {"model": "claude-haiku-4-5", '
    tail = b'"max_tokens": 1024, "messages": [{"role": "user", "content": "Summarise: %s"}]}}\n'
    prose = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod " * 60
    filler = LINE_BYTES - len(head % 0) - len(tail % b"")
    written = lines = 0
    with path.open("wb") as out:
        while written < total:
            line = head % lines + tail % prose[lines % 50 : lines % 50 + filler]
            out.write(line)
            written += len(line)
            lines += 1
    return lines


def write_body(input_path: Path, body_path: Path) -> None:
    """The create request's body, as batchledger sends it, for httpx to post as bytes."""
    with input_path.open("rb") as lines, body_path.open("wb") as out:
        out.write(b'{"requests":[')
        for number, line in enumerate(lines):
            out.write((b"," if number else b"") + line)
        out.write(b"]}")


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
        report.note(f"{lines} requests, {size / MB:.1f} MB, body {body_path.stat().st_size} bytes")

        def measure(name: str, script: str, path: Path) -> list[Run]:
            measured = []
            for number in range(runs):
                progress(f"{name}, run {number + 1} of {runs}")
                cmd = [sys.executable, "-c", script, base_url, str(path)]
                run = run_measured(cmd, env, work)
                sent = int(run.stdout.read_text())
                # The SDK encodes the objects again (without the lines' spaces): nearly as long.
                if sent != body_size and not (name.startswith("bare") and sent > 0.98 * body_size):
                    raise SystemExit(f"{name} sent {sent} bytes, not {body_size}")
                measured.append(run)
            return measured

        floor = sorted(
            (run_measured([sys.executable, "-c", FLOOR], env, work) for _ in range(3)),
            key=lambda run: run.maxrss_kib,
        )[1]
        ours = measure("batchledger", OURS, input_path)
        httpx = measure("httpx, the same bytes", HTTPX, body_path)
        sdk = measure("bare SDK (objects)", SDK, input_path)
    server.shutdown()

    report.add("import floor (anthropic + batchledger.inline)", megabytes(floor.maxrss_kib))
    report.add("import floor: wall", fmt(floor.wall))
    ours_rss = max(run.maxrss_kib for run in ours)
    over = ours_rss - floor.maxrss_kib
    report.add("batchledger: peak RSS", megabytes(ours_rss))
    report.add(
        "batchledger: peak RSS - import floor",
        f"{over / 1024:+.1f} MB",
        f"<= {RSS_MARGIN_KIB // 1024} MB",
        over <= RSS_MARGIN_KIB,
    )
    report.add("bare SDK (objects): peak RSS", megabytes(max(run.maxrss_kib for run in sdk)))
    report.add("httpx (same bytes): peak RSS", megabytes(max(run.maxrss_kib for run in httpx)))
    for name, measured in (("batchledger", ours), ("bare SDK (objects)", sdk), ("httpx", httpx)):
        walls = [run.wall for run in measured]
        report.add(
            f"{name}: wall, median (fastest - slowest)",
            f"{fmt(median(walls))} ({fmt(min(walls))} - {fmt(max(walls))})",
        )
    ours_wall = median([run.wall for run in ours])
    sdk_ratio = ours_wall / median([run.wall for run in sdk])
    report.add(
        "batchledger / bare SDK",
        f"{sdk_ratio:.2f}x",
        f"<= {SDK_RATIO:.2f}x",
        sdk_ratio <= SDK_RATIO,
    )
    report.add(
        "batchledger / httpx posting the same bytes",
        f"{ours_wall / median([run.wall for run in httpx]):.2f}x",
    )
    report.add(
        "batchledger after its imports / httpx (which imports no SDK)",
        f"{(ours_wall - floor.wall) / median([run.wall for run in httpx]):.2f}x",
    )
    report.note("the bare SDK takes requests only as objects: each line json.loads'ed, re-encoded")
    report.print()


if __name__ == "__main__":
    main()
