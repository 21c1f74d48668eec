"""What a batch is about: its model, the user's metadata, and the expiry of its files."""

import json
import os
import sqlite3
from pathlib import Path

import pytest
from helpers import complete, ledger_rows, sdk, write_jsonl
from sqlite_utils import Database

from batchledger.emulator import EmulatorServer
from batchledger.migrations import migrations


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


def test_metadata_is_sent_with_the_ref_kept_and_shown_without_it(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    created = cli(
        "create", "--in", "in.jsonl", "--metadata", "team=search", "--metadata", "run=a=b"
    )
    assert created.code == 0, created.err
    batch_id = created.field("batch_id")

    sent = emulator.state.batches[batch_id].metadata
    row = ledger_rows()[0]
    assert sent == {"team": "search", "run": "a=b", "batchledger_ref": row["ref"]}
    assert json.loads(row["metadata"]) == {"team": "search", "run": "a=b"}

    shown = cli("show", batch_id)
    assert "metadata: team=search" in shown.out.splitlines()
    assert "metadata: run=a=b" in shown.out.splitlines()
    assert "batchledger_ref" not in shown.out
    as_json = json.loads(cli("show", batch_id, "--json").out)
    assert as_json["metadata"] == {"team": "search", "run": "a=b"}

    complete(emulator, batch_id)  # what the API says later keeps the same metadata
    assert cli("status", "--batch-id", batch_id).code == 0
    assert json.loads(ledger_rows()[0]["metadata"]) == {"team": "search", "run": "a=b"}


def test_list_filters_by_metadata_all_pairs_matching(cli, emulator: EmulatorServer, isolated: Path):
    ids = {}
    for name, tags in (
        ("a", ["team=search", "env=prod"]),
        ("b", ["team=search", "env=dev"]),
        ("c", []),
    ):
        write_jsonl(isolated / f"{name}.jsonl", 1, input=name)
        options = [arg for tag in tags for arg in ("--metadata", tag)]
        ids[name] = cli("create", "--in", f"{name}.jsonl", *options).field("batch_id")

    def listed(*pairs: str) -> set[str]:
        options = [arg for pair in pairs for arg in ("--metadata", pair)]
        return {row["batch_id"] for row in json.loads(cli("list", *options, "--json").out)}

    assert listed("team=search") == {ids["a"], ids["b"]}
    assert listed("team=search", "env=prod") == {ids["a"]}
    assert listed("team=search", "env=test") == set()
    assert listed("batchledger_ref=" + ledger_rows()[0]["ref"]) == set()
    assert cli("list", "--metadata", "team=nobody").out == "No batches match.\n"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--metadata", "team"], "expected KEY=VALUE"),
        (["--metadata", "=search"], "expected a key"),
        (["--metadata", "a=1", "--metadata", "a=2"], "given twice"),
        (["--metadata", "batchledger_ref=x"], "reserved"),
        (["--metadata", "k" * 65 + "=v"], "at most 64"),
        (["--metadata", "k=" + "v" * 513], "at most 512"),
        ([arg for n in range(16) for arg in ("--metadata", f"k{n}=v")], "at most 15"),
    ],
)
def test_bad_metadata_is_refused_before_anything_is_sent(
    cli, emulator: EmulatorServer, isolated: Path, options: list[str], reason: str
):
    write_jsonl(isolated / "in.jsonl", 1)

    result = cli("create", "--in", "in.jsonl", *options)

    assert (result.code, result.out) == (2, "")
    assert reason in result.err and len(result.err.splitlines()) == 1, result.err
    assert emulator.state.requests == []
    assert not Path(os.environ["BATCHLEDGER_DB"]).exists()


def test_the_most_metadata_the_api_takes_is_accepted(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 1)
    pairs = {f"{n:02d}" + "k" * 62: "v" * 512 for n in range(15)}
    options = [arg for key, value in pairs.items() for arg in ("--metadata", f"{key}={value}")]

    result = cli("create", "--in", "in.jsonl", *options)

    assert result.code == 0, result.err
    assert json.loads(ledger_rows()[0]["metadata"]) == pairs
    assert len(emulator.state.batches[result.field("batch_id")].metadata or {}) == 16


def test_expiries_are_sent_to_the_upload_and_the_batch_and_recorded(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)

    result = cli(
        "create",
        "--in",
        "in.jsonl",
        "--input-expires-after",
        "12h",
        "--output-expires-after",
        "2w",
    )

    assert result.code == 0, result.err
    batch = emulator.state.batches[result.field("batch_id")]
    upload = emulator.state.files[result.field("file_id")]
    assert upload.expires_at == upload.created_at + 12 * 3600
    assert batch.output_expires_after == 14 * 86400
    row = ledger_rows()[0]
    assert (row["input_expires_after"], row["output_expires_after"]) == (43200, 1209600)
    shown = cli("show", "last").out.splitlines()
    assert "input_expires_after: 12h (43200 seconds)" in shown
    assert "output_expires_after: 14d (1209600 seconds)" in shown


def test_without_expiries_nothing_is_sent_for_them(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 1)
    result = cli("create", "--in", "in.jsonl")
    assert result.code == 0, result.err
    assert emulator.state.batches[result.field("batch_id")].output_expires_after is None
    row = ledger_rows()[0]
    assert (row["input_expires_after"], row["output_expires_after"]) == (None, None)


@pytest.mark.parametrize("option", ["--input-expires-after", "--output-expires-after"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("59m", "from 1h to 30d"),
        ("31d", "from 1h to 30d"),
        ("5w", "from 1h to 30d"),
        ("12", "like 90m"),
        ("soon", "like 90m"),
        ("-2h", "like 90m"),
        ("1.5d", "like 90m"),
    ],
)
def test_bad_expiries_are_refused_before_anything_is_sent(
    cli, emulator: EmulatorServer, isolated: Path, option: str, value: str, reason: str
):
    write_jsonl(isolated / "in.jsonl", 1)

    result = cli("create", "--in", "in.jsonl", f"{option}={value}")

    assert (result.code, result.out) == (2, "")
    assert reason in result.err and len(result.err.splitlines()) == 1, result.err
    assert emulator.state.requests == []
    assert not Path(os.environ["BATCHLEDGER_DB"]).exists()


@pytest.mark.parametrize(
    ("value", "seconds"), [("1h", 3600), ("90m", 5400), ("7d", 604800), ("30d", 2592000)]
)
def test_expiry_forms_within_the_range(value: str, seconds: int):
    from batchledger.durations import expiry_seconds

    assert expiry_seconds(value) == seconds
