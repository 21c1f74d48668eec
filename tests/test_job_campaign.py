"""A randomized campaign for jobs (issue 13, "Crash safety, as for one batch"): inputs of
several parts, sent under random faults and kills, then the commands a user would run
next must bring every job to its end with every invariant whole.

Each schedule is drawn from its own seed, against one emulator. It writes one or two
inputs of 6 to 20 lines, each sent as `create --max-requests 2..5`, some with
`--max-in-flight 1..2`; some schedules have an enqueued-token limit that bites (room for
one or two parts), some force outcomes on single requests (expired, 500, 429, 400,
missing, for one or two executions) and some expire whole parts; some drive their jobs to
the end and `retry` one. Three to seven steps follow, each a command under a random fault
(429/500/503 bursts, dropped requests, requests cut midway, dropped response bodies) or a
child process killed (SIGINT or SIGKILL): during the k-th upload or create, during a
download, at a random moment after its first request, or paused inside the package (the
merge's reads, the ledger's writes around a merge, an upload, an attempt, a requeue, a
retry's merge into its original) by a wrapper that only waits there. After a retry is
sent, its merge into the original may be killed or Ctrl-C'd (kill_in_retry_merge), and
before it the original's merged results may be changed or moved (change_results).

Then the recovery: the same `create` (or `retry`) again where one was cut off, and
`status --all` while the server's batches finish, until every job is done (a user who
waits out the token limit's backoff is the test moving the jobs' clock on). Then the
invariants: see check_invariants. Throughout, each part has at most one live batch on
the server: checked at every batch create on the server, and after every command.

A failing schedule names its seed and steps; replay it with
BATCHLEDGER_JOB_CAMPAIGN_SEED=<seed> BATCHLEDGER_JOB_CAMPAIGN_SCHEDULES=1. More:
BATCHLEDGER_JOB_CAMPAIGN_SCHEDULES=300.
"""

import json
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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from test_fault_campaign import fast_retries  # noqa: F401  (a fixture, used by name)

from batchledger.cli import main
from batchledger.emulator import EmulatorServer, Fault
from batchledger.emulator.models import StoredBatch
from batchledger.jobs import moves as jobs_module

# About 2 s a schedule here (child processes, sweeps): 30 keep CI's slice near a minute on
# an idle machine and under 2.5 minutes on two busy cores.
SCHEDULES = int(os.environ.get("BATCHLEDGER_JOB_CAMPAIGN_SCHEDULES", "30"))
FIRST_SEED = int(os.environ.get("BATCHLEDGER_JOB_CAMPAIGN_SEED", "7000"))
INPUTS = ("alpha.jsonl", "beta.jsonl")
API_PATHS = (
    ("POST", r"^/v1/files$"),
    ("POST", r"^/v1/batches$"),
    ("GET", r"^/v1/batches/batch_"),
    ("GET", r"^/v1/batches$"),
    ("GET", r"^/v1/files"),
    ("GET", r"/content$"),
)
LINE_OUTCOMES = ("expired", "500", "429", "400", "missing")
# Where a child may be paused (and killed): module:attribute, a function the package calls
# at that moment. The wrapper (CHILD) only waits there, then calls the original.
PAUSE_POINTS = (
    "batchledger.merge:_read",  # a merge's temporary file open, part written
    "batchledger.ledger.job_store:JobStore.record_job_results",  # a merged file saved, not recorded
    "batchledger.ledger.job_store:JobStore.finish_job",  # a job merged, not marked done
    "batchledger.jobs.retry_merge:merge_into_original",  # a retry job done, its original not merged
    "batchledger.redo:save_chunks",  # the original's per-custom_id merge, being saved
    "batchledger.ledger.job_store:JobStore.record_part_upload",  # a part uploaded, not recorded
    "batchledger.ledger.job_store:JobStore.start_attempt",  # a part about to get its next attempt
    "batchledger.ledger.job_store:JobStore.requeue_part",  # a bounced part going back to the queue
    # a part's results saved, not recorded:
    "batchledger.ledger.batch_store:BatchStore.record_download",
)
CHILD = """
import importlib, os, pathlib, sys, time
spec = os.environ.get("JOB_CAMPAIGN_PAUSE")
if spec:
    module_name, _, attribute = spec.partition(":")
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for step in path:
        owner = getattr(owner, step)
    original = getattr(owner, name)
    nth = int(os.environ["JOB_CAMPAIGN_PAUSE_AT"])
    calls = [0]
    def paused(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            pathlib.Path(os.environ["JOB_CAMPAIGN_MARK"]).touch()
            time.sleep(30)
        return original(*args, **kwargs)
    setattr(owner, name, paused)
sys.argv[0] = "batchledger"
from batchledger.cli import entry
entry()
"""
# Package bugs not fixed yet, by name and a sign in a failure's message: a schedule that fails
# with one is counted apart, with a warning, not as a failure. None today: the five the
# campaign found are fixed, two of them kept below as reproductions.
KNOWN_BUGS: dict[str, str] = {}
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
RECOVERY_ROUNDS = 60
# The clock of the jobs module, moved on when a user would wait out a token-limit backoff.
CLOCK_SKEW = [0.0]


