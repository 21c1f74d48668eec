"""Issue 22, second half: honest progress, daily budgets, actual costs, the token budget."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import api_requests, ledger_rows, write_jsonl

from batchledger.emulator import EmulatorServer, Fault
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


def budgeted_account(server: EmulatorServer, *settings: str) -> None:
    """accounts.toml with an account `budgeted` on `server`, holding `settings`."""
    Path(os.environ["BATCHLEDGER_CONFIG"]).write_text(
        f'[accounts.budgeted]\nbase_url = "{server.base_url}"\n' + "\n".join(settings) + "\n",
        encoding="utf-8",
    )


def test_the_second_create_of_the_day_past_max_cost_per_day_is_refused_before_any_upload(
    cli, emulator: EmulatorServer, isolated: Path
):
    # 4 requests of at most 1000 output tokens at $1 / $1 per 1M: at most ~$0.00405 each input.
    (isolated / "prices.toml").write_text(
        '["gpt-4o-mini"]\ninput = 1\noutput = 1\n', encoding="utf-8"
    )
    budgeted_account(emulator, "max_cost_per_day = 0.006")
    write_jsonl(isolated / "a.jsonl", 4, max_output_tokens=1000)
    write_jsonl(isolated / "b.jsonl", 4, max_output_tokens=1000, instructions="Be brief.")
    create = ("--account", "budgeted", "--prices", "prices.toml")

    first = cli("create", "--in", "a.jsonl", *create)
    second = cli("create", "--in", "b.jsonl", *create)

    assert first.code == 0, first.err
    assert second.code == 3
    [line] = second.err.splitlines()
    assert line.startswith("batchledger: error: this input may cost up to $0.0040")
    assert "has spent $0.0000 and has $0.0040 estimated in flight" in line
    assert "above max_cost_per_day $0.0060; nothing was sent" in line
    assert api_requests(emulator, "POST", "/v1/files") == 1
    assert api_requests(emulator, "POST", "/v1/batches") == 1
    [row] = ledger_rows()
    # The first create's estimate is recorded: it is what the day's spend counts.
    assert row["input_path"].endswith("a.jsonl")
    assert 0.004 < row["estimated_cost_max"] < 0.0041
    assert row["estimated_input_tokens"] > 0


def test_a_dry_run_says_whether_max_cost_per_day_would_refuse_and_exits_as_create_would(
    cli, emulator: EmulatorServer, isolated: Path
):
    (isolated / "prices.toml").write_text(
        '["gpt-4o-mini"]\ninput = 1\noutput = 1\n', encoding="utf-8"
    )
    budgeted_account(emulator, "max_cost_per_day = 0.006")
    write_jsonl(isolated / "a.jsonl", 4, max_output_tokens=1000)
    write_jsonl(isolated / "b.jsonl", 4, max_output_tokens=1000, instructions="Be brief.")
    create = ("--account", "budgeted", "--prices", "prices.toml")

    fits = cli("create", "--in", "a.jsonl", "--dry-run", *create)
    assert cli("create", "--in", "a.jsonl", *create).code == 0
    sent, before = len(emulator.state.requests), ledger_rows()
    refused = cli("create", "--in", "b.jsonl", "--dry-run", *create)
    as_json = cli("create", "--in", "b.jsonl", "--dry-run", "--json", *create)
    both = cli("create", "--in", "b.jsonl", "--dry-run", "--max-cost", "0.001", *create)

    assert fits.code == 0, fits.err
    assert "budget: max_cost_per_day $0.0060 (today, " in fits.out
    assert "$0.0000 spent, $0.0000 estimated in flight)" in fits.out
    assert fits.out.splitlines()[-1] == "budget: the create would pass"
    # The plan is printed, then the one-line error and exit 3 of the real create.
    assert refused.code == 3
    assert refused.out.startswith("input: b.jsonl (4 requests")
    last = refused.out.splitlines()[-1]
    assert last.startswith("budget: the create would be refused: this input may cost up to")
    assert "above max_cost_per_day $0.0060; nothing was sent" in last
    [line] = refused.err.splitlines()
    assert line == f"batchledger: error: {last.split(': ', 2)[2]}"
    assert as_json.code == 3
    budget = json.loads(as_json.out)["budget"]
    assert budget["max_cost_per_day"] == 0.006 and budget["max_cost"] is None
    assert budget["day_spent"] == 0 and 0.004 < budget["day_estimated_in_flight"] < 0.0041
    assert "above max_cost_per_day" in budget["refused"]
    # --max-cost is checked first, as create checks it: its refusal is the one reported.
    assert both.code == 3 and "above --max-cost $0.0010" in both.err
    assert "budget: --max-cost $0.0010; max_cost_per_day $0.0060" in both.out
    assert len(emulator.state.requests) == sent
    assert ledger_rows() == before


@pytest.mark.parametrize("split", [False, True], ids=["batches", "jobs"])
def test_two_creates_at_once_cannot_both_pass_a_day_budget_that_fits_one(
    emulator: EmulatorServer, isolated: Path, split: bool
):
    # Each input may cost up to ~$0.004; the day holds $0.006: one of the two, not both.
    # Both processes pass the early check (an empty ledger) before either has claimed its
    # row; the check made again under the ledger's write lock, with the claim, stops one.
    (isolated / "prices.toml").write_text(
        '["gpt-4o-mini"]\ninput = 1\noutput = 1\n', encoding="utf-8"
    )
    budgeted_account(emulator, "max_cost_per_day = 0.006")
    write_jsonl(isolated / "a.jsonl", 4, max_output_tokens=1000)
    write_jsonl(isolated / "b.jsonl", 4, max_output_tokens=1000, instructions="Be brief.")
    options = ["--account", "budgeted", "--prices", "prices.toml"]
    if split:
        options += ["--max-requests", "2"]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "batchledger", "create", "--in", name, *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a.jsonl", "b.jsonl")
    ]
    done = [(child.communicate(timeout=60), child.returncode) for child in children]
    done = [(code, out, err) for (out, err), code in done]

    assert sorted(code for code, _, _ in done) == [0, 3], done
    [(_, _, err)] = [run for run in done if run[0] == 3]
    [line] = err.splitlines()
    assert line.startswith("batchledger: error: this input may cost up to $0.0040")
    assert line.endswith("above max_cost_per_day $0.0060; nothing was sent")
    files, batches = (2, 2) if split else (1, 1)  # one input's upload(s) and batch(es)
    assert api_requests(emulator, "POST", "/v1/files") == files
    assert api_requests(emulator, "POST", "/v1/batches") == batches
    rows = ledger_rows("jobs") if split else ledger_rows()
    [row] = rows  # the refused create left nothing in the ledger
    assert 0.004 < row["estimated_cost_max"] < 0.0041


def test_a_create_cut_off_and_resumed_is_not_counted_twice_against_the_day_budget(
    cli, emulator: EmulatorServer, isolated: Path
):
    # The first create uploads, then its batch create fails: its row (and estimate) stays,
    # to be resumed. ~$0.004 twice would pass $0.006: the resume must count it once.
    (isolated / "prices.toml").write_text(
        '["gpt-4o-mini"]\ninput = 1\noutput = 1\n', encoding="utf-8"
    )
    budgeted_account(emulator, "max_cost_per_day = 0.006")
    write_jsonl(isolated / "a.jsonl", 4, max_output_tokens=1000)
    create = ("create", "--in", "a.jsonl", "--account", "budgeted", "--prices", "prices.toml")
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", status=500, times=None))
    assert cli(*create, "--max-retries", "1").code == 1
    emulator.state.clear_faults()
    [cut_off] = ledger_rows()

    resumed = cli(*create)

    assert cut_off["batch_id"] is None and cut_off["input_file_id"] is not None
    assert resumed.code == 0, resumed.err
    [row] = ledger_rows()
    assert row["id"] == cut_off["id"] and row["batch_id"] is not None
    assert api_requests(emulator, "POST", "/v1/files") == 1  # the upload was reused


def test_a_final_batch_counts_at_its_actual_cost_so_the_day_has_room_again(
    cli, emulator: EmulatorServer, isolated: Path
):
    (isolated / "prices.toml").write_text(
        '["gpt-4o-mini"]\ninput = 1\noutput = 1\n', encoding="utf-8"
    )
    budgeted_account(emulator, "max_cost_per_day = 0.006")
    write_jsonl(isolated / "a.jsonl", 4, max_output_tokens=1000)
    write_jsonl(isolated / "b.jsonl", 4, max_output_tokens=1000, instructions="Be brief.")
    create = ("--account", "budgeted", "--prices", "prices.toml")
    first = cli("create", "--in", "a.jsonl", *create).field("batch_id")
    for _ in range(4):
        emulator.state.advance(first)
    assert cli("status", "--all", "--account", "budgeted").code == 0

    second = cli("create", "--in", "b.jsonl", *create)

    assert second.code == 0, second.err  # the first cost its few real tokens, not $0.004
    assert api_requests(emulator, "POST", "/v1/batches") == 2


@pytest.mark.parametrize("split", [False, True], ids=["batches", "jobs"])
def test_what_ended_today_counts_against_the_day_budget_at_its_actual_cost(
    cli, emulator: EmulatorServer, isolated: Path, split: bool
):
    # A batch (or a job) made and ended today is no longer in flight: its actual cost is
    # what the day has spent. Here it is what leaves no room for the next input's upper end.
    (isolated / "prices.toml").write_text(
        '["gpt-4o-mini"]\ninput = 1000\noutput = 1000\n', encoding="utf-8"
    )
    budgeted_account(emulator, "max_cost_per_day = 1000")
    write_jsonl(isolated / "a.jsonl", 4, max_output_tokens=1000)
    write_jsonl(isolated / "b.jsonl", 4, max_output_tokens=1, instructions="Be brief.")
    create = ("--account", "budgeted", "--prices", "prices.toml")
    first = cli("create", "--in", "a.jsonl", *create, *(["--max-requests", "2"] if split else []))
    assert first.code == 0, first.err
    finish_all(emulator)
    assert cli("status", "--all", "--account", "budgeted").code == 0
    [ended] = ledger_rows("jobs") if split else ledger_rows()
    spent = ended["actual_cost"]
    upper = json.loads(cli("create", "--in", "b.jsonl", "--dry-run", "--json", *create).out)
    upper = upper["cost_max"]
    assert spent > 0 and upper > 0
    budgeted_account(emulator, f"max_cost_per_day = {upper + spent / 2}")  # one, not both

    second = cli("create", "--in", "b.jsonl", *create)

    assert second.code == 3, second.err
    [line] = second.err.splitlines()
    assert "has $0.0000 estimated in flight" in line and "above max_cost_per_day" in line
    assert f"has spent ${spent:.4f}" in line or f"has spent ${spent:.2f}" in line
    assert api_requests(emulator, "POST", "/v1/batches") == (2 if split else 1)


def test_a_create_with_no_upper_bound_is_refused_on_an_account_with_a_day_budget(
    cli, emulator: EmulatorServer, isolated: Path
):
    budgeted_account(emulator, "max_cost_per_day = 100")
    write_jsonl(isolated / "a.jsonl", 2)  # no max_output_tokens: no upper bound

    refused = cli("create", "--in", "a.jsonl", "--account", "budgeted")

    assert refused.code == 3
    assert "upper cost is unknown" in refused.err and "nothing was sent" in refused.err
    assert not emulator.state.requests
    assert not Path(os.environ["BATCHLEDGER_DB"]).exists() or not ledger_rows()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('max_cost_per_day = "ten"', "max_cost_per_day must be a number of USD"),
        ("max_cost_per_day = -1", "max_cost_per_day must be a number of USD"),
        ("max_cost_per_day = nan", "max_cost_per_day must be a number of USD"),
        ("enqueued_tokens = 5", "enqueued_tokens must be a table of models"),
        ('enqueued_tokens = { "gpt-4o-mini" = 0 }', "must be a whole number of tokens"),
        ('enqueued_tokens = { "gpt-4o-mini" = 1.5 }', "must be a whole number of tokens"),
    ],
)
def test_bad_budgets_in_accounts_toml_are_usage_errors(
    cli, emulator: EmulatorServer, isolated: Path, setting: str, message: str
):
    budgeted_account(emulator, setting)
    write_jsonl(isolated / "a.jsonl", 2, max_output_tokens=10)

    result = cli("create", "--in", "a.jsonl", "--account", "budgeted")

    assert result.code == 2
    assert result.err.startswith("batchledger: error: ") and message in result.err
    assert len(result.err.splitlines()) == 1
    assert not emulator.state.requests


def finish_all(server: EmulatorServer) -> None:
    for _ in range(4):
        for batch_id in list(server.state.batches):
            server.state.advance(batch_id)


def test_a_final_batch_records_its_actual_cost_shown_listed_and_summed_by_usage(
    cli, emulator: EmulatorServer, isolated: Path
):
    from batchledger.prices import PriceList
    from batchledger.usage import cost_of, usage_tokens

    write_jsonl(isolated / "in.jsonl", 3)
    batch_id = cli("create", "--in", "in.jsonl").field("batch_id")
    live = ledger_rows()[0]["actual_cost"]
    finish_all(emulator)
    assert cli("status", "--all").code == 0
    [row] = ledger_rows()
    shown = cli("show", batch_id)
    listed = json.loads(cli("list", "--json").out)
    priced = json.loads(cli("usage", "--json").out)

    assert live is None  # not final: no actual cost yet
    expected = cost_of(usage_tokens(json.loads(row["usage"])), PriceList().get("gpt-4o-mini"))
    assert expected > 0 and row["actual_cost"] == pytest.approx(expected)
    assert f"actual_cost: {row['actual_cost']:.6f} USD" in shown.out.splitlines()
    assert listed[0]["actual_cost"] == pytest.approx(expected)
    assert priced[0]["cost"] == pytest.approx(expected)
    # usage sums the recorded costs (as priced when the batch ended), not today's prices ...
    conn = sqlite3.connect(os.environ["BATCHLEDGER_DB"])
    with conn:
        conn.execute("UPDATE batches SET actual_cost = 1.25")
    conn.close()
    assert json.loads(cli("usage", "--json").out)[0]["cost"] == 1.25
    # ... unless a prices file names the model: the user's price wins.
    (isolated / "prices.toml").write_text(
        '["gpt-4o-mini"]\ninput = 1\noutput = 1\n', encoding="utf-8"
    )
    tokens = usage_tokens(json.loads(row["usage"]))
    by_file = json.loads(cli("usage", "--json", "--prices", "prices.toml").out)[0]["cost"]
    assert by_file == pytest.approx((tokens["input"] + tokens["output"]) / 1e6)


def test_a_merged_job_records_the_sum_of_its_attempts_costs(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 6)
    created = cli("create", "--in", "in.jsonl", "--max-requests", "3")
    job_id = created.out.splitlines()[0].removeprefix("job_id: ")
    finish_all(emulator)
    assert cli("status", "--all").code == 0
    jobs, _, attempts = job_rows()
    shown = cli("show", job_id)
    listed = json.loads(cli("list", "--json").out)
    as_json = json.loads(cli("show", job_id, "--json").out)

    assert created.code == 0, created.err
    assert jobs[0]["status"] == "done" and len(attempts) == 2
    assert all(attempt["actual_cost"] > 0 for attempt in attempts)
    assert jobs[0]["actual_cost"] == pytest.approx(sum(a["actual_cost"] for a in attempts))
    assert f"actual_cost: {jobs[0]['actual_cost']:.6f} USD" in shown.out.splitlines()
    assert as_json["actual_cost"] == jobs[0]["actual_cost"]
    [job_line] = [item for item in listed if item.get("job_id") == job_id]
    assert job_line["actual_cost"] == jobs[0]["actual_cost"]


def test_fits_keeps_live_tokens_per_model_under_the_limit():
    from batchledger.token_budget import fits

    limits = {"gpt-4o-mini": 40}
    assert fits({"gpt-4o-mini": 16}, {"gpt-4o-mini": 24}, limits)  # 40: at the limit
    assert not fits({"gpt-4o-mini": 16}, {"gpt-4o-mini": 25}, limits)
    assert fits({"gpt-4o-mini": 99}, {}, limits)  # nothing live: it goes (cut at create)
    assert fits({"gpt-4o": 99}, {"gpt-4o": 99, "gpt-4o-mini": 39}, limits)  # no limit
    assert not fits({"gpt-4o": 1, "gpt-4o-mini": 2}, {"gpt-4o-mini": 39}, limits)


def run_token_limited_job(cli, isolated: Path, monkeypatch, *settings: str) -> tuple[list, dict]:
    """A 10-line job of 5 parts (2 lines, 16 counted tokens, 268 bytes each) on an emulator
    whose enqueued-token limit (bytes / 4) holds two parts live, not three; swept to its end."""
    write_jsonl(isolated / "in.jsonl", 10)
    with EmulatorServer(port=0, enqueued_token_limit=67 * 2 + 30) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        budgeted_account(server, *settings)
        created = cli("create", "--in", "in.jsonl", "--max-requests", "2", "--account", "budgeted")
        assert created.code == 0, created.err
        live_at_once = []
        for _ in range(12):
            live_at_once.append(
                sum(1 for batch in server.state.batches.values() if not batch.is_final)
            )
            finish_all(server)
            assert cli("status", "--all", "--account", "budgeted").code == 0
            if job_rows()[0][0]["status"] == "done":
                break
        failures = {
            batch_id: [error.code for error in batch.errors]
            for batch_id, batch in server.state.batches.items()
            if batch.status != "completed"
        }
    return live_at_once, failures


def test_with_enqueued_tokens_a_five_part_job_never_bounces_off_the_token_limit(
    cli, isolated: Path, monkeypatch
):
    live_at_once, failures = run_token_limited_job(
        cli, isolated, monkeypatch, 'enqueued_tokens = { "gpt-4o-mini" = 40 }'
    )

    assert failures == {}  # no batch failed, none with token_limit_exceeded
    assert live_at_once[:3] == [2, 2, 1]  # two parts fit at once (32 of 40 tokens), never 3
    jobs, parts, attempts = job_rows()
    assert jobs[0]["status"] == "done"
    assert len(parts) == 5 and len(attempts) == 5  # each part sent once
    assert [json.loads(part["input_tokens"]) for part in parts] == [{"gpt-4o-mini": 16}] * 5
    assert all(part["requeues"] == 0 for part in parts)
    merged = (isolated / f"results_{jobs[0]['job_id']}.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["custom_id"] for line in merged] == [f"request-{n}" for n in range(10)]


def test_without_enqueued_tokens_the_same_job_bounces_and_requeues(
    cli, isolated: Path, monkeypatch
):
    # The control: the emulator does enforce the limit, so the test above can fail. (Whether
    # the requeued parts finish within the rounds depends on the requeue's timing: not checked.)
    live_at_once, failures = run_token_limited_job(cli, isolated, monkeypatch)

    assert "token_limit_exceeded" in {code for codes in failures.values() for code in codes}
    assert live_at_once[0] == 5


def test_max_tokens_splits_by_counted_tokens_at_line_boundaries(
    cli, emulator: EmulatorServer, isolated: Path
):
    source = write_jsonl(isolated / "in.jsonl", 7)  # 8 counted tokens a line

    created = cli("create", "--in", "in.jsonl", "--max-tokens", "20")
    finish_all(emulator)
    swept = cli("status", "--all")

    assert created.code == 0, created.err
    assert swept.code == 0, swept.err
    jobs, parts, _ = job_rows()
    assert [part["requests"] for part in parts] == [2, 2, 2, 1]
    assert [json.loads(part["input_tokens"]) for part in parts] == [
        {"gpt-4o-mini": 16},
        {"gpt-4o-mini": 16},
        {"gpt-4o-mini": 16},
        {"gpt-4o-mini": 8},
    ]
    lines = source.read_bytes().splitlines(keepends=True)
    uploads = [
        emulator.state.files[batch.input_file_id].path.read_bytes()
        for batch in emulator.state.batches.values()
    ]
    assert uploads == [b"".join(lines[i : i + 2]) for i in range(0, 7, 2)]
    assert jobs[0]["status"] == "done"


def test_a_line_over_the_token_limit_alone_is_refused_before_anything_is_sent(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)

    result = cli("create", "--in", "in.jsonl", "--max-tokens", "5")

    assert result.code == 2
    assert result.err == (
        "batchledger: error: line 1 of in.jsonl alone counts 8 input tokens of gpt-4o-mini, "
        "more than a part may hold (5); raise the limit\n"
    )
    assert not emulator.state.requests


def test_an_input_within_the_token_budget_stays_one_plain_batch(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 3)

    created = cli("create", "--in", "in.jsonl", "--max-tokens", "1000")

    assert created.code == 0, created.err
    assert created.field("batch_id").startswith("batch_")
    assert job_rows()[0] == []


def test_a_dry_run_shows_the_parts_cut_by_counted_tokens(
    cli, emulator: EmulatorServer, isolated: Path
):
    write_jsonl(isolated / "in.jsonl", 7)  # 8 counted tokens a line

    planned = cli("create", "--in", "in.jsonl", "--max-tokens", "20", "--dry-run", "--json")

    assert planned.code == 0, planned.err
    parts = json.loads(planned.out)["parts"]
    assert [(p["first_line"], p["last_line"]) for p in parts] == [(1, 2), (3, 4), (5, 6), (7, 7)]
    assert not emulator.state.requests
    assert not Path(os.environ["BATCHLEDGER_DB"]).exists()


def sent_with_two_failures(cli, emulator: EmulatorServer, isolated: Path) -> str:
    """A batch of 6 requests (each of at most 1000 output tokens) on `budgeted`, sent
    without a budget, done and saved; 2 failed (a 500, a 429): a retry sends them again."""
    budgeted_account(emulator)
    write_jsonl(isolated / "in.jsonl", 6, max_output_tokens=1000)
    emulator.state.set_line_outcomes({"request-1": "500", "request-4": "429"}, times=1)
    batch_id = cli("create", "--in", "in.jsonl", "--account", "budgeted").field("batch_id")
    for _ in range(3):
        emulator.state.advance(batch_id)
    assert cli("status", "--all").code == 0
    return batch_id


def test_a_retry_is_held_to_the_day_budget_and_records_its_estimate(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = sent_with_two_failures(cli, emulator, isolated)
    batches = len(emulator.state.batches)
    files = api_requests(emulator, "POST", "/v1/files")

    budgeted_account(emulator, "max_cost_per_day = 0.0003")  # under the retry's upper estimate
    refused = cli("retry", batch_id)

    assert refused.code == 3 and refused.out == ""
    [line] = refused.err.splitlines()
    assert line.startswith("batchledger: error: this retry may cost up to $0.0006")
    assert "above max_cost_per_day $0.0003; nothing was sent" in line
    assert (len(emulator.state.batches), api_requests(emulator, "POST", "/v1/files")) == (
        batches,
        files,
    )
    assert ledger_rows("jobs") == []

    budgeted_account(emulator, "max_cost_per_day = 1")
    retried = cli("retry", batch_id)

    assert retried.code == 0, retried.err
    assert retried.out.splitlines()[0] == f"retry of {batch_id}: 2 requests (1 429, 1 5xx)"
    [job] = ledger_rows("jobs")
    assert job["estimated_from"] == "tokens" and job["input_requests"] == 2
    # Two requests of at most 1000 output tokens each at gpt-4o-mini's batch price ($0.30/1M).
    assert 0.0006 < job["estimated_cost_max"] < 0.00061
    assert 0 < job["estimated_cost_min"] < 0.00001
    assert job["estimated_input_tokens"] > 0


def test_a_retry_cut_off_is_held_to_the_day_budget_again_when_it_resumes(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = sent_with_two_failures(cli, emulator, isolated)
    # The retry fits the budget and claims its job; its upload fails: it is cut off, unsent.
    budgeted_account(emulator, "max_cost_per_day = 1")
    emulator.state.add_fault(Fault(method="POST", path=r"^/v1/files$", status=500, times=100))
    cut = cli("retry", batch_id, "--max-retries", "0")
    assert cut.code == 1, cut.err
    [job] = ledger_rows("jobs")
    assert job["status"] == "running" and 0.0006 < job["estimated_cost_max"] < 0.00061
    emulator.state.clear_faults()
    batches = len(emulator.state.batches)

    budgeted_account(emulator, "max_cost_per_day = 0.0003")
    refused = cli("retry", batch_id)
    budgeted_account(emulator, "max_cost_per_day = 1")
    resumed = cli("retry", batch_id)

    assert refused.code == 3, refused.err
    [line] = refused.err.splitlines()
    # Its own estimate is not counted twice: the day's spend is the batch's actual cost alone.
    assert line.startswith("batchledger: error: this retry may cost up to $0.0006")
    assert "has $0.0000 estimated in flight" in line
    assert resumed.code == 0, resumed.err
    assert len(emulator.state.batches) == batches + 1  # sent once, by the resumed retry
    assert [row["id"] for row in ledger_rows("jobs")] == [job["id"]]


def test_a_retry_without_a_budget_records_the_rough_estimate_a_plain_create_does(
    cli, emulator: EmulatorServer, isolated: Path
):
    batch_id = sent_with_two_failures(cli, emulator, isolated)
    lines = (isolated / "in.jsonl").read_bytes().splitlines(keepends=True)
    sent_again = lines[1] + lines[4]  # request-1 and request-4

    retried = cli("retry", batch_id)

    assert retried.code == 0, retried.err
    [job] = ledger_rows("jobs")
    assert job["estimated_from"] == "bytes"  # scanned, not counted: no budget to hold it to
    assert job["estimated_input_tokens"] == round(len(sent_again) / 4)
    # Two requests of at most 1000 output tokens each at gpt-4o-mini's batch price ($0.30/1M).
    assert 0.0006 < job["estimated_cost_max"] < 0.00061


def test_a_retry_whose_upper_cost_is_unknown_is_refused_under_a_budget(
    cli, emulator: EmulatorServer, isolated: Path
):
    # No output cap on its lines: what they may cost has no upper end to hold to the budget.
    budgeted_account(emulator)
    write_jsonl(isolated / "in.jsonl", 3)
    emulator.state.set_line_outcomes({"request-1": "500"}, times=1)
    batch_id = cli("create", "--in", "in.jsonl", "--account", "budgeted").field("batch_id")
    for _ in range(3):
        emulator.state.advance(batch_id)
    assert cli("status", "--all").code == 0
    budgeted_account(emulator, "max_cost_per_day = 1")

    refused = cli("retry", batch_id)

    assert refused.code == 3 and refused.out == ""
    assert refused.err.startswith(
        "batchledger: error: this retry's upper cost is unknown (a request with no output "
        "cap, or a model with no price), so it cannot be held under max_cost_per_day $1.00; "
    ), repr(refused.err)
    assert ledger_rows("jobs") == []
