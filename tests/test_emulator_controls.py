"""What a test sets on the emulator: its clock, the outcome of chosen lines, and the
enqueued-token limit (at create or as a batch leaves validating)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from emulator_sdk import new_batch, run_to_end, sdk
from helpers import ServerFactory, jsonl, raw
from openai import OpenAI

from batchledger.emulator import EmulatorServer


@pytest.fixture
def client(server: EmulatorServer) -> Iterator[OpenAI]:
    with sdk(server) as client:
        yield client


# Server clock


def test_clock_offset_moves_timestamps_and_the_date_header(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    status, _, body = raw(server, "POST", "/_emulator/clock", {"offset_seconds": 1200})
    assert status == 200 and body["offset_seconds"] == 1200

    before = time.time()
    batch = new_batch(client, tmp_path, ["a"])
    uploaded = client.files.retrieve(batch.input_file_id)
    response = client.batches.with_raw_response.retrieve(batch.id)
    after = time.time()

    for stamp in (batch.created_at, uploaded.created_at):
        assert before + 1200 - 1 <= stamp <= after + 1200 + 1
    date = email.utils.parsedate_to_datetime(response.headers["date"]).timestamp()
    assert before + 1200 - 1 <= date <= after + 1200 + 1
    assert response.parse().in_progress_at >= batch.created_at


def test_clock_behind_and_time_mode(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(step_seconds=60.0)
    server.state.set_clock_offset(-1200)
    with sdk(server) as client:
        batch = new_batch(client, tmp_path, ["a"])
        assert batch.created_at < time.time() - 1190
        server.state.set_clock_offset(-1200 + 61)
        assert client.batches.retrieve(batch.id).status == "in_progress"


def test_clock_route_rejects_a_bad_body(server: EmulatorServer) -> None:
    for body in ({}, {"offset_seconds": "soon"}, {"offset_seconds": True}):
        status, _, _ = raw(server, "POST", "/_emulator/clock", body)
        assert status == 400
    assert server.state.clock_offset == 0


# Per-line outcomes


def test_line_outcomes_expire_fail_and_lose_chosen_requests(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    outcomes = {"b": "expired", "c": "500", "d": "429", "e": "400", "f": "missing"}
    status, _, _ = raw(server, "POST", "/_emulator/line_outcomes", {"outcomes": outcomes})
    assert status == 200

    batch = run_to_end(client, new_batch(client, tmp_path, list("abcdef")).id)

    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 6, "completed": 1, "failed": 4}
    assert [line["custom_id"] for line in jsonl(client, batch.output_file_id)] == ["a"]
    errors = {line["custom_id"]: line for line in jsonl(client, batch.error_file_id)}
    assert list(errors) == ["b", "c", "d", "e"]
    assert errors["b"]["response"] is None
    assert errors["b"]["error"]["code"] == "batch_expired"
    for custom_id, status_code in (("c", 500), ("d", 429), ("e", 400)):
        line = errors[custom_id]
        assert line["error"] is None
        assert line["response"]["status_code"] == status_code
        assert set(line["response"]["body"]["error"]) == {"message", "type", "param", "code"}
    assert errors["d"]["response"]["body"]["error"]["code"] == "rate_limit_exceeded"


def test_line_outcome_applies_times_then_a_retry_succeeds(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    server.state.set_line_outcomes({"a": "500"}, times=1)
    first = run_to_end(client, new_batch(client, tmp_path, ["a", "b"]).id)
    second = run_to_end(client, new_batch(client, tmp_path, ["a"]).id)

    assert (first.request_counts.completed, first.request_counts.failed) == (1, 1)
    assert (second.request_counts.completed, second.request_counts.failed) == (1, 0)
    assert second.error_file_id is None


def test_line_outcome_for_always(server: EmulatorServer, client: OpenAI, tmp_path: Path) -> None:
    raw(server, "POST", "/_emulator/line_outcomes", {"outcomes": {"a": "missing"}, "times": None})
    for _ in range(2):
        batch = run_to_end(client, new_batch(client, tmp_path, ["a", "b"]).id)
        assert batch.request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 0}


def test_line_outcomes_route_rejects_bad_bodies(server: EmulatorServer) -> None:
    for body in (
        {"outcomes": {"a": "exploded"}},
        {"outcomes": ["a"]},
        {"outcomes": {"a": "500"}, "times": 0},
        {"outcomes": {"a": "500"}, "times": "once"},
    ):
        status, _, _ = raw(server, "POST", "/_emulator/line_outcomes", body)
        assert status == 400, body
    assert server.state.line_outcomes == {}
    with pytest.raises(ValueError):
        server.state.set_line_outcomes({"a": "404"})


# Enqueued-token limit


def limit_message(model: str, limit: int) -> str:
    return (
        f"Enqueued token limit reached for {model} in organization org-emulator. Limit:"
        f" {limit:,} enqueued tokens. Please try again once some in_progress batches have been"
        " completed."
    )


def input_tokens(client: OpenAI, batch: Any) -> int:
    return client.files.retrieve(batch.input_file_id).bytes // 4


def test_token_limit_fails_a_batch_as_it_leaves_validating(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(enqueued_token_limit=40)
    with sdk(server) as client:
        first = new_batch(client, tmp_path, ["a"])
        assert 20 < input_tokens(client, first) <= 40
        assert client.batches.retrieve(first.id).status == "in_progress"
        second = new_batch(client, tmp_path, ["b"])
        other_model = new_batch(client, tmp_path, ["c"], model="gpt-other")

        failed = client.batches.retrieve(second.id)
        assert failed.status == "failed"
        assert failed.errors is not None and failed.errors.data is not None
        assert failed.errors.data[0].code == "token_limit_exceeded"
        assert failed.errors.data[0].message == limit_message("gpt-test", 40)
        assert client.batches.retrieve(other_model.id).status == "in_progress"

        assert run_to_end(client, first.id).status == "completed"
        third = new_batch(client, tmp_path, ["d"])
        assert client.batches.retrieve(third.id).status == "in_progress"


def test_token_limit_counts_one_token_per_four_bytes(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    batch = new_batch(client, tmp_path, ["a", "b", "c"])
    stored = server.state.batches[batch.id]
    assert stored.estimated_tokens == input_tokens(client, batch) == stored.input_bytes // 4


def test_token_limit_in_time_mode(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(enqueued_token_limit=40, step_seconds=60.0)
    with sdk(server) as client:
        first = new_batch(client, tmp_path, ["a"])
        server.state.set_clock_offset(30)
        second = new_batch(client, tmp_path, ["b"])
        # Reading only the second batch, long after: the first was in progress when the
        # second left validating, so the second failed.
        server.state.set_clock_offset(600)
        failed = client.batches.retrieve(second.id)
        assert failed.status == "failed"
        assert failed.errors.data[0].code == "token_limit_exceeded"
        assert client.batches.retrieve(first.id).status == "completed"


def test_token_limit_at_create_refuses_the_create(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(enqueued_token_limit=40, token_limit_at="create")
    with sdk(server) as client:
        first = new_batch(client, tmp_path, ["a"])
        client.batches.retrieve(first.id)
        with pytest.raises(openai.BadRequestError) as caught:
            new_batch(client, tmp_path, ["b"])
        assert caught.value.code == "token_limit_exceeded"
        assert caught.value.body["message"] == limit_message("gpt-test", 40)  # type: ignore[index]
        assert [batch.id for batch in client.batches.list()] == [first.id]


def test_forced_failure_keeps_its_message(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    server.state.set_default_outcome("failed")
    batch = client.batches.retrieve(new_batch(client, tmp_path, ["a"]).id)
    assert batch.errors.data[0].message == limit_message("gpt-test", 90_000)


def test_cli_token_limit_flags_are_checked() -> None:
    from batchledger.emulator.__main__ import build_parser

    args = build_parser().parse_args(["--enqueued-token-limit", "5", "--token-limit-at", "create"])
    assert (args.enqueued_token_limit, args.token_limit_at) == (5, "create")
    for bad in (["--enqueued-token-limit", "0"], ["--token-limit-at", "later"]):
        with pytest.raises(SystemExit) as caught:
            build_parser().parse_args(bad)
        assert caught.value.code == 2
