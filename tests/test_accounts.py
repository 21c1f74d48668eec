"""Accounts (issue 12): one ledger for several OpenAI projects, Azure OpenAI and any
OpenAI-compatible API, each batch followed on the account it was made on."""

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import API_KEY, api_requests, ledger_rows, write_jsonl
from openai import OpenAI

from batchledger.emulator import EmulatorServer, Fault
from batchledger.migrations import migration_names

SECOND_KEY = "sk-second-0123456789abcdefSECRET"
AZURE_KEY = "azure-key-0123456789abcdefSECRET"
FIXTURE = Path(__file__).parent / "fixtures" / "ledger_v0_1_0.db"


def write_accounts(text: str) -> Path:
    path = Path(os.environ["BATCHLEDGER_CONFIG"])
    path.write_text(text)
    return path


@pytest.fixture
def three(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, EmulatorServer]]:
    """The emulator as `default`, a second one as `second`, one in Azure's shape as `east`."""
    with (
        EmulatorServer(port=0, api_key=SECOND_KEY) as second,
        EmulatorServer(port=0, flavor="azure", api_key=AZURE_KEY) as east,
    ):
        write_accounts(
            f"""
[accounts.second]
base_url = "{second.base_url}"
api_key_env = "SECOND_KEY"

[accounts.east]
kind = "azure"
endpoint = "{east.url}"
api_version = "2025-04-01-preview"
api_key_env = "EAST_KEY"
"""
        )
        monkeypatch.setenv("SECOND_KEY", SECOND_KEY)
        monkeypatch.setenv("EAST_KEY", AZURE_KEY)
        yield {"default": emulator, "second": second, "east": east}


def finish(server: EmulatorServer, batch_id: str) -> None:
    """validating -> in_progress -> finalizing -> completed, whatever the server's key."""
    for _ in range(3):
        server.state.advance(batch_id)
    assert server.state.batches[batch_id].status == "completed"


def requests_of(server: EmulatorServer, method: str, fragment: str) -> int:
    return sum(1 for r in server.state.requests if r.method == method and fragment in r.path)


def test_three_accounts_each_reach_their_own_server(cli, three, isolated: Path):
    write_jsonl(isolated / "a.jsonl", 2)
    write_jsonl(isolated / "b.jsonl", 3)
    write_jsonl(isolated / "c.jsonl", 4, endpoint="/chat/completions")
    made = {
        "default": cli("create", "--in", "a.jsonl"),
        "second": cli("--account", "second", "create", "--in", "b.jsonl"),
        "east": cli("create", "--in", "c.jsonl", "--account", "east"),
    }
    ids = {name: result.field("batch_id") for name, result in made.items()}

    # Each batch was made on its own server, and nowhere else.
    for name, server in three.items():
        assert made[name].code == 0, made[name].err
        assert set(server.state.batches) == {ids[name]}
    assert three["east"].state.batches[ids["east"]].endpoint == "/chat/completions"
    assert all("api-version" in r.query for r in three["east"].state.requests)

    swept = cli("status", "--all")
    for name, server in three.items():
        assert requests_of(server, "GET", f"/batches/{ids[name]}") == 1, name
    for name, server in three.items():
        finish(server, ids[name])
    watched = cli("watch", "--all", "--interval", "0.01")
    listed = cli("list")
    shown = cli("list", "--account", "east", "--json")

    assert swept.code == 0, swept.err
    assert watched.code == 0, watched.err
    for name, server in three.items():
        saved = isolated / f"results_{ids[name]}.jsonl"
        output = server.state.files[server.state.batches[ids[name]].output_file_id]
        assert saved.read_bytes() == output.path.read_bytes(), name
        assert requests_of(server, "GET", "/content") == 1, name
    header = listed.out.splitlines()[0].split()
    assert header[0] == "account"
    assert sorted(line.split()[0] for line in listed.out.splitlines()[2:]) == [
        "default",
        "east",
        "second",
    ]
    assert [row["batch_id"] for row in json.loads(shown.out)] == [ids["east"]]
    rows = {row["batch_id"]: row for row in ledger_rows()}
    assert rows[ids["second"]]["base_url"] == three["second"].base_url
    assert rows[ids["east"]]["base_url"] == f"{three['east'].url}/openai"


