"""`estimate`, `create --dry-run` and `create --max-cost`: the plan and the cost before
anything is sent; no server, no ledger, no key."""

import json
import os
import sqlite3
from pathlib import Path

import pytest
from helpers import api_requests, ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer
from batchledger.prices import library_quote
from batchledger.tokens import count_text

PROMPT = "Say hello number 0"


def no_ledger_and_no_log(isolated: Path) -> None:
    assert not (isolated.parent / "ledger.db").exists()
    assert not (isolated / "logs").exists()


def test_a_dry_run_prints_the_plan_and_touches_no_server_and_no_ledger(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3, max_output_tokens=100)

    result = cli("create", "--in", "in.jsonl", "--dry-run")

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert (
        lines[0] == f"input: in.jsonl (3 requests, {(isolated / 'in.jsonl').stat().st_size} bytes)"
    )
    assert lines[1] == "plan: one batch"
    row = next(line.split() for line in lines if line.startswith("gpt-4o-mini "))
    assert row[1] == "3"  # requests
    assert row[3] == "300"  # max output tokens: 3 x 100
    assert "nothing was sent and nothing recorded" in result.out
    assert emulator.state.requests == []
    no_ledger_and_no_log(isolated)


def test_a_dry_run_leaves_an_existing_ledger_unchanged(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2, max_output_tokens=10)
    assert cli("create", "--in", "in.jsonl").code == 0
    sent = len(emulator.state.requests)
    before = ledger_rows()

    assert cli("create", "--in", "in.jsonl", "--dry-run", "--json").code == 0

    assert ledger_rows() == before
    assert len(emulator.state.requests) == sent


def test_estimate_needs_no_key_and_shows_the_parts_of_a_job_sized_input(
    cli, isolated: Path, monkeypatch
):
    monkeypatch.delenv("OPENAI_API_KEY")
    write_jsonl(isolated / "in.jsonl", 10, max_output_tokens=5)
    size = (isolated / "in.jsonl").stat().st_size

    result = cli("estimate", "--in", "in.jsonl", "--max-requests", "4")

    assert result.code == 0, result.err
    assert "plan: a job of 3 parts (at most 4 requests and" in result.out
    assert "  part 1: lines 1-4, 4 requests, " in result.out
    assert "  part 2: lines 5-8, 4 requests, " in result.out
    assert "  part 3: lines 9-10, 2 requests, " in result.out
    as_json = json.loads(cli("estimate", "--in", "in.jsonl", "--max-requests", "4", "--json").out)
    assert [part["requests"] for part in as_json["parts"]] == [4, 4, 2]
    assert sum(part["bytes"] for part in as_json["parts"]) == size
    assert as_json["batches"] == 3
    no_ledger_and_no_log(isolated)


def test_the_account_s_limits_cut_the_plan(cli, isolated: Path, monkeypatch):
    """An Azure account takes 100,000 requests a batch, OpenAI 50,000: the kind picks."""
    (isolated.parent / "accounts.toml").write_text(
        '[accounts.az]\nkind = "azure"\nendpoint = "https://x.openai.azure.com"\n'
        'api_version = "2025-04-01-preview"\napi_key_env = "NOT_SET_ANYWHERE"\n'
    )
    path = isolated / "in.jsonl"
    line = '{"custom_id": "r", "body": {"model": "gpt-4o-mini", "input": "x"}}\n'
    path.write_text(line * 60_000)

    openai_plan = json.loads(cli("estimate", "--in", "in.jsonl", "--json").out)
    azure_plan = json.loads(cli("estimate", "--in", "in.jsonl", "--json", "--account", "az").out)

    assert [part["requests"] for part in openai_plan["parts"]] == [50_000, 10_000]
    assert azure_plan["parts"] == [] and azure_plan["batches"] == 1
    assert azure_plan["account"] == "az"


