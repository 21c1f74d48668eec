"""Anthropic's data path: the streamed create (batchledger.inline) and results put in input
order (batchledger.ordering), and the lost-create rule (batchledger.lost_create). The create
is sent with the real `anthropic` SDK over real HTTP, to a small recording server (which
shows the exact bytes and headers sent) and to the emulator's anthropic flavor."""

import http.server
import json
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from batchledger.errors import ExitCode, UsageError
from batchledger.inline import (
    RequestBody,
    create_batch_streaming,
    scan_requests,
)
from batchledger.lost_create import Ambiguous, Found, NotMade, match_lost_create
from batchledger.ordering import order_results
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


# --- results in input order --------------------------------------------------------------


def result_line(custom_id: str, kind: str) -> bytes:
    """A result line as the API writes it (compact, custom_id first)."""
    if kind == "succeeded":
        result: dict[str, Any] = {
            "type": "succeeded",
            "message": {"id": f"msg_{custom_id}", "content": [{"type": "text", "text": "hi"}]},
        }
    elif kind == "errored":
        result = {"type": "errored", "error": {"type": "error", "error": {"type": "api_error"}}}
    else:
        result = {"type": kind}
    return json.dumps({"custom_id": custom_id, "result": result}, separators=(",", ":")).encode()


def reordered(line: bytes) -> bytes:
    """The same result with its keys in another order: the quick reading cannot take it."""
    record = json.loads(line)
    return json.dumps({"result": record["result"], "custom_id": record["custom_id"]}).encode()


KINDS = ("succeeded", "errored", "canceled", "expired")


def ordered(tmp_path: Path, input_path: Path, results: list[bytes], **kwargs: Any) -> Any:
    results_path = write(tmp_path / "downloaded.jsonl", *results)
    return order_results(
        input_path,
        results_path,
        tmp_path / "results_b.jsonl",
        tmp_path / "results_b.errors.jsonl",
        **kwargs,
    )


def test_results_come_out_in_input_order_succeeded_apart_from_the_rest(tmp_path):
    count = 400
    input_path = write(tmp_path / "in.jsonl", *(request_line(n) for n in range(count)))
    answers = {n: result_line(f"req-{n}", KINDS[n % 7 % 4]) for n in range(count)}
    for n in range(0, count, 9):
        answers[n] = reordered(answers[n])  # read by the careful way
    arrival = list(range(count))
    random.Random(5).shuffle(arrival)
    lines = [answers[n] + b"\n" for n in arrival]
    lines[-1] = lines[-1][:-1]  # the file's last line has no newline
    done = ordered(tmp_path, input_path, lines)
    succeeded = [answers[n] + b"\n" for n in range(count) if n % 7 % 4 == 0]
    others = [answers[n] + b"\n" for n in range(count) if n % 7 % 4 != 0]
    assert (tmp_path / "results_b.jsonl").read_bytes() == b"".join(succeeded)
    assert (tmp_path / "results_b.errors.jsonl").read_bytes() == b"".join(others)
    assert done.succeeded.size == sum(map(len, succeeded))
    assert (done.placed, done.unknown, done.repeated, done.missing) == (count, 0, 0, 0)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_results_of_a_jobs_part_follow_the_parts_lines(tmp_path):
    input_path = write(tmp_path / "in.jsonl", *(request_line(n) for n in range(1, 13)))
    part = plan_parts(input_path, max_requests=5, max_bytes=10**6)[1]  # lines 6 to 10
    answers = [result_line(f"req-{n}", "succeeded") + b"\n" for n in (9, 6, 10, 8)]
    done = ordered(tmp_path, input_path, answers, ranges=[(part.start, part.end)])
    written = (tmp_path / "results_b.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["custom_id"] for line in written] == [
        "req-6",
        "req-8",
        "req-9",
        "req-10",
    ]
    assert done.errors is None and not (tmp_path / "results_b.errors.jsonl").exists()
    assert done.missing == 1  # req-7 has no answer: in neither file


def test_a_second_answer_is_kept_at_the_end_of_the_errors_file(tmp_path, caplog):
    input_path = write(tmp_path / "in.jsonl", *(request_line(n) for n in range(1, 5)))
    lines = [
        result_line("req-3", "errored") + b"\n",
        result_line("req-1", "succeeded") + b"\n",
        result_line("req-3", "succeeded") + b"\n",  # the success takes the place
        result_line("req-2", "expired") + b"\n",
        result_line("req-1", "canceled") + b"\n",  # after a success: set aside
        result_line("req-4", "succeeded") + b"\n",
    ]
    done = ordered(tmp_path, input_path, lines)
    assert (tmp_path / "results_b.jsonl").read_bytes() == lines[1] + lines[2] + lines[5]
    assert (tmp_path / "results_b.errors.jsonl").read_bytes() == lines[3] + lines[0] + lines[4]
    assert (done.placed, done.repeated, done.unknown) == (4, 2, 0)
    assert "2 result lines of downloaded.jsonl answer a request answered already" in caplog.text


