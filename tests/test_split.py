"""Splitting an input at line boundaries (plan_parts) and uploading byte ranges (Segments)."""

import io
import os
import random
import threading
import tracemalloc

import pytest
from openai import OpenAI

from batchledger import inputs, split
from batchledger.emulator import EmulatorServer
from batchledger.errors import UsageError
from batchledger.split import Part, Segments, plan_parts


def greedy(data: bytes, max_requests: int, max_bytes: int) -> list[Part]:
    """The same cut, the obvious way: line by line."""
    parts: list[Part] = []
    start = offset = lines = 0
    line_number = first = 1
    for line in data.splitlines(keepends=True):
        assert len(line) <= max_bytes
        if lines == max_requests or offset + len(line) - start > max_bytes:
            parts.append(Part(len(parts) + 1, start, offset, lines, first))
            start, lines, first = offset, 0, line_number
        offset += len(line)
        lines += 1
        line_number += 1
    parts.append(Part(len(parts) + 1, start, offset, lines, first))
    return parts


def random_input(rng: random.Random, lines: int, longest: int, newline_at_end: bool) -> bytes:
    text = b"".join(
        b"x" * rng.randint(0, longest - 1) + b"\n" for _ in range(lines)
    )  # each line at most `longest` bytes, its newline included
    return text if newline_at_end else text[:-1]


@pytest.mark.parametrize("sparse_line_bytes", [0, 10**9, 8])
@pytest.mark.parametrize("block", [1, 7, 64, 4096])
def test_plan_matches_the_line_by_line_cut(tmp_path, monkeypatch, block, sparse_line_bytes):
    monkeypatch.setattr(split, "PLAN_BLOCK", block)
    monkeypatch.setattr(split, "SPARSE_LINE_BYTES", sparse_line_bytes)  # dense, sparse, mixed
    monkeypatch.setattr(split, "FIND_ONE_BY_ONE", 2)  # exercise the halving search too
    rng = random.Random(block)
    path = tmp_path / "in.jsonl"
    for _ in range(60):
        longest = rng.randint(1, 40)
        data = random_input(rng, rng.randint(1, 200), longest, rng.random() < 0.7)
        if not data:
            continue
        path.write_bytes(data)
        max_requests = rng.randint(1, 50)
        max_bytes = rng.randint(longest, 400)
        parts = plan_parts(path, max_requests=max_requests, max_bytes=max_bytes)
        assert parts == greedy(data, max_requests, max_bytes), (data, max_requests, max_bytes)
        assert b"".join(data[p.start : p.end] for p in parts) == data
        assert sum(p.requests for p in parts) == len(data.splitlines())
        assert all(p.size <= max_bytes and p.requests <= max_requests for p in parts)


@pytest.mark.parametrize("sparse_line_bytes", [0, 10**9, 8])
@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_create_counts_the_lines_planning_would(tmp_path, monkeypatch, chunk, sparse_line_bytes):
    """`inputs.count_lines` (create's count, against the account's request limit) walks
    newlines the way planning does, with find or count by the density of each chunk."""
    monkeypatch.setattr(inputs, "COUNT_CHUNK_BYTES", chunk)
    monkeypatch.setattr(inputs, "SPARSE_LINE_BYTES", sparse_line_bytes)  # dense, sparse, mixed
    rng = random.Random(chunk)
    path = tmp_path / "in.jsonl"
    for _ in range(60):
        data = random_input(rng, rng.randint(1, 200), rng.randint(1, 40), rng.random() < 0.7)
        if not data:
            continue
        path.write_bytes(data)
        hashed = inputs.hash_input(path, "in.jsonl", count=False)
        assert inputs.count_lines(hashed, "in.jsonl").lines == len(data.splitlines()), data


def test_parts_end_after_a_newline_or_at_the_end(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"a\nbb\nccc\ndddd")
    parts = plan_parts(path, max_requests=2, max_bytes=100)
    assert [(p.start, p.end, p.requests, p.first_line) for p in parts] == [
        (0, 5, 2, 1),
        (5, 13, 2, 3),
    ]
    assert [p.size for p in parts] == [5, 8]


def test_a_line_exactly_max_bytes_long_fits(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"1234\n1234\n12345")  # the last line has no newline: 5 bytes too
    parts = plan_parts(path, max_requests=10, max_bytes=5)
    assert [(p.start, p.end) for p in parts] == [(0, 5), (5, 10), (10, 15)]


def test_within_the_limits_is_one_part(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"custom_id": "a"}\n' * 10)
    assert plan_parts(path, max_requests=10, max_bytes=190) == [Part(1, 0, 190, 10, 1)]


def test_a_line_longer_than_max_bytes_is_named(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"a\n" * 6 + b"x" * 299 + b"\n" + b"b\n")
    with pytest.raises(UsageError) as caught:
        plan_parts(path, max_requests=100, max_bytes=200)
    assert caught.value.message == "line 7 of in.jsonl is 300 bytes, more than --max-bytes 200"
    assert caught.value.exit_code == 2


def test_a_last_line_without_newline_longer_than_max_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(split, "PLAN_BLOCK", 8)
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"a\n" + b"y" * 30)
    with pytest.raises(UsageError, match=r"line 2 of in\.jsonl is 30 bytes, more than"):
        plan_parts(path, max_requests=100, max_bytes=20)


@pytest.mark.parametrize(
    ("requests", "bytes_", "message"),
    [
        (0, 10, "--max-requests must be at least 1, not 0"),
        (10, 0, "--max-bytes must be at least 1, not 0"),
        (-1, 10, "--max-requests must be at least 1, not -1"),
    ],
)
def test_limits_below_one_are_usage_errors(tmp_path, requests, bytes_, message):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"a\n")
    with pytest.raises(UsageError, match=message):
        plan_parts(path, max_requests=requests, max_bytes=bytes_)


