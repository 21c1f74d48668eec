"""A randomized fault campaign: random command sequences under random faults, then the
commands a user would run next must restore every invariant.

Each schedule is drawn from its own seed. It runs two emulators, each with a server clock
20 minutes ahead, 20 minutes behind or on time. Every command takes one of three routes:
the default account on the first server; `--account second`, a named account on the
second server; or the default account with OPENAI_BASE_URL switched to the second server
(a foreign base URL). Faults and kills hit either server. Sweeps run at concurrency 1, 2
or 8, and every other schedule reads all its sweeps' batches from the accounts' listings
(a page of 100 per request) rather than looking each up.

A failing schedule names its seed; replay it with
BATCHLEDGER_CAMPAIGN_SEED=<seed> BATCHLEDGER_CAMPAIGN_SCHEDULES=1. More schedules:
BATCHLEDGER_CAMPAIGN_SCHEDULES=2000.
"""

import hashlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai._base_client
import pytest
from helpers import write_jsonl

import batchledger.providers as seam
from batchledger import sweep
from batchledger.cli import main
from batchledger.emulator import EmulatorServer, Fault

# Two servers and four recovery sweeps make a schedule about twice as long as with one
# (1.3 to 2 s here): 100 keep CI's slice near its old length, well under 4 minutes.
SCHEDULES = int(os.environ.get("BATCHLEDGER_CAMPAIGN_SCHEDULES", "100"))
FIRST_SEED = int(os.environ.get("BATCHLEDGER_CAMPAIGN_SEED", "1000"))
INPUTS = ("alpha.jsonl", "beta.jsonl", "gamma.jsonl")
API_PATHS = (
    ("POST", r"^/v1/files$"),
    ("POST", r"^/v1/batches$"),
    ("GET", r"^/v1/batches/batch_"),
    ("GET", r"^/v1/batches$"),
    ("GET", r"^/v1/files"),
    ("GET", r"/content$"),
)
# Where a killed child can be caught in the act: (what it waits for, how to see it arrived).
KILL_POINTS = ("upload", "create", "download")
# The server's clock against ours: 20 minutes behind, on time, 20 minutes ahead.
CLOCK_OFFSETS = (-1200, 0, 1200)
SERVER_NAMES = ("first", "second")
SECOND_KEY_ENV = "CAMPAIGN_SECOND_KEY"


@dataclass(frozen=True)
class Route:
    """Where a command goes: which server, as which account, and how it is reached."""

    name: str
    server: int  # index into Schedule.servers
    account: str  # the ledger account the command's batches belong to
    flags: tuple[str, ...]  # added to the command line
    base_url_of: int  # the server OPENAI_BASE_URL points at for this command


DEFAULT = Route("default", 0, "default", (), 0)
SECOND = Route("second", 1, "second", ("--account", "second"), 0)
FOREIGN = Route("foreign", 1, "default", (), 1)
ROUTES = (DEFAULT, SECOND, FOREIGN)