def test_json_is_one_document_with_tokens_and_the_cost_range(cli, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 4, max_output_tokens=1000)

    result = cli("estimate", "--in", "in.jsonl", "--json")

    assert result.code == 0, result.err
    document = json.loads(result.out)  # the whole of stdout is one JSON document
    (model,) = document["models"]
    prompts = sum(count_text(f"Say hello number {n}", "gpt-4o-mini")[0] for n in range(4))
    assert model["input_tokens"] == prompts + 4 * 3  # and 3 per request
    assert model["input_tokens_estimated"] is False
    assert model["max_output_tokens"] == 4000
    quote = library_quote("gpt-4o-mini")
    assert quote is not None
    assert model["price"]["source"] == quote.source
    low = model["input_tokens"] * quote.price.input / 1e6
    assert abs(document["cost_input_only"] - low) < 1e-12
    high = low + 4000 * quote.price.output / 1e6
    assert abs(document["cost_max"] - high) < 1e-12


def test_a_prices_file_overrides_the_library_per_model(cli, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 2, max_output_tokens=500_000)
    (isolated / "prices.toml").write_text('["gpt-4o-mini"]\ninput = 1000000\noutput = 2\n')

    model = json.loads(
        cli("estimate", "--in", "in.jsonl", "--prices", "prices.toml", "--json").out
    )["models"][0]

    assert model["price"]["source"] == "prices file"
    assert model["cost_input_only"] == model["input_tokens"]  # $1 a token
    assert model["cost_max"] == model["input_tokens"] + 2.0  # 1,000,000 tokens at $2 per 1M


def test_unknown_models_are_estimated_and_unpriced(cli, isolated: Path):
    (isolated / "in.jsonl").write_text(
        json.dumps({"custom_id": "a", "body": {"model": "my-deployment", "input": "x" * 80}}) + "\n"
    )

    result = cli("estimate", "--in", "in.jsonl")

    assert result.code == 0
    assert "my-deployment: no tokenizer known; input tokens estimated as bytes / 4" in result.out
    assert "my-deployment: no price known; give one with --prices FILE" in result.out
    assert "23 (estimated)" in result.out  # 80 bytes / 4, and 3 for the request


def test_max_cost_refuses_before_any_request(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 5, max_output_tokens=100_000)

    result = cli("create", "--in", "in.jsonl", "--max-cost", "0.01")

    assert result.code == 3
    assert result.err.startswith("batchledger: error: the estimate is $")
    assert "above --max-cost $0.0100; nothing was sent" in result.err
    assert len(result.err.splitlines()) == 1
    assert result.out == ""
    assert emulator.state.requests == []
    no_ledger_and_no_log(isolated)


def test_a_dry_run_with_max_cost_prints_the_plan_and_exits_as_create_would(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 5, max_output_tokens=100_000)

    refused = cli("create", "--in", "in.jsonl", "--dry-run", "--max-cost", "0.01", "--json")
    accepted = cli("create", "--in", "in.jsonl", "--dry-run", "--max-cost", "100", "--json")

    assert refused.code == 3
    assert json.loads(refused.out)["requests"] == 5
    assert "above --max-cost $0.0100" in refused.err
    assert accepted.code == 0, accepted.err
    assert emulator.state.requests == []
    no_ledger_and_no_log(isolated)


def test_prices_on_a_create_that_estimates_nothing_is_a_usage_error(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 1)
    (isolated / "prices.toml").write_text('["gpt-4o-mini"]\ninput = 1\noutput = 2\n')

    result = cli("create", "--in", "in.jsonl", "--prices", "prices.toml")

    assert result.code == 2
    assert result.err == (
        "batchledger: error: --prices prices an estimate: it goes with --dry-run or --max-cost\n"
    )
    assert emulator.state.requests == []


def test_max_cost_refuses_what_has_no_upper_bound(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 2)  # no max_output_tokens

    result = cli("create", "--in", "in.jsonl", "--max-cost", "1000")

    assert result.code == 3
    assert "2 request(s) set no max_tokens / max_output_tokens" in result.err
    assert emulator.state.requests == []


