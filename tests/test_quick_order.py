"""The quick way of ordering Anthropic's results (batchledger.quick_order, numpy) against
the exact way (SQLite, ordering._order_exactly): the same bytes in both files, the same
counts, whatever the lines look like; and ids that share a hash are told apart."""

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchledger import ordering, quick_inputs, quick_order, quick_scan
from batchledger.split import plan_parts


def request(n: int, compact: bool = False) -> bytes:
    record = {"custom_id": f"req-{n}", "params": {"max_tokens": 8, "messages": []}}
    separators = (",", ":") if compact else (", ", ": ")
    return json.dumps(record, separators=separators).encode() + b"\n"


def result(custom_id: str, kind: str, style: int = 0) -> bytes:
    payload: dict[str, Any] = {"type": kind}
    if kind == "succeeded":
        payload["message"] = {"content": [{"type": "text", "text": f"answer to {custom_id}"}]}
    if style == 0:  # as the API writes it
        return json.dumps(
            {"custom_id": custom_id, "result": payload}, separators=(",", ":")
        ).encode()
    if style == 1:  # as json.dumps writes it
        return json.dumps({"custom_id": custom_id, "result": payload}).encode()
    return json.dumps({"result": payload, "custom_id": custom_id}).encode()  # keys reordered


def mixed_files(folder: Path) -> tuple[Path, Path]:
    """An input of both styles with a blank line, and results of every kind of line."""
    rng = random.Random(21)
    inputs = [request(n, compact=n % 3 == 0) for n in range(300)]
    inputs.insert(150, b"   \n")
    kinds = ("succeeded", "errored", "canceled", "expired")
    lines = [result(f"req-{n}", kinds[n % 7 % 4], style=n % 11 % 3) for n in range(0, 300, 1)]
    del lines[40:45]  # five requests with no answer
    lines += [
        result("req-7", "succeeded"),  # req-7 errored first: this one takes its place
        result("req-8", "canceled"),  # req-8 succeeded already: set aside
        result("req-8", "succeeded", style=1),  # a second success: set aside
        result("req-unknown", "succeeded"),
        result("req-12 ", "errored"),  # not req-12
        result('req-"quoted"', "errored"),  # an escaped id: read the careful way
        b'{"result": {"type": "errored"}}',
        b"not json at all",
        b"",
        b" \t",
    ]
    rng.shuffle(lines)
    lines.append(result("req-299x", "expired"))  # the last line, without a newline
    write = folder / "in.jsonl"
    write.write_bytes(b"".join(inputs))
    results = folder / "results.jsonl"
    results.write_bytes(b"\n".join(lines))
    return write, results


def both_ways(folder: Path, input_path: Path, results: Path, ranges: Any) -> tuple[Any, Any]:
    quick = quick_order.order(input_path, results, folder / "q.jsonl", folder / "q.err", ranges)
    exact = ordering._order_exactly(
        input_path, results, folder / "x.jsonl", folder / "x.err", ranges
    )
    return quick, exact


@pytest.mark.parametrize(
    "bucket_bytes,largest,parallel",
    [(None, None, None), (2000, 10**9, None), (2000, 0, None), (2000, 10**9, 1), (2000, 0, 1)],
    ids=[
        "one bucket",
        "many buckets",
        "buckets read line by line",
        "two processes",
        "two processes, buckets read line by line",
    ],
)
def test_the_quick_way_writes_what_the_exact_way_writes(
    tmp_path, monkeypatch, bucket_bytes, largest, parallel
):
    if bucket_bytes is not None:
        monkeypatch.setattr(quick_order, "BUCKET_BYTES", bucket_bytes)
        monkeypatch.setattr(quick_order, "MAX_BUCKET_BYTES", largest)
    if parallel is not None:  # the second half of the results indexed by a forked child
        monkeypatch.setattr(quick_scan, "PARALLEL_BYTES", parallel)
    input_path, results = mixed_files(tmp_path)
    quick, exact = both_ways(tmp_path, input_path, results, [(0, input_path.stat().st_size)])
    assert (tmp_path / "q.jsonl").read_bytes() == (tmp_path / "x.jsonl").read_bytes()
    assert (tmp_path / "q.err").read_bytes() == (tmp_path / "x.err").read_bytes()
    assert quick == exact
    assert (quick.unknown, quick.repeated, quick.missing) == (6, 3, 5)
    assert (tmp_path / "q.err").read_bytes().endswith(b'"req-299x","result":{"type":"expired"}}\n')


def test_the_quick_way_follows_a_parts_ranges(tmp_path):
    input_path, results = mixed_files(tmp_path)
    part = plan_parts(input_path, max_requests=120, max_bytes=10**6)[1]
    quick, exact = both_ways(tmp_path, input_path, results, [(part.start, part.end)])
    assert (tmp_path / "q.jsonl").read_bytes() == (tmp_path / "x.jsonl").read_bytes()
    assert (tmp_path / "q.err").read_bytes() == (tmp_path / "x.err").read_bytes()
    assert quick == exact and quick.placed > 100


def weak_hash(ids: Any) -> Any:
    """A hash that collides on purpose: the last byte of the id."""
    import numpy as np

    return np.array([custom_id[-1:] or b"\0" for custom_id in ids.tolist()], dtype="S1").view(
        np.uint8
    ).astype(np.uint64) << np.uint64(56)