class SkewedDatetime(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return datetime.now(tz) + timedelta(seconds=CLOCK_SKEW[0])


@dataclass
class Input:
    name: str
    prefix: str
    lines: list[bytes]
    max_requests: int
    max_in_flight: int | None
    expire_parts: set[int]  # 1-based indexes of the first job's parts made to expire

    @property
    def path_bytes(self) -> bytes:
        return b"".join(self.lines)

    @property
    def parts(self) -> list[bytes]:
        n = self.max_requests
        return [b"".join(self.lines[i : i + n]) for i in range(0, len(self.lines), n)]

    def create_args(self) -> list[str]:
        args = ["create", "--in", self.name, "--max-requests", str(self.max_requests)]
        if self.max_in_flight is not None:
            args += ["--max-in-flight", str(self.max_in_flight)]
        return args


@dataclass
class Schedule:
    seed: int
    work: Path
    server: EmulatorServer
    inputs: list[Input] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # seen by the create hook
    # part ref -> uploads a kill may have left behind (the upload arrived, unrecorded)
    killed_uploads: Counter[str] = field(default_factory=Counter)
    # what was cut off (a create of an input, a retry of a job) -> the command to run again
    cut_off: dict[str, list[str]] = field(default_factory=dict)
    missing_outcomes: set[str] = field(default_factory=set)  # custom_ids told to go missing

    def run(self, *args: str, max_retries: int | None = None) -> int:
        retries = [] if max_retries is None else ["--max-retries", str(max_retries)]
        self.log.append(" ".join(args) + (f" (max-retries {max_retries})" if retries else ""))
        try:
            code = main([*args, *retries, "--log-file", str(self.work / "logs" / "run.log")])
        except Exception as exc:  # a crash is a finding, counted like the others
            raise AssertionError(
                f"{args[0]} raised {type(exc).__name__}: {exc}".splitlines()[0]
            ) from exc
        self.log[-1] += f" -> {code}"
        assert code in (0, 1, 2, 3, 130), f"{args[0]} exited {code}"
        return code

    def remember(self, key: str, args: list[str], code: int | None) -> None:
        """A command cut off (killed, or failed) is one the user runs again."""
        if code == 0 or (code == 3 and key.startswith("create")):
            self.cut_off.pop(key, None)
        else:
            self.cut_off[key] = args

    def advance_all(self, steps: int = 1) -> None:
        state = self.server.state
        for batch_id in list(state.batches):
            for _ in range(steps):
                state.advance(batch_id)

    def input_named(self, name: str) -> Input:
        return next(item for item in self.inputs if item.name == name)


def ref_of_upload(filename: str) -> str:
    """The part's ref an upload is named with: `<stem>.part<k>of<n>.<ref>.jsonl`."""
    return filename.rsplit(".", 2)[-2]


def ref_of_batch(state: Any, batch: StoredBatch) -> str | None:
    upload = state.files.get(batch.input_file_id)
    return ref_of_upload(upload.filename) if upload is not None else None


def bounced(batch: StoredBatch) -> bool:
    return batch.status == "failed" and any(
        error.code == "token_limit_exceeded" for error in batch.errors or []
    )


def test_random_job_schedules(isolated: Path, fast_retries: None, monkeypatch, capsys):  # noqa: F811
    failures: list[str] = []
    kinds: Counter[str] = Counter()
    known_hits: defaultdict[str, list[str]] = defaultdict(list)
    monkeypatch.setattr(jobs_module, "datetime", SkewedDatetime)
    for seed in range(FIRST_SEED, FIRST_SEED + SCHEDULES):
        work = isolated / f"schedule-{seed}"
        work.mkdir()
        monkeypatch.chdir(work)
        monkeypatch.setenv("BATCHLEDGER_DB", str(work / "ledger.db"))
        CLOCK_SKEW[0] = 0.0
        rng = random.Random(seed)
        inputs = make_inputs(work, rng)
        limit = token_limit(inputs, rng)
        with EmulatorServer(host="127.0.0.1", port=0, enqueued_token_limit=limit) as server:
            monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
            schedule = Schedule(seed, work, server, inputs)
            schedule.log.append(
                "inputs "
                + ", ".join(
                    f"{i.name}: {len(i.lines)} lines by {i.max_requests}"
                    f"{f' in flight {i.max_in_flight}' if i.max_in_flight else ''}"
                    f"{f' expire parts {sorted(i.expire_parts)}' if i.expire_parts else ''}"
                    for i in inputs
                )
                + (f"; enqueued-token limit {limit}" if limit else "")
            )
            watch_creates(schedule)
            try:
                play(schedule, rng)
                recover(schedule)
                check_invariants(schedule)
            except AssertionError as exc:
                stderr = capsys.readouterr().err.strip().splitlines()[-3:]
                report = f"seed {seed}: {exc}\n  steps: {schedule.log}\n  stderr: {stderr}"
                known = next((bug for bug, sign in KNOWN_BUGS.items() if sign in str(exc)), None)
                if known is not None:
                    known_hits[known].append(report)
                else:
                    failures.append(report)
                    kinds[kind_of(str(exc))] += 1
        capsys.readouterr()
    for bug, reports in known_hits.items():
        warnings.warn(
            f"{len(reports)} of {SCHEDULES} schedules hit the known bug {bug}; "
            f"the first: {reports[0]}",
            stacklevel=1,
        )
    summary = "\n".join(f"  {count} x {kind}" for kind, count in kinds.most_common())
    assert not failures, (
        f"{len(failures)} of {SCHEDULES} schedules failed:\n{summary}\n" + "\n".join(failures[:5])
    )


def kind_of(message: str) -> str:
    first = message.splitlines()[0]
    first = re.sub(r"(job|batch|file|bl)[-_][0-9a-zA-Z]+", r"\1_…", first)
    first = re.sub(r"\b[a-z]-\d+\b", "<custom_id>", first)
    return re.sub(r"\d+", "N", first)


# Setting up


def make_inputs(work: Path, rng: random.Random) -> list[Input]:
    inputs = []
    for name in INPUTS[: rng.choice((1, 1, 2))]:
        prefix = name[0]
        count = rng.randint(6, 20)
        lines = [
            (
                json.dumps(
                    {
                        "custom_id": f"{prefix}-{n}",
                        "method": "POST",
                        "url": "/v1/responses",
                        "body": {"model": "gpt-4o-mini", "input": f"Say hello number {n}"},
                    }
                )
                + "\n"
            ).encode()
            for n in range(count)
        ]
        (work / name).write_bytes(b"".join(lines))
        max_requests = rng.randint(2, 5)
        parts = -(-count // max_requests)
        in_flight = rng.choice((None, None, 1, 2))
        expire = {rng.randint(1, parts)} if rng.random() < 0.25 else set()
        inputs.append(Input(name, prefix, lines, max_requests, in_flight, expire))
    return inputs


def token_limit(inputs: list[Input], rng: random.Random) -> int | None:
    """Room for one or two parts' tokens, and (a retry is one part, as big as the account
    lets) for the most a retry could send: every request given an outcome, and every part
    made to expire."""
    if rng.random() >= 0.35:
        return None
    part_tokens = max(len(part) // 4 for item in inputs for part in item.parts)
    retry_bytes = max(
        sum(len(item.parts[k - 1]) for k in item.expire_parts) + 3 * max(map(len, item.lines))
        for item in inputs
    )
    return max(part_tokens * rng.choice((1, 2)) + 1, retry_bytes // 4 + 1)


def watch_creates(schedule: Schedule) -> None:
    """On the server, at every batch create: the part must have no live batch already.
    Parts chosen to expire get that outcome (whichever attempt runs)."""
    state = schedule.server.state
    original = state.create_batch
    expiring = {
        f"{Path(item.name).stem}.part{k}of{len(item.parts)}."
        for item in schedule.inputs
        for k in item.expire_parts
    }

    def create_batch(**kwargs: Any) -> StoredBatch:
        with state.lock:
            upload = state.files.get(kwargs["input_file_id"])
            if upload is not None and upload.purpose == "batch":
                ref = ref_of_upload(upload.filename)
                live = [
                    b.id
                    for b in state.batches.values()
                    if not b.is_final and ref_of_batch(state, b) == ref
                ]
                if live:
                    schedule.violations.append(
                        f"part {ref} got a batch while {live} was still live "
                        f"(during step {len(schedule.log)})"
                    )
            batch = original(**kwargs)
            if upload is not None and any(upload.filename.startswith(s) for s in expiring):
                batch.outcome = "expired"
            return batch

    state.create_batch = create_batch  # type: ignore[method-assign]


def force_line_outcomes(schedule: Schedule, rng: random.Random) -> None:
    for item in schedule.inputs:
        if rng.random() >= 0.5:
            continue
        chosen = rng.sample(range(len(item.lines)), rng.randint(1, 3))
        outcomes = {f"{item.prefix}-{n}": rng.choice(LINE_OUTCOMES) for n in chosen}
        times = rng.choice((1, 1, 2))
        schedule.server.state.set_line_outcomes(outcomes, times=times)
        schedule.missing_outcomes |= {cid for cid, o in outcomes.items() if o == "missing"}
        schedule.log.append(f"line outcomes {outcomes} x{times}")


# Playing


def play(schedule: Schedule, rng: random.Random) -> None:
    force_line_outcomes(schedule, rng)
    # Its own draws: the other events of a seed stay as they were without this one.
    changes = random.Random(f"{schedule.seed}:input changed")
    for _ in range(rng.randint(3, 7)):
        step(schedule, rng)
        if changes.random() < 0.3:
            change_input_between_parts(schedule, changes)
    if rng.random() < 0.4:  # a finished job, retried
        drive_to_end(schedule)
        done = [job for job in job_rows(schedule) if job["status"] == "done"]
        if done:
            job_id = rng.choice(done)["job_id"]
            if rng.random() < 0.35:
                change_results(schedule, rng, job_id)
            if rng.random() < 0.5:
                kill_mid_command(schedule, rng, ["retry", job_id])
            else:
                add_random_fault(schedule, rng)
                args = ["retry", job_id]
                schedule.remember(f"retry {job_id}", args, schedule.run(*args, max_retries=2))
                after_command(schedule)
            if rng.random() < 0.8:
                kill_in_retry_merge(schedule, rng, job_id)
            for _ in range(rng.randint(1, 4)):
                step(schedule, rng)
    schedule.server.state.clear_faults()


def change_input_between_parts(schedule: Schedule, rng: random.Random) -> None:
    """Event: the input of a job with queued parts overwritten with other lines (of the
    same size, or not), then a sweep. Its invariants: no part is ever sent from the changed
    bytes; a job that had a part to send is marked input_changed, the others keep running;
    the sweep exits 0. Then the user puts the input back, and `status` of the marked job
    sets it going again."""
    queued = {part["job"] for part in part_rows(schedule) if part["state"] == "queued"}
    jobs = [job for job in job_rows(schedule) if job["status"] == "running" and job["id"] in queued]
    if not jobs:
        return
    job = rng.choice(jobs)
    path = Path(job["input_path"])
    original = path.read_bytes()
    same_size = rng.random() < 0.5
    changed = original.replace(b"hello", b"HELLO") if same_size else original + original[:40]
    changed = changed if same_size else changed.replace(b"hello", b"HELLO")
    path.write_bytes(changed)
    state = schedule.server.state
    state.clear_faults()
    uploaded = {file_id for file_id, f in state.files.items() if f.purpose == "batch"}
    schedule.log.append(f"input {path.name} changed ({'same size' if same_size else 'longer'})")
    try:
        code = schedule.run("status", "--all")
        after_command(schedule)
    finally:
        path.write_bytes(original)  # put back as it was
    assert code == 0, f"a sweep with {path.name} changed exited {code}"
    new = [
        f for file_id, f in state.files.items() if f.purpose == "batch" and file_id not in uploaded
    ]
    assert not any(b"HELLO" in f.path.read_bytes() for f in new), (
        f"a part was sent from the changed bytes of {path.name}"
    )
    now = next(row for row in job_rows(schedule) if row["id"] == job["id"])
    assert now["status"] in ("running", "input_changed"), f"{job['job_id']} is {now['status']}"
    if now["status"] == "input_changed":
        code = schedule.run("status", "--batch-id", job["job_id"])
        after_command(schedule)
        now = next(row for row in job_rows(schedule) if row["id"] == job["id"])
        assert code == 0 and now["status"] != "input_changed", (
            f"{job['job_id']} is {now['status']} with its input put back (status exited {code})"
        )


def step(schedule: Schedule, rng: random.Random) -> None:
    schedule.server.state.clear_faults()
    args = random_command(schedule, rng)
    if rng.random() < 0.2:
        kill_mid_command(schedule, rng, args)
    else:
        add_random_fault(schedule, rng)
        code = schedule.run(*args, max_retries=rng.randint(0, 2))
        if args[0] in ("create", "retry"):
            schedule.remember(key_of(args), args, code)
        after_command(schedule)
    if rng.random() < 0.5:  # let time pass on the server
        schedule.advance_all(1)


def key_of(args: list[str]) -> str:
    return f"create {args[2]}" if args[0] == "create" else f"retry {args[1]}"


def random_command(schedule: Schedule, rng: random.Random) -> list[str]:
    jobs = job_rows(schedule)
    choice = rng.choice(("create", "create", "status-all", "status-all", "status", "retrieve"))
    if choice == "create" or not jobs:
        return rng.choice(schedule.inputs).create_args()
    if choice == "status-all":
        return ["status", "--all"]
    job_id = rng.choice(jobs)["job_id"]
    return [choice, "--batch-id", job_id if rng.random() < 0.7 else job_id[:12]]


def add_random_fault(schedule: Schedule, rng: random.Random) -> None:
    roll = rng.random()
    method, path = rng.choice(API_PATHS)
    state = schedule.server.state
    if roll < 0.35:
        return
    if roll < 0.6:
        status, times = rng.choice((429, 500, 503)), rng.randint(1, 3)
        schedule.log.append(f"fault {status} x{times} {method} {path}")
        state.add_fault(
            Fault(method=method, path=path, status=status, retry_after=0.001, times=times)
        )
    elif roll < 0.7:
        schedule.log.append(f"fault drop_request {method} {path}")
        state.add_fault(Fault(method=method, path=path, drop_request=True))
    elif roll < 0.85:
        cut = rng.randint(0, 1000)
        schedule.log.append(f"fault cut_request_after_bytes={cut} {method} {path}")
        state.add_fault(Fault(method=method, path=path, cut_request_after_bytes=cut))
    else:
        cut = rng.randint(0, 400)
        schedule.log.append(f"fault drop_after_bytes={cut} {method} {path}")
        state.add_fault(Fault(method=method, path=path, drop_after_bytes=cut))


def kill_mid_command(schedule: Schedule, rng: random.Random, args: list[str]) -> None:
    """Run a command in a child and SIGINT or SIGKILL it at a chosen moment."""
    state = schedule.server.state
    how = rng.choice((signal.SIGINT, signal.SIGKILL))
    sending = args[0] in ("create", "retry")
    points = ["anywhere", "pause"] + (["upload", "create"] if sending else ["download"])
    point = rng.choice(points)
    env = dict(os.environ)
    mark = schedule.work / ".campaign-mark"
    mark.unlink(missing_ok=True)
    nth = rng.randint(1, 3)
    where = point
    if point in ("upload", "create"):
        target = r"^/v1/files$" if point == "upload" else r"^/v1/batches$"
        if nth > 1:  # the first nth-1 pass; the nth is done, and its answer held back
            state.add_fault(Fault(method="POST", path=target, times=nth - 1))
        state.add_fault(Fault(method="POST", path=target, delay=20))
        where = f"{point} {nth}"
    elif point == "download":
        state.add_fault(Fault(path=r"/content$", stall_after_bytes=50, delay=20))
    elif point == "pause":
        spec = rng.choice(PAUSE_POINTS)
        nth = rng.randint(1, 2)
        env.update(
            JOB_CAMPAIGN_PAUSE=spec, JOB_CAMPAIGN_PAUSE_AT=str(nth), JOB_CAMPAIGN_MARK=str(mark)
        )
        where = f"call {nth} of {spec}"
    else:
        where = f"{rng.uniform(0, 0.15):.3f} s after its first request"
    schedule.log.append(f"kill -{how.name} during {where}: {' '.join(args)}")

    def arrived() -> bool:
        if point == "upload":
            return sum(f.purpose == "batch" for f in state.files.values()) >= uploads + nth
        if point == "create":
            return len(state.batches) >= batches + nth
        if point == "download":
            return any(schedule.work.rglob(".*.part"))
        if point == "pause":
            return mark.exists()
        return len(state.requests) > requests

    uploads = sum(f.purpose == "batch" for f in state.files.values())
    batches, requests = len(state.batches), len(state.requests)
    files_before = set(state.files)
    child = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", CHILD, *args],
        cwd=schedule.work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not arrived() and child.poll() is None:
        assert time.monotonic() < deadline, f"the child never reached its {where}"
        time.sleep(0.005)
    if point == "anywhere":
        time.sleep(float(where.split()[0]))
    reached = child.poll() is None
    child.send_signal(how)
    try:
        _, err = child.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        # Seen while a sweep's download stalled in a read held the exit (seeds 7075, 7187,
        # 7207); the console script now waits 2 s for such threads, then ends
        # (cli/process.py, tests/test_faults.py). Kept to show the stacks if it comes back.
        child.send_signal(signal.SIGABRT)
        _, stacks = child.communicate(timeout=15)
        schedule.log.append(f"child outlived {how.name} by 15 s")
        warnings.warn(
            f"seed {schedule.seed}: a child outlived {how.name} by 15 s; its threads:\n{stacks}",
            stacklevel=1,
        )
        err = ""
    finally:
        state.clear_faults()
    code = child.returncode
    schedule.log[-1] += f" -> {code}" + ("" if reached else " (ended before the kill)")
    assert "Traceback" not in err, (
        f"the child crashed: {err.strip().splitlines()[-1]}\n{err[-1500:]}"
    )
    if sending:
        schedule.remember(key_of(args), args, code)
    count_killed_uploads(schedule, files_before)
    after_command(schedule)


# Where a child is paused (and killed) in a retry's merge into its original, and at which
# call: see kill_in_retry_merge.
RETRY_MERGE_POINTS = (
    # the retry's parts merged, not the original
    ("batchledger.jobs.retry_merge:merge_into_original", 1),
    ("batchledger.redo:_read_range", 1),  # the original's results being saved (a .part open)
    ("batchledger.jobs.retry_merge:_record", 1),  # the original's output saved, not recorded
    ("batchledger.jobs.retry_merge:_record", 2),  # its output recorded, its errors not
    (
        "batchledger.ledger.job_store:JobStore.finish_job",
        1,
    ),  # merged and recorded, the retry not done
)


def kill_in_retry_merge(schedule: Schedule, rng: random.Random, job_id: str) -> None:
    """Issue 19, item 1: the retry of `job_id` finished on the server, and the command that
    merges it into its original (a sweep, `status` of the retry, or `retry` again)
    killed (SIGKILL) or Ctrl-C'd inside that merge. A retry job done must have its answers
    in the original's results at once; the recovery must finish the merge."""
    running = [
        job
        for job in job_rows(schedule)
        if job["retry_of"] == job_id and job["status"] == "running"
    ]
    if not running:
        return
    schedule.server.state.clear_faults()
    schedule.advance_all(4)
    args = rng.choice(
        (["status", "--all"], ["retry", job_id], ["status", "--batch-id", running[-1]["job_id"]])
    )
    spec, nth = rng.choice(RETRY_MERGE_POINTS)
    how = rng.choice((signal.SIGINT, signal.SIGKILL))
    mark = schedule.work / ".campaign-mark"
    mark.unlink(missing_ok=True)
    env = {
        **os.environ,
        "JOB_CAMPAIGN_PAUSE": spec,
        "JOB_CAMPAIGN_PAUSE_AT": str(nth),
        "JOB_CAMPAIGN_MARK": str(mark),
    }
    schedule.log.append(f"kill -{how.name} in a retry's merge, call {nth} of {spec}: {args}")
    files_before = set(schedule.server.state.files)
    child = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", CHILD, *args],
        cwd=schedule.work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not mark.exists() and child.poll() is None:
        assert time.monotonic() < deadline, f"the child never reached {spec}"
        time.sleep(0.005)
    reached = child.poll() is None
    child.send_signal(how)
    _, err = child.communicate(timeout=15)
    schedule.log[-1] += f" -> {child.returncode}" + ("" if reached else " (ended before)")
    assert "Traceback" not in err, f"the child crashed: {err.strip().splitlines()[-1]}"
    if args[0] == "retry":
        schedule.remember(key_of(args), args, child.returncode)
    count_killed_uploads(schedule, files_before)
    after_command(schedule)
    check_done_retries_merged(schedule)


def change_results(schedule: Schedule, rng: random.Random, job_id: str) -> None:
    """Issue 19, items 2 and 6: before `retry`, the job's merged results are cut short,
    moved away, added to, or one of them removed; or, besides, a part's saved results
    changed, which `retry` must refuse (exit 3), sending nothing, until it is put back."""
    job = next(job for job in job_rows(schedule) if job["job_id"] == job_id)
    saved = [Path(job[f"{kind}_path"]) for kind in ("output", "error") if job[f"{kind}_path"]]
    saved = [path for path in saved if path.exists() and path.stat().st_size]
    if not saved:
        return
    path = rng.choice(saved)
    how = rng.choice(("cut", "moved", "added to", "removed", "cut, and a part's changed"))
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    if how.startswith("cut") and len(lines) > 1:
        path.write_bytes(b"".join(lines[: rng.randint(0, len(lines) - 1)]))
    elif how.startswith("cut"):
        path.write_bytes(data[: len(data) // 2])
    elif how == "moved":
        path.rename(path.with_name(f"moved-{path.name}"))
    elif how == "added to":
        path.write_bytes(data + data.splitlines(keepends=True)[0])
    else:
        path.unlink()
    schedule.log.append(f"{path.name} {how}")
    if not how.endswith("part's changed"):
        return
    rows = batch_rows(schedule)
    parts = {part["id"] for part in part_rows(schedule) if part["job"] == job["id"]}
    saved_parts = [row for row in rows if row["part"] in parts and row["output_bytes"]]
    if not saved_parts:
        return
    part_file = Path(rng.choice(saved_parts)["output_path"])
    kept = part_file.read_bytes()
    part_file.write_bytes(kept[: len(kept) // 2])
    state = schedule.server.state
    batches = len(state.batches)
    code = schedule.run("retry", job_id)
    assert code == 3, f"retry with a part's results changed exited {code}"
    assert len(state.batches) == batches, "retry sent a batch from changed results"
    part_file.write_bytes(kept)  # fetched again, say
    schedule.log.append(f"{part_file.name} put back")


def check_done_retries_merged(schedule: Schedule) -> None:
    """A retry job done has every success it got in its original's merged output."""
    state = schedule.server.state
    jobs = job_rows(schedule)
    parts = part_rows(schedule)
    for retry in jobs:
        if not retry["retry_of"] or retry["status"] != "done":
            continue
        original = next(job for job in jobs if job["job_id"] == retry["retry_of"])
        target = schedule.work / f"results_{original['job_id']}.jsonl"
        merged = target.read_bytes() if target.exists() else b""
        refs = {part["ref"] for part in parts if part["job"] == retry["id"]}
        for batch in state.batches.values():
            if ref_of_batch(state, batch) not in refs or bounced(batch):
                continue
            for line in server_file(schedule, batch.output_file_id).splitlines(keepends=True):
                if (json.loads(line).get("response") or {}).get("status_code") == 200:
                    assert line in merged, (
                        f"{retry['job_id']} is done, yet its answer to "
                        f"{json.loads(line)['custom_id']} is not in {target.name}"
                    )


def count_killed_uploads(schedule: Schedule, before: set[str]) -> None:
    """An upload that arrived while the child ran but that the ledger does not know of was
    cut off by the kill: a run after it may upload that part again."""
    known = {part["input_file_id"] for part in part_rows(schedule)}
    for upload in schedule.server.state.files.values():
        if upload.purpose == "batch" and upload.id not in known and upload.id not in before:
            schedule.killed_uploads[f"{ref_of_upload(upload.filename)}:{upload.id}"] = 1


def after_command(schedule: Schedule) -> None:
    """After every command: no part has two live batches on the server."""
    assert not schedule.violations, schedule.violations[0]
    state = schedule.server.state
    live: defaultdict[str | None, list[str]] = defaultdict(list)
    for batch in state.batches.values():
        if not batch.is_final:
            live[ref_of_batch(state, batch)].append(batch.id)
    twice = {ref: ids for ref, ids in live.items() if len(ids) > 1}
    assert not twice, f"parts with two live batches after step {len(schedule.log)}: {twice}"


# Recovery


def drive_to_end(schedule: Schedule) -> None:
    """What a user does next: run again what was cut off, then `status --all` while the
    batches finish, until every job has ended."""
    state = schedule.server.state
    state.clear_faults()
    for key, args in sorted(schedule.cut_off.items()):
        code = schedule.run(*args)
        assert code in (0, 3), f"running again the cut-off `{key}` exited {code}"
        schedule.cut_off.pop(key)
        after_command(schedule)
    still = waits = 0
    last: Any = None
    for _ in range(RECOVERY_ROUNDS):
        code = schedule.run("status", "--all")
        assert code in (0, 1), f"a recovery sweep exited {code}"
        after_command(schedule)
        jobs = job_rows(schedule)
        if (
            jobs
            and all(job["status"] != "running" for job in jobs)
            and all(batch.is_final for batch in state.batches.values())
        ):
            return
        seen = (
            [job["status"] for job in jobs],
            [(b.id, b.status) for b in state.batches.values()],
            [(p["state"], p["requeues"]) for p in part_rows(schedule)],
        )
        still, last = (still + 1 if seen == last else 0), seen
        waits = waits if still else 0
        if still >= 2:  # nothing moves: the user waits out the token limit's backoff
            if waits >= 2:
                break
            CLOCK_SKEW[0] += 1860
            schedule.log.append("wait 31 min")
            still, waits = 0, waits + 1
        schedule.advance_all(1)
    raise AssertionError(f"a job never ends: {stuck(schedule)}")


def stuck(schedule: Schedule) -> str:
    """The first part of a running job that is not final, and where it stands."""
    rows = batch_rows(schedule)
    for job in job_rows(schedule):
        if job["status"] != "running":
            continue
        for part in part_rows(schedule):
            if part["job"] != job["id"]:
                continue
            attempts = [row for row in rows if row["part"] == part["id"]]
            last = attempts[-1] if attempts else None
            status = "none" if last is None else last["status"] or "unfinished"
            if status not in FINAL or (last is not None and last["batch_id"] is None):
                return (
                    f"part {part['part_index']} of {job['job_id']} is {part['state']}, "
                    f"its last attempt {status}"
                )
        return f"{job['job_id']} is running, every part final"
    return "no job running, some batch on the server not final"


def recover(schedule: Schedule) -> None:
    drive_to_end(schedule)
    code = schedule.run("status", "--all")
    assert code == 0, f"the last sweep exited {code}"


# Invariants


def check_invariants(schedule: Schedule) -> None:
    """Issue 13's invariants, the server's state taken as the truth:
    - each part has at most one live batch (checked throughout, see after_command);
    - no part uploaded twice unless a kill cut off its upload; none submitted twice (a
      batch the token limit bounced is not a submission that ran; at most one other);
    - each part's upload holds exactly its byte ranges of the input; a job's parts cover
      its input (a retry's: the lines it sent), none lost;
    - every job ended; its merged results are absent where no part left that kind of
      file, else byte for byte the parts' final outputs in part order; after a retry, the
      original's hold one line per custom_id in input order (its success from any attempt,
      else its last error);
    - every request of an input has exactly one line in its job's merged results plus
      errors, unless it is missing from every attempt's files on the server (the
      emulator's `missing` line outcome: a request in neither file), then none;
    - the ledger agrees with the server: every server batch is one ledger row, every
      part's last attempt has the server's status, saved results are the server's bytes;
    - no temporary `.part` file left; the ledger passes its integrity check.
    """
    state = schedule.server.state
    jobs, parts, rows = job_rows(schedule), part_rows(schedule), batch_rows(schedule)
    assert jobs, "no job was ever recorded"
    # Every server batch is exactly one ledger row, of one of the job's parts.
    for batch in state.batches.values():
        matches = [row for row in rows if row["batch_id"] == batch.id]
        assert len(matches) == 1, f"{batch.id} is in {len(matches)} ledger rows"
        assert matches[0]["part"] is not None, f"{batch.id} is not recorded as a part's"
    for row in rows:
        if row["batch_id"] is not None:
            assert row["batch_id"] in state.batches, f"{row['batch_id']} is not on the server"
    parts_of_job: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
    for part in parts:
        parts_of_job[part["job"]].append(part)
    final: dict[int, StoredBatch | None] = {}  # part id -> its batch that ran
    for part in parts:
        check_part(schedule, part, rows, final)
    by_id = {job["job_id"]: job for job in jobs}
    for job in jobs:
        assert job["status"] in ("done", "cancelled"), f"{job['job_id']} is {job['status']}"
        check_job(schedule, job, sorted(parts_of_job[job["id"]], key=lambda p: p["part_index"]))
    # The originals: one line per request, and after a retry the per-custom_id merge.
    for job in jobs:
        if job["retry_of"]:
            assert job["retry_of"] in by_id, f"{job['job_id']} retries an unknown job"
            continue
        chain = [job] + [
            other
            for other in jobs
            if other["retry_of"] == job["job_id"] and other["status"] == "done"
        ]
        check_original(schedule, job, chain, parts_of_job, final)
    leftovers = sorted(str(p.relative_to(schedule.work)) for p in schedule.work.rglob(".*.part"))
    assert not leftovers, f"temporary files left behind: {leftovers}"


def check_part(
    schedule: Schedule,
    part: dict[str, Any],
    rows: list[dict[str, Any]],
    final: dict[int, StoredBatch | None],
) -> None:
    state = schedule.server.state
    ref = part["ref"]
    uploads = [
        f for f in state.files.values() if f.purpose == "batch" and ref_of_upload(f.filename) == ref
    ]
    allowed = 1 + sum(1 for key in schedule.killed_uploads if key.startswith(f"{ref}:"))
    assert len(uploads) <= allowed, (
        f"part {part['part_index']} ({ref}) uploaded {len(uploads)} times, "
        f"{allowed - 1} cut off by kills"
    )
    expected = part_bytes(schedule, part)
    for upload in uploads:
        assert upload.path.read_bytes() == expected, f"the upload of part {ref} is not its bytes"
    batches = [b for b in state.batches.values() if ref_of_batch(state, b) == ref]
    ran = [b for b in batches if not bounced(b)]
    assert len(ran) <= 1, f"part {part['part_index']} ({ref}) submitted {len(ran)} times"
    final[part["id"]] = ran[0] if ran else None
    attempts = [row for row in rows if row["part"] == part["id"]]
    if part["state"] == "cancelled":
        return
    assert ran, f"part {part['part_index']} ({ref}) never ran ({len(batches)} bounced)"
    last = attempts[-1] if attempts else None
    assert last is not None and last["batch_id"] == ran[0].id, (
        f"part {ref}: its last attempt is {last and last['batch_id']}, the server ran {ran[0].id}"
    )
    assert last["status"] == ran[0].status, (
        f"part {ref}: the ledger says {last['status']}, the server {ran[0].status}"
    )
    for kind, file_id in (("output", ran[0].output_file_id), ("error", ran[0].error_file_id)):
        if file_id is None:
            continue
        assert last[f"{kind}_path"], f"part {ref}: its {kind} file is not saved"
        saved = Path(last[f"{kind}_path"]).read_bytes()
        assert saved == state.files[file_id].path.read_bytes(), f"part {ref}: {kind} differs"


def part_bytes(schedule: Schedule, part: dict[str, Any]) -> bytes:
    job = next(job for job in job_rows(schedule) if job["id"] == part["job"])
    source = Path(job["input_path"]).read_bytes()
    ranges = (
        json.loads(part["ranges"]) if part["ranges"] else [[part["start_byte"], part["end_byte"]]]
    )
    return b"".join(source[start:end] for start, end in ranges)


def server_file(schedule: Schedule, file_id: str | None) -> bytes:
    return schedule.server.state.files[file_id].path.read_bytes() if file_id else b""


def check_job(schedule: Schedule, job: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """A job's parts cover its input; its merged files are its parts' final outputs."""
    state = schedule.server.state
    job_id = job["job_id"]
    if not job["retry_of"]:
        source = Path(job["input_path"]).read_bytes()
        assert b"".join(part_bytes(schedule, part) for part in parts) == source, (
            f"{job_id}: its parts do not make up its input"
        )
    outputs = {"output": b"", "error": b""}
    pieces: dict[str, list[bytes]] = {"output": [], "error": []}
    for part in parts:
        batches = [
            b
            for b in state.batches.values()
            if ref_of_batch(state, b) == part["ref"] and not bounced(b)
        ]
        if batches:
            for kind, file_id in (
                ("output", batches[0].output_file_id),
                ("error", batches[0].error_file_id),
            ):
                pieces[kind].append(server_file(schedule, file_id))
                outputs[kind] += pieces[kind][-1]
        else:
            pieces["output"].append(b"")
            pieces["error"].append(b"")
    retried = any(other["retry_of"] == job_id for other in job_rows(schedule))
    for kind, suffix in (("output", ".jsonl"), ("error", ".errors.jsonl")):
        target = schedule.work / f"results_{job_id}{suffix}"
        if retried and not job["retry_of"]:
            continue  # an original that was retried: check_original
        if not outputs[kind]:
            assert not target.exists(), f"{target.name} exists, yet no part left a {kind} file"
            assert job[f"{kind}_path"] is None, f"{job_id}: {kind} recorded with nothing saved"
            continue
        assert target.exists(), f"{job_id} is {job['status']} without {target.name}"
        merged = target.read_bytes()
        left_out = omitted(merged, pieces[kind])
        assert not left_out, f"{target.name} lacks the {kind} of parts {left_out}"
        assert merged == outputs[kind], (
            f"{target.name} is not its parts' {kind} files in part order"
        )
        check_recorded(job, kind, target)


def omitted(merged: bytes, pieces: list[bytes]) -> list[int]:
    """The (1-based) parts whose bytes a merged file skipped, if it is the others' in order."""
    position, skipped = 0, []
    for index, piece in enumerate(pieces, start=1):
        if merged.startswith(piece, position):
            position += len(piece)
        else:
            skipped.append(index)
    return skipped if position == len(merged) else []


def check_recorded(job: dict[str, Any], kind: str, target: Path) -> None:
    import hashlib

    data = target.read_bytes()
    assert job[f"{kind}_path"] and Path(job[f"{kind}_path"]) == target.absolute(), (
        f"{job['job_id']}: the ledger has its {kind} at {job[f'{kind}_path']}"
    )
    assert job[f"{kind}_bytes"] == len(data), f"{job['job_id']}: {kind} size differs"
    assert job[f"{kind}_sha256"] == hashlib.sha256(data).hexdigest(), (
        f"{job['job_id']}: {kind} sha256 differs"
    )


def check_original(
    schedule: Schedule,
    job: dict[str, Any],
    chain: list[dict[str, Any]],
    parts_of_job: dict[int, list[dict[str, Any]]],
    final: dict[int, StoredBatch | None],
) -> None:
    """Every request of the input: one line in the merged results plus errors, unless
    every attempt lost it (a custom_id in no file of any batch that ran)."""
    custom_ids = [
        json.loads(line)["custom_id"] for line in Path(job["input_path"]).read_bytes().splitlines()
    ]
    # Each custom_id's result lines, attempt by attempt (the original, then its retries).
    answers: defaultdict[str, list[tuple[bool, bytes]]] = defaultdict(list)
    for attempt in chain:
        for part in sorted(parts_of_job[attempt["id"]], key=lambda p: p["part_index"]):
            batch = final.get(part["id"])
            if batch is None:
                continue
            for file_id in (batch.output_file_id, batch.error_file_id):
                for line in server_file(schedule, file_id).splitlines(keepends=True):
                    record = json.loads(line)
                    response = record.get("response") or {}
                    answers[record["custom_id"]].append((response.get("status_code") == 200, line))
    lost = [cid for cid in custom_ids if not answers[cid]]
    unexplained = [cid for cid in lost if cid not in schedule.missing_outcomes]
    assert not unexplained, f"{job['job_id']}: the server answered none of {unexplained}"
    job_id = job["job_id"]
    merged = {
        kind: (schedule.work / f"results_{job_id}{suffix}")
        for kind, suffix in (("output", ".jsonl"), ("error", ".errors.jsonl"))
    }
    seen: Counter[str] = Counter()
    for path in merged.values():
        if path.exists():
            seen.update(json.loads(line)["custom_id"] for line in path.read_bytes().splitlines())
    wrong = {cid: seen[cid] for cid in custom_ids if seen[cid] != (0 if cid in lost else 1)}
    assert not wrong, (
        f"{job_id}: requests without exactly one line in its merged results "
        f"(custom_id: lines): {dict(list(wrong.items())[:4])}"
    )
    if len(chain) == 1:
        return  # check_job compared its files with its parts'
    expected = {"output": b"", "error": b""}
    for cid in custom_ids:
        if not answers[cid]:
            continue
        ok = [line for success, line in answers[cid] if success]
        if ok:
            expected["output"] += ok[0]
        else:
            expected["error"] += answers[cid][-1][1]
    for kind, path in merged.items():
        if not expected[kind]:
            assert not path.exists(), f"{path.name} exists after the retry, with no line due"
            continue
        assert path.exists(), f"{path.name} is missing after its retry"
        assert path.read_bytes() == expected[kind], (
            f"{path.name} is not one line per custom_id after its retry"
        )
        check_recorded(job, kind, path)


# The ledger, read with plain sqlite3


def query(schedule: Schedule, sql: str) -> list[dict[str, Any]]:
    path = schedule.work / "ledger.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        try:
            return [dict(row) for row in conn.execute(sql)]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
    finally:
        conn.close()


def job_rows(schedule: Schedule) -> list[dict[str, Any]]:
    return query(schedule, "SELECT * FROM jobs ORDER BY id")


def part_rows(schedule: Schedule) -> list[dict[str, Any]]:
    return query(schedule, "SELECT * FROM parts ORDER BY id")


def batch_rows(schedule: Schedule) -> list[dict[str, Any]]:
    rows = query(schedule, "SELECT * FROM batches ORDER BY id")
    assert query(schedule, "PRAGMA integrity_check")[0]["integrity_check"] == "ok"
    return rows


# Package bugs the campaign found, each reproduced on its own; fixed, kept as tests.


def test_a_part_whose_create_was_abandoned_is_sent_again(cli, emulator: EmulatorServer):
    six_lines()
    # The first part's create gets a 500 (the request is not handled: no batch is made).
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", status=500))
    failed = cli("create", "--in", "in.jsonl", "--max-requests", "2", "--max-retries", "0")
    swept = cli("status", "--all")  # finds no batch for it: its attempt is abandoned
    again = cli("create", "--in", "in.jsonl", "--max-requests", "2")  # what a user runs next
    for _ in range(6):
        for batch_id in list(emulator.state.batches):
            emulator.state.advance(batch_id)
        cli("status", "--all")

    assert failed.code == 1 and swept.code == 0 and again.code in (0, 3)
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    try:
        [(status,)] = conn.execute("SELECT status FROM jobs").fetchall()
    finally:
        conn.close()
    assert status == "done", "the job never ends: its first part is never sent again"


def six_lines() -> None:
    Path("in.jsonl").write_bytes(
        b"".join(
            (
                json.dumps(
                    {
                        "custom_id": f"r-{n}",
                        "method": "POST",
                        "url": "/v1/responses",
                        "body": {"model": "gpt-4o-mini", "input": f"hello {n}"},
                    }
                )
                + "\n"
            ).encode()
            for n in range(6)
        )
    )


def test_a_lost_part_upload_is_found_not_sent_again_by_a_sweep(cli, emulator: EmulatorServer):
    six_lines()
    # The first part's upload is made on the server; its answer is lost.
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/files$", drop_request=True))
    failed = cli("create", "--in", "in.jsonl", "--max-requests", "3", "--max-retries", "0")
    swept = cli("status", "--all")

    assert failed.code == 1 and swept.code == 0, swept.err
    uploads = [f.filename for f in emulator.state.files.values() if f.purpose == "batch"]
    assert len(uploads) == len(set(uploads)), f"uploaded twice: {sorted(uploads)}"
