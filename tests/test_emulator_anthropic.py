"""The emulator's anthropic flavour, driven by the real anthropic SDK over real HTTP."""

from __future__ import annotations

import email.utils
import json
import re
import select
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic import Anthropic
from helpers import ServerFactory, raw

from batchledger.emulator import EmulatorServer, Fault

KEY = "sk-ant-test-0123456789"
DAY = 24 * 3600


def sdk(server: EmulatorServer, api_key: str = KEY) -> Anthropic:
    return Anthropic(api_key=api_key, base_url=server.base_url, max_retries=0)


@pytest.fixture
def server(make_server: ServerFactory) -> EmulatorServer:
    return make_server(flavor="anthropic")


@pytest.fixture
def client(server: EmulatorServer) -> Iterator[Anthropic]:
    with sdk(server) as client:
        yield client


def requests_(count: int, prefix: str = "req", **params: Any) -> list[dict[str, Any]]:
    """`count` valid requests, custom_ids prefix-0, prefix-1, ..."""
    return [
        {
            "custom_id": f"{prefix}-{n}",
            "params": {
                "model": "claude-test",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Say hello number {n}"}],
                **params,
            },
        }
        for n in range(count)
    ]


def results(client: Anthropic, batch_id: str) -> list[Any]:
    return list(client.messages.batches.results(batch_id))


def anthropic_headers(**extra: str) -> dict[str, str]:
    return {"x-api-key": KEY, "anthropic-version": "2023-06-01", **extra}


# The round trip


def test_results_mix_all_four_types_in_an_order_unlike_the_input(
    server: EmulatorServer, client: Anthropic
) -> None:
    batch_requests = requests_(8)
    batch_requests[3]["params"]["max_tokens"] = 0  # well-shaped, invalid in content
    server.state.set_line_outcomes(
        {"req-1": "cancelled", "req-2": "expired", "req-5": "529", "req-6": "500"}
    )
    created = client.messages.batches.with_raw_response.create(requests=batch_requests)
    assert created.headers["date"]  # the server's clock, for finding a lost create
    assert created.request_id is not None and created.request_id.startswith("req_")
    batch = created.parse()
    assert re.fullmatch(r"msgbatch_\w+", batch.id)
    assert batch.type == "message_batch" and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 8 and batch.results_url is None
    assert batch.ended_at is None and batch.archived_at is None
    assert (batch.expires_at - batch.created_at).total_seconds() == DAY

    ended = client.messages.batches.retrieve(batch.id)  # one step: in_progress -> ended
    assert ended.processing_status == "ended" and ended.ended_at is not None
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored) == (0, 3, 3)
    assert (counts.canceled, counts.expired) == (1, 1)
    assert ended.results_url == f"{server.url}/v1/messages/batches/{batch.id}/results"

    lines = results(client, batch.id)
    order = [line.custom_id for line in lines]
    assert sorted(order) == sorted(r["custom_id"] for r in batch_requests)
    assert order != [r["custom_id"] for r in batch_requests]
    assert [line.custom_id for line in results(client, batch.id)] == order  # deterministic
    by_id = {line.custom_id: line.result for line in lines}
    assert {by_id[i].type for i in ("req-0", "req-4", "req-7")} == {"succeeded"}
    assert by_id["req-1"].type == "canceled" and by_id["req-2"].type == "expired"
    errors = {i: by_id[i].error.error.type for i in ("req-3", "req-5", "req-6")}
    assert errors == {
        "req-3": "invalid_request_error",
        "req-5": "overloaded_error",
        "req-6": "api_error",
    }
    message = by_id["req-0"].message
    assert message.type == "message" and message.model == "claude-test"
    assert "Say hello number 0" in message.content[0].text


def test_list_pages_newest_first(client: Anthropic) -> None:
    ids = [client.messages.batches.create(requests=requests_(1)).id for _ in range(5)]
    newest_first = ids[::-1]
    first = client.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == newest_first[:2]
    assert first.has_more and first.first_id == ids[4] and first.last_id == ids[3]
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first  # auto-paging
    after = client.messages.batches.list(limit=2, after_id=ids[1])
    assert [b.id for b in after.data] == [ids[0]] and after.has_more is False
    before = client.messages.batches.list(limit=2, before_id=ids[1])
    assert [b.id for b in before.data] == [ids[3], ids[2]] and before.has_more is True
    assert [b.id for b in client.messages.batches.list(before_id=ids[0])] == newest_first[:-1]
    empty = client.messages.batches.list(limit=3, after_id=ids[0])
    assert empty.data == [] and empty.has_more is False and empty.first_id is None


