"""A randomized fault campaign on an Anthropic account: random commands under random faults
(and kills mid-create) on the emulator's Message Batches, then the commands a user would
run next must restore every invariant: one batch per create, every batch on the server in
the ledger once, every ended batch's results saved, one line per answer, in input order.

Each schedule is drawn from its own seed, its server's clock 20 minutes ahead, behind or on
time. A failing schedule names its seed; replay it with
BATCHLEDGER_CAMPAIGN_SEED=<seed> BATCHLEDGER_ANTHROPIC_SCHEDULES=1. More schedules (300 by
hand): BATCHLEDGER_ANTHROPIC_SCHEDULES=300; for the jobs' campaign (below),
BATCHLEDGER_ANTHROPIC_JOB_SCHEDULES=300.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anthropic._base_client
import pytest

import batchledger.providers as seam
from batchledger.cli import main
from batchledger.emulator import EmulatorServer, Fault

# A schedule takes about a second: 12 keep CI's slice short; run 300 by hand.
SCHEDULES = int(os.environ.get("BATCHLEDGER_ANTHROPIC_SCHEDULES", "12"))
FIRST_SEED = int(os.environ.get("BATCHLEDGER_CAMPAIGN_SEED", "1000"))
KEY = "sk-ant-campaign-0123456789"
# Request counts differ, so that no two inputs can be taken for one another.
INPUTS = {"alpha.jsonl": 2, "beta.jsonl": 3, "gamma.jsonl": 5}
API_PATHS = (
    ("POST", r"^/v1/messages/batches$"),
    ("GET", r"^/v1/messages/batches/msgbatch_[^/]+$"),
    ("GET", r"^/v1/messages/batches$"),
    ("GET", r"/results$"),
)
CLOCK_OFFSETS = (-1200, 0, 1200)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the pauses between retries get shorter; every retry still happens."""
    monkeypatch.setattr(anthropic._base_client, "INITIAL_RETRY_DELAY", 0.001)
    monkeypatch.setattr(anthropic._base_client, "MAX_RETRY_DELAY", 0.01)
    monkeypatch.setattr(seam, "INITIAL_RETRY_SECONDS", 0.001)
    monkeypatch.setattr(seam, "MAX_RETRY_SECONDS", 0.01)


def test_random_fault_schedules_on_an_anthropic_account(
    isolated: Path, fast_retries: None, monkeypatch, capsys
):
    failures: list[str] = []
    monkeypatch.setenv("CLAUDE_KEY", KEY)
    for seed in range(FIRST_SEED, FIRST_SEED + SCHEDULES):
        work = isolated / f"schedule-{seed}"
        work.mkdir()
        monkeypatch.chdir(work)
        monkeypatch.setenv("BATCHLEDGER_DB", str(work / "ledger.db"))
        monkeypatch.setenv("BATCHLEDGER_CONFIG", str(work / "accounts.toml"))
        with EmulatorServer(host="127.0.0.1", port=0, flavor="anthropic", api_key=KEY) as server:
            (work / "accounts.toml").write_text(
                f'[accounts.claude]\nkind = "anthropic"\nbase_url = "{server.base_url}"\n'
                'api_key_env = "CLAUDE_KEY"\n'
            )
            log: list[str] = []
            try:
                play(server, work, random.Random(seed), log)
                recover(server, work)
                check_invariants(server, work)
            except AssertionError as exc:
                stderr = capsys.readouterr().err.strip().splitlines()[-3:]
                failures.append(f"seed {seed}: {exc}\n  steps: {log}\n  stderr: {stderr}")
        capsys.readouterr()
    assert not failures, f"{len(failures)} of {SCHEDULES} schedules failed:\n" + "\n".join(
        failures[:5]
    )


def run(work: Path, *args: str) -> int:
    return main(["--account", "claude", *args, "--log-file", str(work / "logs" / "run.log")])


def write_input(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            params = {
                "model": "claude-haiku-4-5",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"{path.stem} {n}"}],
            }
            out.write(json.dumps({"custom_id": f"{path.stem}-{n}", "params": params}) + "\n")