def test_a_result_whose_hash_is_an_input_ids_is_placed_only_if_the_ids_are_equal(
    tmp_path, monkeypatch
):
    """Correctness never rests on the hash: with one that collides, the bytes decide."""
    monkeypatch.setattr(quick_inputs, "_hashes", weak_hash)
    input_path = tmp_path / "in.jsonl"
    input_path.write_bytes(b"".join(request(n) for n in range(10)))  # last bytes all differ
    results = tmp_path / "results.jsonl"
    lines = [result(f"req-{n}", "succeeded") + b"\n" for n in (3, 1)]
    lines.insert(1, result("xyz-3", "succeeded") + b"\n")  # the hash of req-3, not its id
    lines.append(result("other-1", "succeeded") + b"\n")  # req-1's hash, a longer id
    results.write_bytes(b"".join(lines))
    quick, exact = both_ways(tmp_path, input_path, results, [(0, input_path.stat().st_size)])
    assert (tmp_path / "q.jsonl").read_bytes() == lines[2] + lines[0]
    assert (tmp_path / "q.err").read_bytes() == lines[1] + lines[3]
    assert quick == exact and (quick.placed, quick.unknown) == (2, 2)


def test_input_ids_that_share_a_hash_go_the_exact_way(tmp_path, monkeypatch):
    monkeypatch.setattr(quick_inputs, "_hashes", weak_hash)
    input_path = tmp_path / "in.jsonl"
    input_path.write_bytes(request(1) + request(11))  # both end in "1"
    assert input_path.stat().st_size == 137
    results = tmp_path / "results.jsonl"
    results.write_bytes(result("req-11", "errored") + b"\n" + result("req-1", "succeeded") + b"\n")
    with pytest.raises(quick_order.Fallback):
        quick_order.order(input_path, results, tmp_path / "q.jsonl", tmp_path / "q.err", [(0, 137)])
    assert not (tmp_path / "q.jsonl").exists() and not (tmp_path / "q.err").exists()
    done = ordering.order_results(input_path, results, tmp_path / "o.jsonl", tmp_path / "o.err")
    assert (tmp_path / "o.jsonl").read_bytes() == result("req-1", "succeeded") + b"\n"
    assert (tmp_path / "o.err").read_bytes() == result("req-11", "errored") + b"\n"
    assert (done.placed, done.unknown, done.missing) == (2, 0, 0)


def test_the_cli_starts_without_numpy():
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, batchledger.cli, batchledger.ordering; print('numpy' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == "False"


@pytest.mark.parametrize("parallel", [None, 1], ids=["one process", "two processes"])
def test_a_bad_input_line_is_named_wherever_it_is(tmp_path, monkeypatch, parallel):
    if parallel is not None:
        monkeypatch.setattr(quick_scan, "PARALLEL_BYTES", parallel)
    results = tmp_path / "results.jsonl"
    results.write_bytes(result("req-1", "succeeded") + b"\n")
    lines = [request(n) for n in range(40)]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines[:30]) + b'{"params": {}}\n' + b"".join(lines[30:]))
    with pytest.raises(ordering.UsageError, match=r"^line 31 of bad\.jsonl has no custom_id"):
        ordering.order_results(bad, results, tmp_path / "o.jsonl", tmp_path / "o.err")
    twice = tmp_path / "twice.jsonl"
    twice.write_bytes(b"".join(lines[:35]) + lines[3] + b"".join(lines[35:]))
    with pytest.raises(
        ordering.UsageError,
        match=r"^line 36 of twice\.jsonl repeats the custom_id 'req-3' of line 4",
    ):
        ordering.order_results(twice, results, tmp_path / "o.jsonl", tmp_path / "o.err")
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.err").exists()


@pytest.mark.parametrize("parallel", [None, 1], ids=["one process", "two processes"])
def test_lines_longer_than_a_block_or_its_slots(tmp_path, monkeypatch, parallel):
    """A block is read into a reused buffer (quick_scan.line_blocks), which grows for a line
    longer than it; a line longer than the bytes after a block (TAIL_BYTES) is spilled
    without a slot. The bytes are the exact way's either way."""
    monkeypatch.setattr(quick_scan, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(quick_scan.line_blocks, "__defaults__", (4096,))
    if parallel is not None:
        monkeypatch.setattr(quick_scan, "PARALLEL_BYTES", parallel)
    input_path = tmp_path / "in.jsonl"
    input_path.write_bytes(b"".join(request(n, compact=n % 2 == 0) for n in range(60)))
    lines = [result(f"req-{n}", ("succeeded", "errored")[n % 3 == 0]) for n in range(60)]
    for n, length in ((5, 10_000), (17, quick_scan.TAIL_BYTES + 10), (30, 3 * 4096)):
        lines[n] = result(f"req-{n}", "succeeded")[:-2] + b', "pad": "' + b"x" * length + b'"}}'
    random.Random(5).shuffle(lines)
    results = tmp_path / "results.jsonl"
    results.write_bytes(b"\n".join(lines) + b"\n")
    quick, exact = both_ways(tmp_path, input_path, results, [(0, input_path.stat().st_size)])
    assert (tmp_path / "q.jsonl").read_bytes() == (tmp_path / "x.jsonl").read_bytes()
    assert (tmp_path / "q.err").read_bytes() == (tmp_path / "x.err").read_bytes()
    assert quick == exact and quick.placed == 60
