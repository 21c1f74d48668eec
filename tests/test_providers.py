"""Providers that are not OpenAI (issue 12): one that drops batch metadata, one that cannot
list files, Azure's limits, and a completion window passed through as typed. End to end
through `main([...])` over real HTTP, each provider an account of accounts.toml."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer, Fault

PROVIDER_KEY = "sk-provider-0123456789abcdefSECRET"
LOST_CREATE = Fault(method="POST", path=r"^/v1/batches$", drop_request=True)


@pytest.fixture
def provider(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmulatorServer]:
    """An emulator as the OpenAI-compatible account `provider`, built with the test's
    parameters (`@pytest.mark.parametrize("provider", [{...}], indirect=True)`)."""
    options = getattr(request, "param", {})
    with EmulatorServer(host="127.0.0.1", port=0, **options) as server:
        Path(os.environ["BATCHLEDGER_CONFIG"]).write_text(
            f'[accounts.provider]\nbase_url = "{server.base_url}"\napi_key_env = "PROVIDER_KEY"\n'
        )
        monkeypatch.setenv("PROVIDER_KEY", PROVIDER_KEY)
        yield server


NO_METADATA = pytest.mark.parametrize("provider", [{"keep_metadata": False}], indirect=True)
NO_FILE_LIST = pytest.mark.parametrize("provider", [{"list_files": False}], indirect=True)


def requests_to(server: EmulatorServer, method: str, path: str) -> int:
    return sum(1 for r in server.state.requests if r.method == method and r.path == path)


# --- a provider that drops batch metadata -------------------------------------------------


@NO_METADATA
def test_a_lost_create_on_a_provider_without_metadata_is_found_by_its_input_file(
    cli, provider: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)
    provider.state.add_fault(LOST_CREATE)

    result = cli("--account", "provider", "create", "--in", "in.jsonl")

    assert result.code == 0, result.err
    [batch] = provider.state.batches.values()
    assert batch.metadata is None  # the ref did not survive: only the input file tells
    assert requests_to(provider, "POST", "/v1/batches") == 1  # found, not made again
    assert result.field("batch_id") == batch.id
    assert result.field("file_id") == batch.input_file_id
    [row] = ledger_rows()
    assert (row["batch_id"], row["account"]) == (batch.id, "provider")
    assert row["base_url"] == provider.base_url


@NO_METADATA
def test_a_cut_off_create_on_a_provider_without_metadata_is_recovered_by_the_sweep(
    cli, provider: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)
    provider.state.add_fault(LOST_CREATE)
    cut = cli("--account", "provider", "create", "--in", "in.jsonl", "--max-retries", "0")
    [batch] = provider.state.batches.values()

    swept = cli("status", "--all")
    again = cli("--account", "provider", "create", "--in", "in.jsonl")

    assert cut.code == 1
    assert swept.code == 0, swept.err
    assert f"found {batch.id}" in swept.err
    assert batch.id in swept.out
    [row] = ledger_rows()
    assert (row["batch_id"], row["input_file_id"]) == (batch.id, batch.input_file_id)
    assert again.code == 3  # a duplicate of the batch the sweep found
    assert list(provider.state.batches) == [batch.id]


# --- a provider that cannot list files ----------------------------------------------------


@NO_FILE_LIST
def test_a_lost_upload_on_a_provider_that_cannot_list_files_still_makes_one_batch(
    cli, provider: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)
    provider.state.add_fault(Fault(method="POST", path=r"^/v1/files$", drop_request=True))

    result = cli("--account", "provider", "create", "--in", "in.jsonl")

    # The lost upload cannot be looked for: it is made again (a second file runs nothing).
    assert result.code == 0, result.err
    [batch] = provider.state.batches.values()
    assert result.field("batch_id") == batch.id
    assert [row["batch_id"] for row in ledger_rows() if row["batch_id"]] == [batch.id]
    assert requests_to(provider, "POST", "/v1/files") == 2


@NO_FILE_LIST
def test_a_lost_create_that_cannot_be_checked_stops_and_never_makes_a_second_batch(
    cli, provider: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)
    provider.state.add_fault(Fault(method="GET", path=r"^/v1/batches$", status=404, times=None))
    provider.state.add_fault(LOST_CREATE)

    result = cli("--account", "provider", "create", "--in", "in.jsonl")
    made = list(provider.state.batches)
    provider.state.clear_faults()  # listing works again: the sweep the message names finds it
    swept = cli("status", "--all")

    assert result.code == 1
    assert "not tried again" in result.err
    assert PROVIDER_KEY not in result.err + result.out
    assert len(made) == 1
    assert requests_to(provider, "POST", "/v1/batches") == 1
    assert swept.code == 0, swept.err
    assert f"found {made[0]}" in swept.err
    assert list(provider.state.batches) == made
    assert [row["batch_id"] for row in ledger_rows()] == made


# --- Azure's limits -----------------------------------------------------------------------


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """An emulator in Azure's shape as the account `east`."""
    with EmulatorServer(host="127.0.0.1", port=0, flavor="azure") as server:
        Path(os.environ["BATCHLEDGER_CONFIG"]).write_text(
            f'[accounts.east]\nkind = "azure"\nendpoint = "{server.url}"\n'
            'api_version = "2025-04-01-preview"\napi_key_env = "EAST_KEY"\n'
        )
        monkeypatch.setenv("EAST_KEY", PROVIDER_KEY)
        yield server


