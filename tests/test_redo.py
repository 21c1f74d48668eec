"""plan_redo (what retry sends again) and merge_attempts (one line per custom_id after it)."""

import json
import resource
from collections import Counter
from pathlib import Path

import pytest

from batchledger import redo
from batchledger.errors import UsageError
from batchledger.redo import merge_attempts, outcome, plan_redo
from batchledger.split import Segments


def request(custom_id: str) -> bytes:
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": {}}
    return json.dumps(line).encode() + b"\n"


def answered(custom_id: str, status: int = 200, attempt: int = 1) -> bytes:
    """A result line as the API writes it (the emulator's shape)."""
    body = {"object": "response", "output_text": f"{custom_id} try {attempt}"}
    if status != 200:
        body = {"error": {"message": "no", "type": "x", "param": None, "code": None}}
    line = {
        "id": f"batch_req_{custom_id}_{attempt}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": "req_1", "body": body},
        "error": None,
    }
    return json.dumps(line).encode() + b"\n"


def unexecuted(custom_id: str, code: str, attempt: int = 1) -> bytes:
    line = {
        "id": f"batch_req_{custom_id}_{attempt}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": "not run"},
    }
    return json.dumps(line).encode() + b"\n"


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


@pytest.fixture
def job(tmp_path: Path) -> dict[str, Path]:
    """Ten requests and a first attempt that left every kind of hole."""
    ids = [f"r{n}" for n in range(10)]
    input_path = write(tmp_path / "in.jsonl", [request(i) for i in ids])
    output = write(
        tmp_path / "out1.jsonl",
        [
            answered("r0"),
            answered("r1", 429),
            answered("r2", 500),
            answered("r3", 400),
            answered("r5"),
            answered("r9", 503),
        ],
    )
    errors = write(
        tmp_path / "err1.jsonl",
        [
            unexecuted("r4", "batch_expired"),
            unexecuted("r6", "batch_cancelled"),
            unexecuted("r7", "request_timeout"),
        ],
    )
    # r8 is in neither file: missing
    return {"input": input_path, "out1": output, "err1": errors}


def selected(input_path: Path, ranges: list[tuple[int, int]]) -> list[str]:
    with Segments(input_path, ranges) as stream:
        return [json.loads(line)["custom_id"] for line in stream.read().splitlines()]


def test_default_reasons(job):
    plan = plan_redo(job["input"], [(job["out1"], job["err1"])], all_failed=False)
    assert selected(job["input"], plan.ranges) == ["r1", "r2", "r4", "r6", "r7", "r8", "r9"]
    assert plan.lines == 7
    assert plan.by_reason == Counter(
        {"429": 1, "5xx": 2, "expired": 1, "cancelled": 1, "timeout": 1, "missing": 1}
    )
    assert plan.kept == 2
    assert plan.not_sent == 1  # r3's 400
    assert len(plan.ranges) == 3  # r1-r2, r4, r6-r9


def test_all_failed_adds_the_other_failures(job):
    plan = plan_redo(job["input"], [(job["out1"], job["err1"])], all_failed=True)
    assert selected(job["input"], plan.ranges) == [f"r{n}" for n in range(10) if n not in (0, 5)]
    assert plan.by_reason["failed"] == 1
    assert plan.lines == 8 and plan.not_sent == 0
    assert len(plan.ranges) == 2  # r1-r4, r6-r9


def test_a_later_attempt_fills_holes_and_a_success_is_never_undone(job, tmp_path):
    second_out = write(
        tmp_path / "out2.jsonl",
        [answered("r1", attempt=2), answered("r2", 502, attempt=2), answered("r8", attempt=2)],
    )
    second_err = write(tmp_path / "err2.jsonl", [unexecuted("r4", "batch_expired", 2)])
    # an attempt that (wrongly) reports r0 as failed after its success
    third_out = write(tmp_path / "out3.jsonl", [answered("r0", 500, attempt=3)])
    attempts = [(job["out1"], job["err1"]), (second_out, second_err), (third_out, None)]
    plan = plan_redo(job["input"], attempts, all_failed=False)
    assert selected(job["input"], plan.ranges) == ["r2", "r4", "r6", "r7", "r9"]
    assert plan.kept == 4  # r0, r1, r5, r8


def test_outcome():
    assert outcome(json.loads(answered("a"))) is None
    assert outcome(json.loads(answered("a", 429))) == "429"
    assert outcome(json.loads(answered("a", 599))) == "5xx"
    assert outcome(json.loads(answered("a", 404))) == "failed"
    assert outcome(json.loads(answered("a", 201))) == "failed"
    assert outcome(json.loads(unexecuted("a", "batch_expired"))) == "expired"
    assert outcome(json.loads(unexecuted("a", "model_not_found"))) == "failed"
    assert outcome({"custom_id": "a"}) == "failed"


def test_a_line_without_custom_id_is_named(tmp_path):
    input_path = write(tmp_path / "in.jsonl", [request("a"), b'{"method": "POST"}\n', b"{\n"])
    with pytest.raises(UsageError) as caught:
        plan_redo(input_path, [], all_failed=False)
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith("line 2 of in.jsonl has no custom_id")