def test_sync_and_retrieve_use_the_chosen_and_the_recorded_account(cli, three, isolated: Path):
    second = three["second"]
    client = OpenAI(api_key=SECOND_KEY, base_url=second.base_url, max_retries=0)
    upload = client.files.create(
        file=write_jsonl(isolated / "x.jsonl", 2).open("rb"), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
    )
    finish(second, batch.id)

    synced = cli("sync", "--account", "second")
    retrieved = cli("retrieve", "--batch-id", batch.id)  # no --account: it is second's

    assert synced.code == 0 and synced.field("added") == "1", synced.err
    assert requests_of(three["default"], "GET", "/v1/batches") == 0
    assert retrieved.code == 0, retrieved.err
    assert requests_of(second, "GET", "/content") == 1
    [row] = ledger_rows()
    assert (row["account"], row["origin"]) == ("second", "sync")


def test_an_account_with_no_key_is_skipped_and_the_others_still_sweep(
    cli, three, isolated: Path, monkeypatch
):
    write_jsonl(isolated / "a.jsonl", 2)
    write_jsonl(isolated / "b.jsonl", 3)
    cli("create", "--in", "a.jsonl")
    second_id = cli("--account", "second", "create", "--in", "b.jsonl").field("batch_id")
    before = requests_of(three["second"], "GET", "/batches/")
    monkeypatch.delenv("OPENAI_API_KEY")

    swept = cli("status", "--all")

    assert swept.code == 0, swept.err
    skipped = [line for line in swept.err.splitlines() if "skipped" in line]
    assert skipped == [
        "batchledger: warning: skipped 1 batch of account 'default': OPENAI_API_KEY is not set"
    ]
    assert second_id in swept.out
    assert requests_of(three["second"], "GET", "/batches/") == before + 1


def test_the_same_input_on_two_accounts_is_not_a_duplicate(cli, three, isolated: Path):
    write_jsonl(isolated / "a.jsonl", 2)

    first = cli("create", "--in", "a.jsonl")
    other = cli("--account", "second", "create", "--in", "a.jsonl")
    again = cli("--account", "second", "create", "--in", "a.jsonl")

    assert (first.code, other.code, again.code) == (0, 0, 3)


def test_an_id_on_two_accounts_needs_the_account_named(cli, three, isolated: Path):
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    cli("list")  # nothing yet; a create makes the ledger
    write_jsonl(isolated / "a.jsonl", 2)
    batch_id = cli("create", "--in", "a.jsonl").field("batch_id")
    with conn:  # the same id on another account, as another provider could hand out
        conn.execute(
            "INSERT INTO batches (ref, account, batch_id, origin, endpoint, completion_window,"
            " recorded_at, status) VALUES ('bl_x', 'second', ?, 'sync', '/v1/responses', '24h',"
            " '2026-12-01T00:00:00Z', 'completed')",
            (batch_id,),
        )
    conn.close()

    ambiguous = cli("show", batch_id)
    named = cli("show", batch_id, "--account", "second")

    assert ambiguous.code == 2 and "2 batches in the ledger" in ambiguous.err
    assert named.code == 0 and named.field("account") == "second"


def test_accounts_lists_each_with_its_key_variable_and_batches(
    cli, three, isolated: Path, monkeypatch
):
    write_jsonl(isolated / "a.jsonl", 2)
    cli("--account", "second", "create", "--in", "a.jsonl")
    monkeypatch.delenv("EAST_KEY")

    table = cli("accounts")
    as_json = json.loads(cli("accounts", "--json").out)

    assert table.code == 0
    by_name = {row["name"]: row for row in as_json}
    assert set(by_name) == {"default", "demo", "demo-claude", "second", "east"}
    assert by_name["second"] == {
        "name": "second",
        "kind": "openai",
        "base_url": three["second"].base_url,
        "api_key_env": "SECOND_KEY",
        "key_set": True,
        "batches": 1,
        "profile": "openai",
        "max_requests": 50_000,
        "max_bytes": 200 * 1024 * 1024,
        "completion_windows": None,
    }
    assert by_name["east"]["key_set"] is False and by_name["east"]["kind"] == "azure"
    assert by_name["demo"]["kind"] == "emulator" and by_name["demo"]["key_set"] is None
    assert SECOND_KEY not in table.out + json.dumps(as_json)
    assert "east" in table.out and "SECOND_KEY" in table.out


