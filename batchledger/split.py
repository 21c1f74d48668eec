"""Splitting an input into parts at line boundaries, and reading parts back without copies.

A part is a byte range of the input that ends just after a newline (or at the end of the
file, when the last line has none). Lines are never parsed: newlines are found in C, by
`bytes.find` (memchr) where lines are long and `bytes.count` where they are short, over
large blocks, so planning a 2 GiB input costs little more than one read of it and a fixed
few megabytes of memory, whatever its size or its number of lines.

A part, or the lines a retry sends again, is uploaded straight from the input through
`Segments`: a readable, seekable stream over byte ranges of the file, which the SDK
streams in 64 KiB reads (see `Segments`).
"""

import io
import os
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batchledger.errors import UsageError

if TYPE_CHECKING:
    from batchledger.ledger import InputFile

# Bytes read at once while planning: large enough that the per-block Python work is
# negligible against the read, small enough to stay a few megabytes of memory.
PLAN_BLOCK = 4 * 1024 * 1024
# Under this many newlines left to find in a block, `find` them one by one; over it, halve
# the block with `count` (each halving scans half as much as the last).
FIND_ONE_BY_ONE = 32
# `count` scans a byte at a time (about 1.5-2 GB/s here); `find` uses memchr (several times
# faster) but costs a Python call per line. Blocks whose lines average more than this many
# bytes are walked newline by newline with `find`; denser ones are counted (bench/jobs.py).
SPARSE_LINE_BYTES = 400

_HAS_PREAD = hasattr(os, "pread")  # POSIX


@dataclass(frozen=True)
class Part:
    index: int  # 1-based
    start: int  # byte offset of its first line
    end: int  # byte offset just past its last line (exclusive)
    requests: int  # lines
    first_line: int  # 1-based line number of its first line in the input

    @property
    def size(self) -> int:
        return self.end - self.start


def split_wanted(
    input_: "InputFile", limits: tuple[int, int], max_requests: int | None, max_bytes: int | None
) -> tuple[int, int] | None:
    """The (requests, bytes) each part may hold, or None: the input stays one plain batch.

    An input within the account's limits, with neither --max-requests nor --max-bytes, is
    one batch exactly as before jobs existed.
    """
    within = input_.lines <= limits[0] and input_.size <= limits[1]
    if max_requests is None and max_bytes is None and within:
        return None
    return (
        min(max_requests or limits[0], limits[0]),
        min(max_bytes or limits[1], limits[1]),
    )


def plan_parts(path: Path, *, max_requests: int, max_bytes: int) -> list[Part]:
    """Cut `path` greedily into parts of at most `max_requests` lines and `max_bytes` bytes.

    UsageError for limits below 1, an empty file, or a line (its newline included) longer
    than `max_bytes`.
    """
    if max_requests < 1:
        raise UsageError(f"--max-requests must be at least 1, not {max_requests}")
    if max_bytes < 1:
        raise UsageError(f"--max-bytes must be at least 1, not {max_bytes}")
    planner = _Planner(max_requests, max_bytes)
    block = bytearray(PLAN_BLOCK)
    with path.open("rb", buffering=0) as source:
        while read := source.readinto(block):
            planner.feed(block, read)
            if planner.too_long_line_at is not None:
                _raise_too_long(path, source, planner, max_bytes)
    if planner.end == 0:
        raise UsageError(f"{path.name} is empty: there is no request to send")
    planner.finish()
    return planner.parts


