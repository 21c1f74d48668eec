"""An Anthropic input split into a job (an account whose max_requests is small), through the
real CLI and the real `anthropic` SDK over real HTTP against the emulator's anthropic flavor:
a lost create answer, an expiring part, errored lines, then `retry`."""

import os
from pathlib import Path

import pytest
from helpers import ServerFactory, ledger_rows, log_text
from test_anthropic_batches import CREATE, KEY, ids_of, result_types, write_requests

from batchledger.emulator import EmulatorServer, Fault


@pytest.fixture
def claude(make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    server = make_server(flavor="anthropic", api_key=KEY)
    Path(os.environ["BATCHLEDGER_CONFIG"]).write_text(
        f"""
[accounts.claude]
kind = "anthropic"
base_url = "{server.base_url}"
api_key_env = "CLAUDE_KEY"
max_requests = 4
"""
    )
    monkeypatch.setenv("CLAUDE_KEY", KEY)
    return server


def finish_all(server: EmulatorServer) -> None:
    for _ in range(3):
        for batch_id in list(server.state.message_batches):
            server.state.advance(batch_id)


def test_a_job_of_three_parts_with_a_lost_create_an_expiring_part_and_errors_then_retry(
    cli, claude: EmulatorServer, isolated: Path
):
    source = write_requests(isolated / "in.jsonl", 12, invalid={9})
    claude.state.set_line_outcomes({"req-1": "529", "req-6": "500"}, times=1)
    # The second part's create is made, and its answer lost.
    claude.state.add_fault(Fault(path=CREATE, method="POST", drop_request=True, spare=1))

    created = cli("--account", "claude", "create", "--in", "in.jsonl")

    assert created.code == 0, created.err
    lines = created.out.splitlines()
    job_id = lines[0].removeprefix("job_id: ")
    assert len(lines) == 4 and all(f"part {k}/3: " in lines[k] for k in (1, 2, 3))
    # Three parts, three batches: the lost answer was found, not sent again.
    assert len(claude.state.message_batches) == 3
    attempts = [row for row in ledger_rows() if row["part"] is not None]
    assert len(attempts) == 3 and all(row["batch_id"] for row in attempts)
    third = attempts[2]["batch_id"]
    claude.state.set_outcome(third, "expired")  # req-10 and req-11 never run
    finish_all(claude)

    swept = cli("status", "--all")

    assert swept.code == 0, swept.err
    results = isolated / f"results_{job_id}.jsonl"
    errors = isolated / f"results_{job_id}.errors.jsonl"
    assert ids_of(results) == ["req-0", "req-2", "req-3", "req-4", "req-5", "req-7", "req-8"]
    assert ids_of(errors) == ["req-1", "req-6", "req-9", "req-10", "req-11"]
    assert next(r for r in ledger_rows() if r["batch_id"] == third)["status"] == "expired"

    retried = cli("retry", job_id)

    assert retried.code == 0, retried.err
    # 1 (overloaded) and 6 (api_error), 10 and 11 expired; 9's invalid request is not sent.
    assert retried.out.splitlines()[0] == f"retry of {job_id}: 4 requests (2 5xx, 2 expired)"
    finish_all(claude)
    assert cli("status", "--all").code == 0
    merged = result_types(results)
    failed = result_types(errors)
    # One line per input custom_id, in input order: its success, else its last error.
    assert ids_of(results) == [f"req-{n}" for n in range(12) if n != 9]
    assert set(merged.values()) == {"succeeded"}
    assert failed == {"req-9": "errored"}
    assert sorted([*merged, *failed]) == sorted(ids_of(source))
    again = cli("retry", job_id, "--all-failed")
    assert again.code == 0, again.err
    assert again.out.splitlines()[0] == f"retry of {job_id}: 1 requests (1 failed)"
    logs = log_text(isolated)
    assert "found what the failed attempt had made" in logs and KEY not in logs