def play(server: EmulatorServer, work: Path, rng: random.Random, log: list[str]) -> None:
    offset = rng.choice(CLOCK_OFFSETS)
    server.state.set_clock_offset(offset)
    log.append(f"clock {offset:+d}s")
    for name, count in INPUTS.items():
        write_input(work / name, count)
    # Some requests of some batches end errored (retried by default) or invalid.
    server.state.set_line_outcomes({"beta-1": "529", "gamma-2": "400"}, times=None)
    for _ in range(rng.randint(3, 7)):
        server.state.clear_faults()
        if rng.random() < 0.12:
            kill_mid_create(server, work, rng, log)
            continue
        add_random_fault(server, rng, log)
        args = random_command(server, rng)
        log.append(" ".join(args))
        run(work, *args, "--max-retries", str(rng.randint(0, 2)))
        if rng.random() < 0.5:  # let time pass on the server
            for batch_id in list(server.state.message_batches):
                server.state.advance(batch_id)
    server.state.clear_faults()


def random_command(server: EmulatorServer, rng: random.Random) -> list[str]:
    batches = list(server.state.message_batches)
    choice = rng.choice(("create", "create", "status", "retrieve", "status-all"))
    if choice == "create" or not batches:
        return ["create", "--in", rng.choice(list(INPUTS))]
    if choice == "status-all":
        return ["status", "--all", "--concurrency", str(rng.choice((1, 2, 8)))]
    return [choice, "--batch-id", rng.choice(batches)]


def add_random_fault(server: EmulatorServer, rng: random.Random, log: list[str]) -> None:
    roll = rng.random()
    method, path = rng.choice(API_PATHS)
    if roll < 0.4:
        return
    if roll < 0.6:
        status = rng.choice((429, 500, 529))
        fault = Fault(method=method, path=path, status=status, retry_after=0.001)
    elif roll < 0.75:
        fault = Fault(method=method, path=path, drop_request=True)
    elif roll < 0.85:
        fault = Fault(method=method, path=path, cut_request_after_bytes=rng.randint(0, 600))
    else:
        fault = Fault(method=method, path=path, drop_after_bytes=rng.randint(0, 400))
    log.append(f"fault {fault.action} {method} {path}")
    server.state.add_fault(fault)