class _Planner:
    """The greedy cut, fed one block at a time; holds only counters, never lines."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.parts: list[Part] = []
        self.end = 0  # bytes fed so far
        self.part_start = 0
        self.part_lines = 0  # complete lines (newline seen) in the part so far
        self.part_cut = 0  # offset just past the part's last newline so far
        self.next_line = 1  # line number of the part's first line
        self.too_long_line_at: int | None = None  # offset of a line over max_bytes
        self.sparse = False  # the lines of the last block were long: walk newlines with find

    def feed(self, block: bytearray, length: int) -> None:
        lines_before = self.lines_seen
        if self.sparse:
            self._feed_sparse(block, length)
        else:
            self._feed_dense(block, length)
        self.sparse = (self.lines_seen - lines_before) * SPARSE_LINE_BYTES < length

    @property
    def lines_seen(self) -> int:
        return self.next_line - 1 + self.part_lines

    def _feed_sparse(self, block: bytearray, length: int) -> None:
        base = self.end
        self.end += length
        find = block.find
        at = 0
        while True:
            room_end = self.part_start + self.max_bytes - base
            limit = min(length, max(at, room_end))
            wanted = self.max_requests - self.part_lines
            lines = 0
            # The one loop per line of this module: kept to a find and two additions.
            while lines < wanted and (newline := find(b"\n", at, limit)) >= 0:
                lines += 1
                at = newline + 1
            if lines:
                self.part_lines += lines
                self.part_cut = base + at
            if lines == wanted:
                self._close(self.part_cut)
                continue
            if room_end >= length:
                return  # the part has room past this block: the next block (or EOF) decides
            if self.part_cut == self.part_start:
                self.too_long_line_at = self.part_start
                return
            self._close(self.part_cut)

    def _feed_dense(self, block: bytearray, length: int) -> None:
        base = self.end
        self.end += length
        at = 0  # where in the block the current part's unseen bytes begin
        while at < length:
            # Newlines at block positions below `room_end` end lines that fit in this part.
            room_end = self.part_start + self.max_bytes - base
            limit = min(length, max(at, room_end))
            wanted = self.max_requests - self.part_lines
            found = block.count(b"\n", at, limit)
            if found >= wanted:
                newline = _nth_newline(block, wanted, at, limit)
                self.part_lines += wanted
                self._close(base + newline + 1)
                at = newline + 1
                continue
            if found:
                self.part_lines += found
                self.part_cut = base + block.rfind(b"\n", at, limit) + 1
            if room_end >= length:
                return  # the part has room past this block: the next block (or EOF) decides
            # The next line does not fit: the part ends after its last whole line.
            if self.part_cut == self.part_start:
                self.too_long_line_at = self.part_start
                return
            # The new part may begin in an earlier block; no newline lies between there and here.
            at = max(0, self.part_cut - base)
            self._close(self.part_cut)

    def finish(self) -> None:
        """The end of the file: what is left is the last part (its last line may lack a newline)."""
        if self.end > self.part_start:
            if self.end > self.part_cut:
                self.part_lines += 1
            self._close(self.end)

    def _close(self, end: int) -> None:
        self.parts.append(
            Part(len(self.parts) + 1, self.part_start, end, self.part_lines, self.next_line)
        )
        self.next_line += self.part_lines
        self.part_start = self.part_cut = end
        self.part_lines = 0


def _nth_newline(block: bytearray, n: int, low: int, high: int) -> int:
    """The position of the n-th newline (1-based) in block[low:high], which has at least n."""
    while n > FIND_ONE_BY_ONE:
        middle = (low + high) // 2
        below = block.count(b"\n", low, middle)
        if below >= n:
            high = middle
        else:
            n -= below
            low = middle
    position = low - 1
    for _ in range(n):
        position = block.find(b"\n", position + 1, high)
    return position


def _raise_too_long(path: Path, source: io.FileIO, planner: _Planner, max_bytes: int) -> None:
    """The line at `planner.too_long_line_at` is longer than max_bytes: say which, and how long."""
    start = planner.too_long_line_at
    assert start is not None
    source.seek(start)
    length = 0
    while chunk := source.read(PLAN_BLOCK):
        newline = chunk.find(b"\n")
        if newline >= 0:
            length += newline + 1
            break
        length += len(chunk)
    raise UsageError(
        f"line {planner.next_line} of {path.name} is {length} bytes, "
        f"more than --max-bytes {max_bytes}"
    )


class Segments(io.RawIOBase):
    """A readable, seekable binary stream over byte ranges of a file, one after another.

    For uploads with no copy on disk: `files.create(file=(name, Segments(path, ranges)))`.
    How the SDK (openai, over httpx2) sends a file object, and what this class does for it:

    - httpx2's multipart `FileField` asks the length first (`peek_filelike_length`):
      `fileno()` then `fstat`, else `tell()` + `seek(0, SEEK_END)`. `fileno()` therefore
      raises (io.UnsupportedOperation), or the whole file's size would be announced; the
      seek to the end gives the ranges' total, so the request has a Content-Length.
    - It then `seek(0)`s and sends `read(65536)` chunks until an empty one: memory holds a
      chunk or two, whatever the ranges' size. Each read is one `os.pread` (where there is
      one), filled across ranges, so short ranges (a retry's lines) still go in full chunks.
    - openai retries a request only if every file object is `seekable()` with `tell`/`seek`
      (`_RequestBodyReplay`), rewinding it first: this stream is.
    """

    def __init__(self, path: Path, ranges: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self._file = path.open("rb", buffering=0)
        size = os.fstat(self._file.fileno()).st_size
        self._starts: list[int] = []  # file offset of each range
        self._ends: list[int] = []
        self._offsets: list[int] = []  # stream offset where each range begins
        self._length = 0
        for start, end in ranges:
            if not 0 <= start <= end <= size:
                self._file.close()
                raise ValueError(f"range {start}-{end} is not within {path} ({size} bytes)")
            if end > start and self._offsets and self._ends[-1] == start:
                self._ends[-1] = end  # adjacent to the last range: one read serves both
                self._length += end - start
            elif end > start:
                self._starts.append(start)
                self._ends.append(end)
                self._offsets.append(self._length)
                self._length += end - start
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self._length

    def tell(self) -> int:
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_open()
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        elif whence == os.SEEK_END:
            position = self._length + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (fewer only at the end), read across ranges as needed."""
        self._check_open()
        if size is None or size < 0:
            return self.readall()
        pieces = []
        left = min(size, self._length - self._position)
        while left > 0:
            start, room = self._locate()
            piece = self._read_at(start, min(left, room))
            if not piece:  # the file shrank under us
                raise OSError(f"{self._file.name} ended before the range at {start}")
            pieces.append(piece)
            self._position += len(piece)
            left -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _read_at(self, start: int, size: int) -> bytes:
        if _HAS_PREAD:  # one system call, and no shared file position
            return os.pread(self._file.fileno(), size, start)
        self._file.seek(start)
        return self._file.read(size)

    def readinto(self, buffer: "memoryview | bytearray") -> int:  # type: ignore[override]
        self._check_open()
        view = memoryview(buffer).cast("B")
        size = min(len(view), self._length - self._position)
        done = 0
        while done < size:
            start, room = self._locate()
            self._file.seek(start)
            read = self._file.readinto(view[done : done + min(size - done, room)])
            if not read:
                raise OSError(f"{self._file.name} ended before the range at {start}")
            self._position += read
            done += read
        return done

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(PLAN_BLOCK):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()

    def _locate(self) -> tuple[int, int]:
        """The file offset of the current position, and the bytes left in its range."""
        index = bisect_right(self._offsets, self._position) - 1
        into = self._position - self._offsets[index]
        range_end = self._offsets[index + 1] if index + 1 < len(self._offsets) else self._length
        return self._starts[index] + into, range_end - self._position

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed Segments")