def test_cancel_ends_with_the_unprocessed_requests_canceled(client: Anthropic) -> None:
    batch = client.messages.batches.create(requests=requests_(4))
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert client.messages.batches.cancel(batch.id).processing_status == "canceling"
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (2, 2)
    types = {line.custom_id: line.result.type for line in results(client, batch.id)}
    assert types == {
        "req-0": "succeeded",
        "req-1": "succeeded",
        "req-2": "canceled",
        "req-3": "canceled",
    }
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.cancel(batch.id)


def test_delete_only_ended_batches(client: Anthropic) -> None:
    batch = client.messages.batches.create(requests=requests_(2))
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.batches.delete(batch.id)
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    client.messages.batches.retrieve(batch.id)  # ends it
    deleted = client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.batches.retrieve(batch.id)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": f"Message Batch {batch.id} not found."},
        "request_id": missing.value.body["request_id"],
    }
    assert list(client.messages.batches.list()) == []


# Headers and limits


def test_key_and_version_headers_are_required(make_server: ServerFactory) -> None:
    server = make_server(flavor="anthropic", api_key=KEY)
    path = "/v1/messages/batches"
    status, headers, body = raw(server, "GET", path, headers={"anthropic-version": "2023-06-01"})
    assert status == 401 and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert email.utils.parsedate_to_datetime(headers["date"])  # on errors too
    status, _, body = raw(server, "GET", path, headers={"x-api-key": KEY})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in body["error"]["message"]
    assert raw(server, "GET", path, headers=anthropic_headers())[0] == 200
    with sdk(server) as client:  # the SDK sends its key as a bearer token
        assert list(client.messages.batches.list()) == []
    with (
        sdk(server, api_key="sk-ant-wrong") as client,
        pytest.raises(anthropic.AuthenticationError),
    ):
        client.messages.batches.list()
    recorded = server.state.requests[-1]
    assert "sk-ant" not in json.dumps(recorded.to_json())


def test_create_refuses_bad_requests_naming_them(server: EmulatorServer, client: Anthropic) -> None:
    bad: list[tuple[list[dict[str, Any]], str]] = [
        ([*requests_(2), requests_(1)[0]], "Duplicate custom_id 'req-0'"),
        ([{**requests_(1)[0], "custom_id": "has space"}], "requests.0.custom_id"),
        ([{**requests_(1)[0], "custom_id": "x" * 65}], "requests.0.custom_id"),
        (
            [*requests_(1), {"custom_id": "b", "params": {"model": "m", "messages": []}}],
            "requests.1.params.max_tokens: Field required",
        ),
        ([], "at least 1 item"),
    ]
    for batch_requests, words in bad:
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.batches.create(requests=batch_requests)
        assert words in refused.value.body["error"]["message"]
    status, _, body = raw(
        server, "POST", "/v1/messages/batches", "{not json", headers=anthropic_headers()
    )
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert server.state.message_batches == {}
    longest = [{**requests_(1)[0], "custom_id": "A_z-9" + "x" * 59}]
    assert client.messages.batches.create(requests=longest).request_counts.processing == 1


def test_at_most_100000_requests(server: EmulatorServer, client: Anthropic) -> None:
    many = [
        {"custom_id": f"r{n}", "params": {"model": "m", "max_tokens": 1, "messages": []}}
        for n in range(100_001)
    ]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.batches.create(requests=many)
    assert "at most 100000 requests" in refused.value.body["error"]["message"]
    assert server.state.message_batches == {}
    batch = client.messages.batches.create(requests=many[:100_000])
    assert batch.request_counts.processing == 100_000


