"""`list`: the ledger as a table or JSON, with no key and no network."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_jsonl

from batchledger.emulator import EmulatorServer
from batchledger.ledger import open_ledger


def test_list_on_a_missing_ledger_creates_nothing(cli, isolated: Path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")

    result = cli("list")
    as_json = cli("list", "--json")

    assert (result.code, result.out, result.err) == (0, "No batches in the ledger yet.\n", "")
    assert (as_json.code, json.loads(as_json.out)) == (0, [])
    assert not (isolated.parent / "ledger.db").exists()
    assert not (isolated / "logs").exists()


def test_list_shows_every_batch_newest_first_without_a_key(
    cli, emulator: EmulatorServer, isolated: Path, monkeypatch: pytest.MonkeyPatch
):
    ids = []
    for lines, name in enumerate(("first", "second", "third"), start=1):
        write_jsonl(isolated / f"{name}.jsonl", lines)
        result = cli("create", "--in", f"{name}.jsonl")
        ids.append(result.field("batch_id"))
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing there
    requests_before = len(emulator.state.requests)

    result = cli("list")

    assert result.code == 0, result.err
    header, rule, *rows = result.out.splitlines()
    columns = ["batch_id", "status", "model", "created", "input", "requests", "saved"]
    assert header.split() == columns
    assert set(rule) <= {"-", " "}
    assert [row.split()[0] for row in rows] == list(reversed(ids))
    assert "third.jsonl" in rows[0] and "validating" in rows[0]
    assert len(emulator.state.requests) == requests_before

    as_json = cli("list", "--json")
    records = json.loads(as_json.out)
    assert [record["batch_id"] for record in records] == list(reversed(ids))
    assert records[0]["input_path"] == str(isolated / "third.jsonl")

    limited = cli("list", "--limit", "2")
    assert [row.split()[0] for row in limited.out.splitlines()[2:]] == ids[:0:-1]
    assert "showing the newest 2 of 3" in limited.err


def test_list_does_not_import_openai(emulator: EmulatorServer, isolated: Path):
    code = (
        "import sys; from batchledger.cli import main; rc = main(['list']);"
        "print('openai' in sys.modules, rc)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip().splitlines()[-1] == "False 0"


def fill_ledger(batches: int) -> None:
    ledger = open_ledger(Path(os.environ["BATCHLEDGER_DB"]))
    assert ledger is not None
    with ledger.db.conn:
        ledger.db.conn.executemany(
            "INSERT INTO batches (ref, batch_id, endpoint, completion_window, status, recorded_at)"
            " VALUES (?, ?, '/v1/responses', '24h', 'completed', '2026-11-25T14:03:07Z')",
            [(f"ref{n}", f"batch_{n:032x}") for n in range(batches)],
        )
    ledger.close()


def buffered_stdout() -> dict[str, str]:
    """The environment without PYTHONUNBUFFERED: stdout buffered, as for most users."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize("batches", [3, 3000])
def test_list_through_a_pipe_delivers_every_row(isolated: Path, batches: int):
    # 3 rows sit in the stdout buffer until the process ends; 3000 outgrow the pipe.
    fill_ledger(batches)

    completed = subprocess.run(
        [sys.executable, "-m", "batchledger", "list", "--all", "--json"],
        capture_output=True,
        text=True,
        env=buffered_stdout(),
    )

    assert (completed.returncode, completed.stderr) == (0, "")
    records = json.loads(completed.stdout)
    assert sorted(record["batch_id"] for record in records) == [
        f"batch_{n:032x}" for n in range(batches)
    ]


def test_list_onto_a_full_disk_fails(isolated: Path):
    fill_ledger(3)

    with open("/dev/full", "w") as full:
        completed = subprocess.run(
            [sys.executable, "-m", "batchledger", "list"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=buffered_stdout(),
        )

    assert completed.returncode == 1
    assert completed.stderr == (
        "batchledger: error: could not write the output: No space left on device\n"
    )


def test_list_into_a_closed_pipe_stops_quietly(isolated: Path):
    fill_ledger(3000)  # far more rows than a pipe buffers

    pipeline = subprocess.run(
        f"{sys.executable} -m batchledger list --all | head -n 1; echo status=${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        check=True,
    )

    assert pipeline.stdout.splitlines()[0].split()[0] == "batch_id"
    assert pipeline.stdout.splitlines()[-1] == "status=0"
    assert pipeline.stderr == ""
