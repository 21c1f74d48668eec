"""The emulator as other OpenAI-compatible providers: the Azure flavour (its paths, api-version,
error shapes and limits), and hosts that drop metadata or list no files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from emulator_sdk import new_batch, request_line, run_to_end, sdk, upload
from helpers import ServerFactory, jsonl, raw
from openai import AzureOpenAI, OpenAI

from batchledger.emulator import EmulatorServer


@pytest.fixture
def client(server: EmulatorServer) -> Iterator[OpenAI]:
    with sdk(server) as client:
        yield client


# Azure flavour

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


# Providers without metadata or file listing


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