def test_max_cost_lets_an_input_under_it_through(cli, emulator: EmulatorServer, isolated: Path):
    write_jsonl(isolated / "in.jsonl", 2, max_output_tokens=100)

    result = cli("create", "--in", "in.jsonl", "--max-cost", "1")

    assert result.code == 0, result.err
    assert api_requests(emulator, "POST", "/v1/batches") == 1
    (row,) = ledger_rows()
    # The estimate it made is recorded with the batch, and shown by show and list --json.
    planned = json.loads(cli("estimate", "--in", "in.jsonl", "--json").out)
    assert row["estimated_input_tokens"] == planned["models"][0]["input_tokens"]
    assert row["estimated_cost_min"] == pytest.approx(planned["cost_input_only"])
    assert row["estimated_cost_max"] == pytest.approx(planned["cost_max"])
    shown = cli("show", "last").out
    assert f"estimated_input_tokens: {row['estimated_input_tokens']}" in shown
    assert f"estimated_cost_max: {row['estimated_cost_max']:.6f} USD" in shown
    (listed,) = json.loads(cli("list", "--json").out)
    assert listed["estimated_cost_max"] == pytest.approx(row["estimated_cost_max"])


def test_a_job_records_its_estimate_and_its_parts_none(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3, max_output_tokens=100)

    result = cli("create", "--in", "in.jsonl", "--max-requests", "2", "--max-cost", "1")

    assert result.code == 0, result.err
    (job,) = ledger_rows("jobs")
    planned = json.loads(cli("estimate", "--in", "in.jsonl", "--json").out)
    assert job["estimated_input_tokens"] == planned["models"][0]["input_tokens"]
    assert job["estimated_cost_max"] == pytest.approx(planned["cost_max"])
    assert [row["estimated_cost_max"] for row in ledger_rows()] == [None, None]
    assert (
        f"estimated_cost_max: {job['estimated_cost_max']:.6f} USD" in cli("show", job["job_id"]).out
    )


def test_a_create_without_a_budget_records_an_estimate_from_bytes(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 3, max_output_tokens=100)
    size = source.stat().st_size

    assert cli("create", "--in", "in.jsonl").code == 0
    (row,) = ledger_rows()
    shown = cli("show", "last").out.splitlines()
    (listed,) = json.loads(cli("list", "--json").out)

    # Scanned beside the upload, not parsed: the input tokens are its bytes / 4.
    assert row["estimated_from"] == "bytes"
    assert row["estimated_input_tokens"] == round(size / 4)
    quote = library_quote("gpt-4o-mini")
    assert quote is not None
    low = round(size / 4) * quote.price.input / 1e6
    assert row["estimated_cost_min"] == pytest.approx(low)
    assert row["estimated_cost_max"] == pytest.approx(low + 300 * quote.price.output / 1e6)
    assert "estimated_from: bytes" in shown
    assert listed["estimated_from"] == "bytes"
    assert listed["estimated_cost_max"] == pytest.approx(row["estimated_cost_max"])


def test_the_prices_of_a_plain_create_are_kept_for_the_day_s_next_creates(
    cli, emulator: EmulatorServer, isolated: Path
):
    from batchledger.prices import library_version

    write_jsonl(isolated / "a.jsonl", 2, max_output_tokens=10)
    source = write_jsonl(isolated / "b.jsonl", 2, max_output_tokens=10, instructions="Hi.")
    assert cli("create", "--in", "a.jsonl").code == 0
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    conn.row_factory = sqlite3.Row
    [kept] = [dict(row) for row in conn.execute("SELECT * FROM price_quotes")]
    # The next create prices with what the ledger keeps: changed here, so that it shows.
    with conn:
        conn.execute("UPDATE price_quotes SET input = 1000, output = 2000")
    conn.close()

    assert cli("create", "--in", "b.jsonl").code == 0

    quote = library_quote("gpt-4o-mini")
    assert quote is not None
    assert kept["model"] == "gpt-4o-mini" and kept["library"] == library_version()
    assert (kept["input"], kept["output"]) == (quote.price.input, quote.price.output)
    tokens = round(source.stat().st_size / 4)
    second = ledger_rows()[1]
    assert second["estimated_cost_min"] == pytest.approx(tokens * 1000 / 1e6)
    assert second["estimated_cost_max"] == pytest.approx((tokens * 1000 + 20 * 2000) / 1e6)


