"""Anthropic's data path: the streamed create (batchledger.inline) and results put in input
order (batchledger.ordering). The create is sent with the real `anthropic` SDK over real
HTTP to a small recording server (the emulator's anthropic flavor is built elsewhere)."""

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from batchledger.errors import ExitCode, UsageError
from batchledger.inline import (
    RequestBody,
    create_batch_streaming,
    scan_requests,
)
from batchledger.split import plan_parts


def request_line(n: int, text: str = "hello") -> bytes:
    params = {"model": "claude-haiku-4-5", "max_tokens": 64}
    params["messages"] = [{"role": "user", "content": f"{text} {n}"}]  # type: ignore[assignment]
    return json.dumps({"custom_id": f"req-{n}", "params": params}).encode() + b"\n"


def write(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def body_requests(body: RequestBody) -> list[Any]:
    sent = b"".join(body)
    assert len(sent) == len(body)  # the announced Content-Length is exact
    parsed = json.loads(sent)
    assert list(parsed) == ["requests"]
    return parsed["requests"]  # type: ignore[no-any-return]


# --- the scan ----------------------------------------------------------------------------


def test_scan_accepts_both_key_orders_whitespace_blank_lines_and_no_final_newline(tmp_path):
    lines = [
        request_line(1),
        b"\n",
        b'  { "params" : {"model": "m", "max_tokens": 1, "messages": []} ,'
        b' "custom_id" : "B_2" }\r\n',
        b" \t\r\n",
        b'{"custom_id":"c-3","params":{"text":"\\u00e9t\xc3\xa9 {}}"}}',  # no final newline
    ]
    path = write(tmp_path / "in.jsonl", *lines)
    scanned = scan_requests(path)
    assert (scanned.requests, scanned.blank_lines, scanned.size) == (3, 2, path.stat().st_size)
    expected = [json.loads(line) for line in lines if line.strip()]
    assert body_requests(RequestBody(path, [(0, scanned.size)], scanned)) == expected


BAD_LINES = {
    "not JSON": b"hello\n",
    "an array": b'[{"custom_id": "a", "params": {}}]\n',
    "no params": b'{"custom_id": "a", "body": {}}\n',
    "params not an object": b'{"custom_id": "a", "params": "x"}\n',
    "an OpenAI line": b'{"custom_id": "a", "method": "POST", "url": "/v1/x", "body": {}}\n',
    "an id Anthropic refuses": b'{"custom_id": "a b", "params": {}}\n',
    "an id too long": b'{"custom_id": "%s", "params": {}}\n' % (b"a" * 65),
    "an unclosed object": b'{"custom_id": "a", "params": {"model": "m"}\n',
    "a raw control character": b'{"custom_id": "a", "params": {"x": "\x01"}}\n',
    "bytes that are not UTF-8": b'{"custom_id": "a", "params": {"x": "\xff"}}\n',
    "a repeated custom_id": b'{"custom_id": "req-1", "params": {}}\n',
}


@pytest.mark.parametrize("bad", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_scan_refuses_a_line_that_is_not_a_request_naming_it(tmp_path, bad):
    path = write(tmp_path / "in.jsonl", request_line(1), b"\n", request_line(2), bad)
    with pytest.raises(UsageError) as caught:
        scan_requests(path)
    assert caught.value.exit_code == ExitCode.USAGE
    assert str(caught.value).startswith("line 4 of in.jsonl ")


def test_scan_of_a_parts_ranges_names_the_line_by_its_number_in_the_input(tmp_path):
    lines = [request_line(n) for n in range(1, 10)]
    lines[6] = b'{"custom_id": "x", "params": []}\n'  # line 7
    path = write(tmp_path / "in.jsonl", *lines)
    parts = plan_parts(path, max_requests=3, max_bytes=10**6)
    assert scan_requests(path, [(parts[0].start, parts[0].end)]).requests == 3
    with pytest.raises(UsageError, match=r"^line 7 of in\.jsonl is not a request line"):
        scan_requests(path, [(parts[2].start, parts[2].end)])
    # A retry's scattered lines: 2 and 8, checked and sent in that order.
    starts = [sum(map(len, lines[:n])) for n in range(len(lines) + 1)]
    ranges = [(starts[1], starts[2]), (starts[7], starts[8])]
    scanned = scan_requests(path, ranges)
    assert [r["custom_id"] for r in body_requests(RequestBody(path, ranges, scanned))] == [
        "req-2",
        "req-8",
    ]


def test_scan_refuses_an_empty_input(tmp_path):
    with pytest.raises(UsageError, match="has no request"):
        scan_requests(write(tmp_path / "in.jsonl", b"\n  \n"))


def test_body_stops_when_the_input_changed_after_the_scan(tmp_path):
    path = write(tmp_path / "in.jsonl", request_line(1), request_line(2))
    scanned = scan_requests(path)
    write(path, request_line(1), b"\n", request_line(3)[:-1])  # other lines, same size or not
    with pytest.raises(OSError, match="changed after it was checked"):
        b"".join(RequestBody(path, [(0, path.stat().st_size)], scanned))


def test_body_streams_in_blocks_whatever_the_input_size(tmp_path):
    """Three megabytes of lines come out in pieces of about a megabyte, never all at once."""
    path = tmp_path / "in.jsonl"
    with path.open("wb") as out:
        for n in range(6000):
            out.write(request_line(n, "x" * 400))
    scanned = scan_requests(path)
    pieces = list(RequestBody(path, [(0, scanned.size)], scanned))
    assert max(map(len, pieces)) < 1.1 * 1024 * 1024
    assert len(json.loads(b"".join(pieces))["requests"]) == 6000


# --- the create over HTTP ----------------------------------------------------------------


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records each request (path, headers, body) and answers a MessageBatch, or an error."""

    received: list[dict[str, Any]]
    answer_status = 200

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.answer_status != 200:
            payload = {"type": "error", "error": {"type": "api_error", "message": "no"}}
        else:
            count = len(json.loads(body)["requests"])
            payload = {
                "id": "msgbatch_01test",
                "type": "message_batch",
                "processing_status": "in_progress",
                "request_counts": {
                    "processing": count,
                    "succeeded": 0,
                    "errored": 0,
                    "canceled": 0,
                    "expired": 0,
                },
                "created_at": "2026-12-06T08:00:00Z",
                "expires_at": "2026-12-07T08:00:00Z",
                "ended_at": None,
                "archived_at": None,
                "cancel_initiated_at": None,
                "results_url": None,
            }
        data = json.dumps(payload).encode()
        self.send_response(self.answer_status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("Handler", (Recorder,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def client_for(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=base_url, max_retries=2)


def test_create_streams_the_lines_through_the_sdk_in_order(tmp_path, recorder):
    base_url, handler = recorder
    lines = [request_line(n) for n in range(1, 2001)]
    lines.insert(5, b"\n")
    path = write(tmp_path / "in.jsonl", *lines)
    client = client_for(base_url)
    batch = create_batch_streaming(client, path)
    assert batch["id"] == "msgbatch_01test"
    assert batch["request_counts"]["processing"] == 2000
    (request,) = handler.received
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert request["path"] == "/v1/messages/batches"
    for name, value in client.auth_headers.items():  # the SDK's own auth and version headers
        assert headers[name.lower()] == value
    assert "anthropic-version" in headers
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(request["body"])
    assert "transfer-encoding" not in headers
    assert json.loads(request["body"]) == {
        "requests": [json.loads(line) for line in lines if line.strip()]
    }


def test_create_of_a_part_sends_only_its_lines(tmp_path, recorder):
    base_url, handler = recorder
    path = write(tmp_path / "in.jsonl", *(request_line(n) for n in range(1, 11)))
    part = plan_parts(path, max_requests=4, max_bytes=10**6)[1]
    create_batch_streaming(client_for(base_url), path, [(part.start, part.end)])
    sent = json.loads(handler.received[0]["body"])["requests"]
    assert [r["custom_id"] for r in sent] == ["req-5", "req-6", "req-7", "req-8"]


def test_create_refuses_a_bad_line_before_sending_anything(tmp_path, recorder):
    base_url, handler = recorder
    path = write(tmp_path / "in.jsonl", request_line(1), b'{"custom_id": "a"}\n')
    with pytest.raises(UsageError, match=r"^line 2 of in\.jsonl"):
        create_batch_streaming(client_for(base_url), path)
    assert handler.received == []


def test_create_failure_is_the_sdks_error_and_is_never_retried(tmp_path, recorder):
    """A 5xx may follow a batch the server made: sending again could pay twice."""
    base_url, handler = recorder
    handler.answer_status = 500
    path = write(tmp_path / "in.jsonl", request_line(1))
    with pytest.raises(anthropic.InternalServerError):
        create_batch_streaming(client_for(base_url), path)
    assert len(handler.received) == 1
