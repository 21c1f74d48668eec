"""`usage`: requests and tokens summed from the ledger, priced from a TOML file."""

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import complete, ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer
from batchledger.ledger import open_ledger


def usage_of(input_: int, cached: int, output: int, reasoning: int) -> str:
    return json.dumps(
        {
            "input_tokens": input_,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_ + output,
        }
    )


BATCHES: list[tuple[str | None, str, int, str | None]] = [
    # model, created_at, requests completed, usage
    ("gpt-4o-mini", "2026-11-20T10:00:00Z", 10, usage_of(1000, 200, 500, 0)),
    ("gpt-4o-mini", "2026-11-21T10:00:00Z", 5, usage_of(3000, 0, 1500, 0)),
    ("o4-mini", "2026-11-21T11:00:00Z", 2, usage_of(2_000_000, 1_000_000, 400, 300)),
    (None, "2026-11-21T12:00:00Z", 0, None),  # not yet run: counted, no tokens
]


@pytest.fixture
def ledger_with_usage() -> None:
    ledger = open_ledger(Path(os.environ["BATCHLEDGER_DB"]))
    assert ledger is not None
    with ledger.db.conn:
        ledger.db.conn.executemany(
            "INSERT INTO batches (ref, batch_id, endpoint, completion_window, status, model,"
            " created_at, recorded_at, requests_completed, usage)"
            " VALUES (?, ?, '/v1/responses', '24h', 'completed', ?, ?, ?, ?, ?)",
            [
                (f"ref{n}", f"batch_{n}", model, made, made, done, usage)
                for n, (model, made, done, usage) in enumerate(BATCHES)
            ],
        )
    ledger.close()


def rows(result: Any) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in result.out.splitlines()[2:]}


def test_usage_by_model_sums_every_kind_of_token(cli, ledger_with_usage, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")  # no key, no network

    result = cli("usage")

    assert result.code == 0, result.err
    header = result.out.splitlines()[0].split()
    # The cost is at genai-prices' batch prices (tests/test_estimate.py checks it).
    assert header == [
        "model",
        "batches",
        "requests",
        "input",
        "cached",
        "output",
        "reasoning",
        "cost",
    ]
    assert {group: cells[:6] for group, cells in rows(result).items()} == {
        "(unknown)": ["1", "0", "0", "0", "0", "0"],
        "gpt-4o-mini": ["2", "15", "4000", "200", "2000", "0"],
        "o4-mini": ["1", "2", "2000000", "1000000", "400", "300"],
        "total": ["4", "17", "2004000", "1000200", "2400", "300"],
    }
    as_json = json.loads(cli("usage", "--json").out)
    assert as_json[1].pop("cost") > 0
    assert as_json[1] == {
        "model": "gpt-4o-mini",
        "batches": 2,
        "requests": 15,
        "input_tokens": 4000,
        "cached_tokens": 200,
        "output_tokens": 2000,
        "reasoning_tokens": 0,
    }


def test_usage_by_day_and_since(cli, ledger_with_usage):
    by_day = cli("usage", "--by", "day")
    assert list(rows(by_day)) == ["2026-11-21", "2026-11-20", "total"]
    assert rows(by_day)["2026-11-21"][:2] == ["3", "7"]

    since = cli("usage", "--since", "2026-11-21", "--json")
    assert sum(line["batches"] for line in json.loads(since.out)) == 3


def test_usage_by_account_is_default_until_accounts_exist(cli, ledger_with_usage):
    result = cli("usage", "--by", "account", "--json")
    assert [(line["account"], line["batches"]) for line in json.loads(result.out)] == [
        ("default", 4)
    ]


def test_a_prices_file_overrides_the_library_per_model(cli, ledger_with_usage, isolated: Path):
    (isolated / "prices.toml").write_text(
        '["gpt-4o-mini"]\ninput = 0.075\ncached_input = 0.0375\noutput = 0.3\n'
    )

    result = cli("usage", "--prices", "prices.toml")

    assert result.code == 0, result.err
    table = rows(result)
    # (3800 * 0.075 + 200 * 0.0375 + 2000 * 0.3) / 1e6 = 0.0008925
    assert table["gpt-4o-mini"][-1] == "0.000892"  # 0.0008925
    assert len(table["o4-mini"]) == 7  # priced by genai-prices, which knows it
    assert result.err == ""
    as_json = json.loads(cli("usage", "--prices", "prices.toml", "--json").out)
    costs = {line["model"]: line["cost"] for line in as_json}
    assert costs["gpt-4o-mini"] == pytest.approx(0.0008925)
    assert costs["(unknown)"] == 0.0


def test_cached_input_defaults_to_the_input_price(cli, ledger_with_usage, isolated: Path):
    (isolated / "prices.toml").write_text('["o4-mini"]\ninput = 1\noutput = 4\n')
    as_json = json.loads(cli("usage", "--prices", "prices.toml", "--json").out)
    costs = {line["model"]: line["cost"] for line in as_json}
    assert costs["o4-mini"] == pytest.approx((2_000_000 * 1 + 400 * 4) / 1e6)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("this is = not toml [", "not valid TOML"),
        ('["m"]\ninput = -1\noutput = 1\n', "negative"),
        ('["m"]\ninput = "cheap"\noutput = 1\n', "not a number"),
        ('["m"]\ninput = true\noutput = 1\n', "not a number"),
        ('["m"]\ninput = 1\n', "no output price"),
        ('["m"]\ninput = 1\noutput = 1\ncahced_input = 1\n', "unknown keys"),
        ("m = 3\n", "should be a table"),
        ('["m\xff"]\ninput = 1\noutput = 1\n', "is not UTF-8 text (byte 3 is 0xff)"),
    ],
)
def test_a_bad_prices_file_is_a_usage_error(cli, isolated: Path, text: str, reason: str):
    (isolated / "prices.toml").write_bytes(text.encode("latin-1"))
    result = cli("usage", "--prices", "prices.toml")
    assert (result.code, result.out) == (2, "")
    assert reason in result.err and len(result.err.splitlines()) == 1, result.err


def test_usage_counts_what_the_emulator_reported(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 3)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    complete(emulator, batch_id)
    assert cli("status", "--batch-id", batch_id).code == 0
    reported = json.loads(ledger_rows()[0]["usage"])

    line = json.loads(cli("usage", "--json").out)[0]

    assert line["model"] == "gpt-4o-mini" and line["requests"] == 3
    assert line["input_tokens"] == reported["input_tokens"] > 0
    assert line["output_tokens"] == reported["output_tokens"] > 0


def test_usage_on_a_missing_ledger(cli, isolated: Path):
    result = cli("usage")
    assert (result.code, result.out) == (0, "No batches in the ledger yet.\n")
    assert not Path(os.environ["BATCHLEDGER_DB"]).exists()
