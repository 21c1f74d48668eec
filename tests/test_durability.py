"""Every file the ledger names reaches the disk before the ledger names it (issue 24).

A crash or power cut after a rename whose bytes were not flushed can leave an empty or
short file under the final name, and a ledger that says it is saved. So each saved file
goes: its bytes fsynced (the temporary file) -> renamed into place -> its folder fsynced
(the rename itself) -> only then recorded in the ledger. No normal run shows a missing
fsync, so these tests record the calls, through the real CLI over real HTTP: os.fsync and
os.replace as the code makes them, and the ledger's SQL as SQLite runs it.
"""

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ServerFactory, complete, ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer
from batchledger.emulator.lifecycle import ERROR_MODEL

pytestmark = pytest.mark.skipif(os.name != "posix", reason="folders are fsynced on POSIX only")

# A file (or folder) by what the disk knows it as, whatever its name at the time.
Identity = tuple[int, int]  # (st_dev, st_ino)
# ("fsync", what was synced, "") | ("replace", the file renamed, its new path) | ("sql", ...)
Event = tuple[str, Identity | None, str]


def identity(status: os.stat_result) -> Identity:
    return (status.st_dev, status.st_ino)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, isolated: Path) -> Iterator[list[Event]]:
    """os.fsync and os.replace as they are called, and each statement the ledger runs."""
    events: list[Event] = []
    real_fsync, real_replace, real_connect = os.fsync, os.replace, sqlite3.connect

    def fsync(fd: Any) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        events.append(("fsync", identity(os.fstat(number)), ""))
        real_fsync(fd)

    def replace(source: Any, target: Any, **kwargs: Any) -> None:
        renamed = identity(os.stat(source))
        real_replace(source, target, **kwargs)
        events.append(("replace", renamed, os.path.abspath(target)))

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(database, *args, **kwargs)
        if Path(database) == Path(os.environ["BATCHLEDGER_DB"]):
            conn.set_trace_callback(lambda statement: events.append(("sql", None, statement)))
        return conn

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(sqlite3, "connect", connect)
    yield events


def assert_durable(events: list[Event], target: Path, *, recorded: bool = True) -> None:
    """`target`'s bytes were fsynced, then it was renamed into place, then its folder was
    fsynced; then (`recorded`) the ledger named it, never before."""
    target = target.resolve()
    renames = [
        n for n, (kind, _, to) in enumerate(events) if kind == "replace" and to == str(target)
    ]
    assert len(renames) == 1, f"{target} was renamed into place {len(renames)} times"
    renamed = renames[0]
    file = events[renamed][1]
    assert file == identity(target.stat())
    synced = [n for n, event in enumerate(events) if event == ("fsync", file, "")]
    assert synced and synced[-1] < renamed, f"{target} was not fsynced before its rename"
    folder = ("fsync", identity(target.parent.stat()), "")
    after = [n for n, event in enumerate(events) if event == folder and n > renamed]
    assert after, f"{target.parent} was not fsynced after the rename"
    named = [n for n, (kind, _, text) in enumerate(events) if kind == "sql" and str(target) in text]
    if recorded:
        assert named, f"the ledger never named {target}"
        assert named[0] > after[0], f"the ledger named {target} before it was durable"
    else:
        assert not named


def assert_retrieve_durable(cli: Any, batch_id: str, calls: list[Event]) -> None:
    """`retrieve` saves the batch's output and error files, each durable before recorded."""
    retrieved = cli("retrieve", "--batch-id", batch_id)

    assert retrieved.code == 0, retrieved.err
    row = ledger_rows()[0]
    assert row["output_path"] and row["error_path"]
    assert_durable(calls, Path(row["output_path"]))
    assert_durable(calls, Path(row["error_path"]))


def write_requests(path: Path, models: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for n, model in enumerate(models):
            body = {"model": model, "input": f"question {n}"}
            line = {"custom_id": f"req-{n}", "method": "POST", "url": "/v1/responses", "body": body}
            out.write(json.dumps(line) + "\n")
    return path


def test_retrieve_makes_the_output_and_error_files_durable_before_recording_them(
    cli, emulator: EmulatorServer, isolated: Path, calls: list[Event]
):
    write_requests(isolated / "in.jsonl", ["gpt-4o-mini", ERROR_MODEL, "gpt-4o-mini"])
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    complete(emulator, batch_id)

    assert_retrieve_durable(cli, batch_id, calls)


def test_an_anthropic_retrieve_makes_its_ordered_files_durable_before_recording_them(
    cli, make_server: ServerFactory, isolated: Path, monkeypatch, calls: list[Event]
):
    server = make_server(flavor="anthropic", api_key="sk-ant-test-SECRET")
    Path(os.environ["BATCHLEDGER_CONFIG"]).write_text(
        f'[accounts.claude]\nkind = "anthropic"\nbase_url = "{server.base_url}"\n'
        'api_key_env = "CLAUDE_KEY"\n'
    )
    monkeypatch.setenv("CLAUDE_KEY", "sk-ant-test-SECRET")
    with (isolated / "in.jsonl").open("w") as out:
        for n in range(6):
            params = {
                "model": "claude-haiku-4-5",
                "max_tokens": 0 if n == 2 else 64,  # 0: errored
                "messages": [{"role": "user", "content": f"hello {n}"}],
            }
            out.write(json.dumps({"custom_id": f"req-{n}", "params": params}) + "\n")
    batch_id = cli("--account", "claude", "create", "--in", "in.jsonl").field("batch_id")
    for _ in range(3):
        server.state.advance(batch_id)

    assert_retrieve_durable(cli, batch_id, calls)


def test_a_jobs_merged_results_are_durable_before_the_job_records_them(
    cli, emulator: EmulatorServer, isolated: Path, calls: list[Event]
):
    write_jsonl(isolated / "in.jsonl", 6)
    assert cli("create", "--in", "in.jsonl", "--max-requests", "3").code == 0
    for _ in range(4):
        for batch_id in list(emulator.state.batches):
            emulator.state.advance(batch_id)

    swept = cli("status", "--all")

    assert swept.code == 0, swept.err
    (job,) = ledger_rows("jobs")
    assert job["status"] == "done" and job["output_path"]
    assert_durable(calls, Path(job["output_path"]))
    for part in ledger_rows():
        assert_durable(calls, Path(part["output_path"]))


def test_an_export_is_durable_before_its_path_is_printed(
    cli, emulator: EmulatorServer, isolated: Path, calls: list[Event]
):
    write_requests(isolated / "in.jsonl", ["gpt-4o-mini", "gpt-4o-mini"])
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    complete(emulator, batch_id)
    assert cli("retrieve", "--batch-id", batch_id).code == 0
    calls.clear()

    exported = cli("export", batch_id, "--out", "rows.csv")

    assert exported.code == 0, exported.err
    assert_durable(calls, isolated / "rows.csv", recorded=False)  # exports are not recorded