def test_a_body_over_the_size_limit_is_413(make_server: ServerFactory) -> None:
    server = make_server(flavor="anthropic", max_input_bytes=4000)
    with sdk(server) as client:
        with pytest.raises(anthropic.APIStatusError) as refused:
            client.messages.batches.create(requests=requests_(40))
        assert refused.value.status_code == 413
        assert refused.value.body["error"]["type"] == "request_too_large"
        assert client.messages.batches.create(requests=requests_(2)).request_counts.processing == 2


# Time: retention, expiry, time mode


def test_results_are_gone_29_days_after_creation(server: EmulatorServer, client: Anthropic) -> None:
    batch = client.messages.batches.create(requests=requests_(3))
    client.messages.batches.retrieve(batch.id)
    server.state.set_clock_offset(29 * DAY - 60)
    assert len(results(client, batch.id)) == 3
    assert client.messages.batches.retrieve(batch.id).archived_at is None
    server.state.set_clock_offset(29 * DAY)
    archived = client.messages.batches.retrieve(batch.id)
    assert archived.archived_at is not None
    assert (archived.archived_at - batch.created_at).total_seconds() == 29 * DAY
    with pytest.raises(anthropic.NotFoundError):
        results(client, batch.id)


def test_a_batch_past_24_hours_ends_with_the_rest_expired(make_server: ServerFactory) -> None:
    server = make_server(flavor="anthropic", step_seconds=10**6)
    with sdk(server) as client:
        batch = client.messages.batches.create(requests=requests_(4))
        assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
        server.state.set_clock_offset(DAY + 1)
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended" and ended.ended_at == ended.expires_at
        assert (ended.request_counts.succeeded, ended.request_counts.expired) == (2, 2)
        assert [line.result.type for line in results(client, batch.id)].count("expired") == 2


def test_time_mode_and_forced_outcomes(make_server: ServerFactory) -> None:
    server = make_server(flavor="anthropic", step_seconds=60)
    with sdk(server) as client:
        plain = client.messages.batches.create(requests=requests_(2, "plain"))
        doomed = client.messages.batches.create(requests=requests_(4, "doomed"))
        assert (
            raw(server, "POST", f"/_emulator/batches/{doomed.id}/outcome", {"outcome": "expired"})[
                0
            ]
            == 200
        )
        pushed = client.messages.batches.create(requests=requests_(1, "pushed"))
        for _ in range(3):
            assert client.messages.batches.retrieve(plain.id).processing_status == "in_progress"
        status, _, advanced = raw(server, "POST", f"/_emulator/batches/{pushed.id}/advance")
        assert status == 200 and advanced["processing_status"] == "ended"
        assert advanced["results_url"] == f"/v1/messages/batches/{pushed.id}/results"
        server.state.set_clock_offset(61)
        listed = {b.id: b for b in client.messages.batches.list()}
        assert listed[plain.id].processing_status == "ended"
        assert listed[plain.id].request_counts.succeeded == 2
        assert listed[doomed.id].request_counts.expired == 2
        assert (listed[plain.id].ended_at - plain.created_at).total_seconds() == 60


def test_the_outcome_failed_errors_every_request(server: EmulatorServer, client: Anthropic) -> None:
    assert raw(server, "POST", "/_emulator/outcome", {"outcome": "failed"})[0] == 200
    batch = client.messages.batches.create(requests=requests_(3))
    assert client.messages.batches.retrieve(batch.id).request_counts.errored == 3
    lines = results(client, batch.id)
    assert {line.result.error.error.type for line in lines} == {"api_error"}


# Faults


def test_a_lost_create_answer_leaves_the_batch_behind(
    server: EmulatorServer, client: Anthropic
) -> None:
    server.state.add_fault(Fault(method="POST", path=r"^/v1/messages/batches$", drop_request=True))
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.batches.create(requests=requests_(3))
    page = client.messages.batches.with_raw_response.list()
    server_time = email.utils.parsedate_to_datetime(page.headers["date"])
    [found] = page.parse().data
    assert sum(found.request_counts.to_dict().values()) == 3  # listing steps it to ended
    assert found.created_at <= server_time.replace(microsecond=999_999)