def test_every_configured_key_is_redacted(cli, three, isolated: Path):

    three["second"].state.add_fault(
        Fault(method="POST", path=r"^/v1/batches$", status=400, message=f"bad key {SECOND_KEY}")
    )
    write_jsonl(isolated / "a.jsonl", 2)

    result = cli("--account", "second", "create", "--in", "a.jsonl")

    assert result.code == 1 and "[API key]" in result.err
    dump = "\n".join(sqlite3.connect(os.environ["BATCHLEDGER_DB"]).iterdump())
    logs = "".join(p.read_text() for p in (isolated / "logs").iterdir())
    assert SECOND_KEY not in result.err + dump + logs


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[accounts.x\n", "is not valid TOML"),
        ("[accounts.x]\nkind = 'vertex'\n", "unknown kind 'vertex'"),
        ("[accounts.x]\nkind = 'azure'\napi_version = '2025-04-01-preview'\n", "needs endpoint"),
        (
            "[accounts.x]\nkind = 'azure'\nendpoint = 'https://r.openai.azure.com'\n",
            "needs api_version",
        ),
        ("[accounts.x]\nbase_url = 'ftp://example.com/v1'\n", "must be an http:// or https:// URL"),
        ("[accounts.x]\napi_key = 'sk-proj-abcdefghijklmnop'\n", "seems to hold an API key"),
        (
            "[accounts.x]\napi_key_env = 'sk-proj-abcdefghijklmnop1234'\n",
            "seems to hold an API key",
        ),
        ("[accounts.default]\nbase_url = 'https://x.example/v1'\n", "is built in"),
        ("[accounts.x]\nbase_url = 'https://x.example/v1'\ncolour = 'red'\n", "unknown setting"),
    ],
)
def test_a_bad_accounts_file_is_a_usage_error_before_anything_is_touched(
    cli, emulator: EmulatorServer, isolated: Path, text: str, says: str
):
    path = write_accounts(text)
    write_jsonl(isolated / "a.jsonl", 2)

    result = cli("create", "--in", "a.jsonl")

    assert result.code == 2
    assert result.err.startswith(f"batchledger: error: {path}") and says in result.err
    assert len(result.err.splitlines()) == 1
    assert not Path(os.environ["BATCHLEDGER_DB"]).exists()
    assert emulator.state.requests == []


def test_an_unknown_or_unreadable_account_is_a_usage_error(cli, isolated: Path, monkeypatch):
    unknown = cli("--account", "nope", "list")
    monkeypatch.setenv("BATCHLEDGER_ACCOUNT", "nope")
    from_env = cli("list")
    monkeypatch.delenv("BATCHLEDGER_ACCOUNT")
    write_accounts("[accounts.x]\n").chmod(0o000)
    unreadable = cli("list") if os.geteuid() != 0 else None

    assert unknown.code == 2 and "no account named 'nope'" in unknown.err
    assert from_env.code == 2
    if unreadable is not None:
        assert unreadable.code == 2 and "cannot read" in unreadable.err


