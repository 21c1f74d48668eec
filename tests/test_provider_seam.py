"""The provider seam (issue 20): each account's limits come from its provider's profile,
which accounts.toml may override per account, over real HTTP against the emulator."""

import json
import os
import sqlite3
from pathlib import Path

import pytest
from helpers import ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer
from batchledger.profiles import PROFILES
from batchledger.providers import Provider
from batchledger.providers.openai import OpenAIProvider

GROQ_KEY = "gsk-test-0123456789abcdefSECRET"


def write_accounts(text: str) -> Path:
    path = Path(os.environ["BATCHLEDGER_CONFIG"])
    path.write_text(text)
    return path


def creates(server: EmulatorServer) -> list[dict[str, object]]:
    """The batches the server made, as it shows them."""
    return [batch.to_json() for batch in server.state.batches.values()]


def parts() -> list[dict[str, object]]:
    with sqlite3.connect(os.environ["BATCHLEDGER_DB"]) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM parts ORDER BY id")]


def test_an_account_with_max_requests_3_splits_7_lines_into_3_parts(
    cli, emulator: EmulatorServer, isolated: Path, monkeypatch
):
    write_accounts(
        f'[accounts.small]\nbase_url = "{emulator.base_url}"\nmax_requests = 3\n'
        'api_key_env = "SMALL_KEY"\n'
    )
    monkeypatch.setenv("SMALL_KEY", "sk-small-0123456789abcdefSECRET")
    write_jsonl(isolated / "in.jsonl", 7)

    result = cli("--account", "small", "create", "--in", "in.jsonl")

    assert result.code == 0, result.err
    assert [part["requests"] for part in parts()] == [3, 3, 1]
    assert len(creates(emulator)) == 3
    (job,) = ledger_rows("jobs")
    assert job["account"] == "small"


def test_the_default_account_keeps_7_lines_in_one_batch(cli, emulator, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 7)

    result = cli("create", "--in", "in.jsonl")

    assert result.code == 0, result.err
    assert parts() == [] and len(creates(emulator)) == 1