def test_results_for_no_request_are_kept_at_the_end_of_the_errors_file(tmp_path, caplog):
    input_path = write(tmp_path / "in.jsonl", *(request_line(n) for n in range(1, 4)))
    lines = [
        result_line("req-9", "succeeded") + b"\n",  # not in the input
        result_line("req-2", "succeeded") + b"\n",
        b'{"result": {"type": "errored"}}\n',  # no custom_id at all
        b"not json\n",
        result_line("req-1", "errored") + b"\n",
    ]
    done = ordered(tmp_path, input_path, lines)
    assert (tmp_path / "results_b.jsonl").read_bytes() == lines[1]
    assert (tmp_path / "results_b.errors.jsonl").read_bytes() == lines[4] + lines[0] + lines[
        2
    ] + lines[3]
    assert (done.placed, done.unknown, done.missing) == (2, 3, 1)
    assert "3 result lines of downloaded.jsonl are for no request of the input" in caplog.text
    assert "msg_" not in caplog.text  # never a result's content in the log


def test_an_input_that_repeats_a_custom_id_is_refused_naming_both_lines(tmp_path):
    lines = [request_line(n) for n in range(1, 6)]
    lines.insert(4, request_line(2))  # line 5 repeats line 2's custom_id
    input_path = write(tmp_path / "in.jsonl", *lines)
    with pytest.raises(
        UsageError, match=r"^line 5 of in\.jsonl repeats the custom_id 'req-2' of line 2"
    ):
        ordered(tmp_path, input_path, [result_line("req-1", "succeeded") + b"\n"])
    assert not (tmp_path / "results_b.jsonl").exists()


def test_an_input_line_without_custom_id_is_refused(tmp_path):
    input_path = write(tmp_path / "in.jsonl", request_line(1), b"\n", b'{"params": {}}\n')
    with pytest.raises(UsageError, match=r"^line 3 of in\.jsonl has no custom_id"):
        ordered(tmp_path, input_path, [result_line("req-1", "succeeded") + b"\n"])


MEMORY_CHILD = """
import resource, sys
from pathlib import Path
from batchledger.lost_create import Ambiguous, Found, NotMade, match_lost_create
from batchledger.ordering import order_results
folder = Path(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
paths = [folder / name for name in ("in.jsonl", "res.jsonl", "ok.jsonl", "err.jsonl")]
done = order_results(*paths)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(grown, done.placed)
"""


def test_ordering_a_large_result_keeps_memory_bounded(tmp_path):
    """300,000 results (150 MB) in reverse order: the index lives on disk, not in memory."""
    count = 300_000
    filler = b"x" * 400
    with (tmp_path / "in.jsonl").open("wb") as inputs, (tmp_path / "res.jsonl").open("wb") as out:
        for n in range(count):
            inputs.write(b'{"custom_id": "r-%07d", "params": {}}\n' % n)
        for n in reversed(range(count)):
            out.write(
                b'{"custom_id":"r-%07d","result":{"type":"%s","message":{"text":"%s"}}}\n'
                % (n, b"errored" if n % 10 == 0 else b"succeeded", filler)
            )
    child = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    grown_kib, placed = map(int, child.stdout.split())
    assert placed == count
    assert (tmp_path / "ok.jsonl").stat().st_size + (tmp_path / "err.jsonl").stat().st_size == (
        tmp_path / "res.jsonl"
    ).stat().st_size
    with (tmp_path / "ok.jsonl").open("rb") as ok:
        assert ok.readline().startswith(b'{"custom_id":"r-0000001"')
    assert grown_kib < 60 * 1024, f"grew {grown_kib} KiB"


# --- the lost-create rule ----------------------------------------------------------------

SINCE = datetime(2026, 12, 6, 8, 0, 0, tzinfo=UTC)


def listed_batch(batch_id: str, seconds_after: float, requests: int) -> dict[str, Any]:
    created = SINCE + timedelta(seconds=seconds_after)
    return {
        "id": batch_id,
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "request_counts": {
            "processing": requests - 3,
            "succeeded": 1,
            "errored": 1,
            "canceled": 0,
            "expired": 1,
        },
    }


def newest_first(*batches: dict[str, Any], then_fail: bool = True) -> Iterator[dict[str, Any]]:
    """The listing; with then_fail, reading past what was given fails the test."""
    yield from batches
    if then_fail:
        raise AssertionError("the listing was read past the create's time")