def tiny_lines(path: Path, count: int) -> Path:
    """`count` small chat requests: the input is never parsed, only counted."""
    line = '{"custom_id":"r%d","method":"POST","url":"/chat/completions","body":{"model":"m"}}\n'
    path.write_text("".join(line % n for n in range(count)))
    return path


def test_an_azure_input_over_100000_requests_is_split_at_azures_limit(
    cli, azure: EmulatorServer, isolated: Path
):
    tiny_lines(isolated / "big.jsonl", 100_001)

    result = cli("--account", "east", "create", "--in", "big.jsonl")

    # Past the account's limit an input becomes a job: Azure's parts hold 100,000 requests.
    assert result.code == 0, result.err
    assert result.out.startswith("job_id: job_")
    uploads = sorted(
        (f for f in azure.state.files.values() if f.purpose == "batch"), key=lambda f: -f.lines
    )
    assert [f.lines for f in uploads] == [100_000, 1]
    assert len(azure.state.batches) == 2


def test_an_azure_input_of_100000_requests_is_accepted(cli, azure: EmulatorServer, isolated: Path):
    tiny_lines(isolated / "full.jsonl", 100_000)

    result = cli("--account", "east", "create", "--in", "full.jsonl")

    assert result.code == 0, result.err
    [batch] = azure.state.batches.values()
    assert result.field("batch_id") == batch.id
    assert azure.state.files[batch.input_file_id].lines == 100_000


def test_a_sweep_of_azure_batches_reads_azures_listing(cli, azure: EmulatorServer, isolated: Path):
    ids = []
    for n in range(3):
        created = cli(
            "--account", "east", "create", "--in", str(tiny_lines(isolated / f"{n}.jsonl", n + 1))
        )
        assert created.code == 0, created.err
        ids.append(created.field("batch_id"))
    azure.state.clear_requests()

    swept = cli("status", "--all", "--concurrency", "1")  # 3 rounds: listed

    assert swept.code == 0, swept.err
    gets = [r for r in azure.state.requests if r.method == "GET"]
    assert [r.path for r in gets] == ["/openai/batches"]  # one page, no look-up each
    assert gets[0].query.get("api-version") == "2025-04-01-preview"
    rows = {row["batch_id"]: row for row in ledger_rows()}
    assert set(rows) == set(ids)
    assert {row["status"] for row in rows.values()} == {"in_progress"}  # moved by the listing


# --- a completion window other than 24h ---------------------------------------------------


def test_a_completion_window_is_passed_through_as_given(
    cli, provider: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)

    result = cli(
        "--account", "provider", "create", "--in", "in.jsonl", "--completion-window", "48h"
    )

    # The emulator, like OpenAI, takes only 24h: its refusal names what was sent.
    assert result.code == 1
    assert "Invalid value: '48h'" in result.err
    assert requests_to(provider, "POST", "/v1/batches") == 1
    assert not provider.state.batches
    [row] = ledger_rows()
    assert (row["completion_window"], row["status"]) == ("48h", "rejected")