def test_a_line_that_is_not_json_is_named_as_such(tmp_path):
    input_path = write(tmp_path / "in.jsonl", [request("a"), b"not json\n", b"[1]\n"])
    with pytest.raises(UsageError, match=r"line 2 of in\.jsonl is not valid JSON"):
        plan_redo(input_path, [], all_failed=False)
    write(input_path, [request("a"), b"[1]\n"])
    with pytest.raises(UsageError, match=r"line 2 of in\.jsonl is not a JSON object"):
        plan_redo(input_path, [], all_failed=False)


@pytest.mark.parametrize("batch", [1, 3, 2000])
def test_the_first_duplicate_custom_id_is_named(tmp_path, monkeypatch, batch):
    monkeypatch.setattr(redo, "INSERT_BATCH", batch)
    ids = ["a", "b", "c", "d", "b", "e", "a"]
    input_path = write(tmp_path / "in.jsonl", [request(i) for i in ids])
    with pytest.raises(UsageError) as caught:
        plan_redo(input_path, [], all_failed=False)
    assert caught.value.message.startswith("line 5 of in.jsonl repeats the custom_id 'b' of line 2")


def test_blank_lines_and_a_last_line_without_newline(tmp_path):
    input_path = tmp_path / "in.jsonl"
    input_path.write_bytes(request("a") + b"\n" + request("b") + request("c")[:-1])
    plan = plan_redo(input_path, [], all_failed=False)
    assert plan.by_reason == Counter({"missing": 3})
    assert selected(input_path, plan.ranges) == ["a", "b", "c"]
    assert len(plan.ranges) == 2  # the blank line separates a from b


def test_merge_holds_one_line_per_custom_id_in_input_order(job, tmp_path):
    second_out = write(
        tmp_path / "out2.jsonl",
        # in another order than the input's, as a batch may write them
        [answered("r8", attempt=2), answered("r2", 502, attempt=2), answered("r1", attempt=2)],
    )
    second_err = write(tmp_path / "err2.jsonl", [unexecuted("r4", "batch_expired", 2)])
    attempts = [(job["out1"], job["err1"]), (second_out, second_err)]
    output, errors = tmp_path / "merged" / "results.jsonl", tmp_path / "merged" / "errors.jsonl"
    saved_output, saved_errors = merge_attempts(output, errors, job["input"], attempts)
    assert output.read_bytes() == (
        answered("r0") + answered("r1", attempt=2) + answered("r5") + answered("r8", attempt=2)
    )
    assert errors.read_bytes() == (
        answered("r2", 502, attempt=2)
        + answered("r3", 400)
        + unexecuted("r4", "batch_expired", 2)
        + unexecuted("r6", "batch_cancelled")
        + unexecuted("r7", "request_timeout")
        + answered("r9", 503)
    )
    assert saved_output is not None and saved_output.size == output.stat().st_size
    assert saved_errors is not None and saved_errors.size == errors.stat().st_size


def test_merge_writes_no_empty_file(tmp_path):
    input_path = write(tmp_path / "in.jsonl", [request("a"), request("b")])
    out = write(tmp_path / "out.jsonl", [answered("a"), answered("b")])
    output, errors = tmp_path / "results.jsonl", tmp_path / "errors.jsonl"
    saved_output, saved_errors = merge_attempts(output, errors, input_path, [(out, None)])
    assert saved_output is not None and saved_errors is None
    assert not errors.exists()
    assert merge_attempts(output, errors, input_path, []) == (None, None)


def test_merge_ends_a_last_result_line_that_has_no_newline(tmp_path):
    input_path = write(tmp_path / "in.jsonl", [request("a"), request("b"), request("c")])
    first = tmp_path / "out1.jsonl"
    first.write_bytes(answered("a") + answered("c")[:-1])
    second = write(tmp_path / "out2.jsonl", [answered("b", attempt=2)])
    output, errors = tmp_path / "results.jsonl", tmp_path / "errors.jsonl"
    merge_attempts(output, errors, input_path, [(first, None), (second, None)])
    assert output.read_bytes() == answered("a") + answered("b", attempt=2) + answered("c")


def test_result_lines_of_other_requests_are_left_out(tmp_path):
    input_path = write(tmp_path / "in.jsonl", [request("a")])
    out = write(tmp_path / "out.jsonl", [answered("zz"), b"garbage\n", answered("a")])
    output, errors = tmp_path / "results.jsonl", tmp_path / "errors.jsonl"
    merge_attempts(output, errors, input_path, [(out, None)])
    assert output.read_bytes() == answered("a")


def test_large_job_memory_is_bounded(tmp_path):
    """200,000 requests: the index lives on disk, not in this process's memory."""
    count = 200_000
    input_path, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    with input_path.open("wb") as inputs, out.open("wb") as outputs:
        for n in range(count):
            inputs.write(b'{"custom_id": "request-%09d", "body": {}}\n' % n)
            if n % 10:
                outputs.write(
                    b'{"custom_id": "request-%09d", "response": {"status_code": 200}}\n' % n
                )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    plan = plan_redo(input_path, [(out, None)], all_failed=False)
    merged = merge_attempts(tmp_path / "r.jsonl", tmp_path / "e.jsonl", input_path, [(out, None)])
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert plan.lines == count // 10 and plan.kept == count - count // 10
    assert merged[0] is not None and merged[0].size == out.stat().st_size
    assert merged[1] is None
    assert grown_kib < 80 * 1024
