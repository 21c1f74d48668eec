"""`kind = "anthropic"` through every command: the real CLI and the real `anthropic` SDK over
real HTTP against the emulator's anthropic flavor (its Message Batches, its faults)."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import API_KEY, ServerFactory, ledger_rows, log_text, write_jsonl

from batchledger.emulator import EmulatorServer, Fault

KEY = "sk-ant-test-0123456789SECRET"
DAY = 86400
CREATE = r"^/v1/messages/batches$"


def write_requests(path: Path, count: int, *, invalid: set[int] = frozenset()) -> Path:
    """`count` Anthropic request lines, custom_ids req-0.. (`invalid`: max_tokens 0)."""
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            params = {
                "model": "claude-haiku-4-5",
                "max_tokens": 0 if n in invalid else 64,
                "messages": [{"role": "user", "content": f"Say hello number {n}"}],
            }
            out.write(json.dumps({"custom_id": f"req-{n}", "params": params}) + "\n")
    return path


def ids_of(path: Path) -> list[str]:
    return [json.loads(line)["custom_id"] for line in path.read_text().splitlines()]


def result_types(path: Path) -> dict[str, str]:
    return {
        json.loads(line)["custom_id"]: json.loads(line)["result"]["type"]
        for line in path.read_text().splitlines()
    }


def write_accounts(text: str) -> None:
    Path(os.environ["BATCHLEDGER_CONFIG"]).write_text(text)


@pytest.fixture
def claude(make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """An emulator of Anthropic's API as the account `claude` (its key in CLAUDE_KEY)."""
    server = make_server(flavor="anthropic", api_key=KEY)
    write_accounts(
        f"""
[accounts.claude]
kind = "anthropic"
base_url = "{server.base_url}"
api_key_env = "CLAUDE_KEY"
"""
    )
    monkeypatch.setenv("CLAUDE_KEY", KEY)
    return server


def finish(server: EmulatorServer, batch_id: str) -> None:
    for _ in range(3):
        server.state.advance(batch_id)
    assert server.state.message_batches[batch_id].is_final


def posts(server: EmulatorServer) -> int:
    return sum(
        1 for r in server.state.requests if r.method == "POST" and r.path == "/v1/messages/batches"
    )


# --- one batch ---------------------------------------------------------------------------


def test_create_status_retrieve_saves_results_in_input_order(cli, claude, isolated: Path):
    write_requests(isolated / "in.jsonl", 8, invalid={5})
    claude.state.set_line_outcomes({"req-2": "529", "req-6": "500"})

    created = cli("--account", "claude", "create", "--in", "in.jsonl")
    assert created.code == 0, created.err
    batch_id = created.field("batch_id")
    assert "file_id" not in created.out  # nothing was uploaded
    assert [row["status"] for row in ledger_rows()] == ["in_progress"]
    finish(claude, batch_id)
    ended = cli("status", "--batch-id", batch_id)

    assert ended.code == 0, ended.err
    assert ended.field("status") == "completed"
    assert ended.field("requests") == "5 completed, 3 failed, 8 total"
    output = isolated / f"results_{batch_id}.jsonl"
    errors = isolated / f"results_{batch_id}.errors.jsonl"
    # The API answered in another order; the files hold the input's.
    assert ids_of(output) == ["req-0", "req-1", "req-3", "req-4", "req-7"]
    assert ids_of(errors) == ["req-2", "req-5", "req-6"]
    assert set(result_types(errors).values()) == {"errored"}
    [row] = ledger_rows()
    assert row["status"] == "completed" and row["output_path"] == str(output)
    assert row["error_path"] == str(errors)
    assert row["input_file_id"].startswith("inline:8@")
    assert row["model"] == "claude-haiku-4-5"
    usage = json.loads(row["usage"])  # summed from each answer's message.usage
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    shown = cli("show", batch_id)
    assert "results: 0 processing, 5 succeeded, 3 errored, 0 canceled, 0 expired" in shown.out
    exported = [
        json.loads(line)
        for line in cli("export", batch_id, "--format", "jsonl", "--out", "-").out.splitlines()
    ]
    assert [(r["custom_id"], r["status"]) for r in exported][:3] == [
        ("req-0", "ok"),
        ("req-1", "ok"),
        ("req-2", "error"),
    ]
    assert exported[0]["text"].startswith("Emulated reply to:")
    assert exported[0]["input_tokens"] > 0 and exported[0]["http_status"] == 200
    assert exported[2]["error_code"] == "overloaded_error"
    assert exported[5]["error_code"] == "invalid_request_error"
    [by_model] = json.loads(cli("usage", "--by", "model", "--json").out)
    assert by_model["model"] == "claude-haiku-4-5" and by_model["requests"] == 5
    assert by_model["input_tokens"] == usage["input_tokens"] > 0
    # retrieve finds them saved and unchanged
    again = cli("retrieve", "--batch-id", batch_id)
    assert again.code == 0 and "not downloaded again" in again.err
    logs = log_text(isolated)
    assert "CREATE_BATCH" in logs and KEY not in logs
    assert "Emulated reply" not in logs  # never a result's content