def test_completion_windows_of_an_account_are_enforced_before_anything_is_sent(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_accounts(
        f'[accounts.narrow]\nbase_url = "{emulator.base_url}"\ncompletion_windows = ["24h"]\n'
        f'[accounts.strict]\nbase_url = "{emulator.base_url}"\nprofile = "openai"\n'
    )
    write_jsonl(isolated / "in.jsonl", 2)

    refused = cli("--account", "narrow", "create", "--in", "in.jsonl", "--completion-window", "48h")
    strict = cli("--account", "strict", "create", "--in", "in.jsonl", "--completion-window", "7d")

    assert refused.code == 2
    assert refused.err.startswith("batchledger: error: ")
    assert "'48h'" in refused.err and "windows: 24h" in refused.err
    assert len(refused.err.splitlines()) == 1
    assert strict.code == 2 and "'7d'" in strict.err and "windows: 24h" in strict.err
    assert emulator.state.requests == []


def test_an_openai_account_naming_no_profile_passes_its_window_through(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2)

    result = cli("create", "--in", "in.jsonl", "--completion-window", "7d")

    # Any OpenAI-compatible host may be behind OPENAI_BASE_URL: the server decides.
    assert result.code == 1 and "Invalid value: '7d'" in result.err
    assert ledger_rows()[0]["completion_window"] == "7d"


def test_a_groq_account_sends_7d_and_refuses_30d(cli, make_server, isolated: Path, monkeypatch):
    groq = make_server(completion_windows=PROFILES["groq"].completion_windows)
    write_accounts(
        f'[accounts.groq]\nbase_url = "{groq.base_url}"\nprofile = "groq"\n'
        'api_key_env = "GROQ_KEY"\n'
    )
    monkeypatch.setenv("GROQ_KEY", GROQ_KEY)
    write_jsonl(isolated / "in.jsonl", 2, endpoint="/v1/chat/completions")

    sent = cli("--account", "groq", "create", "--in", "in.jsonl", "--completion-window", "7d")
    refused = cli("--account", "groq", "create", "--in", "in.jsonl", "--completion-window", "30d")

    assert sent.code == 0, sent.err
    (body,) = creates(groq)
    assert body["completion_window"] == "7d"
    assert body["endpoint"] == "/v1/chat/completions"  # groq's default endpoint
    (row,) = ledger_rows()
    assert row["completion_window"] == "7d" and row["account"] == "groq"
    assert refused.code == 2 and "'30d'" in refused.err and "7d" in refused.err
    assert len(creates(groq)) == 1


def test_accounts_json_shows_each_profile_and_its_limits(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_accounts(
        f'[accounts.groq]\nbase_url = "{emulator.base_url}"\nprofile = "groq"\n'
        "max_requests = 1000\nmax_bytes = 5000000\n"
        '[accounts.east]\nkind = "azure"\nendpoint = "https://east.example.com"\n'
        'api_version = "2025-04-01-preview"\ncompletion_windows = ["24h", "48h"]\n'
    )

    table = cli("accounts")
    rows = {row["name"]: row for row in json.loads(cli("accounts", "--json").out)}

    assert table.code == 0
    assert rows["groq"]["profile"] == "groq"
    assert (rows["groq"]["max_requests"], rows["groq"]["max_bytes"]) == (1000, 5_000_000)
    assert rows["groq"]["completion_windows"][-1] == "7d"
    assert rows["east"]["profile"] == "azure" and rows["east"]["max_requests"] == 100_000
    assert rows["east"]["completion_windows"] == ["24h", "48h"]
    assert rows["default"]["max_requests"] == 50_000
    assert rows["default"]["completion_windows"] is None  # any host: passed through
    assert rows["default"]["max_bytes"] == 200 * 1024 * 1024
    assert rows["demo"]["profile"] == "emulator"
    assert "1000 requests, 5000000 bytes" in table.out and "24h/48h" in table.out


@pytest.mark.parametrize(
    "setting",
    [
        "max_requests = 0",
        "max_requests = -5",
        'max_requests = "many"',
        "max_requests = true",
        "max_bytes = 1.5",
        'completion_windows = "24h"',
        "completion_windows = []",
        'completion_windows = ["a day"]',
        'profile = "mistral"',
    ],
)
def test_a_bad_override_is_a_usage_error_naming_it(cli, emulator, isolated: Path, setting):
    path = write_accounts(f'[accounts.work]\nbase_url = "{emulator.base_url}"\n{setting}\n')
    write_jsonl(isolated / "in.jsonl", 2)

    result = cli("--account", "work", "create", "--in", "in.jsonl")
    listed = cli("accounts")

    name = setting.split(" = ")[0]
    assert result.code == 2 and listed.code == 2
    assert result.err.startswith(f"batchledger: error: {path}: [accounts.work]")
    assert name in result.err and len(result.err.splitlines()) == 1
    assert emulator.state.requests == []


def test_a_profile_is_only_for_an_openai_kind_account(cli, isolated: Path):
    path = write_accounts(
        '[accounts.east]\nkind = "azure"\nendpoint = "https://east.example.com"\n'
        'api_version = "2025-04-01-preview"\nprofile = "groq"\n'
    )

    result = cli("accounts")

    assert result.code == 2 and f"{path}: [accounts.east]" in result.err
    assert "'profile'" in result.err


def test_the_openai_provider_is_a_provider_with_its_profile(emulator: EmulatorServer):
    from batchledger.accounts import Account

    provider: Provider = OpenAIProvider(
        Account(name="azure-like", kind="azure", endpoint=emulator.url, api_version="x"),
        max_retries=0,
        timeout=5,
    )
    try:
        assert provider.profile == PROFILES["azure"]
        assert provider.profile.limits == (100_000, 200 * 1024 * 1024)
        assert provider.location == f"{emulator.url.rstrip('/')}/openai"
    finally:
        provider.close()


def test_the_built_in_profiles_hold_each_provider_s_documented_limits():
    openai, azure, anthropic = PROFILES["openai"], PROFILES["azure"], PROFILES["anthropic"]

    assert openai.limits == (50_000, 200 * 1024 * 1024) and openai.completion_windows == ("24h",)
    assert PROFILES["emulator"].limits == openai.limits
    assert azure.limits == (100_000, 200 * 1024 * 1024)
    assert azure.default_endpoint == "/chat/completions"
    assert anthropic.limits == (100_000, 256_000_000) and anthropic.default_endpoint is None
    assert not anthropic.carries_metadata and not anthropic.results_in_input_order
    assert anthropic.inline_requests and anthropic.retention == 29 * 86400
    assert anthropic.ledger_status("ended") == "completed"
    assert anthropic.ledger_status("canceling") == "cancelling"
    assert openai.ledger_status("finalizing") == "finalizing"  # the same words
    assert (
        "7d" in PROFILES["groq"].completion_windows and "24h" in PROFILES["groq"].completion_windows
    )
    assert PROFILES["gemini"].max_bytes > openai.max_bytes


def test_a_gemini_account_on_a_host_that_keeps_no_metadata_finds_a_lost_create_and_splits(
    cli, make_server, isolated: Path, monkeypatch
):
    """Gemini's OpenAI-compatible endpoint, emulated with its profile: no batch metadata kept
    (a lost create is found by the input file it was made from), its default endpoint, and a
    job cut by an account override of its request limit."""
    from batchledger.emulator import Fault

    gemini = make_server(keep_metadata=False)
    write_accounts(
        f'[accounts.gemini]\nbase_url = "{gemini.base_url}"\nprofile = "gemini"\n'
        'api_key_env = "GEMINI_KEY"\nmax_requests = 3\n'
    )
    monkeypatch.setenv("GEMINI_KEY", GROQ_KEY)
    write_jsonl(isolated / "one.jsonl", 3, endpoint="/v1/chat/completions")
    write_jsonl(isolated / "job.jsonl", 7, endpoint="/v1/chat/completions")
    gemini.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))

    lost = cli("--account", "gemini", "create", "--in", "one.jsonl")
    job = cli("--account", "gemini", "create", "--in", "job.jsonl")

    assert lost.code == 0, lost.err
    made = creates(gemini)
    assert len(made) == 1 + 3  # the lost create found, not made twice; the job's 3 parts
    assert all(not batch.get("metadata") for batch in made)  # the host kept none
    assert {batch["endpoint"] for batch in made} == {"/v1/chat/completions"}
    assert ledger_rows()[0]["batch_id"] == lost.field("batch_id")
    assert job.code == 0, job.err
    assert [part["requests"] for part in parts()] == [3, 3, 1]
    shown = json.loads(cli("accounts", "--json").out)
    [row] = [account for account in shown if account["name"] == "gemini"]
    assert (row["profile"], row["max_requests"], row["max_bytes"]) == (
        "gemini",
        3,
        PROFILES["gemini"].max_bytes,
    )