def test_lost_create_exactly_one_candidate_is_found():
    listing = newest_first(
        listed_batch("msgbatch_other_size", 30, 99),
        listed_batch("msgbatch_in_ledger", 20, 100),
        listed_batch("msgbatch_ours", 0.4, 100),
        listed_batch("msgbatch_older", -5, 100),  # before the create: where paging stops
    )
    found = match_lost_create(listing, SINCE, 100, {"msgbatch_in_ledger"})
    assert isinstance(found, Found) and found.batch["id"] == "msgbatch_ours"


def test_lost_create_none_after_reaching_the_creates_time_was_not_made():
    listing = newest_first(listed_batch("msgbatch_a", 10, 7), listed_batch("msgbatch_b", -3, 100))
    assert match_lost_create(listing, SINCE, 100, set()) == NotMade()
    # The whole listing read (an account's first batches): nothing older to reach, none made.
    assert match_lost_create(newest_first(then_fail=False), SINCE, 100, set()) == NotMade()


def test_lost_create_within_the_dates_second_is_a_candidate():
    """An HTTP Date has whole seconds: a batch made 0.5 s 'before' it may still be ours."""
    listing = newest_first(listed_batch("msgbatch_ours", -0.5, 3), listed_batch("old", -1.5, 3))
    assert match_lost_create(listing, SINCE, 3, set()) == Found(
        listed_batch("msgbatch_ours", -0.5, 3)
    )


def test_lost_create_more_than_one_candidate_sends_nothing_and_names_them():
    listing = newest_first(
        listed_batch("msgbatch_2", 12, 50),
        listed_batch("msgbatch_1", 2, 50),
        listed_batch("msgbatch_0", -60, 50),
    )
    outcome = match_lost_create(listing, SINCE, 50, set())
    assert outcome == Ambiguous(("msgbatch_2", "msgbatch_1"))
    assert isinstance(outcome, Ambiguous)
    error = outcome.refusal()
    assert error.exit_code == ExitCode.REFUSED
    assert "msgbatch_2, msgbatch_1" in str(error) and "--force" in str(error)


def test_lost_create_needs_the_servers_time_with_its_zone():
    with pytest.raises(ValueError, match="timezone-aware"):
        match_lost_create([], SINCE.replace(tzinfo=None), 1, set())


# --- both halves against the emulator's anthropic flavor ---------------------------------


def test_a_parts_create_and_its_results_round_trip_through_the_emulator(tmp_path, make_server):
    """The streamed create is accepted by the emulator (real SDK, real HTTP); its unordered
    results, of all four types, come back in the part's input order, split in two files."""
    key = "sk-ant-test-0123456789"
    server = make_server(flavor="anthropic", api_key=key)
    lines = [request_line(n) for n in range(30)]
    lines[4] = lines[4].replace(b'"max_tokens": 64', b'"max_tokens": 0')  # errored
    input_path = write(tmp_path / "in.jsonl", *lines)
    server.state.set_line_outcomes({"req-11": "cancelled", "req-12": "expired", "req-15": "529"})
    part = plan_parts(input_path, max_requests=20, max_bytes=10**6)[0]
    ranges = [(part.start, part.end)]
    with anthropic.Anthropic(api_key=key, base_url=server.base_url, max_retries=0) as client:
        batch = create_batch_streaming(client, input_path, ranges)
        assert batch["request_counts"]["processing"] == 20
        ended = client.messages.batches.retrieve(batch["id"])
        assert ended.processing_status == "ended" and ended.results_url
        downloaded = client.get(ended.results_url, cast_to=httpx2.Response).content
    arrival = [json.loads(line)["custom_id"] for line in downloaded.splitlines()]
    assert arrival != [f"req-{n}" for n in range(20)]  # the emulator answers out of order
    results_path = write(tmp_path / "downloaded.jsonl", downloaded)
    done = order_results(
        input_path, results_path, tmp_path / "ok.jsonl", tmp_path / "err.jsonl", ranges=ranges
    )
    by_id = {json.loads(line)["custom_id"]: line + b"\n" for line in downloaded.splitlines()}
    failed = {"req-4", "req-11", "req-12", "req-15"}
    in_order = [f"req-{n}" for n in range(20)]
    assert (tmp_path / "ok.jsonl").read_bytes() == b"".join(
        by_id[i] for i in in_order if i not in failed
    )
    assert (tmp_path / "err.jsonl").read_bytes() == b"".join(
        by_id[i] for i in in_order if i in failed
    )
    assert (done.placed, done.unknown, done.missing) == (20, 0, 0)
