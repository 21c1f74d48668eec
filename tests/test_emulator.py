"""The local OpenAI Files + Batches emulator, driven through the real openai SDK over HTTP."""

from __future__ import annotations

import http.client
import json
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from helpers import ServerFactory, jsonl, raw
from openai import OpenAI

from batchledger.emulator import EmulatorServer, Fault
from batchledger.emulator.multipart import MultipartError, MultipartReader


def sdk(server: EmulatorServer, **kwargs: Any) -> OpenAI:
    options: dict[str, Any] = {"api_key": "sk-test", "max_retries": 0, **kwargs}
    return OpenAI(base_url=server.base_url, **options)


@pytest.fixture
def client(server: EmulatorServer) -> Iterator[OpenAI]:
    with sdk(server) as client:
        yield client


def request_line(
    custom_id: str, *, url: str = "/v1/responses", model: str = "gpt-test"
) -> dict[str, Any]:
    body = {"model": model, "input": f"Say hello to {custom_id}"}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def upload_lines(client: OpenAI, path: Path, lines: list[Any], purpose: str = "batch") -> str:
    """Write lines (dicts as JSON, strings verbatim) to a JSONL file and upload it."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text)
    with path.open("rb") as handle:
        return client.files.create(file=handle, purpose=purpose).id  # type: ignore[arg-type]


def create_batch(client: OpenAI, file_id: str, **kwargs: Any) -> Any:
    options = {"endpoint": "/v1/responses", "completion_window": "24h", **kwargs}
    return client.batches.create(input_file_id=file_id, **options)


def new_batch(client: OpenAI, tmp_path: Path, count: int = 3, **kwargs: Any) -> Any:
    lines = [request_line(f"req-{i}") for i in range(count)]
    return create_batch(client, upload_lines(client, tmp_path / "input.jsonl", lines), **kwargs)


def counts(batch: Any) -> tuple[int, int, int]:
    """(total, completed, failed) of a batch."""
    assert batch.request_counts is not None
    c = batch.request_counts
    return c.total, c.completed, c.failed


AUTH = {"Authorization": "Bearer sk-test"}


def assert_error_shape(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


# Files


def test_upload_of_open_file_round_trips_content(client: OpenAI, tmp_path: Path) -> None:
    data = bytes(range(256)) * 300 + b'{"a": 1}\n{"b": 2}\n'
    source = tmp_path / "data.jsonl"
    source.write_bytes(data)
    with source.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="batch")

    assert re.fullmatch(r"file-[A-Za-z0-9]{24}", uploaded.id)
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (
        len(data),
        "data.jsonl",
        "batch",
    )
    assert uploaded.status == "processed"
    assert uploaded.expires_at == uploaded.created_at + 30 * 24 * 3600
    assert client.files.content(uploaded.id).read() == data
    with client.files.with_streaming_response.content(uploaded.id) as response:
        assert response.headers["content-type"] == "application/octet-stream"
        assert b"".join(response.iter_bytes()) == data
    assert client.files.retrieve(uploaded.id).bytes == len(data)
    assert [f.id for f in client.files.list(purpose="batch")] == [uploaded.id]
    assert client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


@pytest.mark.parametrize("size", [0, 1, 300_000])
def test_file_contents_keep_the_connection_alive(
    client: OpenAI, server: EmulatorServer, size: int
) -> None:
    # Whole files go out with sendfile; an empty one has nothing to send.
    data = (b'{"n": 1}\n' * size)[:size]
    file_id = client.files.create(file=("x.jsonl", data), purpose="batch").id
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(2):  # the second request reuses the first one's connection
            connection.request(
                "GET", f"/v1/files/{file_id}/content", headers={"Authorization": "Bearer sk-test"}
            )
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, data)
    finally:
        connection.close()


def test_upload_with_unknown_purpose_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="nonsense")  # type: ignore[arg-type]
    assert assert_error_shape(caught.value.response.json())["param"] == "purpose"


def test_chunked_upload_is_streamed_to_disk(server: EmulatorServer) -> None:
    boundary = "emulator-test-boundary"
    payload = b"".join(b'{"n": %d}\n' % i for i in range(5000))
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f"--{boundary}\r\nContent-Disposition: form-data; "
        'name="file"; filename="chunked.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        # Odd-sized pieces so the boundary is split across chunks.
        whole = head + payload + tail
        for start in range(0, len(whole), 4093):
            yield whole[start : start + 4093]

    headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, _, uploaded = raw(server, "POST", "/v1/files", body(), headers)

    assert status == 200, uploaded
    assert (uploaded["bytes"], uploaded["filename"]) == (len(payload), "chunked.jsonl")
    assert server.state.files[uploaded["id"]].path.read_bytes() == payload
    assert server.state.files[uploaded["id"]].lines == 5000
    assert server.state.requests[-1].headers["transfer-encoding"] == "chunked"


# Batches


def test_batch_steps_to_completed_with_one_output_line_per_input(
    client: OpenAI, tmp_path: Path
) -> None:
    batch = new_batch(client, tmp_path, count=3, metadata={"run": "nightly"})
    assert (batch.status, batch.metadata, batch.model) == (
        "validating",
        {"run": "nightly"},
        "gpt-test",
    )
    assert batch.request_counts.total == 0 and batch.output_file_id is None
    assert batch.expires_at == batch.created_at + 24 * 3600

    # a listing moves the batches it shows a step, as a look-up does (a sweep may read either)
    seen = [client.batches.list().data[0]] + [client.batches.retrieve(batch.id) for _ in range(2)]

    assert [b.status for b in seen] == ["in_progress", "finalizing", "completed"]
    done = seen[-1]
    assert counts(done) == (3, 3, 0)
    assert done.completed_at is not None and done.error_file_id is None
    assert done.usage is not None and done.usage.total_tokens > 0
    output = jsonl(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == ["req-0", "req-1", "req-2"]
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["body"]["object"] == "response"
        assert "req-" in line["response"]["body"]["output"][0]["content"][0]["text"]
    assert client.files.retrieve(str(done.output_file_id)).purpose == "batch_output"
    assert client.batches.retrieve(batch.id).status == "completed"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"completion_window": "1h"}, "completion_window"),
        ({"endpoint": "/v1/unknown"}, "endpoint"),
        ({"input_file_id": "file-doesnotexist"}, "input_file_id"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
    ],
)
def test_invalid_batch_creation_is_400(
    client: OpenAI, tmp_path: Path, options: dict[str, Any], param: str
) -> None:
    file_id = upload_lines(client, tmp_path / "in.jsonl", [request_line("a")])
    with pytest.raises(openai.BadRequestError) as caught:
        create_batch(client, options.pop("input_file_id", file_id), **options)
    error = assert_error_shape(caught.value.response.json())
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


def test_batch_input_must_have_purpose_batch(client: OpenAI, tmp_path: Path) -> None:
    file_id = upload_lines(client, tmp_path / "in.jsonl", [request_line("a")], "user_data")
    with pytest.raises(openai.BadRequestError) as caught:
        create_batch(client, file_id)
    assert caught.value.response.json()["error"]["param"] == "input_file_id"


@pytest.mark.parametrize(
    ("call", "missing_id", "message"),
    [
        (lambda c: c.batches.retrieve("batch_nope"), "batch_nope", "No batch found with id"),
        (lambda c: c.batches.cancel("batch_nope"), "batch_nope", "No batch found with id"),
        (lambda c: c.files.retrieve("file-nope"), "file-nope", "No such File object"),
        (lambda c: c.files.content("file-nope"), "file-nope", "No such File object"),
        (lambda c: c.files.delete("file-nope"), "file-nope", "No such File object"),
    ],
)
def test_unknown_ids_are_404_with_openai_error_body(
    client: OpenAI, call: Callable[[OpenAI], Any], missing_id: str, message: str
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        call(client)
    error = assert_error_shape(caught.value.response.json())
    assert message in error["message"] and missing_id in error["message"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "id", None)


def test_unknown_route_wrong_method_and_bad_json(server: EmulatorServer) -> None:
    status, _, body = raw(server, "GET", "/v1/nothing-here", headers=AUTH)
    assert status == 404 and "Invalid URL" in assert_error_shape(body)["message"]
    status, headers, body = raw(server, "DELETE", "/v1/batches", headers=AUTH)
    assert status == 405 and headers["allow"] == "GET, POST"
    assert_error_shape(body)
    json_headers = {**AUTH, "Content-Type": "application/json"}
    status, _, body = raw(server, "POST", "/v1/batches", b"{not json", json_headers)
    assert status == 400 and "could not parse the JSON body" in assert_error_shape(body)["message"]


def test_missing_api_key_is_401(server: EmulatorServer) -> None:
    status, _, body = raw(server, "GET", "/v1/batches")
    error = assert_error_shape(body)
    assert status == 401 and error["message"].startswith("You didn't provide an API key")
    assert server.state.requests[-1].has_authorization is False
    assert server.state.requests[-1].status == 401


def test_wrong_api_key_is_401_when_the_emulator_has_a_key(make_server: ServerFactory) -> None:
    server = make_server(api_key="sk-right-key-0123456789")
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(server, api_key="sk-wrong-key-9876543210").batches.list()
    error = assert_error_shape(caught.value.response.json())
    assert error["code"] == "invalid_api_key"
    assert "sk-wrong-key-9876543210" not in error["message"]
    assert sdk(server, api_key="sk-right-key-0123456789").batches.list().data == []


def test_list_pages_newest_first_with_cursor(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    file_id = upload_lines(client, tmp_path / "in.jsonl", [request_line("a")])
    created = [create_batch(client, file_id).id for _ in range(5)]
    newest_first = created[::-1]

    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more is True
    assert [b.id for b in client.batches.list(limit=2, after=newest_first[3])] == newest_first[4:]
    server.state.clear_requests()
    assert [b.id for b in client.batches.list(limit=2)] == newest_first
    assert [r.query.get("after") for r in server.state.requests] == [
        None,
        newest_first[1],
        newest_first[3],
    ]
    # each listing moved the batches on its pages a step: the newest two and the last one
    # were on three pages, the middle two on two
    statuses = [b.status for b in client.batches.list(limit=100)]
    assert statuses == ["completed", "completed", "finalizing", "finalizing", "completed"]


@pytest.mark.parametrize(
    ("limits", "code"),
    [({"max_input_lines": 2}, "too_many_lines"), ({"max_input_bytes": 100}, "file_too_large")],
)
def test_oversized_input_fails_validation(
    make_server: ServerFactory, tmp_path: Path, limits: dict[str, int], code: str
) -> None:
    client = sdk(make_server(**limits))
    batch = new_batch(client, tmp_path, count=3)
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.failed_at is not None
    assert failed.errors is not None and failed.errors.data is not None
    assert [(e.code, e.line) for e in failed.errors.data] == [(code, None)]


@pytest.mark.parametrize(
    ("lines", "padding", "status", "code"),
    [
        (50_000, 0, "in_progress", None),
        (50_001, 0, "failed", "too_many_lines"),
        (2, 200 * 1024 * 1024, "failed", "file_too_large"),
    ],
    ids=["50000-lines", "50001-lines", "over-200MB"],
)
def test_the_real_service_limits(
    client: OpenAI, tmp_path: Path, lines: int, padding: int, status: str, code: str | None
) -> None:
    """The default limits are the real service's: 50,000 requests and 200 MB per input."""
    path = tmp_path / "big.jsonl"
    line = json.dumps(request_line("x")).encode()
    with path.open("wb") as out:
        for n in range(lines):
            out.write(line.replace(b'"x"', f'"req-{n}"'.encode()) + b"\n")
        blank = b" " * (1024 * 1024)
        for _ in range(padding // len(blank)):  # the size is checked before any line is
            out.write(blank)
        out.write(b"\n" if padding else b"")
    with path.open("rb") as stream:
        file_id = client.files.create(file=stream, purpose="batch").id
    batch = create_batch(client, file_id)

    checked = client.batches.retrieve(batch.id)

    assert checked.status == status
    if code is None:
        assert checked.request_counts is not None and checked.request_counts.total == lines
    else:
        assert checked.errors is not None and checked.errors.data is not None
        assert [error.code for error in checked.errors.data] == [code]


def test_bad_input_lines_fail_with_line_numbers(client: OpenAI, tmp_path: Path) -> None:
    lines = [
        request_line("ok"),
        "this is not json",
        request_line("ok"),
        request_line("other", url="/v1/chat/completions"),
    ]
    batch = create_batch(client, upload_lines(client, tmp_path / "in.jsonl", lines))
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert [(e.code, e.line) for e in failed.errors.data] == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("mismatched_endpoint", 4),
    ]


