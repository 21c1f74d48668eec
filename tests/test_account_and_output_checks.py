"""Issue 19, items 7-10 and 13: single-id commands follow the row's account (its client,
its key variable), a broken accounts.toml, and `--out` that names a folder or a symlink.
End to end through `main([...])` over real HTTP against the emulator."""

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import write_jsonl

from batchledger.emulator import EmulatorServer

AZ_KEY = "azure-key-0123456789abcdefSECRET"


def write_accounts(text: str | bytes) -> Path:
    path = Path(os.environ["BATCHLEDGER_CONFIG"])
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def finish(server: EmulatorServer) -> None:
    """validating -> in_progress -> finalizing -> completed, every batch."""
    for _ in range(3):
        for batch_id in list(server.state.batches):
            server.state.advance(batch_id)


@pytest.fixture
def az(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """An Azure-shaped emulator as account `az` (key in AZ_KEY), an in-process emulator
    account `emu` that moves fast; OPENAI_API_KEY is not set."""
    with EmulatorServer(host="127.0.0.1", port=0, flavor="azure", api_key=AZ_KEY) as server:
        write_accounts(
            f"""
[accounts.az]
kind = "azure"
endpoint = "{server.url}"
api_version = "2025-04-01-preview"
api_key_env = "AZ_KEY"

[accounts.emu]
kind = "emulator"
data_dir = "{isolated.parent / "emu"}"
step_seconds = 0.05
"""
        )
        monkeypatch.setenv("AZ_KEY", AZ_KEY)
        monkeypatch.delenv("OPENAI_API_KEY")
        yield server


# --- 7: the row's account, its client and its key variable ---------------------------------


def test_status_and_retrieve_of_an_azure_batch_need_only_that_accounts_key(
    cli, az: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3, endpoint="/chat/completions")
    batch_id = cli("--account", "az", "create", "--in", "in.jsonl").field("batch_id")

    looked = cli("status", "--batch-id", batch_id, "--no-auto-save")
    finish(az)
    retrieved = cli("retrieve", "--batch-id", batch_id, "--out", "copy.jsonl")
    retried = cli("retry", batch_id)
    other = cli("--account", "az", "create", "--in", "in.jsonl", "--force").field("batch_id")
    cancelled = cli("cancel", "--batch-id", other, "--no-wait")

    assert looked.code == 0, looked.err
    assert looked.field("batch_id") == batch_id
    assert retrieved.code == 0, retrieved.err
    assert retried.code == 0, retried.err
    assert retried.out.startswith(f"Nothing to retry: 3 requests of {batch_id}")
    assert cancelled.code == 0, cancelled.err
    assert az.state.batches[other].status in ("cancelling", "cancelled")
    output = az.state.files[az.state.batches[batch_id].output_file_id]
    assert (isolated / "copy.jsonl").read_bytes() == output.path.read_bytes()


def test_watch_and_status_of_an_emulator_job_need_no_openai_key(
    cli, az: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 4)
    created = cli("--account", "emu", "create", "--in", "in.jsonl", "--max-requests", "2")
    assert created.code == 0, created.err
    job_id = created.field("job_id")

    looked = cli("status", "--batch-id", job_id)
    watched = cli("watch", "--batch-id", "last", "--interval", "0.05")

    assert looked.code == 0, looked.err
    assert watched.code == 0, watched.err
    assert f"saved: results_{job_id}.jsonl" in watched.out
    assert len((isolated / f"results_{job_id}.jsonl").read_bytes().splitlines()) == 4


def test_a_wrong_key_is_named_by_the_accounts_own_key_variable(
    cli, az: EmulatorServer, isolated: Path, monkeypatch: pytest.MonkeyPatch
):
    write_jsonl(isolated / "in.jsonl", 2, endpoint="/chat/completions")
    batch_id = cli("--account", "az", "create", "--in", "in.jsonl").field("batch_id")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused-0123456789abcdef")
    monkeypatch.setenv("AZ_KEY", "wrong-key-0123456789abcdefWRONG")

    result = cli("status", "--batch-id", batch_id)

    assert result.code != 0
    assert "HTTP 401" in result.err and "check AZ_KEY" in result.err
    assert "OPENAI_API_KEY" not in result.err
    assert len(result.err.splitlines()) == 1


def test_a_wrong_default_key_still_names_openai_api_key(
    cli, emulator: EmulatorServer, isolated: Path, make_server, monkeypatch: pytest.MonkeyPatch
):
    locked = make_server(host="127.0.0.1", port=0, api_key="sk-right-0123456789abcdef")
    monkeypatch.setenv("OPENAI_BASE_URL", locked.base_url)

    result = cli("status", "--batch-id", "batch_unknown")

    assert result.code != 0
    assert "HTTP 401" in result.err and "check OPENAI_API_KEY" in result.err


# --- 8: accounts.toml that is broken -----------------------------------------------------


def test_an_accounts_file_that_is_not_utf8_is_a_one_line_usage_error(
    cli, emulator: EmulatorServer, isolated: Path
):
    path = write_accounts(b'[accounts.x]\nbase_url = "https://\xff.example/v1"\n')
    write_jsonl(isolated / "in.jsonl", 2)

    result = cli("create", "--in", "in.jsonl")

    assert result.code == 2, result.err
    assert result.err.startswith(f"batchledger: error: {path} is not UTF-8")
    assert len(result.err.splitlines()) == 1
    assert emulator.state.requests == []


def saved_batch(cli, emulator: EmulatorServer, isolated: Path) -> str:
    write_jsonl(isolated / "in.jsonl", 2)
    batch_id: str = cli("create", "--in", "in.jsonl").field("batch_id")
    finish(emulator)
    assert cli("retrieve", "--batch-id", batch_id).code == 0
    return batch_id


@pytest.mark.parametrize(
    "broken",
    ["[accounts.x\nbase_url = 1\n", b"[accounts.x]\nbase_url = '\xfe'\n"],
    ids=["toml-syntax", "not-utf8"],
)
def test_a_broken_accounts_file_only_warns_for_commands_that_read_the_ledger(
    cli, emulator: EmulatorServer, isolated: Path, broken: str | bytes
):
    batch_id = saved_batch(cli, emulator, isolated)
    path = write_accounts(broken)

    runs = {
        "list": cli("list"),
        "show": cli("show", batch_id),
        "usage": cli("usage"),
        "export": cli("export", batch_id, "--out", "-"),
        "where": cli("where"),
    }
    refused = cli("status", "--batch-id", batch_id)

    for name, result in runs.items():
        assert result.code == 0, (name, result.err)
        assert result.err.startswith(f"batchledger: warning: {path}"), (name, result.err)
        assert len(result.err.splitlines()) == 1, (name, result.err)
    assert batch_id in runs["list"].out and batch_id in runs["show"].out
    assert len(runs["export"].out.splitlines()) == 3  # a header and two requests
    assert refused.code == 2 and refused.err.startswith(f"batchledger: error: {path}")


def test_an_unknown_top_level_key_in_accounts_toml_is_refused_naming_it(
    cli, emulator: EmulatorServer, isolated: Path
):
    path = write_accounts('[account.work]\napi_key_env = "WORK_KEY"\n')
    write_jsonl(isolated / "in.jsonl", 2)

    result = cli("create", "--in", "in.jsonl")
    accounts = cli("accounts")

    assert result.code == 2
    assert result.err.startswith(f"batchledger: error: {path}")
    assert "'account'" in result.err and "[accounts.NAME]" in result.err
    assert len(result.err.splitlines()) == 1
    assert accounts.code == 2 and "'account'" in accounts.err
    assert emulator.state.requests == []


# --- 9: export --out DIR ----------------------------------------------------------------


def test_export_to_an_existing_folder_saves_under_the_default_name_inside(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = saved_batch(cli, emulator, isolated)
    (isolated / "exports").mkdir()

    result = cli("export", batch_id, "--out", "exports", "--format", "jsonl")

    assert result.code == 0, result.err
    saved = isolated / "exports" / f"export_{batch_id}.jsonl"
    assert result.out.startswith(f"exported: exports/export_{batch_id}.jsonl (")
    assert len(saved.read_bytes().splitlines()) == 2
    assert result.err == ""


# --- 10: --out through a symlink ---------------------------------------------------------


def test_out_through_a_symlink_writes_to_its_target_and_keeps_the_link(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    finish(emulator)
    store = isolated.parent / "store"
    store.mkdir()
    for name in ("retrieved", "status", "export"):
        (store / f"{name}.jsonl").write_bytes(b"old\n")
        (isolated / f"{name}.jsonl").symlink_to(store / f"{name}.jsonl")

    status = cli("status", "--batch-id", batch_id, "--out", "status.jsonl")
    retrieved = cli("retrieve", "--batch-id", batch_id, "--out", "retrieved.jsonl", "--force")
    exported = cli("export", batch_id, "--format", "jsonl", "--out", "export.jsonl")

    output = emulator.state.files[emulator.state.batches[batch_id].output_file_id]
    for name, result in (("status", status), ("retrieved", retrieved), ("export", exported)):
        assert result.code == 0, (name, result.err)
        link = isolated / f"{name}.jsonl"
        assert link.is_symlink(), name
        assert link.readlink() == store / f"{name}.jsonl", name
        assert (store / f"{name}.jsonl").read_bytes() != b"old\n", name
        assert not [p for p in store.iterdir() if p.name.endswith(".part")], name
    assert (store / "status.jsonl").read_bytes() == output.path.read_bytes()
    assert (store / "retrieved.jsonl").read_bytes() == output.path.read_bytes()
    assert len((store / "export.jsonl").read_bytes().splitlines()) == 2


def test_out_through_a_dangling_symlink_creates_its_target_and_its_folders(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    finish(emulator)
    target = isolated.parent / "not" / "yet" / "results.jsonl"
    (isolated / "link.jsonl").symlink_to(target)

    result = cli("retrieve", "--batch-id", batch_id, "--out", "link.jsonl")

    assert result.code == 0, result.err
    assert (isolated / "link.jsonl").is_symlink()
    output = emulator.state.files[emulator.state.batches[batch_id].output_file_id]
    assert target.read_bytes() == output.path.read_bytes()


def test_a_jobs_merged_results_go_through_a_symlink_at_its_default_path(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 4)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "2")
    job_id = created.field("job_id")
    kept = isolated.parent / "kept.jsonl"
    kept.write_bytes(b"old\n")
    (isolated / f"results_{job_id}.jsonl").symlink_to(kept)
    finish(emulator)

    result = cli("status", "--batch-id", job_id)

    assert result.code == 0, result.err
    assert (isolated / f"results_{job_id}.jsonl").is_symlink()
    assert len(kept.read_bytes().splitlines()) == 4


# --- 13: README and the status --all table ------------------------------------------------


def test_the_status_all_table_shows_a_failed_batchs_first_reason(
    cli, emulator: EmulatorServer, isolated: Path
):
    path = write_jsonl(isolated / "in.jsonl", 3)
    with path.open("a") as out:
        out.write("this is not json\n")
    bad_line = cli("create", "--in", "in.jsonl").field("batch_id")
    write_jsonl(isolated / "other.jsonl", 2)
    too_big = cli("create", "--in", "other.jsonl").field("batch_id")
    emulator.state.set_outcome(too_big, "failed")  # the enqueued-token limit: a long reason
    finish(emulator)

    result = cli("status", "--all")

    assert result.code == 0, result.err
    notes = {}
    for line in result.out.splitlines()[2:]:
        batch_id, status, *_ = line.split()
        assert status == "failed", line
        notes[batch_id] = line.split("  ")[-1]
    assert notes[bad_line] == "line 4: invalid_json_line: Line 4 is not valid JSON."
    assert notes[too_big].startswith("token_limit_exceeded: ")
    # Cut short at a word's end (`show` has it whole): the table stays readable.
    assert notes[too_big].endswith(" reached for...") and len(notes[too_big]) <= 60
    shown = cli("show", too_big).out
    assert notes[too_big].removesuffix("...") in shown


def test_the_readme_retry_example_prints_the_warnings_it_shows(
    cli, emulator: EmulatorServer, isolated: Path
):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    example = readme.split("$ batchledger retry last", 1)[1].split("```", 1)[0]
    original, retry_of = re.findall(r"job_[0-9a-f]{24}", example)[:2]
    shown = [
        line.removeprefix("# stderr: ")
        for line in example.splitlines()
        if line.startswith("# stderr: ")
    ]
    write_jsonl(isolated / "in.jsonl", 6)
    emulator.state.set_line_outcomes({"request-1": "500", "request-4": "missing"}, times=1)
    job_id = cli("create", "--in", "in.jsonl", "--max-requests", "3").field("job_id")
    finish(emulator)
    assert cli("status", "--all").code == 0

    retried = cli("retry", "last")
    retry_job = retried.field("job_id")
    finish(emulator)
    swept = cli("status", "--all")

    assert retried.code == 0 and swept.code == 0, swept.err
    printed = swept.err.replace(job_id, "ORIGINAL").replace(retry_job, "RETRY").splitlines()
    assert printed == [
        line.replace(original, "ORIGINAL").replace(retry_of, "RETRY") for line in shown
    ]
    merged = (isolated / f"results_{job_id}.jsonl").read_bytes().splitlines()
    assert len(merged) == 6
    assert all(json.loads(line)["response"]["status_code"] == 200 for line in merged)
