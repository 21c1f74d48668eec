"""The emulator's second round: input names, clock, line outcomes, token limits, Azure, state."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
from helpers import ServerFactory, jsonl, raw
from openai import AzureOpenAI, OpenAI

from batchledger.emulator import EmulatorServer


def sdk(server: EmulatorServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)


@pytest.fixture
def client(server: EmulatorServer) -> Iterator[OpenAI]:
    with sdk(server) as client:
        yield client


def request_line(custom_id: str, *, url: str = "/v1/responses", model: str = "gpt-test") -> Any:
    body = {"model": model, "input": f"Say hello to {custom_id}"}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def upload(client: OpenAI, path: Path, lines: list[Any]) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with path.open("rb") as handle:
        return client.files.create(file=handle, purpose="batch").id


def new_batch(
    client: OpenAI, tmp_path: Path, ids: list[str], *, model: str = "gpt-test", **kwargs: Any
) -> Any:
    lines = [request_line(custom_id, model=model) for custom_id in ids]
    file_id = upload(client, tmp_path / f"{ids[0]}.jsonl", lines)
    options = {"endpoint": "/v1/responses", "completion_window": "24h", **kwargs}
    return client.batches.create(input_file_id=file_id, **options)


def run_to_end(client: Any, batch_id: str) -> Any:
    """Retrieve until the batch is final; each retrieve is one step."""
    for _ in range(10):
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
    raise AssertionError(f"{batch_id} did not finish")


# 1. Batch input names


@pytest.mark.parametrize("name", ["input.json", "input.txt", "input", "input.jsonl.gz"])
def test_batch_upload_not_named_jsonl_is_refused(client: OpenAI, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(json.dumps(request_line("a")) + "\n")
    with path.open("rb") as handle, pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=handle, purpose="batch")

    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "Invalid file format for Batch API. Must be .jsonl",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert client.files.list().data == []


def test_other_purposes_take_any_name(client: OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with path.open("rb") as handle:
        assert client.files.create(file=handle, purpose="user_data").filename == "notes.txt"


# 2. Server clock


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


# 3. Per-line outcomes


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


# 4. Enqueued-token limit


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


# 5. Azure flavour

AZURE_VERSION = "2025-04-01-preview"


def azure_sdk(server: EmulatorServer, api_key: str = "azure-key") -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.url, api_version=AZURE_VERSION, api_key=api_key, max_retries=0
    )


def test_azure_client_runs_the_whole_workflow(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(flavor="azure", api_key="azure-key")
    with azure_sdk(server) as client:
        lines = [request_line(f"r{i}", url="/chat/completions", model="my-gpt") for i in range(3)]
        file_id = upload(client, tmp_path / "input.jsonl", lines)  # type: ignore[arg-type]
        assert client.files.retrieve(file_id).filename == "input.jsonl"
        batch = client.batches.create(
            input_file_id=file_id, endpoint="/chat/completions", completion_window="24h"
        )
        assert (batch.endpoint, batch.status) == ("/chat/completions", "validating")

        done = run_to_end(client, batch.id)
        assert done.status == "completed"
        output = jsonl(client, done.output_file_id)
        assert [line["custom_id"] for line in output] == ["r0", "r1", "r2"]
        assert output[0]["response"]["body"]["object"] == "chat.completion"

        assert [b.id for b in client.batches.list()] == [batch.id]
        listed = {f.id for f in client.files.list()}
        assert {file_id, done.output_file_id} <= listed

        other = client.batches.create(
            input_file_id=file_id, endpoint="/chat/completions", completion_window="24h"
        )
        assert client.batches.cancel(other.id).status == "cancelling"
        assert client.files.delete(file_id).deleted
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(file_id)

    paths = {recorded.path for recorded in server.state.requests}
    assert "/openai/files" in paths and "/openai/batches" in paths
    assert all(r.query.get("api-version") == AZURE_VERSION for r in server.state.requests)


def test_azure_refuses_v1_endpoints_and_mismatched_lines(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(flavor="azure")
    assert server.state.limits.max_lines == 100_000
    assert server.state.limits.max_bytes == 200 * 1024 * 1024
    with azure_sdk(server) as client:
        file_id = upload(client, tmp_path / "input.jsonl", [request_line("a")])  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError) as caught:
            client.batches.create(
                input_file_id=file_id, endpoint="/v1/responses", completion_window="24h"
            )
        assert caught.value.body == {  # the SDK keeps the inner object
            "code": "invalid_value",
            "message": caught.value.body["message"],  # type: ignore[index]
        }
        batch = client.batches.create(
            input_file_id=file_id, endpoint="/responses", completion_window="24h"
        )
        failed = client.batches.retrieve(batch.id)
        assert failed.status == "failed"
        assert failed.errors.data[0].code == "mismatched_endpoint"


def test_azure_errors_have_azure_shapes(make_server: ServerFactory) -> None:
    server = make_server(flavor="azure", api_key="azure-key")
    query = f"?api-version={AZURE_VERSION}"
    status, _, body = raw(server, "GET", "/openai/batches", headers={"api-key": "azure-key"})
    assert (status, body) == (404, {"error": {"code": "404", "message": "Resource not found"}})
    status, _, body = raw(server, "GET", "/openai/batches" + query)
    assert status == 401 and body["error"]["code"] == "401"
    assert body["error"]["message"].startswith("Access denied due to invalid subscription key")
    status, _, body = raw(server, "GET", "/openai/batches" + query, headers={"api-key": "nope"})
    assert status == 401
    status, _, body = raw(server, "GET", "/v1/batches", headers={"Authorization": "Bearer x"})
    assert (status, body) == (404, {"error": {"code": "404", "message": "Resource not found"}})
    status, _, body = raw(
        server, "GET", "/openai/batches/missing" + query, headers={"api-key": "azure-key"}
    )
    assert status == 404 and set(body["error"]) == {"code", "message"}

    with azure_sdk(server, api_key="wrong") as client, pytest.raises(openai.AuthenticationError):
        client.batches.list()


# 6. Providers without metadata or file listing


def test_no_metadata_drops_batch_metadata(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(keep_metadata=False)
    with sdk(server) as client:
        batch = new_batch(client, tmp_path, ["a"], metadata={"ref": "x"})
        assert batch.metadata is None
        assert client.batches.retrieve(batch.id).metadata is None
        with pytest.raises(openai.BadRequestError):
            new_batch(client, tmp_path, ["b"], metadata={"k": "v" * 513})


def test_no_file_listing_answers_404(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(list_files=False)
    with sdk(server) as client:
        batch = new_batch(client, tmp_path, ["a"])
        with pytest.raises(openai.NotFoundError):
            client.files.list()
        assert client.files.retrieve(batch.input_file_id).id == batch.input_file_id


def test_cli_flags_for_providers() -> None:
    from batchledger.emulator.__main__ import build_parser

    args = build_parser().parse_args(["--no-metadata", "--no-file-listing", "--flavor", "azure"])
    assert (args.keep_metadata, args.list_files, args.flavor) == (False, False, "azure")
    defaults = build_parser().parse_args([])
    assert (defaults.keep_metadata, defaults.list_files, defaults.flavor) == (True, True, "openai")


# 7. Persisted state


def test_a_later_process_sees_the_batches_of_an_earlier_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    with EmulatorServer(data_dir=data_dir, persist=True) as first, sdk(first) as client:
        batch = new_batch(client, tmp_path, ["a", "b"], metadata={"ref": "r1"})
        first.state.set_line_outcomes({"b": "500"})
        assert client.batches.retrieve(batch.id).status == "in_progress"
    assert (data_dir / "state.json").exists()

    with EmulatorServer(data_dir=data_dir, persist=True) as second, sdk(second) as client:
        again = client.batches.retrieve(batch.id)
        assert (again.status, again.metadata) == ("finalizing", {"ref": "r1"})
        done = run_to_end(client, batch.id)
        assert done.request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 1}
        assert [line["custom_id"] for line in jsonl(client, done.output_file_id)] == ["a"]
        assert [b.id for b in client.batches.list()] == [batch.id]


def test_time_mode_moves_on_between_processes(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    with EmulatorServer(data_dir=data_dir, persist=True, step_seconds=60.0) as first:
        with sdk(first) as client:
            batch = new_batch(client, tmp_path, ["a"])
        stored = first.state.batches[batch.id]
        assert stored.last_step_at == pytest.approx(time.time(), abs=5)

    with EmulatorServer(data_dir=data_dir, persist=True, step_seconds=60.0) as second:
        # Four steps' worth of wall-clock time pass before the second process looks.
        second.state.set_clock_offset(241)
        with sdk(second) as client:
            assert client.batches.retrieve(batch.id).status == "completed"


def test_two_processes_share_one_data_dir_at_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    with (
        EmulatorServer(data_dir=data_dir, persist=True) as watcher,
        EmulatorServer(data_dir=data_dir, persist=True) as creator,
        sdk(watcher) as watching,
        sdk(creator) as creating,
    ):
        batch = new_batch(creating, tmp_path, ["a"])
        assert watching.batches.retrieve(batch.id).status == "in_progress"
        assert creating.batches.retrieve(batch.id).status == "finalizing"
        done = run_to_end(watching, batch.id)
        assert done.status == "completed"
        assert creating.batches.retrieve(batch.id).output_file_id == done.output_file_id
        assert jsonl(creating, done.output_file_id)[0]["custom_id"] == "a"
        second = new_batch(watching, tmp_path, ["b"])
        assert {b.id for b in creating.batches.list()} == {batch.id, second.id}


def test_state_file_is_only_written_with_persist(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    new_batch(client, tmp_path, ["a"])
    assert not (server.data_dir / "state.json").exists()


def test_parallel_creates_on_two_processes_lose_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    with (
        EmulatorServer(data_dir=data_dir, persist=True) as one,
        EmulatorServer(data_dir=data_dir, persist=True) as two,
    ):

        def create_some(server: EmulatorServer, prefix: str) -> list[str]:
            with sdk(server) as client:
                return [new_batch(client, tmp_path, [f"{prefix}{i}"]).id for i in range(5)]

        with ThreadPoolExecutor(max_workers=2) as pool:
            made = pool.map(create_some, (one, two), ("x", "y"))
            ids = {batch_id for batch_ids in made for batch_id in batch_ids}
        with sdk(one) as client:
            assert {batch.id for batch in client.batches.list(limit=100)} == ids
    assert len(ids) == 10