def test_results_dropped_mid_stream_fail_in_the_sdk(
    server: EmulatorServer, client: Anthropic
) -> None:
    batch = client.messages.batches.create(requests=requests_(20))
    client.messages.batches.retrieve(batch.id)
    whole = results(client, batch.id)
    server.state.add_fault(Fault(method="GET", path=r"/results$", drop_after_bytes=500))
    seen: list[str] = []
    with pytest.raises(anthropic.APIConnectionError, match="received 500 bytes"):
        for line in client.messages.batches.results(batch.id):
            seen.append(line.custom_id)
    assert len(seen) < len(whole)
    assert [line.custom_id for line in results(client, batch.id)] == [
        line.custom_id for line in whole
    ]


def test_5xx_and_slow_bodies_on_the_new_paths(server: EmulatorServer, client: Anthropic) -> None:
    batch = client.messages.batches.create(requests=requests_(3))
    server.state.add_fault(Fault(method="GET", path=r"^/v1/messages/batches/[^/]+$", status=529))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        client.messages.batches.retrieve(batch.id)
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    assert client.messages.batches.retrieve(batch.id).processing_status == "ended"
    server.state.add_fault(Fault(method="GET", path=r"/results$", stall_after_bytes=100, delay=0.3))
    assert len(results(client, batch.id)) == 3
    assert server.state.requests[-1].fault == "stall_after_bytes:100"


# Options, persistence, command line


def test_relative_results_url(make_server: ServerFactory) -> None:
    server = make_server(flavor="anthropic", relative_results_url=True)
    with sdk(server) as client:
        batch = client.messages.batches.create(requests=requests_(2))
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.results_url == f"/v1/messages/batches/{batch.id}/results"
        assert len(results(client, batch.id)) == 2


def test_message_batches_persist_across_emulators(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    first = make_server(flavor="anthropic", data_dir=tmp_path / "data", persist=True)
    with sdk(first) as client:
        batch = client.messages.batches.create(requests=requests_(3))
    second = make_server(flavor="anthropic", data_dir=tmp_path / "data", persist=True)
    with sdk(second) as client:
        assert client.messages.batches.retrieve(batch.id).processing_status == "ended"
        assert len(results(client, batch.id)) == 3
    assert isinstance(batch.created_at, datetime)


@pytest.mark.parametrize("flavor", ["azure", "anthropic"])
def test_the_banner_names_the_base_url_the_flavor_serves(flavor: str) -> None:
    command = [sys.executable, "-m", "batchledger.emulator", "--port", "0", "--flavor", flavor]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready, "the emulator printed nothing within 10 s"
        line = process.stdout.readline()
        suffix = {"azure": "/openai", "anthropic": ""}[flavor]
        match = re.fullmatch(
            rf"batchledger emulator listening on (http://127\.0\.0\.1:\d+{suffix})\n", line
        )
        assert match, line
        if flavor == "azure":
            from openai import OpenAI

            with OpenAI(
                api_key="unused",
                base_url=match[1],
                default_headers={"api-key": "key"},
                default_query={"api-version": "2024-10-21"},
                max_retries=0,
            ) as openai_client:
                assert openai_client.batches.list().data == []
        else:
            with Anthropic(api_key=KEY, base_url=match[1], max_retries=0) as client:
                assert list(client.messages.batches.list()) == []
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0 and stderr == ""


def test_the_line_outcomes_added_for_anthropic_work_in_the_openai_flavor(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    from openai import OpenAI

    server = make_server()
    server.state.set_line_outcomes({"a": "cancelled", "b": "529"})
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": "/v1/responses",
                    "body": {"model": "gpt-test", "input": "hi"},
                }
            )
            + "\n"
            for custom_id in ("a", "b", "c")
        )
    )
    with OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as client:
        with path.open("rb") as handle:
            file_id = client.files.create(file=handle, purpose="batch").id
        batch = client.batches.create(
            input_file_id=file_id, endpoint="/v1/responses", completion_window="24h"
        )
        for _ in range(3):
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed" and batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 2)
        assert batch.error_file_id is not None
        errors = client.files.content(batch.error_file_id).text.splitlines()
    by_id = {line["custom_id"]: line for line in map(json.loads, errors)}
    assert by_id["a"]["error"]["code"] == "batch_cancelled"
    assert by_id["b"]["response"]["status_code"] == 529
