"""What the benchmark scripts share: measured child processes, ledgers, emulator set-up, tables.

Each measured command runs under a small launcher that reports the command's own peak RSS
(see run_measured).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from batchledger.emulator import EmulatorState, StoredBatch
from batchledger.emulator.models import RequestCounts
from batchledger.ledger import open_ledger

API_KEY = "sk-test"
VENV_BIN = Path(sys.executable).parent
MB = 1000 * 1000
MIB = 1024 * 1024
GIB = 1024 * MIB
COPY_CHUNK = 8 * MIB
ENDPOINT = "/v1/responses"


# --- command line and output ------------------------------------------------------------


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster variant")
    return parser.parse_args()


@dataclass
class Figure:
    """One reported number, with its target when it has one (None: for information)."""

    name: str
    value: str
    target: str = ""
    met: bool | None = None


@dataclass
class Report:
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.figures.append(Figure(name, value, target, met))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def __post_init__(self) -> None:
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        self.note(f"load average at start: {load} ({os.cpu_count()} CPUs)")

    def print(self) -> None:
        rows = [("figure", "value", "target", "result")]
        rows += [(f.name, f.value, f.target, verdict(f.met)) for f in self.figures]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        print(f"\n== {self.title} ==")
        for index, row in enumerate(rows):
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
            if index == 0:
                print("  ".join("-" * width for width in widths))
        for text in self.notes:
            print(f"note: {text}")
        sys.stdout.flush()


def verdict(met: bool | None) -> str:
    if met is None:
        return "info"
    return "PASS" if met else "FAIL"


def progress(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def megabytes(kib: float) -> str:
    return f"{kib / 1024:.1f} MB"


# --- measured child processes -----------------------------------------------------------


@dataclass(frozen=True)
class Run:
    wall: float
    maxrss_kib: int
    returncode: int
    stdout: Path
    stderr: Path
    cpu: float = 0.0  # user + system seconds of the command (not of the launcher)


class ChildFailed(RuntimeError):
    pass


def cli(*args: str) -> list[str]:
    """The batchledger console script of this venv (what a user runs)."""
    script = VENV_BIN / "batchledger"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "batchledger", *args]


def child_env(base_url: str | None = None, db: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BATCHLEDGER_"))}
    env["OPENAI_API_KEY"] = API_KEY
    if base_url is not None:
        env["OPENAI_BASE_URL"] = base_url
    if db is not None:
        env["BATCHLEDGER_DB"] = str(db)
    return env


TIME_BIN = Path("/usr/bin/time")
# Fallback launcher where GNU time is missing: times its child and writes its rusage.
LAUNCHER = """
import os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
wall = time.perf_counter() - started
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {wall} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: Sequence[str], env: dict[str, str], cwd: Path, *, check: bool = True) -> Run:
    """Run `cmd` to the end; its wall time, its own peak RSS and CPU time.

    The child is started by a small launcher (GNU time, else a bare Python): on Linux a
    child's ru_maxrss includes the memory of whatever process forked it, at exec, so a
    child forked straight from this (large) process would report this process's RSS.
    """
    out, err, usage = cwd / ".bench.stdout", cwd / ".bench.stderr", cwd / ".bench.rusage"
    gnu_time = TIME_BIN.exists()
    if gnu_time:
        launched = [str(TIME_BIN), "-f", "%M %U %S", "-o", str(usage), *cmd]
    else:
        launched = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(usage), *cmd]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.perf_counter()
        returncode = subprocess.call(launched, stdout=stdout, stderr=stderr, env=env, cwd=cwd)
        wall = time.perf_counter() - started
    # GNU time may write "Command exited with non-zero status N" before the figures.
    fields = usage.read_text().split()
    if gnu_time:
        maxrss, cpu = int(fields[-3]), float(fields[-2]) + float(fields[-1])
    else:
        maxrss, wall, cpu = int(fields[0]), float(fields[1]), float(fields[2])
    run = Run(wall, maxrss, returncode, out, err, cpu)
    if check and run.returncode != 0:
        raise ChildFailed(
            f"{' '.join(cmd)} exited {run.returncode}: {err.read_text(errors='replace')[-2000:]}"
        )
    return run


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def import_floor(cwd: Path, runs: int = 3) -> Run:
    """The child that only imports what a command calling the API imports; median RSS run."""
    cmd = [
        sys.executable,
        "-c",
        "import openai, batchledger.providers.openai, batchledger.sweep",
    ]
    measured = [run_measured(cmd, child_env(), cwd) for _ in range(runs)]
    return sorted(measured, key=lambda run: run.maxrss_kib)[len(measured) // 2]


# --- files ------------------------------------------------------------------------------


def warm(path: Path) -> None:
    """Read the emulator's copy into the page cache, so no run waits on the disk for it.

    This machine does not keep a gigabyte cached between runs that each write another
    gigabyte; without this, whichever command ran after an eviction was slowed by reads.
    """
    with path.open("rb", buffering=0) as source:
        while source.read(COPY_CHUNK):
            pass


def sha256_file(path: Path) -> str:
    from batchledger.inputs import sha256_of  # the project's own streaming hash

    return sha256_of(path)


def write_chunks(path: Path, chunks: Iterator[bytes]) -> tuple[int, int, str]:
    """Write `chunks` to `path`; its size, its line count and its sha256."""
    digest = hashlib.sha256()
    size = lines = 0
    with path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
    return size, lines, digest.hexdigest()


def request_lines(total_bytes: int, line_bytes: int = 1000) -> Iterator[bytes]:
    """Valid /v1/responses batch input lines of about `line_bytes`, in chunks of ~8 MiB."""
    head = '{"custom_id": "request-%09d", "method": "POST", "url": "%s", '
    filler_len = line_bytes - len(head % (0, ENDPOINT)) - 60
    body = '"body": {"model": "gpt-4o-mini", "input": "Summarise: %s"}}\n'
    template = (head + body).encode()
    endpoint = ENDPOINT.encode()
    yield from _lines(total_bytes, lambda n: template % (n, endpoint, _filler(n, filler_len)))


def result_lines(total_bytes: int, line_bytes: int = 1024) -> Iterator[bytes]:
    """Batch output lines (one Response per request) of about `line_bytes`."""
    template = (
        b'{"id": "batch_req_%024d", "custom_id": "request-%09d", "response": {"status_code": 200,'
        b' "request_id": "req_%032d", "body": {"object": "response", "model": "gpt-4o-mini",'
        b' "status": "completed", "output_text": "%s"}}, "error": null}\n'
    )
    filler_len = line_bytes - len(template % (0, 0, 0, b"")) + 1
    yield from _lines(total_bytes, lambda n: template % (n, n, n, _filler(n, filler_len)))


_PROSE = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 64


def _filler(n: int, length: int) -> bytes:
    """Text of `length` bytes that differs from line to line (no JSON escapes needed)."""
    offset = n % 73
    return _PROSE[offset : offset + length]


def _lines(total_bytes: int, line: Callable[[int], bytes]) -> Iterator[bytes]:
    written = n = 0
    while written < total_bytes:
        parts: list[bytes] = []
        size = 0
        while size < COPY_CHUNK and written + size < total_bytes:
            text = line(n)
            parts.append(text)
            size += len(text)
            n += 1
        written += size
        yield b"".join(parts)


# --- emulator state ---------------------------------------------------------------------


def add_emulator_file(
    state: EmulatorState, chunks: Iterator[bytes], purpose: str
) -> tuple[str, str]:
    """Stream `chunks` into the emulator's data dir as a new file; its id and sha256."""
    file_id, part = state.new_upload()
    size, lines, digest = write_chunks(part, chunks)
    state.add_file(
        file_id,
        part,
        filename=f"{file_id}.jsonl",
        purpose=purpose,
        size=size,
        lines=lines,
        expires_after=None,
    )
    return file_id, digest


def add_completed_batch(state: EmulatorState, input_file_id: str, output_file_id: str) -> str:
    """Register a batch that has completed with `output_file_id` as its output."""
    now = int(time.time())
    output = state.get_file(output_file_id)
    batch = StoredBatch(
        id=f"batch_{uuid.uuid4().hex}",
        endpoint=ENDPOINT,
        input_file_id=input_file_id,
        completion_window="24h",
        created_at=now - 600,
        expires_at=now + 86_400,
        metadata=None,
        model="gpt-4o-mini",
        output_expires_after=None,
        input_path=None,
        input_bytes=state.get_file(input_file_id).bytes,
        input_lines=output.lines,
        status="completed",
        in_progress_at=now - 590,
        finalizing_at=now - 60,
        completed_at=now - 30,
        output_file_id=output_file_id,
        request_counts=RequestCounts(output.lines, output.lines, 0),
        last_step_at=now - 30,
    )
    with state.lock:
        state.batches[batch.id] = batch
    return batch.id


# --- ledgers ----------------------------------------------------------------------------

STATUS_MIX = (
    ("completed",) * 85
    + ("failed",) * 5
    + ("expired",) * 3
    + ("cancelled",) * 2
    + ("in_progress",) * 5
)


USAGE_JSON = (
    '{"input_tokens": %d, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": %d, '
    '"output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": %d}'
)


def make_ledger(path: Path, batches: int, history_per_batch: int = 3, seed: int = 7) -> None:
    """A ledger migrated by the project, then `batches` realistic rows in one transaction."""
    ledger = open_ledger(path)
    assert ledger is not None
    ledger.close()
    rng = random.Random(seed)
    start = datetime(2024, 11, 25, tzinfo=UTC)
    step = (datetime(2026, 11, 25, tzinfo=UTC) - start) / batches
    conn = sqlite3.connect(path)
    try:
        with conn:
            known = {info[1] for info in conn.execute("PRAGMA table_info(batches)")}
            rows = [_batch_row(i, start + step * i, rng) for i in range(1, batches + 1)]
            columns = [name for name in rows[0] if name in known]
            conn.executemany(
                f"INSERT INTO batches ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})",
                [tuple(row[name] for name in columns) for row in rows],
            )
            history = [
                (i, row["recorded_at"], action, f"status {row['status']}", "logs/batch.log")
                for i, row in enumerate(rows, start=1)
                for action in ("submit", "upload", "create", "status")[:history_per_batch]
            ]
            conn.executemany(
                "INSERT INTO history (batch, at, action, detail, log_file) VALUES (?, ?, ?, ?, ?)",
                history,
            )
    finally:
        conn.close()


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _batch_row(i: int, recorded: datetime, rng: random.Random) -> dict[str, object]:
    recorded += timedelta(seconds=rng.randint(0, 600))
    status = rng.choice(STATUS_MIX)
    total = rng.randint(1, 50_000)
    failed = rng.randint(0, total // 50) if status == "completed" else 0
    final = status != "in_progress"
    done = recorded + timedelta(minutes=rng.randint(5, 1400))
    saved = status == "completed" and rng.random() < 0.97
    batch_id = f"batch_{rng.getrandbits(128):032x}"
    return {
        "ref": f"bl_{rng.getrandbits(128):032x}",
        "batch_id": batch_id,
        "origin": "create",
        "input_path": f"/home/ana/jobs/2026/requests_{i:06d}.jsonl",
        "input_bytes": total * rng.randint(300, 1200),
        "input_sha256": f"{rng.getrandbits(256):064x}",
        "input_file_id": f"file-{rng.getrandbits(120):030x}"[:29],
        "endpoint": rng.choice((ENDPOINT, ENDPOINT, "/v1/chat/completions", "/v1/embeddings")),
        "completion_window": "24h",
        "status": status,
        "created_at": _iso(recorded),
        "in_progress_at": _iso(recorded + timedelta(seconds=rng.randint(2, 90))),
        "finalizing_at": _iso(done - timedelta(seconds=30)) if status == "completed" else None,
        "completed_at": _iso(done) if status == "completed" else None,
        "failed_at": _iso(done) if status == "failed" else None,
        "expired_at": _iso(done) if status == "expired" else None,
        "cancelled_at": _iso(done) if status == "cancelled" else None,
        "expires_at": _iso(recorded + timedelta(hours=24)),
        "requests_total": total,
        "requests_completed": total - failed if final else rng.randint(0, total),
        "requests_failed": failed,
        "output_file_id": f"file-{rng.getrandbits(120):030x}"[:29] if final else None,
        "output_path": f"/home/ana/jobs/2026/results_{batch_id}.jsonl" if saved else None,
        "output_bytes": total * rng.randint(800, 2000) if saved else None,
        "output_sha256": f"{rng.getrandbits(256):064x}" if saved else None,
        "output_saved_at": _iso(done + timedelta(minutes=rng.randint(1, 600))) if saved else None,
        "usage": USAGE_JSON % (total * 120, total * 300, total * 420) if final else None,
        "recorded_at": _iso(recorded),
        "checked_at": _iso(done),
    }