def test_error_model_lines_go_to_the_error_file(client: OpenAI, tmp_path: Path) -> None:
    lines = [request_line(f"bad-{i}", model="emulator-error") for i in range(2)]
    batch = create_batch(client, upload_lines(client, tmp_path / "in.jsonl", lines))
    for _ in range(3):
        done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.output_file_id is None
    assert counts(done)[1:] == (0, 2)
    errors = jsonl(client, done.error_file_id)
    assert [line["custom_id"] for line in errors] == ["bad-0", "bad-1"]
    assert errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["code"] == "model_not_found"


def test_expired_outcome_keeps_partial_output(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    batch = new_batch(client, tmp_path, count=4)
    server.state.set_outcome(batch.id, "expired")
    statuses = [client.batches.retrieve(batch.id).status for _ in range(2)]
    expired = client.batches.retrieve(batch.id)

    assert statuses == ["in_progress", "expired"] and expired.expired_at is not None
    assert counts(expired)[1:] == (2, 2)
    assert [line["custom_id"] for line in jsonl(client, expired.output_file_id)] == [
        "req-0",
        "req-1",
    ]
    unexecuted = jsonl(client, expired.error_file_id)
    assert [line["custom_id"] for line in unexecuted] == ["req-2", "req-3"]
    assert unexecuted[0]["response"] is None
    assert unexecuted[0]["error"]["code"] == "batch_expired"


def test_cancel_goes_through_cancelling_and_a_final_batch_is_409(
    client: OpenAI, tmp_path: Path
) -> None:
    batch = new_batch(client, tmp_path, count=2)
    assert client.batches.retrieve(batch.id).status == "in_progress"
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert [line["error"]["code"] for line in jsonl(client, cancelled.error_file_id)] == [
        "batch_cancelled"
    ]
    with pytest.raises(openai.ConflictError) as caught:
        client.batches.cancel(batch.id)
    assert "cancelled" in assert_error_shape(caught.value.response.json())["message"]


def test_http_controls_set_outcome_advance_and_list_requests(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    batch = new_batch(client, tmp_path, count=2)
    outcome = json.dumps({"outcome": "cancelled"})
    status, _, _ = raw(server, "POST", f"/_emulator/batches/{batch.id}/outcome", outcome)
    assert status == 200
    steps = [raw(server, "POST", f"/_emulator/batches/{batch.id}/advance")[2] for _ in range(3)]
    assert [step["status"] for step in steps] == ["in_progress", "cancelling", "cancelled"]
    _, _, recorded = raw(server, "GET", "/_emulator/requests")
    assert [r["path"] for r in recorded["data"]] == ["/v1/files", "/v1/batches"]
    assert all(
        r["has_authorization"] and "authorization" not in r["headers"] for r in recorded["data"]
    )


def test_time_mode_steps_by_the_clock_not_by_retrieves(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    slow = sdk(make_server(step_seconds=3600))
    batch = new_batch(slow, tmp_path, count=1)
    assert {slow.batches.retrieve(batch.id).status for _ in range(3)} == {"validating"}

    fast = sdk(make_server(step_seconds=0.05))
    batch = new_batch(fast, tmp_path, count=1)
    time.sleep(0.3)
    assert fast.batches.list().data[0].status == "completed"


# Faults


def test_rate_limit_fault_is_retried_by_the_sdk(server: EmulatorServer) -> None:
    server.state.add_fault(Fault(path=r"^/v1/batches$", status=429, retry_after=0.01, times=2))
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(server).batches.list()
    assert caught.value.response.headers["retry-after"] == "0.01"
    assert assert_error_shape(caught.value.response.json())["code"] == "rate_limit_exceeded"
    server.state.clear_requests()

    assert sdk(server, max_retries=2).batches.list().data == []
    assert [r.status for r in server.state.requests] == [429, 200]  # one fault use was left


def test_two_rate_limits_then_success_takes_three_requests(server: EmulatorServer) -> None:
    server.state.add_fault(Fault(path=r"^/v1/batches$", status=429, retry_after=0.01, times=2))
    assert sdk(server, max_retries=2).batches.list().data == []
    assert [r.status for r in server.state.requests] == [429, 429, 200]
    assert [r.fault for r in server.state.requests] == ["status:429", "status:429", None]


def test_drop_after_bytes_breaks_the_content_download(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    file_id = upload_lines(
        client, tmp_path / "in.jsonl", [request_line(f"r{i}") for i in range(50)]
    )
    server.state.add_fault(Fault(path=r"/content$", drop_after_bytes=100))
    with pytest.raises(openai.APIConnectionError):
        client.files.content(file_id).read()
    assert len(client.files.content(file_id).read()) == server.state.files[file_id].bytes


def test_dropped_response_still_creates_the_batch(
    server: EmulatorServer, client: OpenAI, tmp_path: Path
) -> None:
    file_id = upload_lines(client, tmp_path / "in.jsonl", [request_line("a")])
    server.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", drop_request=True))
    with pytest.raises(openai.APIConnectionError):
        create_batch(client, file_id)
    assert len(server.state.batches) == 1
    assert (server.state.requests[-1].status, server.state.requests[-1].fault) == (
        None,
        "drop_request",
    )


def test_delay_fault_times_out_after_the_work_is_done(
    server: EmulatorServer, tmp_path: Path
) -> None:
    client = sdk(server, timeout=0.1)
    file_id = upload_lines(client, tmp_path / "in.jsonl", [request_line("a")])
    server.state.add_fault(Fault(method="POST", path=r"^/v1/batches$", delay=0.5))
    with pytest.raises(openai.APITimeoutError):
        create_batch(client, file_id)
    assert len(server.state.batches) == 1


def test_faults_over_http(server: EmulatorServer, client: OpenAI) -> None:
    fault = json.dumps({"path": "^/v1/files$", "status": 500, "times": None})
    assert raw(server, "POST", "/_emulator/faults", fault)[0] == 200
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.files.list()
    assert raw(server, "POST", "/_emulator/faults", json.dumps({"bogus": 1}))[0] == 400
    assert raw(server, "DELETE", "/_emulator/faults")[0] == 200
    assert raw(server, "GET", "/_emulator/faults")[2]["data"] == []
    assert client.files.list().data == []


# Batch input names


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


# Command line


def test_cli_prints_its_url_and_serves(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "batchledger.emulator", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready, "the emulator printed nothing within 10 s"
        line = process.stdout.readline()
        match = re.fullmatch(
            r"batchledger emulator listening on (http://127\.0\.0\.1:(\d+)/v1)\n", line
        )
        assert match, line
        with OpenAI(api_key="sk-test", base_url=match[1], max_retries=0) as client:
            assert client.batches.list().data == []
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0 and stderr == ""


# Multipart parser


def _form(boundary: str) -> bytes:
    return (
        f"preamble\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f"--{boundary}\r\n"
        "Content-Disposition: form-data; name=\"file\"; filename*=utf-8''na%C3%AFve.jsonl\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
        # Almost a delimiter, to check that a partial match is kept as data.
        f"line one\r\n--{boundary[:-1]}!\r\n"
        f"\r\n--{boundary}--\r\nepilogue"
    ).encode()


def test_multipart_reader_handles_one_byte_chunks() -> None:
    data = _form("xyz")
    reader = MultipartReader((data[i : i + 1] for i in range(len(data))), b"xyz")
    first = reader.next_part()
    assert first is not None and (first.name, first.filename) == ("purpose", None)
    assert reader.read_text(100) == "batch"
    second = reader.next_part()
    assert second is not None and (second.name, second.filename) == ("file", "naïve.jsonl")
    assert b"".join(reader.iter_part()) == b"line one\r\n--xy!\r\n"
    assert reader.next_part() is None


def test_multipart_reader_skips_unread_parts_and_rejects_truncation() -> None:
    reader = MultipartReader([_form("b")], b"b")
    assert reader.next_part() is not None
    second = reader.next_part()  # the purpose value was never read
    assert second is not None and second.name == "file"

    truncated = MultipartReader([_form("b")[:-30]], b"b")
    with pytest.raises(MultipartError):
        while truncated.next_part() is not None:
            pass