def test_endpoint_is_refused_before_anything_is_sent(cli, claude, isolated: Path):
    write_requests(isolated / "in.jsonl", 2)

    refused = cli("--account", "claude", "create", "--in", "in.jsonl", "--endpoint", "/v1/x")

    assert refused.code == 2
    assert refused.err.startswith("batchledger: error: --endpoint does not apply")
    assert claude.state.requests == [] and claude.state.message_batches == {}


def test_a_line_of_another_shape_is_refused_naming_it(cli, claude, isolated: Path):
    path = write_requests(isolated / "in.jsonl", 3)
    write_jsonl(isolated / "openai.jsonl", 1)  # an OpenAI line among Anthropic ones
    path.write_text(path.read_text() + (isolated / "openai.jsonl").read_text())

    refused = cli("--account", "claude", "create", "--in", "in.jsonl")

    assert refused.code == 2
    assert "line 4 of in.jsonl is not a request line" in refused.err
    assert claude.state.requests == []
    assert not Path(os.environ["BATCHLEDGER_DB"]).exists()  # nothing written either


# --- a lost create answer ---------------------------------------------------------------


def test_a_lost_create_answer_is_recorded_once(cli, claude, isolated: Path):
    write_requests(isolated / "in.jsonl", 3)
    claude.state.add_fault(Fault(path=CREATE, method="POST", drop_request=True))

    created = cli("--account", "claude", "create", "--in", "in.jsonl")

    assert created.code == 0, created.err
    assert len(claude.state.message_batches) == 1  # made once, answer lost, found
    assert posts(claude) == 1
    [row] = ledger_rows()
    assert row["batch_id"] == created.field("batch_id") in claude.state.message_batches
    assert "found what the failed attempt had made" in log_text(isolated)


def test_a_create_that_gave_up_is_found_by_the_next_sweep(cli, claude, isolated: Path):
    write_requests(isolated / "in.jsonl", 3)
    write_requests(isolated / "other.jsonl", 3, invalid={0})  # as many requests, in the ledger
    other = cli("--account", "claude", "create", "--in", "other.jsonl").field("batch_id")
    claude.state.add_fault(Fault(path=CREATE, method="POST", drop_request=True))

    failed = cli("--account", "claude", "create", "--in", "in.jsonl", "--max-retries", "0")
    swept = cli("status", "--all")

    assert failed.code == 1
    [made] = [batch for batch in claude.state.message_batches if batch != other]
    assert swept.code == 0, swept.err
    assert f"found {made}, created by a create that was cut off" in swept.err
    rows = {row["input_path"]: row["batch_id"] for row in ledger_rows()}
    assert rows == {str(isolated / "in.jsonl"): made, str(isolated / "other.jsonl"): other}
    assert posts(claude) == 2


