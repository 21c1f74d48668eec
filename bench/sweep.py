"""Sweep: `status --all` over 200 pending batches with 100 ms of server latency per request.

    .venv/bin/python bench/sweep.py [--quick]

Every sweep does the same work: the emulator runs in time mode with a step far in the
future, so no batch moves while being looked up (they all stay in_progress). A sweep of
this many batches reads them from the account's listing (two pages of 100); the baseline
is the sweep of a provider that cannot list (the emulator answers the listing with a 404),
which looks each batch up, as every sweep did before the listing.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from _common import (
    API_KEY,
    ENDPOINT,
    Report,
    add_emulator_file,
    child_env,
    cli,
    median,
    parse_args,
    progress,
    request_lines,
    run_measured,
)
from _common import seconds as fmt

from batchledger.emulator import EmulatorServer, EmulatorState, Fault
from batchledger.ledger import InputFile, open_ledger

# The default account; no base URL recorded (as for batches made before they were), so the
# sweep follows them wherever OPENAI_BASE_URL points: at this run's emulator.
WHERE = {"account": "default", "base_url": None}

LATENCY = 0.1
TARGET_FRACTION = 1 / 7
FEW = 20  # the small sweep whose CPU time is subtracted: what 200 - 20 batches cost
RETRIEVE_PATH = r"^/v1/batches/[^/]+$"
LIST_PATH = r"^/v1/batches$"
EACH = "a look-up each"  # in a sweep's name: the listing is refused, as by a provider without


def latency_faults(state: EmulatorState, *, refuse_listing: bool) -> None:
    """100 ms on every look-up and every list request; the listing refused if asked."""
    state.clear_faults()
    status = 404 if refuse_listing else None
    state.add_fault(Fault(path=LIST_PATH, method="GET", delay=LATENCY, status=status, times=None))
    state.add_fault(Fault(path=RETRIEVE_PATH, method="GET", delay=LATENCY, times=None))


def refusal_only(state: EmulatorState, *, refuse_listing: bool) -> None:
    """No latency; the listing refused if asked."""
    state.clear_faults()
    if refuse_listing:
        state.add_fault(Fault(path=LIST_PATH, method="GET", status=404, times=None))


def pending_batches(state: EmulatorState, db: Path, work: Path, count: int) -> None:
    """`count` in_progress batches on the emulator, each recorded in the ledger by a create."""
    source = work / "input.jsonl"
    input_id, digest = add_emulator_file(state, request_lines(20_000), "batch")
    source.write_bytes(state.get_file(input_id).path.read_bytes())
    input_ = InputFile(path=source, size=source.stat().st_size, sha256=digest)
    ledger = open_ledger(db)
    assert ledger is not None
    try:
        for _ in range(count):
            row, _ = ledger.batches.claim_submission(input_, ENDPOINT, "24h", force=True, **WHERE)
            ledger.batches.record_upload(row["id"], input_id)
            batch = state.create_batch(
                input_file_id=input_id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={"batchledger_ref": row["ref"]},
                output_expires_after=None,
            )
            state.advance(batch.id)  # validating -> in_progress
            ledger.batches.record_batch(batch.to_json(), action="create", row_id=row["id"], **WHERE)
    finally:
        ledger.close()


def parallel_delay_seconds(server: EmulatorServer, state: EmulatorState, threads: int) -> float:
    """Wall time of `threads` delayed lookups sent at once (LATENCY if delays overlap)."""
    batch_id = next(iter(state.batches))
    request = urllib.request.Request(
        f"{server.base_url}/batches/{batch_id}", headers={"Authorization": f"Bearer {API_KEY}"}
    )

    def fetch() -> None:
        with urllib.request.urlopen(request) as response:
            response.read()

    workers = [threading.Thread(target=fetch) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def requests(state: EmulatorState, path: str) -> int:
    with state.lock:
        return sum(1 for r in state.requests if r.method == "GET" and re.match(path, r.path))


def check_requests(state: EmulatorState, name: str, count: int) -> None:
    """Each batch was read once: looked up (listing refused) or on one of the pages."""
    looked, listed = requests(state, RETRIEVE_PATH), requests(state, LIST_PATH)
    expected = (count, 1) if EACH in name else (0, -(-count // 100))
    if (looked, listed) != expected:
        raise SystemExit(f"{name}: {looked} look-ups and {listed} list requests, not {expected}")


def time_sweeps(
    state: EmulatorState, commands: dict[str, list[str]], env: dict[str, str], work: Path, runs: int
) -> dict[str, float]:
    walls: dict[str, list[float]] = {name: [] for name in commands}
    for attempt in range(runs):
        for name, cmd in commands.items():
            progress(f"sweep run {attempt + 1}/{runs}: {name}")
            latency_faults(state, refuse_listing=EACH in name)
            state.clear_requests()
            walls[name].append(run_measured(cmd, env, work).wall)
            check_requests(state, name, len(state.batches))
    return {name: median(values) for name, values in walls.items()}


def ledger_of_newest(db: Path, copy: Path, count: int) -> None:
    """A copy of the ledger in which only the newest `count` batches are still to sweep
    (the newest: the first page of the listing, as for the sweep of all of them)."""
    shutil.copy(db, copy)
    conn = sqlite3.connect(copy)
    with conn:  # the others: completed with no files, so final and saved
        conn.execute(
            "UPDATE batches SET status = 'completed', output_file_id = NULL, "
            "error_file_id = NULL WHERE id <= (SELECT max(id) FROM batches) - ?",
            (count,),
        )
    conn.close()


def cpu_per_batch(
    state: EmulatorState,
    cmd: list[str],
    many: tuple[Path, int],
    few: tuple[Path, int],
    work: Path,
    runs: int,
    url: str,
) -> dict[bool, tuple[float, float, float]]:
    """Median CPU (user + system) of sweeping `many` and `few` batches, and the cost of one
    more; with the listing and with a look-up each (listing refused), interleaved.

    The difference of the two divided by the batches between them is what each polled
    batch costs, without the fixed cost of a run (imports, client, ledger, log).
    """
    cpus: dict[tuple[bool, int], list[float]] = {}
    for attempt in range(runs):
        for refuse in (False, True):
            refusal_only(state, refuse_listing=refuse)
            for db, count in (many, few):
                way = EACH if refuse else "listing"
                progress(f"CPU run {attempt + 1}/{runs}: {count} batches, {way}")
                cpu = run_measured(cmd, child_env(url, db), work).cpu
                cpus.setdefault((refuse, count), []).append(cpu)
    figures = {}
    for refuse in (False, True):
        high, low = median(cpus[(refuse, many[1])]), median(cpus[(refuse, few[1])])
        figures[refuse] = (high, low, (high - low) / (many[1] - few[1]))
    return figures


def main() -> None:
    args = parse_args(__doc__ or "")
    count, runs = 200, 1 if args.quick else 3
    sweep = ["status", "--all", "--no-auto-save"]
    commands = {
        f"{EACH}, concurrency 1": cli(*sweep, "--concurrency", "1"),
        f"{EACH}, default concurrency": cli(*sweep),
        "default concurrency": cli(*sweep),
        "concurrency 1": cli(*sweep, "--concurrency", "1"),
    }
    report = Report(
        f"sweep ({count} pending batches, {LATENCY * 1000:.0f} ms latency, {runs} runs)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        db = work / "ledger.db"
        with EmulatorServer(port=0, data_dir=work / "emulator", step_seconds=1e9) as server:
            state = server.state
            progress(f"creating {count} pending batches")
            pending_batches(state, db, work, count)
            env = child_env(server.base_url, db)
            latency_faults(state, refuse_listing=True)
            overlap = parallel_delay_seconds(server, state, 8)
            walls = time_sweeps(state, commands, env, work, runs)
            refusal_only(state, refuse_listing=False)
            fixed = time_sweeps(state, {"no latency": cli(*sweep)}, env, work, runs)["no latency"]
            few_db = work / "ledger-few.db"
            ledger_of_newest(db, few_db, FEW)
            cpu_runs = 3 if args.quick else 7
            cpu = cpu_per_batch(
                state, cli(*sweep), (db, count), (few_db, FEW), work, cpu_runs, server.base_url
            )
            statuses = {batch.status for batch in state.batches.values()}
    sequential = walls[f"{EACH}, concurrency 1"]
    report.add("emulator: 8 delayed lookups at once", fmt(overlap), f"~{LATENCY * 1000:.0f} ms")
    for name, wall in walls.items():
        report.add(f"status --all, {name}", fmt(wall))
    for name, wall in walls.items():
        if name == f"{EACH}, concurrency 1":
            continue
        target = name == "default concurrency"
        report.add(
            f"{name} / {EACH}, concurrency 1",
            f"{wall / sequential:.3f} (1/{sequential / wall:.1f})",
            f"<= {TARGET_FRACTION:.3f} (1/7)" if target else "",
            wall <= sequential * TARGET_FRACTION if target else None,
        )
    report.add("status --all, default, no latency", fmt(fixed))
    for refuse in (False, True):
        way = EACH if refuse else "listing"
        many, few, one = cpu[refuse]
        report.add(f"CPU (user + sys) of a sweep of {count}, no latency, {way}", fmt(many))
        report.add(f"CPU (user + sys) of a sweep of {FEW}, no latency, {way}", fmt(few))
        report.add(
            f"CPU per polled batch, {way}: ({count} - {FEW}) / {count - FEW}",
            f"{one * 1000:.2f} ms",
        )
    listing, each = cpu[False][2], cpu[True][2]
    report.add(
        f"CPU per polled batch, listing / {EACH}",
        f"{listing / each:.2f}",
        "<= 0.5",
        listing <= each / 2,
    )
    report.note(f"batch statuses after all sweeps: {', '.join(sorted(statuses))}")
    report.print()


if __name__ == "__main__":
    main()