def test_a_job_without_a_budget_records_its_estimate_and_uncapped_has_no_upper_cost(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 3)  # no max_output_tokens: no upper bound

    assert cli("create", "--in", "in.jsonl", "--max-requests", "2").code == 0
    (job,) = ledger_rows("jobs")

    assert job["estimated_from"] == "bytes"
    assert job["estimated_input_tokens"] == round(source.stat().st_size / 4)
    assert job["estimated_cost_min"] > 0 and job["estimated_cost_max"] is None
    assert [row["estimated_from"] for row in ledger_rows()] == [None, None]  # parts: none


def test_a_budgeted_create_records_its_counted_estimate(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 2, max_output_tokens=100)

    assert cli("create", "--in", "in.jsonl", "--max-cost", "1").code == 0
    (row,) = ledger_rows()

    assert row["estimated_from"] == "tokens"
    assert row["estimated_input_tokens"] == 2 * (count_text(PROMPT, "gpt-4o-mini")[0] + 3)


def test_a_big_input_is_scanned_in_windows_and_scaled(tmp_path: Path, monkeypatch):
    """Above SCAN_ALL_BYTES, windows spread over the input stand for it: two models in
    alternating runs of lines, one capped, one not; one price each."""
    from batchledger import estimate

    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for n in range(4000):
            mini = (n // 50) % 2 == 0
            body = {"model": "gpt-4o-mini" if mini else "gpt-4.1", "input": f"Say {n} " * 8}
            if mini:
                body["max_output_tokens"] = 10
            out.write(json.dumps({"custom_id": f"r{n}", "body": body}) + "\n")
    size = path.stat().st_size
    whole = estimate.scan_input(path, size)
    monkeypatch.setattr(estimate, "SCAN_ALL_BYTES", size // 8)

    sampled = estimate.scan_input(path, size)

    assert whole.estimated_from == sampled.estimated_from == "bytes"
    assert whole.cost_max is None and sampled.cost_max is None  # gpt-4.1 lines are uncapped
    assert sampled.input_tokens == pytest.approx(whole.input_tokens, rel=0.02)
    assert whole.cost_min is not None and sampled.cost_min is not None
    assert sampled.cost_min == pytest.approx(whole.cost_min, rel=0.15)


def test_scan_finds_each_line_s_model_and_cap_where_models_mix(tmp_path: Path):
    from batchledger.estimate import scan_input

    path = tmp_path / "in.jsonl"
    lines = [
        {"body": {"model": "gpt-4o-mini", "input": 'say "model": "x"', "max_tokens": 7}},
        {"params": {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}},
        {"body": {"model": "no-such-model-anywhere", "input": "hi"}},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")

    found = scan_input(path, path.stat().st_size)

    assert found.input_tokens == sum(round((len(json.dumps(x)) + 1) / 4) for x in lines)
    assert found.cost_min is None and found.cost_max is None  # one model has no price


def test_library_prices_are_batch_prices_or_half_the_standard_ones():
    """genai-prices states OpenAI's batch prices; for a model where it states none (here
    claude-3-5-haiku), the standard price is halved."""
    from genai_prices import Usage, calc_price

    from batchledger.prices import FROM_LIBRARY_BATCH, FROM_LIBRARY_HALVED

    mini = library_quote("gpt-4o-mini")
    assert mini is not None and mini.source == FROM_LIBRARY_BATCH
    standard = calc_price(Usage(input_tokens=0), "gpt-4o-mini").model_price
    assert mini.price.input < float(standard.input_mtok)  # type: ignore[attr-defined]
    haiku = library_quote("claude-3-5-haiku-latest")
    assert haiku is not None and haiku.source == FROM_LIBRARY_HALVED
    standard = calc_price(Usage(input_tokens=0), "claude-3-5-haiku-latest").model_price
    assert haiku.price.input == float(standard.input_mtok) / 2  # type: ignore[attr-defined]
    assert haiku.price.output == float(standard.output_mtok) / 2  # type: ignore[attr-defined]
    assert library_quote("no-such-model-anywhere") is None


def add_batches_with_usage(batches: list[tuple[str, int, int]]) -> None:
    """Completed batches in the ledger: (model, input tokens, output tokens) each."""
    import os

    from batchledger.ledger import open_ledger

    ledger = open_ledger(Path(os.environ["BATCHLEDGER_DB"]))
    assert ledger is not None
    with ledger.db.conn:
        ledger.db.conn.executemany(
            "INSERT INTO batches (ref, batch_id, endpoint, completion_window, status, model,"
            " created_at, recorded_at, requests_completed, usage)"
            " VALUES (?, ?, '/v1/responses', '24h', 'completed', ?, '2026-12-01T10:00:00Z',"
            " '2026-12-01T10:00:00Z', 1, ?)",
            [
                (
                    f"ref{n}",
                    f"batch_{n}",
                    model,
                    json.dumps({"input_tokens": input_, "output_tokens": output}),
                )
                for n, (model, input_, output) in enumerate(batches)
            ],
        )
    ledger.close()


def test_usage_shows_a_cost_with_no_price_file(cli, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    add_batches_with_usage([("gpt-4o-mini", 2_000_000, 1_000_000), ("my-deployment", 10, 10)])

    result = cli("usage", "--json")

    assert result.code == 0
    costs = {line["model"]: line["cost"] for line in json.loads(result.out)}
    quote = library_quote("gpt-4o-mini")
    assert quote is not None
    assert costs["gpt-4o-mini"] == pytest.approx(2 * quote.price.input + quote.price.output)
    assert costs["my-deployment"] is None
    assert result.err == (
        "batchledger: warning: no price for my-deployment in genai-prices: cost not shown "
        "for it (give one with --prices FILE)\n"
    )
    table = cli("usage")
    assert table.out.splitlines()[0].split()[-1] == "cost"
    assert f"{costs['gpt-4o-mini']:.6f}" in table.out


def test_the_estimate_of_some_lines_is_that_of_a_file_of_those_lines(isolated: Path):
    # What a retry sends again: byte ranges of the input (adjacent lines coalesced), the last
    # line without its newline; counted and priced as an input of just those lines would be.
    from batchledger.estimate import estimate_input, estimate_ranges

    source = write_jsonl(isolated / "in.jsonl", 6, max_output_tokens=100)
    lines = source.read_bytes().splitlines(keepends=True)
    source.write_bytes(b"".join(lines)[:-1])  # no newline at the end
    starts = [sum(len(line) for line in lines[:n]) for n in range(7)]
    ranges = [(starts[1], starts[3]), (starts[5], starts[6] - 1)]  # lines 1-2 and 5
    alone = isolated / "alone.jsonl"
    alone.write_bytes(lines[1] + lines[2] + lines[5][:-1])

    some = estimate_ranges(source, ranges)
    whole = estimate_input(alone, limits=(50_000, 200_000_000))

    assert some.input_tokens == sum(model.input_tokens for model in whole.models) > 0
    assert some.cost_min == whole.cost_input and some.cost_max == whole.cost_max
    assert some.cost_max is not None and some.cost_max > some.cost_min  # 3 x 100 output tokens
    assert estimate_ranges(source, []).input_tokens == 0


def test_the_rough_scan_of_some_lines_is_that_of_a_file_of_those_lines(isolated: Path):
    # A retry sent without a budget records the plain create's rough estimate (bytes / 4) of
    # the lines it sends; ranges of several megabytes cross the scan's 1 MB reads.
    from batchledger.estimate import scan_input, scan_ranges

    source = write_jsonl(isolated / "in.jsonl", 3000, max_output_tokens=50, instructions="x" * 900)
    lines = source.read_bytes().splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    ranges = [
        (starts[10], starts[2500]),
        (starts[2700], starts[2701]),
        (starts[2999], starts[3000]),
    ]
    alone = isolated / "alone.jsonl"
    alone.write_bytes(b"".join(lines[10:2500] + lines[2700:2701] + lines[2999:]))
    assert ranges[0][1] - ranges[0][0] > 2 * 1024 * 1024

    some = scan_ranges(source, ranges)
    whole = scan_input(alone, alone.stat().st_size)

    assert some == whole and some.estimated_from == "bytes"
    assert abs(some.input_tokens - alone.stat().st_size / 4) <= 1
    assert some.cost_max is not None and some.cost_max > some.cost_min > 0