def test_a_create_refused_before_it_was_handled_is_sent_again(cli, claude, isolated: Path):
    write_requests(isolated / "in.jsonl", 3)
    claude.state.add_fault(Fault(path=CREATE, method="POST", status=503))

    created = cli("--account", "claude", "create", "--in", "in.jsonl")

    assert created.code == 0, created.err
    assert posts(claude) == 2 and len(claude.state.message_batches) == 1


def test_an_ambiguous_lost_create_stops_with_exit_3_and_force_sends(cli, claude, isolated: Path):
    write_requests(isolated / "in.jsonl", 3)
    # Another client of the account sends as many requests at the same moment.
    from anthropic import Anthropic

    other = Anthropic(api_key=KEY, base_url=claude.base_url, max_retries=0)
    claude.state.set_clock_offset(5)
    foreign = other.messages.batches.create(
        requests=[json.loads(line) for line in (isolated / "in.jsonl").read_text().splitlines()]
    ).id
    claude.state.set_clock_offset(0)
    claude.state.add_fault(Fault(path=CREATE, method="POST", drop_request=True))

    stopped = cli("--account", "claude", "create", "--in", "in.jsonl")

    assert stopped.code == 3
    assert stopped.err.startswith("batchledger: error: the create's answer was lost and 2 ")
    assert foreign in stopped.err
    ours = [batch for batch in claude.state.message_batches if batch != foreign]
    assert len(ours) == 1 and ours[0] in stopped.err
    assert len(claude.state.message_batches) == 2  # nothing was sent again
    # Without --force, the same create stops again, sending nothing.
    again = cli("--account", "claude", "create", "--in", "in.jsonl")
    assert again.code == 3 and len(claude.state.message_batches) == 2

    forced = cli("--account", "claude", "create", "--in", "in.jsonl", "--force")

    assert forced.code == 0, forced.err
    assert len(claude.state.message_batches) == 3
    assert [row["batch_id"] for row in ledger_rows()] == [forced.field("batch_id")]


def test_a_sweep_does_not_abandon_a_lost_create_it_cannot_tell_apart(cli, claude, isolated: Path):
    # Two batches of as many requests made at that moment: either may be ours. Marked
    # abandoned, the row would let the same input go again, paid for twice.
    write_requests(isolated / "in.jsonl", 3)
    from anthropic import Anthropic

    other = Anthropic(api_key=KEY, base_url=claude.base_url, max_retries=0)
    claude.state.set_clock_offset(5)
    other.messages.batches.create(
        requests=[json.loads(line) for line in (isolated / "in.jsonl").read_text().splitlines()]
    )
    claude.state.set_clock_offset(0)
    claude.state.add_fault(Fault(path=CREATE, method="POST", drop_request=True))
    assert cli("--account", "claude", "create", "--in", "in.jsonl").code == 3

    swept = cli("status", "--all")
    again = cli("--account", "claude", "create", "--in", "in.jsonl")

    assert swept.code == 0, swept.err
    assert "abandoned" not in swept.err
    [row] = ledger_rows()
    assert row["status"] is None and row["batch_id"] is None
    assert again.code == 3 and "answer was lost" in again.err
    assert len(claude.state.message_batches) == 2


def test_an_api_error_that_echoes_the_key_is_stored_without_it(cli, claude, isolated: Path):
    # stderr and the log are blanked again on the way out; the ledger's copy of the error
    # only where the API's message becomes ours (providers/anthropic/wire.py).
    write_requests(isolated / "in.jsonl", 2)
    claude.state.add_fault(
        Fault(path=CREATE, method="POST", status=400, message=f"key {KEY} may not batch")
    )

    refused = cli("--account", "claude", "create", "--in", "in.jsonl")

    assert refused.code == 1
    assert "[API key] may not batch" in refused.err and KEY not in refused.err + refused.out
    dump = "\n".join(sqlite3.connect(os.environ["BATCHLEDGER_DB"]).iterdump())
    assert "may not batch" in dump and KEY not in dump
    assert KEY not in log_text(isolated)


