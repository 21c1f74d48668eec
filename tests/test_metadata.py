"""What a batch is about: its model, the user's metadata, and the expiry of its files."""

import json
import os
import sqlite3
from pathlib import Path

from helpers import ledger_rows, sdk, write_jsonl
from sqlite_utils import Database

from batchledger.emulator import EmulatorServer
from migrations import migrations


def released_ledger(path: Path) -> None:
    """A ledger as the release before m004_batch_details wrote it."""
    db = Database(path)
    migrations.apply(db, stop_before="m004_batch_details")
    db.close()


def test_model_is_recorded_listed_filtered_and_shown(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "mini.jsonl", 2)
    mini = cli("create", "--in", "mini.jsonl").field("batch_id")
    with (isolated / "big.jsonl").open("w") as out:
        for n in range(2):
            body = {"model": "gpt-4.1", "input": f"hi {n}"}
            line = {"custom_id": f"r{n}", "method": "POST", "url": "/v1/responses", "body": body}
            out.write(json.dumps(line) + "\n")
    big = cli("create", "--in", "big.jsonl").field("batch_id")

    listed = cli("list")
    header, _, *rows = listed.out.splitlines()
    assert header.split()[:3] == ["batch_id", "status", "model"]
    assert {row.split()[0]: row.split()[2] for row in rows} == {mini: "gpt-4o-mini", big: "gpt-4.1"}

    only = cli("list", "--model", "gpt-4.1")
    assert [row.split()[0] for row in only.out.splitlines()[2:]] == [big]
    assert cli("list", "--model", "gpt-5").out == "No batches match.\n"
    assert json.loads(cli("list", "--model", "gpt-4o-mini", "--json").out)[0]["model"] == (
        "gpt-4o-mini"
    )
    assert "model: gpt-4.1" in cli("show", big).out.splitlines()


def test_an_older_ledger_gets_the_model_on_the_next_status(
    cli, emulator: EmulatorServer, isolated: Path
):
    client = sdk(emulator)
    with write_jsonl(isolated / "in.jsonl", 2).open("rb") as stream:
        file_id = client.files.create(file=("in.jsonl", stream), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/responses", completion_window="24h"
    )
    released_ledger(Path(os.environ["BATCHLEDGER_DB"]))
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    with conn:  # a row the released version wrote: it knew no model
        conn.execute(
            "INSERT INTO batches (ref, batch_id, endpoint, completion_window, status, recorded_at)"
            " VALUES ('bl_old', ?, '/v1/responses', '24h', 'validating', '2026-11-25T14:03:07Z')",
            (batch.id,),
        )
    conn.close()

    assert cli("list").code == 0  # opening it migrates it
    assert ledger_rows()[0]["model"] is None
    assert cli("status", "--batch-id", batch.id).code == 0
    assert ledger_rows()[0]["model"] == "gpt-4o-mini"