@dataclass
class Schedule:
    seed: int
    work: Path
    servers: tuple[EmulatorServer, EmulatorServer]
    log: list[str] = field(default_factory=list)
    # (server, account, input) -> uploads a kill may have left behind
    killed_uploads: Counter[tuple[int, str, str]] = field(default_factory=Counter)
    # (server, input) -> the accounts a create of it was sent as
    sent: defaultdict[tuple[int, str], set[str]] = field(default_factory=lambda: defaultdict(set))

    def env(self, route: Route) -> dict[str, str]:
        return {**os.environ, "OPENAI_BASE_URL": self.servers[route.base_url_of].base_url}

    def run(self, route: Route, *args: str) -> int:
        self.log.append(f"[{route.name}] {' '.join(args)}")
        os.environ["OPENAI_BASE_URL"] = self.servers[route.base_url_of].base_url
        return main([*route.flags, *args, "--log-file", str(self.work / "logs" / "run.log")])

    def sending(self, route: Route, name: str) -> None:
        self.sent[(route.server, name)].add(route.account)

    def all_batches(self) -> list[tuple[int, str]]:
        return [
            (n, batch_id)
            for n, server in enumerate(self.servers)
            for batch_id in server.state.batches
        ]

    def advance_all(self, steps: int) -> None:
        for server in self.servers:
            for batch_id in list(server.state.batches):
                for _ in range(steps):
                    server.state.advance(batch_id)

    def clear_faults(self) -> None:
        for server in self.servers:
            server.state.clear_faults()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the pauses between retries get shorter; every retry still happens."""
    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.001)
    monkeypatch.setattr(openai._base_client, "MAX_RETRY_DELAY", 0.01)
    monkeypatch.setattr(seam, "INITIAL_RETRY_SECONDS", 0.001)
    monkeypatch.setattr(seam, "MAX_RETRY_SECONDS", 0.01)


def test_random_fault_schedules(isolated: Path, fast_retries: None, monkeypatch, capsys):
    failures: list[str] = []
    kinds: Counter[str] = Counter()
    monkeypatch.setenv(SECOND_KEY_ENV, "sk-campaign-second-0123456789abcdef")
    for seed in range(FIRST_SEED, FIRST_SEED + SCHEDULES):
        work = isolated / f"schedule-{seed}"
        work.mkdir()
        monkeypatch.chdir(work)
        monkeypatch.setenv("BATCHLEDGER_DB", str(work / "ledger.db"))
        monkeypatch.setenv("BATCHLEDGER_CONFIG", str(work / "accounts.toml"))
        # Every other schedule's sweeps read all their batches from the listing.
        monkeypatch.setattr(sweep, "LIST_FROM_ROUNDS", 1 if seed % 2 else 3)
        with (
            EmulatorServer(host="127.0.0.1", port=0) as first,
            EmulatorServer(host="127.0.0.1", port=0) as second,
        ):
            monkeypatch.setenv("OPENAI_BASE_URL", first.base_url)
            (work / "accounts.toml").write_text(
                f'[accounts.second]\nbase_url = "{second.base_url}"\n'
                f'api_key_env = "{SECOND_KEY_ENV}"\n'
            )
            schedule = Schedule(seed, work, (first, second))
            try:
                play(schedule, random.Random(seed))
                recover(schedule)
                check_invariants(schedule)
            except AssertionError as exc:
                stderr = capsys.readouterr().err.strip().splitlines()[-3:]
                failures.append(f"seed {seed}: {exc}\n  steps: {schedule.log}\n  stderr: {stderr}")
                kinds[re.sub(r"\b(bl|batch|file)[-_]\w+", r"\1_…", str(exc).splitlines()[0])] += 1
        capsys.readouterr()
    # One kind of failure must not hide another: every kind is counted, five are shown.
    summary = "\n".join(f"  {count} x {kind}" for kind, count in kinds.most_common())
    assert not failures, (
        f"{len(failures)} of {SCHEDULES} schedules failed:\n{summary}\n" + "\n".join(failures[:5])
    )


def play(schedule: Schedule, rng: random.Random) -> None:
    """Skewed clocks, then three to seven random commands, each under a random fault or a
    kill, each on a random route."""
    for name, server in zip(SERVER_NAMES, schedule.servers, strict=True):
        offset = rng.choice(CLOCK_OFFSETS)
        server.state.set_clock_offset(offset)
        schedule.log.append(f"clock {name} {offset:+d}s")
    for n, name in enumerate(INPUTS):
        write_jsonl(schedule.work / name, 2 + n)
    for _ in range(rng.randint(3, 7)):
        schedule.clear_faults()
        if rng.random() < 0.12:
            kill_mid_command(schedule, rng)
            continue
        add_random_fault(schedule, rng)
        route, args = random_command(schedule, rng)
        schedule.run(route, *args, "--max-retries", str(rng.randint(0, 2)))
        if rng.random() < 0.5:  # let time pass on the servers
            schedule.advance_all(1)
    schedule.clear_faults()


def random_command(schedule: Schedule, rng: random.Random) -> tuple[Route, list[str]]:
    batches = schedule.all_batches()
    choice = rng.choice(("create", "create", "status", "retrieve", "status-all"))
    if choice == "create" or not batches:
        route = rng.choice(ROUTES)
        name = rng.choice(INPUTS)
        schedule.sending(route, name)
        return route, ["create", "--in", name]
    if choice == "status-all":
        # Read from the account's listing: three batches or more at concurrency 1, five at 2.
        concurrency = str(rng.choice((1, 2, 8)))
        return rng.choice(ROUTES), ["status", "--all", "--concurrency", concurrency]
    server, batch_id = rng.choice(batches)
    return route_of(schedule, server, batch_id), [choice, "--batch-id", batch_id]


def route_of(schedule: Schedule, server: int, batch_id: str) -> Route:
    """The route a user who knows this batch takes: its own server, as its own account
    (the one whose create made it, named in the ref its upload carries)."""
    if server == 0:
        return DEFAULT
    state = schedule.servers[server].state
    ref = ref_of_upload(state.files[state.batches[batch_id].input_file_id].filename)
    row = next((row for row in ledger_rows(schedule) if row["ref"] == ref), None)
    return SECOND if row is not None and row["account"] == "second" else FOREIGN


def add_random_fault(schedule: Schedule, rng: random.Random) -> None:
    roll = rng.random()
    method, path = rng.choice(API_PATHS)
    if roll < 0.4:
        return
    where = rng.randrange(len(schedule.servers))
    state = schedule.servers[where].state
    on = f"on {SERVER_NAMES[where]}"
    if roll < 0.6:
        status = rng.choice((429, 500, 503))
        state.add_fault(
            Fault(
                method=method, path=path, status=status, retry_after=0.001, times=rng.randint(1, 3)
            )
        )
    elif roll < 0.7:
        schedule.log.append(f"fault drop_request {method} {path} {on}")
        state.add_fault(Fault(method=method, path=path, drop_request=True))
    elif roll < 0.8:
        cut = rng.randint(0, 1000)
        schedule.log.append(f"fault cut_request_after_bytes={cut} {method} {path} {on}")
        state.add_fault(Fault(method=method, path=path, cut_request_after_bytes=cut))
    else:
        cut = rng.randint(0, 400)
        schedule.log.append(f"fault drop_after_bytes={cut} {method} {path} {on}")
        state.add_fault(Fault(method=method, path=path, drop_after_bytes=cut))


def kill_mid_command(schedule: Schedule, rng: random.Random) -> None:
    """Run a command in a child and SIGINT or SIGKILL it while it waits on a server."""
    route = rng.choice(ROUTES)
    point = rng.choice(KILL_POINTS)
    completed = [
        (n, b.id)
        for n, server in enumerate(schedule.servers)
        for b in server.state.batches.values()
        if b.status == "completed"
    ]
    if point == "download" and not completed:
        point = "create"
    how = rng.choice((signal.SIGINT, signal.SIGKILL))
    if point == "download":
        where, batch_id = rng.choice(completed)
        route = route_of(schedule, where, batch_id)
        args = ["retrieve", "--batch-id", batch_id]
        state = schedule.servers[route.server].state
        state.add_fault(Fault(path=r"/content$", stall_after_bytes=50, delay=20))
    else:
        name = rng.choice(INPUTS)
        args = ["create", "--in", name]
        schedule.sending(route, name)
        state = schedule.servers[route.server].state
        target = r"^/v1/files$" if point == "upload" else r"^/v1/batches$"
        # The server does the work, then holds the answer back while the child is killed.
        state.add_fault(Fault(method="POST", path=target, delay=20))
        if point == "upload":
            schedule.killed_uploads[(route.server, route.account, name)] += 1
    schedule.log.append(f"[{route.name}] kill -{how.name} during {point}: {' '.join(args)}")
    before = arrivals(schedule, route, point)
    # -X faulthandler: a child that hangs is made to print where (SIGABRT) before it goes.
    child = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "batchledger", *route.flags, *args],
        cwd=schedule.work,
        env=schedule.env(route),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 15
    while arrivals(schedule, route, point) == before and child.poll() is None:
        assert time.monotonic() < deadline, f"the child never reached its {point}"
        time.sleep(0.005)
    child.send_signal(how)
    try:
        child.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        # Seen once in thousands of schedules: a child still alive 15 s after SIGINT (a
        # download stalled in a read held the exit; the console script now waits 2 s for
        # such threads, then ends: cli/process.py, tests/test_faults.py). Kept to show
        # the stacks if it comes back; the invariants are checked as ever.
        child.send_signal(signal.SIGABRT)
        _, stacks = child.communicate(timeout=15)
        schedule.log.append(f"child outlived {how.name} by 15 s")
        warnings.warn(
            f"seed {schedule.seed}: a child outlived {how.name} by 15 s; its threads:\n{stacks}",
            stacklevel=1,
        )
    finally:
        state.clear_faults()


def arrivals(schedule: Schedule, route: Route, point: str) -> int:
    """What grows once a child's request of `point` has reached its server."""
    state = schedule.servers[route.server].state
    if point == "upload":
        return len(state.files)
    if point == "create":
        return len(state.batches)
    return len(list(schedule.work.glob(".*.part")))