# --- status, prune ----------------------------------------------------------------------


def test_status_warns_of_results_within_a_day_of_their_retention(cli, claude, isolated: Path):
    write_requests(isolated / "in.jsonl", 2)
    claude.state.set_clock_offset(-(28 * DAY + 3600 * 2))  # made 28 days and 2 hours ago
    created = cli("--account", "claude", "create", "--in", "in.jsonl")
    batch_id = created.field("batch_id")
    finish(claude, batch_id)
    claude.state.set_clock_offset(0)

    unsaved = cli("status", "--batch-id", batch_id, "--no-auto-save")
    saved = cli("status", "--batch-id", batch_id)

    assert unsaved.code == 0
    assert f"batchledger: warning: {batch_id}: its results are kept only until" in unsaved.err
    assert "(22 h from now)" in unsaved.err
    assert saved.code == 0 and "warning" not in saved.err
    assert (isolated / f"results_{batch_id}.jsonl").exists()


def test_prune_deletes_ended_batches_whose_results_are_saved(cli, claude, isolated: Path):
    write_requests(isolated / "a.jsonl", 2)
    write_requests(isolated / "b.jsonl", 3)
    saved_id = cli("--account", "claude", "create", "--in", "a.jsonl").field("batch_id")
    unsaved_id = cli("--account", "claude", "create", "--in", "b.jsonl").field("batch_id")
    finish(claude, saved_id)
    finish(claude, unsaved_id)
    assert cli("retrieve", "--batch-id", saved_id).code == 0

    dry = cli("--account", "claude", "prune", "--dry-run")
    pruned = cli("--account", "claude", "prune")
    again = cli("--account", "claude", "prune")

    assert dry.code == 0 and "would delete" in dry.out
    assert pruned.code == 0, pruned.err
    assert "deleted" in pruned.out and saved_id in pruned.out
    assert saved_id not in claude.state.message_batches  # DELETE /v1/messages/batches/{id}
    assert unsaved_id in claude.state.message_batches  # its results are not saved
    assert again.code == 0 and saved_id not in again.out
    row = next(row for row in ledger_rows() if row["batch_id"] == saved_id)
    assert row["output_file_gone_at"] and row["input_file_gone_at"] is None


def test_cancel_maps_canceling_and_ended_to_cancelled(cli, claude, isolated: Path):
    write_requests(isolated / "in.jsonl", 4)
    batch_id = cli("--account", "claude", "create", "--in", "in.jsonl").field("batch_id")

    cancelled = cli("cancel", "--batch-id", batch_id)
    finish(claude, batch_id)
    ended = cli("status", "--batch-id", batch_id)

    assert cancelled.code == 0 and cancelled.field("status") == "cancelling"
    assert ended.field("status") == "cancelled"
    errors = isolated / f"results_{batch_id}.errors.jsonl"
    assert "canceled" in result_types(errors).values()
    assert cli("cancel", "--batch-id", batch_id).code == 3  # ended: nothing to cancel


# --- several accounts at once -----------------------------------------------------------