def test_a_ledger_of_the_released_version_is_migrated_to_accounts(cli, isolated: Path):
    shutil.copy(FIXTURE, os.environ["BATCHLEDGER_DB"])
    before = sqlite3.connect(FIXTURE)
    old_rows = before.execute(
        "SELECT id, batch_id, status, ref FROM batches ORDER BY id"
    ).fetchall()
    old_history = before.execute("SELECT * FROM history ORDER BY id").fetchall()
    before.close()

    listed = cli("list", "--all")

    assert listed.code == 0, listed.err
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    applied = [row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert applied == migration_names()
    rows = conn.execute(
        "SELECT id, batch_id, status, ref, account, base_url FROM batches ORDER BY id"
    ).fetchall()
    assert [row[:4] for row in rows] == old_rows
    assert {row[4:] for row in rows} == {("default", None)}
    assert conn.execute("SELECT * FROM history ORDER BY id").fetchall() == old_history
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    # The key is (account, batch id): the same id may be another account's.
    batch_id = old_rows[0][1]
    with conn:
        conn.execute(
            "INSERT INTO batches (ref, account, batch_id, endpoint, completion_window,"
            " recorded_at) VALUES ('bl_y', 'other', ?, '/v1/responses', '24h', 'now')",
            (batch_id,),
        )
    with pytest.raises(sqlite3.IntegrityError), conn:
        conn.execute(
            "INSERT INTO batches (ref, account, batch_id, endpoint, completion_window,"
            " recorded_at) VALUES ('bl_z', 'other', ?, '/v1/responses', '24h', 'now')",
            (batch_id,),
        )
    conn.close()


def test_the_demo_account_runs_the_whole_workflow_with_no_server_and_no_key(
    cli, isolated: Path, monkeypatch
):
    monkeypatch.delenv("OPENAI_API_KEY")
    examples = Path(__file__).resolve().parents[1] / "examples" / "requests.jsonl"

    created = cli("--account", "demo", "create", "--in", str(examples))
    watched = cli("--account", "demo", "watch", "--batch-id", "last", "--interval", "1")
    listed = cli("list")

    assert created.code == 0, created.err
    batch_id = created.field("batch_id")
    assert watched.code == 0, watched.err
    assert watched.field("status") == "completed"
    saved = isolated / f"results_{batch_id}.jsonl"
    assert len(saved.read_text().splitlines()) == len(examples.read_text().splitlines())
    assert batch_id in listed.out
    assert (isolated.parent / "xdg" / "batchledger" / "demo" / "state.json").exists()
    assert API_KEY not in saved.read_text()


# --- a batch of another base URL never stops a sweep ---------------------------------------


@pytest.fixture
def other_server(monkeypatch: pytest.MonkeyPatch):
    with EmulatorServer(port=0) as server:
        yield server


def test_batches_of_another_base_url_are_skipped_with_one_warning(
    cli, emulator: EmulatorServer, other_server: EmulatorServer, isolated: Path, monkeypatch
):
    write_jsonl(isolated / "in.jsonl", 2)
    assert cli("create", "--in", "in.jsonl").code == 0
    write_jsonl(isolated / "two.jsonl", 3)
    assert cli("create", "--in", "two.jsonl").code == 0
    monkeypatch.setenv("OPENAI_BASE_URL", other_server.base_url)

    again = cli("create", "--in", "in.jsonl")  # not a duplicate: another server's batch
    swept = cli("status", "--all")
    watched = cli("watch", "--all", "--interval", "0.01")

    assert again.code == 0, again.err
    assert swept.code == 0, swept.err
    warnings = [line for line in swept.err.splitlines() if "skipped 2 batches" in line]
    assert len(warnings) == 1 and emulator.base_url in warnings[0]
    assert again.field("batch_id") in swept.out
    assert watched.code == 0, watched.err
    # Nothing of the first server's was asked of the second.
    first_ids = set(emulator.state.batches)
    asked = {request.path.rsplit("/", 1)[-1] for request in other_server.state.requests}
    assert not first_ids & asked


def test_a_batch_its_account_does_not_know_is_reported_and_the_others_go_on(
    cli, emulator: EmulatorServer, isolated: Path
):
    # A ledger of the released version, whose batches were made on a server long gone
    # (their base URL was never recorded): each is a 404 here.
    shutil.copy(
        Path(__file__).parent / "fixtures" / "ledger_v0_1_0.db", os.environ["BATCHLEDGER_DB"]
    )
    write_jsonl(isolated / "new.jsonl", 6)
    new = cli("create", "--in", "new.jsonl").field("batch_id")

    first = cli("status", "--all")
    asked_first = api_requests(emulator, "GET", "/v1/batches/batch_")
    second = cli("status", "--all")

    assert first.code == 0, first.err
    assert first.err.count("does not know it") == 2  # the running batch and the synced one
    assert "a create of cut.jsonl made no batch; marked abandoned" in first.err
    assert new in first.out
    assert second.code == 0 and "does not know it" not in second.err
    assert asked_first == 3
    assert api_requests(emulator, "GET", "/v1/batches/batch_") == 4  # only the new one again