def recover(schedule: Schedule) -> None:
    """What a user runs next, with each base URL in turn (rows of `--account second` are
    swept by both, as `status --all` covers every account): sweep, let the batches finish,
    sweep again."""
    for route in (DEFAULT, FOREIGN):  # a listing, where three or more are not final yet
        code = schedule.run(route, "status", "--all", "--concurrency", "1")
        assert code in (0, 1)  # 1: a check that failed
    schedule.advance_all(4)
    codes = [schedule.run(route, "status", "--all") for route in (DEFAULT, FOREIGN)]
    assert codes == [0, 0], f"the recovery sweeps failed: exit codes {codes}"


def check_invariants(schedule: Schedule) -> None:
    rows = ledger_rows(schedule, integrity=True)
    by_ref = {row["ref"]: row for row in rows}
    input_of = {sha256(schedule.work / name): name for name in INPUTS}
    server_of_url = {server.base_url: server for server in schedule.servers}
    for n, server in enumerate(schedule.servers):
        state, on = server.state, SERVER_NAMES[n]
        # Every batch on the server is in the ledger once, with this server's base URL and
        # the account (and the very row) whose create made it.
        submitted: Counter[tuple[str, str]] = Counter()
        for batch in state.batches.values():
            upload = state.files[batch.input_file_id]
            name = input_of[sha256(upload.path)]
            ref = ref_of_upload(upload.filename)
            matches = [row for row in rows if row["batch_id"] == batch.id]
            assert len(matches) == 1, f"{batch.id} on {on} is in {len(matches)} ledger rows"
            row = matches[0]
            assert row["base_url"] == server.base_url, f"{batch.id} on {on}: {row['base_url']}"
            assert row["ref"] == ref, f"{batch.id} on {on} is recorded in another create's row"
            assert row["account"] in schedule.sent[(n, name)], (
                f"{batch.id} on {on} recorded as account {row['account']!r}; "
                f"{name} was sent there as {sorted(schedule.sent[(n, name)])}"
            )
            submitted[(name, row["account"])] += 1
        # No input became two batches of one account on one server (the duplicate guard's
        # scope); the same input on both servers, or as two accounts, is fine.
        twice = {key: count for key, count in submitted.items() if count > 1}
        assert not twice, f"submitted twice on {on}: {twice}"
        # None was uploaded twice unless a kill hit its upload.
        uploads: Counter[tuple[str, str]] = Counter()
        for upload in state.files.values():
            if upload.purpose != "batch":
                continue
            row = by_ref.get(ref_of_upload(upload.filename))
            assert row is not None, f"{upload.filename} on {on} has no ledger row"
            uploads[(input_of[sha256(upload.path)], row["account"])] += 1
        for (name, account), count in uploads.items():
            allowed = 1 + schedule.killed_uploads[(n, account, name)]
            assert count <= allowed, f"{name} uploaded {count} times on {on} as {account}"
    # Every saved result is byte for byte its server's, and nothing half-written is left.
    for row in rows:
        server = server_of_url.get(row["base_url"])
        batch = server.state.batches.get(row["batch_id"] or "") if server else None
        if batch is None:
            continue
        assert batch.status == "completed"
        assert row["output_path"], f"{batch.id} completed but not saved"
        saved = Path(row["output_path"])
        server_file = server.state.files[batch.output_file_id]
        assert saved.read_bytes() == server_file.path.read_bytes(), f"{saved} differs"
    for target in schedule.work.glob("results_*.jsonl"):
        batch_id = target.name.removeprefix("results_").removesuffix(".jsonl")
        [state] = [s.state for s in schedule.servers if batch_id in s.state.batches]
        server_file = state.files[state.batches[batch_id].output_file_id]
        assert target.read_bytes() == server_file.path.read_bytes(), f"{target} differs"
    # A download killed outright left its temporary file; the recovery's save removed it.
    leftovers = sorted(path.name for path in schedule.work.glob(".*.part"))
    assert not leftovers, f"temporary files left behind: {leftovers}"
    # Every create that was cut off has an end: its batch was found, or it is abandoned.
    # (Checked last, so the checks above still run where this one fails.)
    unfinished = [row for row in rows if row["batch_id"] is None and row["status"] is None]
    for upload, when in ((False, "before"), (True, "after")):
        refs = [row["ref"] for row in unfinished if (row["input_file_id"] is not None) == upload]
        assert not refs, f"creates cut off {when} their upload was recorded, unfinished: {refs}"


def ledger_rows(schedule: Schedule, *, integrity: bool = False) -> list[dict[str, Any]]:
    path = schedule.work / "ledger.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        if integrity:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [dict(row) for row in conn.execute("SELECT * FROM batches")]
    finally:
        conn.close()


def ref_of_upload(filename: str) -> str:
    """The ledger ref an upload is named with: `<stem>.<ref>.jsonl`."""
    return filename.rsplit(".", 2)[-2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