def test_a_sweep_covers_openai_azure_and_anthropic_accounts_at_once(
    cli, emulator: EmulatorServer, claude, make_server: ServerFactory, isolated: Path, monkeypatch
):
    east = make_server(flavor="azure", api_key="azure-key-0123456789")
    write_accounts(
        f"""
[accounts.claude]
kind = "anthropic"
base_url = "{claude.base_url}"
api_key_env = "CLAUDE_KEY"

[accounts.east]
kind = "azure"
endpoint = "{east.url}"
api_version = "2025-04-01-preview"
api_key_env = "EAST_KEY"
"""
    )
    monkeypatch.setenv("EAST_KEY", "azure-key-0123456789")
    write_jsonl(isolated / "a.jsonl", 2)
    write_jsonl(isolated / "b.jsonl", 3, endpoint="/chat/completions")
    write_requests(isolated / "c.jsonl", 4)
    made = {
        "default": cli("create", "--in", "a.jsonl").field("batch_id"),
        "east": cli("--account", "east", "create", "--in", "b.jsonl").field("batch_id"),
        "claude": cli("--account", "claude", "create", "--in", "c.jsonl").field("batch_id"),
    }
    for server, batch_id in ((emulator, made["default"]), (east, made["east"])):
        for _ in range(3):
            server.state.advance(batch_id)
    finish(claude, made["claude"])

    swept = cli("status", "--all")

    assert swept.code == 0, swept.err
    rows = {row["account"]: row for row in ledger_rows()}
    assert {name: rows[name]["batch_id"] for name in rows} == made
    assert all(row["status"] == "completed" for row in rows.values())
    assert all(row["output_path"] for row in rows.values())
    assert ids_of(Path(rows["claude"]["output_path"])) == ["req-0", "req-1", "req-2", "req-3"]
    assert cli("status", "--all").out.strip() == "No pending batches in the ledger."
    logs = log_text(isolated)
    assert KEY not in logs and API_KEY not in logs


# --- the built-in demo-claude -----------------------------------------------------------