def test_an_empty_input_is_a_usage_error(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"")
    with pytest.raises(UsageError, match=r"in\.jsonl is empty"):
        plan_parts(path, max_requests=1, max_bytes=1)


def test_planning_holds_no_lines(tmp_path):
    """Memory is the read block, whatever the input's size."""
    path = tmp_path / "in.jsonl"
    with path.open("wb") as out:
        for _ in range(40):
            out.write(b'{"custom_id": "r"}\n' * 50_000)  # 38 MB, 2,000,000 lines
    tracemalloc.start()
    try:
        parts = plan_parts(path, max_requests=50_000, max_bytes=10**9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(parts) == 40
    assert peak < split.PLAN_BLOCK + 1024 * 1024


# --- Segments -----------------------------------------------------------------------------


def test_segments_reads_its_ranges_in_order(tmp_path):
    path = tmp_path / "in.jsonl"
    data = bytes(range(256)) * 4
    path.write_bytes(data)
    ranges = [(10, 20), (20, 25), (100, 100), (500, 1024), (0, 3)]
    expected = b"".join(data[a:b] for a, b in ranges)
    with Segments(path, ranges) as stream:
        assert len(stream) == len(expected)
        assert stream.read() == expected
        assert stream.read(5) == b""
        stream.seek(0)
        chunks = []
        while chunk := stream.read(7):
            assert len(chunk) == 7 or stream.tell() == len(expected)
            chunks.append(chunk)
        assert b"".join(chunks) == expected
        stream.seek(12)
        assert stream.tell() == 12
        assert stream.read(6) == expected[12:18]
        assert stream.seek(-4, os.SEEK_END) == len(expected) - 4
        assert stream.read() == expected[-4:]
        stream.seek(3)
        buffer = bytearray(50)
        assert stream.readinto(buffer) == 50
        assert bytes(buffer) == expected[3:53]
    with Segments(path, ranges) as stream:
        assert io.BufferedReader(stream).read() == expected


def test_segments_has_no_fileno_so_its_length_is_its_ranges(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"0123456789")
    with Segments(path, [(2, 4)]) as stream:
        with pytest.raises(io.UnsupportedOperation):
            stream.fileno()
        assert stream.seekable() and stream.readable() and not stream.writable()


def test_segments_refuses_ranges_outside_the_file(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"0123456789")
    for bad in [(5, 11), (-1, 3), (6, 5)]:
        with pytest.raises(ValueError, match="is not within"):
            Segments(path, [bad])


def test_segments_closed(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"0123456789")
    stream = Segments(path, [(0, 10)])
    stream.close()
    with pytest.raises(ValueError, match="closed"):
        stream.read(1)


def test_sdk_uploads_segments_streamed_with_a_content_length(tmp_path):
    """The SDK sends a multi-range Segments in 64 KiB reads, with its length announced."""
    path = tmp_path / "in.jsonl"
    lines = [b'{"custom_id": "r%d", "body": "%s"}\n' % (n, b"z" * (n % 500)) for n in range(20_000)]
    path.write_bytes(b"".join(lines))
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    chosen = [n for n in range(len(lines)) if n % 7 in (0, 1, 5)]  # many ranges, some adjacent
    ranges = [(offsets[n], offsets[n + 1]) for n in chosen]
    expected = b"".join(lines[n] for n in chosen)

    reads: list[int] = []

    class Watched(Segments):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            reads.append(len(data))
            return data

    with EmulatorServer(host="127.0.0.1", port=0) as server:
        headers: dict[str, str] = {}
        client = OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        original_send = client._client.send

        def send(request, **kwargs):  # type: ignore[no-untyped-def]
            headers.update(request.headers)
            return original_send(request, **kwargs)

        client._client.send = send  # type: ignore[method-assign]
        with Watched(path, ranges) as stream:
            uploaded = client.files.create(file=("in.part1of1.jsonl", stream), purpose="batch")
        stored = server.state.files[uploaded.id].path.read_bytes()
    assert stored == expected
    assert uploaded.bytes == len(expected)
    assert "content-length" in headers and "transfer-encoding" not in headers
    assert max(reads) <= 64 * 1024
    assert sum(reads) == len(expected)


def test_segments_read_from_two_threads_at_once_each_with_its_own(tmp_path):
    """Each upload opens its own Segments; they share nothing but the path."""
    path = tmp_path / "in.jsonl"
    data = os.urandom(1 << 20)
    path.write_bytes(data)
    results: dict[int, bytes] = {}

    def read(index: int, start: int, end: int) -> None:
        with Segments(path, [(start, end)]) as stream:
            results[index] = stream.read()

    threads = [
        threading.Thread(target=read, args=(i, i * 100_000, i * 100_000 + 300_000))
        for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i] == data[i * 100_000 : i * 100_000 + 300_000] for i in range(3))


def test_a_part_of_a_planned_input_uploads_as_its_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(b'{"custom_id": "r%d"}\n' % n for n in range(100)) + b'{"x": 1}')
    parts = plan_parts(path, max_requests=30, max_bytes=10_000)
    assert [p.requests for p in parts] == [30, 30, 30, 11]
    with EmulatorServer(host="127.0.0.1", port=0) as server:
        client = OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        data = path.read_bytes()
        for part in parts:
            with Segments(path, [(part.start, part.end)]) as stream:
                name = f"in.part{part.index}of{len(parts)}.jsonl"
                uploaded = client.files.create(file=(name, stream), purpose="batch")
            stored = server.state.files[uploaded.id].path.read_bytes()
            assert stored == data[part.start : part.end]