def kill_mid_create(server: EmulatorServer, work: Path, rng: random.Random, log: list[str]):
    """A create in a child, SIGINT or SIGKILL'd once its batch is made, its answer held."""
    name = rng.choice(list(INPUTS))
    how = rng.choice((signal.SIGINT, signal.SIGKILL))
    log.append(f"kill -{how.name} during create --in {name}")
    server.state.add_fault(Fault(method="POST", path=API_PATHS[0][1], delay=20))
    before = len(server.state.message_batches)
    child = subprocess.Popen(
        [sys.executable, "-m", "batchledger", "--account", "claude", "create", "--in", name],
        cwd=work,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    try:
        while len(server.state.message_batches) == before and child.poll() is None:
            assert time.monotonic() < deadline, "the child never reached its create"
            time.sleep(0.005)
        child.send_signal(how)
        child.wait(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        server.state.clear_faults()


def recover(server: EmulatorServer, work: Path) -> None:
    """What a user runs next: sweep, let the batches end, sweep again."""
    assert run(work, "status", "--all", "--concurrency", "1") in (0, 1)
    for _ in range(4):
        for batch_id in list(server.state.message_batches):
            server.state.advance(batch_id)
    codes = [run(work, "status", "--all") for _ in range(2)]
    assert codes == [0, 0], f"the recovery sweeps failed: exit codes {codes}"


def check_invariants(server: EmulatorServer, work: Path) -> None:
    rows = ledger_rows(work)
    state = server.state
    made: Counter[int] = Counter()
    for batch in state.message_batches.values():
        matches = [row for row in rows if row["batch_id"] == batch.id]
        assert len(matches) == 1, f"{batch.id} is in {len(matches)} ledger rows"
        made[batch.requests] += 1
        row = matches[0]
        assert row["account"] == "claude" and row["base_url"] == server.base_url.rstrip("/")
        assert batch.is_final and row["status"] in ("completed", "cancelled", "expired")
        # Its results are saved: one line per answer, each file in input order.
        assert batch.results_path is not None
        answers = sorted(batch.results_path.read_bytes().splitlines())
        saved: list[bytes] = []
        for kind in ("output", "error"):
            if row[f"{kind}_path"] is None:
                continue
            lines = Path(row[f"{kind}_path"]).read_bytes().splitlines()
            ids = [json.loads(line)["custom_id"] for line in lines]
            order = [
                json.loads(line)["custom_id"]
                for line in Path(row["input_path"]).read_text().splitlines()
            ]
            assert ids == [i for i in order if i in set(ids)], f"{row[f'{kind}_path']} unordered"
            saved += lines
        assert sorted(saved) == answers, f"{batch.id}: the saved lines are not its answers"
    # No input became two batches (the duplicate guard; nothing paid for twice).
    twice = {count: n for count, n in made.items() if n > 1}
    assert not twice, f"an input was sent twice: {twice}"
    unfinished = [row["ref"] for row in rows if row["batch_id"] is None and row["status"] is None]
    assert not unfinished, f"creates left unfinished: {unfinished}"
    leftovers = sorted(path.name for path in work.glob(".*") if path.is_file())
    assert not leftovers, f"temporary files left behind: {leftovers}"


def ledger_rows(work: Path) -> list[dict[str, Any]]:
    path = work / "ledger.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [dict(row) for row in conn.execute("SELECT * FROM batches")]
    finally:
        conn.close()


# --- jobs ---------------------------------------------------------------------------------

JOB_SCHEDULES = int(os.environ.get("BATCHLEDGER_ANTHROPIC_JOB_SCHEDULES", "5"))


def test_random_job_schedules_on_an_anthropic_account(
    isolated: Path, fast_retries: None, monkeypatch, capsys
):
    """Inputs of several parts (`--max-requests 2..4`) under random faults and kills
    mid-create, some requests overloaded or expired, some parts expired whole; then the
    same create again, sweeps until every job is done, and a retry of each: every batch
    on the server is in the ledger once, and each job's merged results hold one line per
    custom_id, in input order."""
    failures: list[str] = []
    monkeypatch.setenv("CLAUDE_KEY", KEY)
    for seed in range(FIRST_SEED, FIRST_SEED + JOB_SCHEDULES):
        work = isolated / f"jobs-{seed}"
        work.mkdir()
        monkeypatch.chdir(work)
        monkeypatch.setenv("BATCHLEDGER_DB", str(work / "ledger.db"))
        monkeypatch.setenv("BATCHLEDGER_CONFIG", str(work / "accounts.toml"))
        with EmulatorServer(host="127.0.0.1", port=0, flavor="anthropic", api_key=KEY) as server:
            (work / "accounts.toml").write_text(
                f'[accounts.claude]\nkind = "anthropic"\nbase_url = "{server.base_url}"\n'
                'api_key_env = "CLAUDE_KEY"\n'
            )
            log: list[str] = []
            try:
                play_jobs(server, work, random.Random(seed), log)
                check_jobs(server, work)
            except AssertionError as exc:
                stderr = capsys.readouterr().err.strip().splitlines()[-3:]
                failures.append(f"seed {seed}: {exc}\n  steps: {log}\n  stderr: {stderr}")
        capsys.readouterr()
    assert not failures, f"{len(failures)} of {JOB_SCHEDULES} schedules failed:\n" + "\n".join(
        failures[:5]
    )


def play_jobs(server: EmulatorServer, work: Path, rng: random.Random, log: list[str]) -> None:
    state = server.state
    state.set_clock_offset(rng.choice(CLOCK_OFFSETS))
    names = ["alpha.jsonl", "beta.jsonl"][: rng.randint(1, 2)]
    split = {name: str(rng.randint(2, 4)) for name in names}
    for n, name in enumerate(names):
        write_input(work / name, rng.randint(6, 12) + n)
    outcomes = {f"alpha-{n}": rng.choice(("529", "500", "expired", "400")) for n in (1, 4)}
    state.set_line_outcomes(outcomes, times=1)
    log.append(f"outcomes {outcomes}")
    for _ in range(rng.randint(2, 5)):
        state.clear_faults()
        name = rng.choice(names)
        args = ["create", "--in", name, "--max-requests", split[name]]
        if rng.random() < 0.2:
            log.append(f"kill during {' '.join(args)}")
            kill_mid_create_args(server, work, rng, args)
            continue
        add_random_fault(server, rng, log)
        if rng.random() < 0.5 or not state.message_batches:
            log.append(" ".join(args))
            run(work, *args, "--max-retries", str(rng.randint(0, 2)))
        else:
            log.append("status --all")
            run(work, "status", "--all")
        if state.message_batches and rng.random() < 0.2:
            victim = rng.choice(list(state.message_batches))
            state.set_outcome(victim, "expired")
            log.append(f"expire {victim}")
        for batch_id in list(state.message_batches):
            state.advance(batch_id)
    state.clear_faults()
    # The recovery: each create again (a cut-off one resumes, a sent one is refused),
    # then sweeps while the batches end, then a retry of each job, followed to its end.
    for name in names:
        run(work, "create", "--in", name, "--max-requests", split[name])
    drive(server, work)
    for job in query(work, "SELECT job_id FROM jobs WHERE retry_of IS NULL"):
        assert run(work, "retry", job["job_id"]) == 0, f"retry of {job['job_id']} failed"
    drive(server, work)


def kill_mid_create_args(
    server: EmulatorServer, work: Path, rng: random.Random, args: list[str]
) -> None:
    how = rng.choice((signal.SIGINT, signal.SIGKILL))
    server.state.add_fault(Fault(method="POST", path=API_PATHS[0][1], delay=20))
    before = len(server.state.message_batches)
    child = subprocess.Popen(
        [sys.executable, "-m", "batchledger", "--account", "claude", *args],
        cwd=work,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    try:
        while len(server.state.message_batches) == before and child.poll() is None:
            assert time.monotonic() < deadline, "the child never reached its create"
            time.sleep(0.005)
        child.send_signal(how)
        child.wait(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        server.state.clear_faults()


def drive(server: EmulatorServer, work: Path) -> None:
    """Sweeps while the server's batches end, until every job is done."""
    for _ in range(12):
        for batch_id in list(server.state.message_batches):
            server.state.advance(batch_id)
        assert run(work, "status", "--all") in (0, 1)
        if not query(work, "SELECT 1 FROM jobs WHERE status != 'done'"):
            return
    running = query(work, "SELECT job_id, status FROM jobs WHERE status != 'done'")
    raise AssertionError(f"jobs not done after 12 sweeps: {running}")


def check_jobs(server: EmulatorServer, work: Path) -> None:
    rows = ledger_rows(work)
    for batch in server.state.message_batches.values():
        matches = [row for row in rows if row["batch_id"] == batch.id]
        assert len(matches) == 1, f"{batch.id} is in {len(matches)} ledger rows"
    # Each attempt of a part is one batch: no part sent twice at once.
    live: Counter[int] = Counter(row["part"] for row in rows if row["part"] is not None)
    parts = {part["id"]: part for part in query(work, "SELECT * FROM parts")}
    for part_id, attempts in live.items():
        assert attempts <= 1 + (parts[part_id]["requeues"] or 0) + 1, f"part {part_id}: {attempts}"
    unfinished = [row["ref"] for row in rows if row["batch_id"] is None and row["status"] is None]
    assert not unfinished, f"creates left unfinished: {unfinished}"
    for job in query(work, "SELECT * FROM jobs WHERE retry_of IS NULL"):
        order = [
            json.loads(line)["custom_id"]
            for line in Path(job["input_path"]).read_text().splitlines()
        ]
        seen: list[str] = []
        for kind in ("output", "error"):
            path = job[f"{kind}_path"]
            if path is None:
                continue
            ids = [json.loads(line)["custom_id"] for line in Path(path).read_bytes().splitlines()]
            assert ids == [i for i in order if i in set(ids)], f"{path} is not in input order"
            seen += ids
        assert sorted(seen) == sorted(order), f"{job['job_id']}: not one line per custom_id"


def query(work: Path, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(work / "ledger.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql)]
    finally:
        conn.close()