def test_demo_claude_runs_the_try_out_offline_with_no_key(cli, isolated: Path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    examples = Path(__file__).resolve().parents[1] / "examples" / "claude.jsonl"

    created = cli("--account", "demo-claude", "create", "--in", str(examples))
    watched = cli("--account", "demo-claude", "watch", "--batch-id", "last", "--interval", "1")

    assert created.code == 0, created.err
    batch_id = created.field("batch_id")
    assert watched.code == 0, watched.err
    assert watched.field("status") == "completed"
    saved = isolated / f"results_{batch_id}.jsonl"
    assert ids_of(saved) == [json.loads(line)["custom_id"] for line in examples.open()]


def test_sync_adds_batches_made_elsewhere(cli, claude, isolated: Path):
    from anthropic import Anthropic

    other = Anthropic(api_key=KEY, base_url=claude.base_url, max_retries=0)
    request = json.loads(write_requests(isolated / "in.jsonl", 1).read_text())
    made = other.messages.batches.create(requests=[request]).id

    synced = cli("--account", "claude", "sync")

    assert synced.code == 0, synced.err
    assert synced.field("added") == "1"
    [row] = ledger_rows()
    assert (row["batch_id"], row["account"], row["origin"]) == (made, "claude", "sync")


def test_commands_that_call_no_api_do_not_import_anthropic(cli, claude, isolated: Path):
    write_requests(isolated / "in.jsonl", 2)
    batch_id = cli("--account", "claude", "create", "--in", "in.jsonl").field("batch_id")
    code = (
        "import sys; from batchledger.cli import main\n"
        "for argv in (['list'], ['show', sys.argv[1]], ['usage'], ['--help']):\n"
        "    try:\n"
        "        rc = main(argv)\n"
        "    except SystemExit as exc:\n"
        "        rc = exc.code\n"
        "    print(argv[0], rc, 'anthropic' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, batch_id], capture_output=True, text=True, check=True
    )

    assert done.stderr.splitlines()[-4:] == [
        "list 0 False",
        "show 0 False",
        "usage 0 False",
        "--help 0 False",
    ]


def test_retrieve_of_a_batch_made_elsewhere_splits_its_results_with_no_input(
    cli, claude, isolated: Path
):
    from anthropic import Anthropic

    other = Anthropic(api_key=KEY, base_url=claude.base_url, max_retries=0)
    lines = write_requests(isolated / "in.jsonl", 6, invalid={1, 4}).read_text().splitlines()
    made = other.messages.batches.create(requests=[json.loads(line) for line in lines]).id
    assert cli("--account", "claude", "sync").code == 0
    finish(claude, made)

    got = cli("--account", "claude", "retrieve", "--batch-id", made)

    assert got.code == 0, got.err
    succeeded = result_types(isolated / f"results_{made}.jsonl")
    failed = result_types(isolated / f"results_{made}.errors.jsonl")
    assert set(succeeded.values()) == {"succeeded"}
    assert set(failed) == {"req-1", "req-4"}
    assert set(succeeded) | set(failed) == {f"req-{n}" for n in range(6)}
    [row] = ledger_rows()
    assert row["output_path"] == str(isolated / f"results_{made}.jsonl")
    assert row["input_path"] is None


def test_a_relative_results_url_is_resolved_against_the_base_urls_origin(
    cli, make_server: ServerFactory, isolated: Path, monkeypatch
):
    server = make_server(flavor="anthropic", api_key=KEY, relative_results_url=True)
    write_accounts(
        f'[accounts.proxy]\nkind = "anthropic"\nbase_url = "{server.base_url}"\n'
        'api_key_env = "CLAUDE_KEY"\n'
    )
    monkeypatch.setenv("CLAUDE_KEY", KEY)
    write_requests(isolated / "in.jsonl", 3)
    batch_id = cli("--account", "proxy", "create", "--in", "in.jsonl").field("batch_id")
    finish(server, batch_id)

    retrieved = cli("retrieve", "--batch-id", batch_id)

    assert retrieved.code == 0, retrieved.err
    assert ids_of(isolated / f"results_{batch_id}.jsonl") == ["req-0", "req-1", "req-2"]
    [row] = ledger_rows()
    assert row["output_file_id"] == f"{server.url}/v1/messages/batches/{batch_id}/results"


def test_results_url_is_a_url_reference_absolute_or_against_the_origin():
    from batchledger.providers.anthropic.wire import results_url

    path = "/v1/messages/batches/msgbatch_1/results"
    assert results_url(path, "https://proxy.example/anthropic/") == (
        "https://proxy.example/v1/messages/batches/msgbatch_1/results"
    )
    absolute = "https://api.anthropic.com/v1/messages/batches/msgbatch_1/results"
    assert results_url(absolute, "https://proxy.example/anthropic/") == absolute
    assert results_url(None, "https://proxy.example/") is None


def test_two_lost_creates_of_as_many_requests_are_told_apart_by_their_results(
    make_server: ServerFactory, isolated: Path, monkeypatch
):
    """Two parts of one job, cut off at once: the clock and the count cannot tell their
    batches apart; once both have ended, their results (the first custom_id) do."""
    from anthropic import Anthropic

    from batchledger.accounts import Account
    from batchledger.providers.anthropic import AnthropicProvider, inline_id

    claude = make_server(flavor="anthropic", api_key=KEY, step_seconds=3600)  # still
    monkeypatch.setenv("CLAUDE_KEY", KEY)
    sdk = Anthropic(api_key=KEY, base_url=claude.base_url, max_retries=0)
    lines = write_requests(isolated / "in.jsonl", 6).read_text().splitlines()
    first = sdk.messages.batches.create(requests=[json.loads(line) for line in lines[:3]]).id
    second = sdk.messages.batches.create(requests=[json.loads(line) for line in lines[3:]]).id
    moment = int(claude.state.message_batches[first].created_at)
    wanted = {"bl_a": inline_id(3, moment, "req-0"), "bl_b": inline_id(3, moment, "req-3")}
    account = Account(
        name="claude", kind="anthropic", base_url=claude.base_url, api_key_env="CLAUDE_KEY"
    )
    provider = AnthropicProvider(account, max_retries=0, timeout=30)

    running = provider.find_batches(wanted, None)
    finish(claude, first)
    finish(claude, second)
    ended = provider.find_batches(wanted, None)

    assert running.found == {} and not running.complete
    assert sorted(running.ambiguous) == sorted([first, second] * 2)
    assert {ref: batch["id"] for ref, batch in ended.found.items()} == {
        "bl_a": first,
        "bl_b": second,
    }
    assert ended.complete
