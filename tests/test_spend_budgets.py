"""Issue 22, second half: honest progress, daily budgets, actual costs, the token budget."""

import os
import sqlite3
from pathlib import Path

from helpers import write_jsonl

from batchledger.emulator import EmulatorServer
from batchledger.render import percent_done


def job_rows() -> tuple[list[dict], list[dict], list[dict]]:
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    conn.row_factory = sqlite3.Row
    try:
        jobs = [dict(row) for row in conn.execute("SELECT * FROM jobs ORDER BY id")]
        parts = [dict(row) for row in conn.execute("SELECT * FROM parts ORDER BY id")]
        attempts = [
            dict(row)
            for row in conn.execute("SELECT * FROM batches WHERE part IS NOT NULL ORDER BY id")
        ]
    finally:
        conn.close()
    return jobs, parts, attempts


def test_percent_done_reaches_100_only_once_final():
    assert percent_done(4, 4, final=False) == 99  # finalizing: every request answered
    assert percent_done(0, 4, final=False) == 0
    assert percent_done(3, 4, final=False) == 75
    assert percent_done(4, 4, final=True) == 100
    assert percent_done(2, 4, final=True) == 50  # cancelled half way: not shown as full
    assert percent_done(0, 0, final=False) == 0 and percent_done(0, 0, final=True) == 100


def test_a_job_bar_counts_queued_parts_and_never_jumps(cli, isolated: Path, monkeypatch):
    # One part live at a time: the total counts the 4 queued requests from the first line on.
    with EmulatorServer(port=0, step_seconds=0.05) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        write_jsonl(isolated / "in.jsonl", 6)
        created = cli("create", "--in", "in.jsonl", "--max-requests", "2", "--max-in-flight", "1")
        watched = cli("watch", "--batch-id", "last", "--interval", "0.05", "--max-interval", "0.1")

    assert created.code == 0, created.err
    assert watched.code == 0, watched.err
    lines = watched.err.splitlines()
    assert lines and all("done, " in line for line in lines), lines
    counts = [line.split(": ")[1].split(" ")[0].split("/") for line in lines]
    done = [int(count[0]) for count in counts]
    totals = [int(count[1]) for count in counts]
    percents = [int(line.rsplit(", ", 1)[1].split(" %")[0]) for line in lines]
    assert set(totals) == {6}, lines
    assert done == sorted(done) and percents == sorted(percents)
    # 100 % only on the last line, once the job is done (merged), never while running.
    assert all("running" in line for line in lines[:-1])
    assert max(percents[:-1]) <= 99
    assert lines[-1].startswith(f"{created.out.split()[1]} done (3/3 parts): 6/6 done")
    assert percents[-1] == 100
