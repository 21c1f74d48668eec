"""The quick way to put Anthropic's results in input order (ordering.order_results): numpy.

Imported by `order_results` only (numpy costs every command 0.1 s and 12 MB at start-up).
Whatever it cannot be sure of, it leaves to the exact way (SQLite, in ordering.py) by
raising `Fallback`, always before either target is touched.

1. The input: each line's custom_id (read as ordering's regexes read it, with no Python
   code per line for lines that begin as json.dumps or the API write them: numpy finds
   the lines, quotes and backslashes, and reads the bytes as overlapping 8-byte words),
   a 64-bit hash of it (`_hashes`) and the id itself (a fixed-width numpy bytes array).
   The hashes are sorted once, with a directory on their top bits; two lines with one
   hash (the same custom_id, or a collision) are left to the exact way, which names
   repeated lines.
2. The results, read once in blocks: each line's custom_id and type the same way, its
   hash looked up, the match confirmed by comparing the ids themselves (correctness never
   rests on a hash). Each line's input line, type, offset, size and place in its bucket go
   to arrays in files (memmap), and the line itself is appended, in input order with the
   others of its block, to one of K bucket files by its input line's range (K = the
   results' size / BUCKET_BYTES).
3. Each bucket, read whole (about BUCKET_BYTES), has its lines put in input order and
   written to the two targets; the lines that take no place are read back from the
   results file in the order they came and go to the end of the errors file.

Past PARALLEL_BYTES, the input and then the results are each read by two processes at
once: the second half by a forked child, which writes its arrays (and bucket files) to
the temporary folder; if it fails, this process reads that half itself.

Memory: the per-line arrays (about 70 bytes a line: hashes, ids, positions) and a bucket
or two, whatever the results' size; the files are read and written in large blocks.
"""

import itertools
import json
import os
import queue
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchledger.inline import line_blocks
from batchledger.ordering import (
    _BLANK,
    Ordered,
    _input_id,
    _outcome,
    _Targets,
)
from batchledger.savefile import BATCH_BYTES
from batchledger.split import Segments

BUCKET_BYTES = 4 * 1024 * 1024  # result bytes per bucket, read whole when it is written
BUCKET_BUFFER = 64 * 1024  # each bucket file's write buffer
MAX_BUCKET_BYTES = 4 * BUCKET_BYTES  # a larger bucket is read line by line
MAX_BUCKETS = 400  # open files at once (and < 2**15); past that, buckets grow
PARALLEL_BYTES = 32 * 1024 * 1024  # results past this: two processes index them at once
MAX_ID_BYTES = 256  # a longer custom_id in the input: the exact way
_PAD = 24  # bytes past a block's end that _follows may read (zeros: in no pattern)
WRITE_LINES = 2048  # lines joined into one write (the GIL is held that long)

# How the API (compact) and json.dumps (", " and ": ") begin a line: custom_id first; a
# result's type next.
_INPUT_FORMS = ((b'{"custom_id": "', b'"'), (b'{"custom_id":"', b'"'))
_RESULT_FORMS = (
    (b'{"custom_id":"', b'","result":{"type":"'),
    (b'{"custom_id": "', b'", "result": {"type": "'),
)
_KINDS = (b'succeeded"', b'errored"', b'canceled"', b'expired"')
_QUOTE, _BACKSLASH, _NEWLINE = ord('"'), ord("\\"), ord("\n")

Ints = NDArray[np.int64]
_GOLDEN, _MIX_1, _MIX_2 = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
)


class Fallback(Exception):
    """The quick way cannot be sure here: the exact way orders these files."""


def order(
    input_path: Path,
    results_path: Path,
    succeeded_target: Path,
    errors_target: Path,
    ranges: Sequence[tuple[int, int]],
) -> Ordered:
    with tempfile.TemporaryDirectory(prefix="batchledger-order-") as name:
        folder = Path(name)
        keys = _InputKeys(input_path, ranges, folder)
        size = results_path.stat().st_size
        buckets = max(1, min(MAX_BUCKETS, -(-size // BUCKET_BYTES)))
        rows = _index_all(results_path, size, keys, folder, buckets)
        inputs = len(keys.ids)
        del keys
        return _write(rows, results_path, inputs, buckets, succeeded_target, errors_target)


def _index_all(path: Path, size: int, keys: "_InputKeys", folder: Path, count: int) -> "_Rows":
    """The results indexed (_index_results); a large file by two processes at once, each
    a half (the second half in a forked child, which has the input's keys as they are)."""
    middle = _line_start(path, size // 2) if size >= PARALLEL_BYTES and _can_fork() else 0
    if not 0 < middle < size:
        return _index_results(path, (0, size), keys, folder, count, "a")
    child = os.fork()
    if child == 0:  # pragma: no cover (measured by its exit code)
        code = 1
        try:
            second = _index_results(path, (middle, size), keys, folder, count, "b")
            second.save_state()
            code = 0
        finally:
            os._exit(code)
    try:
        first = _index_results(path, (0, middle), keys, folder, count, "a")
    except BaseException:
        os.kill(child, signal.SIGTERM)
        raise
    finally:
        _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        second = _Rows.restore(folder, "b")
    else:  # the child could not: its half here
        second = _index_results(path, (middle, size), keys, folder, count, "b")
    first.extend(second, count, max(1, len(keys.ids)))
    return first


def _can_fork() -> bool:
    """Where there is fork, and no other thread whose locks a child could inherit taken."""
    return hasattr(os, "fork") and threading.active_count() == 1


def _line_start(path: Path, offset: int) -> int:
    """The offset of the first line that begins at or after `offset`."""
    with path.open("rb", buffering=0) as source:
        while True:
            chunk = os.pread(source.fileno(), 1024 * 1024, max(0, offset - 1))
            if not chunk:
                return offset
            cut = chunk.find(b"\n")
            if cut >= 0:
                return max(0, offset - 1) + cut + 1
            offset += len(chunk)


def _read_inputs(
    path: Path, ranges: Sequence[tuple[int, int]], folder: Path
) -> tuple[NDArray[np.bytes_], NDArray[np.uint64]]:
    """The ids and hashes of the input's lines; a large input read by two processes at
    once (the second half by a forked child)."""
    total = sum(end - start for start, end in ranges)
    if total >= PARALLEL_BYTES and _can_fork():
        middle = _stream_line_start(path, ranges, total // 2)
    else:
        middle = 0
    if not 0 < middle < total:
        return _read_input(path, ranges)
    first, second = _cut(ranges, middle), _cut(ranges, middle, total)
    child = os.fork()
    if child == 0:  # pragma: no cover (measured by its exit code)
        code = 1
        try:
            ids, hashes = _read_input(path, second)
            np.save(folder / "input-ids.npy", ids)
            np.save(folder / "input-hashes.npy", hashes)
            code = 0
        finally:
            os._exit(code)
    try:
        ids, hashes = _read_input(path, first)
    except BaseException:
        os.kill(child, signal.SIGTERM)
        raise
    finally:
        _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        more_ids, more_hashes = (
            np.load(folder / "input-ids.npy"),
            np.load(folder / "input-hashes.npy"),
        )
    else:  # the child could not (a line without custom_id...): its half here, to say why
        more_ids, more_hashes = _read_input(path, second)
    return np.concatenate([ids, more_ids]), np.concatenate([hashes, more_hashes])


def _read_input(
    path: Path, ranges: Sequence[tuple[int, int]]
) -> tuple[NDArray[np.bytes_], NDArray[np.uint64]]:
    hashes: list[NDArray[np.uint64]] = []
    ids: list[NDArray[np.bytes_]] = []
    with Segments(path, ranges) as stream:
        for position, block in line_blocks(stream):
            if b"\x00" in block:
                raise Fallback  # an id with a NUL byte: numpy's bytes would drop it
            found = _input_ids(block)
            if found is None:
                found = _input_ids_slowly(path, ranges, position, block)
            if found.dtype.itemsize > MAX_ID_BYTES:
                raise Fallback
            hashes.append(_hashes(found))
            ids.append(found)
    return (
        np.concatenate(ids) if ids else np.zeros(0, dtype="S1"),
        np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64),
    )


def _stream_line_start(path: Path, ranges: Sequence[tuple[int, int]], position: int) -> int:
    """Where the first line at or after `position` of the ranges' stream begins."""
    with Segments(path, ranges) as stream:
        stream.seek(max(0, position - 1))
        start = stream.tell()
        while chunk := stream.read(1024 * 1024):
            cut = chunk.find(b"\n")
            if cut >= 0:
                return start + cut + 1
            start += len(chunk)
    return start


def _cut(
    ranges: Sequence[tuple[int, int]], begin: int, end: int | None = None
) -> list[tuple[int, int]]:
    """The file ranges of the stream's [begin, end) (from 0 to begin, if end is None)."""
    if end is None:
        begin, end = 0, begin
    cut: list[tuple[int, int]] = []
    position = 0
    for start, stop in ranges:
        low, high = max(begin, position), min(end, position + stop - start)
        if low < high:
            cut.append((start + low - position, start + high - position))
        position += stop - start
    return cut


class _InputKeys:
    """The input's custom_ids: sorted hashes, where each comes from, the ids themselves."""

    def __init__(self, path: Path, ranges: Sequence[tuple[int, int]], folder: Path) -> None:
        self.ids, every = _read_inputs(path, ranges, folder)
        self.where: Ints = np.argsort(every)  # any order of equal hashes: they go the exact way
        self.hashes: NDArray[np.uint64] = every[self.where]
        del every
        if len(self.hashes) > 1 and bool(np.any(self.hashes[1:] == self.hashes[:-1])):
            raise Fallback  # a custom_id repeated (the exact way names the lines) or a collision
        # Where the hashes of each value of their top bits begin (about one hash each): a
        # look-up reads two or three places, where a binary search reads twenty.
        bits = max(1, len(self.hashes).bit_length() - 1)
        self.shift = np.uint64(64 - bits)
        self.directory: Ints = np.zeros((1 << bits) + 1, dtype=np.int64)
        np.cumsum(
            np.bincount(self.hashes >> self.shift, minlength=1 << bits), out=self.directory[1:]
        )

    def lookup(self, ids: NDArray[np.bytes_], known: NDArray[np.bool_]) -> Ints:
        """The input line of each id (-1: none), confirmed byte for byte."""
        count = len(self.hashes)
        if count == 0 or len(ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        hashes = _hashes(ids)
        top = hashes >> self.shift
        at, end = self.directory[top], self.directory[top + 1]
        moving = np.flatnonzero(at < end)
        while len(moving):  # past the smaller hashes of the same top bits
            moving = moving[self.hashes[at[moving]] < hashes[moving]]
            at[moving] += 1
            moving = moving[at[moving] < end[moving]]
        at = np.minimum(at, count - 1)
        line = self.where[at]
        same = (self.hashes[at] == hashes) & known
        if ids.dtype.itemsize > self.ids.dtype.itemsize:
            # cut to the input's width, a longer id could look equal: it is in no input line
            lengths = np.char.str_len(ids)
            same &= lengths <= self.ids.dtype.itemsize
            ids = ids.astype(self.ids.dtype)  # cuts; only ids short enough are compared
        same &= ids == self.ids[line]
        return np.where(same, line, -1)


def _hashes(ids: NDArray[np.bytes_]) -> NDArray[np.uint64]:
    """A 64-bit hash of each id, eight bytes at a time (splitmix64's mixing): the same for
    the same bytes whatever the array's width, since an id has no NUL byte (its padding
    words, all zero, are skipped). Equal hashes are never taken for equal ids."""
    width = ids.dtype.itemsize
    if width % 8:
        ids = ids.astype(f"S{width + 8 - width % 8}")
    words = ids.view(np.uint64).reshape(len(ids), -1)
    hashes = np.full(len(ids), _GOLDEN, dtype=np.uint64)
    for column in range(words.shape[1]):
        word = words[:, column]
        mixed = hashes ^ word
        mixed ^= mixed >> np.uint64(30)
        mixed *= _MIX_1
        mixed ^= mixed >> np.uint64(27)
        mixed *= _MIX_2
        mixed ^= mixed >> np.uint64(31)
        hashes = np.where(word != 0, mixed, hashes)
    return hashes


def _lines(data: NDArray[np.uint8], end: int) -> tuple[Ints, Ints]:
    """(start, end) of each line of data[:end], which ends with a newline; end excludes it."""
    ends = np.flatnonzero(data[:end] == _NEWLINE).astype(np.int64)
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return starts, ends


def _follows(words: NDArray[np.uint64], at: Ints, expected: bytes) -> NDArray[np.bool_]:
    """Whether the bytes at each position are `expected`: eight bytes at a time."""
    at = np.minimum(at, len(words) - _PAD)  # past the end: padding, which no pattern has
    fits = np.ones(len(at), dtype=bool)
    for first in range(0, len(expected), 8):
        chunk = expected[first : first + 8]
        value = np.uint64(int.from_bytes(chunk, "little"))
        if len(chunk) == 8:
            fits &= words[at + first] == value
        else:
            mask = np.uint64((1 << (8 * len(chunk))) - 1)
            fits &= (words[at + first] & mask) == value
    return fits


class _Block:
    """A block of whole lines as numpy sees it: its bytes, where each line begins and
    ends (its newline), where its quotes and backslashes are."""

    def __init__(self, block: bytes, end: int) -> None:
        self.data: NDArray[np.uint8] = np.frombuffer(block, dtype=np.uint8)
        self.words = _words(block)
        self.starts, self.ends = _lines(self.data, end)
        self.quotes = np.flatnonzero(self.data == _QUOTE)
        self.slashes = np.flatnonzero(self.data == _BACKSLASH) if b"\\" in block else None

    def heads(self, forms: Sequence[tuple[bytes, bytes]]) -> tuple[Any, Ints, Ints, Ints]:
        """For each line: whether it begins with a form's prefix, then a string with no
        backslash closed on the same line, then the form's `after` (from that quote on);
        where the string begins, where it ends (its quote), what follows `after`."""
        count = len(self.starts)
        good = np.zeros(count, dtype=bool)
        begin = np.zeros(count, dtype=np.int64)
        close = np.zeros(count, dtype=np.int64)
        then = np.zeros(count, dtype=np.int64)
        if len(self.quotes) == 0:
            return good, begin, close, then
        for prefix, after in forms:
            todo = np.flatnonzero(~good)
            if len(todo) == 0:
                break
            at = self.starts[todo] + len(prefix)
            fits = _follows(self.words, self.starts[todo], prefix)
            quote = self.quotes[np.minimum(np.searchsorted(self.quotes, at), len(self.quotes) - 1)]
            fits &= (quote >= at) & (quote < self.ends[todo])
            if self.slashes is not None:
                fits &= np.searchsorted(self.slashes, quote) == np.searchsorted(self.slashes, at)
            fits &= _follows(self.words, quote, after)
            chosen = todo[fits]
            good[chosen] = True
            begin[chosen], close[chosen] = at[fits], quote[fits]
            then[chosen] = quote[fits] + len(after)
        return good, begin, close, then


def _words(block: bytes) -> NDArray[np.uint64]:
    """The eight bytes that begin at each position of the block (little-endian; past its
    end, zeros): overlapping words, one per byte, read by one fancy index per pattern."""
    padded = block + bytes(_PAD + 8)
    words: NDArray[np.uint64] = np.ndarray(
        shape=(len(block) + _PAD,), dtype="<u8", buffer=padded, strides=(1,)
    )
    return words


def _gather(words: NDArray[np.uint64], begin: Ints, close: Ints) -> NDArray[np.bytes_]:
    """The bytes [begin, close) of each line, as a fixed-width numpy bytes array."""
    lengths = close - begin
    count = max(1, -(-int(lengths.max()) // 8)) if len(lengths) else 1
    table = np.empty((len(begin), count), dtype=np.uint64)
    for column in range(count):
        kept = np.clip(lengths - 8 * column, 0, 8)
        mask = np.where(
            kept == 8,
            np.uint64(0xFFFF_FFFF_FFFF_FFFF),
            (np.uint64(1) << (8 * np.minimum(kept, 7)).astype(np.uint64)) - np.uint64(1),
        )
        table[:, column] = words[np.minimum(begin + 8 * column, len(words) - 1)] & mask
    return table.view(f"S{8 * count}").reshape(len(begin))


def _input_ids(block: bytes) -> NDArray[np.bytes_] | None:
    """The custom_id of each line of a block whose lines all begin as json.dumps or the
    API write them (what _INPUT_HEAD reads from those lines); None for another block."""
    if not block.endswith(b"\n"):
        return None  # a last line with no newline: read line by line
    lines = _Block(block, len(block))
    good, begin, close, _ = lines.heads(_INPUT_FORMS)
    if not bool(good.all()):
        return None
    return _gather(lines.words, begin, close)


def _input_ids_slowly(
    path: Path, ranges: Sequence[tuple[int, int]], position: int, block: bytes
) -> NDArray[np.bytes_]:
    """As ordering._add_inputs reads a block line by line (UsageError: a line without id)."""
    ids = []
    offset = position
    for line in block.split(b"\n"):
        if line.strip(_BLANK):
            found = _input_id(path, ranges, offset, line)
            if b"\x00" in found:
                raise Fallback
            ids.append(found)
        offset += len(line) + 1
    return np.array(ids, dtype=f"S{max(1, max(map(len, ids), default=1))}")


class _Rows:
    """Per result line, in the order they came: input line (-1: none), succeeded, where,
    and where the line is in its bucket (-1: in none). Bucket `n`'s lines are in the
    files `parts[0]-n`, then `parts[1]-n`... one after the other."""

    FIELDS = ("line", "ok", "offset", "size", "at")

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.parts = [name]
        self.files = {field: self._path(field).open("wb") for field in self.FIELDS}
        self.last_unended: int | None = None
        self.filled: list[int] = []  # bytes in each bucket

    def _path(self, field: str) -> Path:
        return self.folder / f"{self.parts[0]}-{field}.bin"

    def bucket(self, number: int) -> list[Path]:
        return [self.folder / f"bucket-{part}-{number}" for part in self.parts]

    def add(self, line: Ints, ok: NDArray[np.int8], offset: Ints, size: Ints, at: Ints) -> None:
        arrays: tuple[NDArray[Any], ...] = (line, ok, offset, size, at)
        for out, values in zip(self.files.values(), arrays, strict=True):
            out.write(values.tobytes())

    def close(self) -> None:
        for out in self.files.values():
            out.close()

    def save_state(self) -> None:
        state = {"filled": self.filled, "last_unended": self.last_unended}
        (self.folder / f"{self.parts[0]}.json").write_text(json.dumps(state))

    @classmethod
    def restore(cls, folder: Path, name: str) -> "_Rows":
        rows = cls.__new__(cls)
        rows.folder, rows.parts, rows.files = folder, [name], {}
        state = json.loads((folder / f"{name}.json").read_text())
        rows.filled, rows.last_unended = state["filled"], state["last_unended"]
        return rows

    def extend(self, other: "_Rows", count: int, inputs: int) -> None:
        """Append the rows of the next part of the results file (its buckets follow ours)."""
        shift = np.array(self.filled, dtype=np.int64)
        for field in self.FIELDS:
            data = other._path(field).read_bytes()
            if field == "at" and data:
                at = np.frombuffer(data, dtype=np.int64).copy()
                line = np.frombuffer(other._path("line").read_bytes(), dtype=np.int64)
                placed = at >= 0
                at[placed] += shift[line[placed] * count // inputs]
                data = at.tobytes()
            with self._path(field).open("ab") as out:
                out.write(data)
        self.filled = (shift + np.array(other.filled, dtype=np.int64)).tolist()
        self.last_unended = other.last_unended
        self.parts += other.parts

    def load(self, field: str, dtype: Any) -> Any:
        path = self._path(field)
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=dtype)
        # a plain array over the mapping: numpy's memmap class slows each index down
        return np.asarray(np.memmap(path, dtype=dtype, mode="r"))


def _index_results(
    path: Path, span: tuple[int, int], keys: _InputKeys, folder: Path, count: int, name: str
) -> _Rows:
    """Read the results' span once: index each line, and append it to its bucket file."""
    rows = _Rows(folder, name)
    inputs = max(1, len(keys.ids))
    # A buffer of their own: a block adds a few kB to each bucket, written every few blocks.
    buckets = [
        out.open("wb", buffering=BUCKET_BUFFER)
        for out in (folder / f"bucket-{name}-{n}" for n in range(count))
    ]
    filled = np.zeros(count, dtype=np.int64)  # bytes in each bucket file
    try:
        with Segments(path, [span]) as stream:
            for position, block in line_blocks(stream):
                lines, ids, known, ok, offset, size, unended = _read_block(
                    span[0] + position, block
                )
                if unended is not None:
                    rows.last_unended = unended
                line = keys.lookup(ids, known)
                # By input line, which groups them by bucket too: each block adds a run of
                # lines in input order to each bucket, read in that order when written out.
                placed = np.flatnonzero(line >= 0)
                sequence = placed[np.argsort(line[placed])]
                bucket = line[sequence] * count // inputs
                sizes = size[sequence]
                ends = np.zeros(len(sizes) + 1, dtype=np.int64)
                np.cumsum(sizes, out=ends[1:])
                counts = np.bincount(bucket, minlength=count)
                bounds = np.zeros(count + 1, dtype=np.int64)
                np.cumsum(counts, out=bounds[1:])
                at = np.full(len(line), -1, dtype=np.int64)
                at[sequence] = filled[bucket] + ends[:-1] - ends[bounds[:-1]][bucket]
                filled += ends[bounds[1:]] - ends[bounds[:-1]]
                rows.add(line, ok, offset, size, at)
                chosen = list(map(lines.__getitem__, sequence.tolist()))
                for number, (start, stop) in enumerate(itertools.pairwise(bounds.tolist())):
                    if stop > start:
                        buckets[number].write(b"\n".join(chosen[start:stop]) + b"\n")
    finally:
        for out in buckets:
            out.close()
    rows.filled = filled.tolist()
    rows.close()
    return rows


def _read_block(
    position: int, block: bytes
) -> tuple[list[bytes], Any, Any, Any, Ints, Ints, int | None]:
    """A block's lines (no newline), ids, whether each has one, succeeded, offsets, sizes
    (with the newline the targets give each line), and the offset of a last line with none."""
    end = block.rfind(b"\n") + 1
    if end == len(block) and b"\x00" not in block:
        lines_of = _Block(block, end)
        starts, ends = lines_of.starts, lines_of.ends
        quick = _read_quickly(lines_of)
        if quick is not None:
            ids, ok = quick
            lines = block.split(b"\n")
            lines.pop()
            return (
                lines,
                ids,
                np.ones(len(ids), dtype=bool),
                ok,
                starts + position,
                ends - starts + 1,
                None,
            )
    # line by line, as ordering._add_results does (blank lines are no results)
    lines, found, offsets = [], [], []
    unended = None
    offset = position
    pieces = block[:end].split(b"\n")
    pieces.pop()
    tail = block[end:]
    for piece in pieces:
        if piece.strip(_BLANK):
            lines.append(piece)
            found.append(_outcome(piece))
            offsets.append(offset)
        offset += len(piece) + 1
    if tail.strip(_BLANK):
        lines.append(tail)
        found.append(_outcome(tail))
        offsets.append(offset)
        unended = offset
    names = [custom_id or b"" for custom_id, _ in found]
    # no id, or one with a NUL byte (numpy's bytes would lose it; no input id has one)
    known = np.array([cid is not None and b"\x00" not in cid for cid, _ in found], dtype=bool)
    names = [name if b"\x00" not in name else b"" for name in names]
    ids = np.array(names, dtype=f"S{max(1, max(map(len, names), default=1))}")
    ok = np.array([kind is not None for _, kind in found], dtype=np.int8)
    size = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines)) + 1
    return lines, ids, known, ok, np.array(offsets, dtype=np.int64), size, unended


def _read_quickly(lines: _Block) -> tuple[NDArray[np.bytes_], NDArray[np.int8]] | None:
    """Ids and outcomes of lines that all begin as the API (or json.dumps) writes them:
    what _RESULT_HEAD reads from such a line. None when a line begins otherwise."""
    good, begin, close, kind_at = lines.heads(_RESULT_FORMS)
    if not bool(good.all()):
        return None
    known = np.zeros(len(kind_at), dtype=bool)
    succeeded = _follows(lines.words, kind_at, _KINDS[0])
    known |= succeeded
    for kind in _KINDS[1:]:
        known |= _follows(lines.words, kind_at, kind)
    if not bool(known.all()):
        return None
    return _gather(lines.words, begin, close), succeeded.astype(np.int8)


def _write(
    rows: _Rows,
    results_path: Path,
    inputs: int,
    count: int,
    succeeded_target: Path,
    errors_target: Path,
) -> Ordered:
    line: Ints = rows.load("line", np.int64)
    ok: NDArray[np.int8] = rows.load("ok", np.int8)
    size: Ints = rows.load("size", np.int64)
    at: Ints = rows.load("at", np.int64)
    total = len(line)
    placed = line >= 0
    joined = int(np.count_nonzero(placed))
    later = np.zeros(total, dtype=bool)
    if joined:
        answers = np.bincount(line[placed], minlength=inputs)
        if int(answers.max()) > 1:
            later = _set_aside(line, ok, answers)
        del answers
    repeated = int(np.count_nonzero(later))
    numbers = line * count
    numbers //= max(1, inputs)
    bucket = numbers.astype(np.int16)  # radix-sorted; -1: no bucket
    del numbers
    bucket[~placed] = count
    by_bucket = np.argsort(bucket, kind="stable")
    bounds = np.cumsum(np.bincount(bucket, minlength=count + 1)).tolist()
    del bucket
    buffer = bytearray(min(max(rows.filled, default=0), MAX_BUCKET_BYTES))
    # A bucket's files, once read, are deleted by a thread (0.2 s of unlink for 366 MB).
    done: queue.SimpleQueue[list[Path] | None] = queue.SimpleQueue()
    remover = threading.Thread(target=_remove, args=(done,), name="batchledger-order-rm")
    remover.start()
    try:
        with _Targets(succeeded_target, errors_target) as targets:
            start = 0
            for number in range(count):
                stop = bounds[number]
                members = by_bucket[start:stop]
                start = stop
                if len(members):
                    _write_bucket(
                        rows.bucket(number), members, line, ok, size, at, later, targets, buffer
                    )
                done.put(rows.bucket(number))
            del buffer
            rest = np.flatnonzero(~placed | later)
            if len(rest):
                offset: Ints = rows.load("offset", np.int64)
                _write_rest(results_path, rest, offset, size, rows.last_unended, targets.errors)
            saved = targets.commit()
    finally:
        done.put(None)
        remover.join()
    return Ordered(
        succeeded=saved[0],
        errors=saved[1],
        placed=joined - repeated,
        unknown=total - joined,
        repeated=repeated,
        missing=inputs - (joined - repeated),
    )


def _remove(done: "queue.SimpleQueue[list[Path] | None]") -> None:
    while (paths := done.get()) is not None:
        for path in paths:
            path.unlink(missing_ok=True)


def _set_aside(line: Ints, ok: NDArray[np.int8], answers: Ints) -> NDArray[np.bool_]:
    """The answers that do not take their custom_id's place: all but its first succeeded
    one, else all but its first (as ordering._place_all)."""
    later = np.zeros(len(line), dtype=bool)
    placed = np.flatnonzero(line >= 0)
    twice = placed[answers[line[placed]] > 1]
    ranked = twice[np.lexsort((twice, -ok[twice].astype(np.int64), line[twice]))]
    first = np.ones(len(ranked), dtype=bool)
    first[1:] = line[ranked[1:]] != line[ranked[:-1]]
    later[ranked[~first]] = True
    return later


def _write_bucket(
    paths: list[Path],
    members: Ints,
    line: Ints,
    ok: NDArray[np.int8],
    size: Ints,
    at: Ints,
    later: NDArray[np.bool_],
    targets: _Targets,
    buffer: bytearray,
) -> None:
    """A bucket's lines, read whole into `buffer` (line by line if it is larger)."""
    starts = at[members]
    ends = starts + size[members]
    total = int(size[members].sum())
    sources = [path.open("rb", buffering=0) for path in paths]
    try:
        sizes = [os.fstat(source.fileno()).st_size for source in sources]
        if sum(sizes) != total:
            raise OSError("a temporary file of the ordering changed")
        if total <= len(buffer):
            filled = 0
            for source, length in zip(sources, sizes, strict=True):
                if source.readinto(memoryview(buffer)[filled : filled + length]) != length:
                    raise OSError("a temporary file of the ordering changed")
                filled += length
            read: Callable[[slice], Any] = memoryview(buffer)[:total].__getitem__
        else:  # the input's lines got their results' bytes unevenly: line by line
            read = _LineReader(sources, sizes)
        _place(starts, ends, members, line, ok, later, read, targets)
    finally:
        for source in sources:
            source.close()


class _LineReader:
    """A line of a bucket by its slice, read from the bucket's files (one after another)."""

    def __init__(self, sources: list[Any], sizes: list[int]) -> None:
        self.sources, self.sizes = sources, sizes

    def __call__(self, piece: slice) -> bytes:
        start = piece.start
        for source, length in zip(self.sources, self.sizes, strict=True):
            if start < length:
                return os.pread(source.fileno(), piece.stop - piece.start, start)
            start -= length
        raise OSError("a temporary file of the ordering changed")


def _place(
    starts: Ints,
    ends: Ints,
    members: Ints,
    line: Ints,
    ok: NDArray[np.int8],
    later: NDArray[np.bool_],
    read: Callable[[slice], Any],
    targets: _Targets,
) -> None:
    """A bucket's lines, each in its input line's order, into the target of its outcome."""
    keep = ~later[members]
    succeeded = ok[members] == 1
    for wanted, writer in (
        (keep & succeeded, targets.succeeded),
        (keep & ~succeeded, targets.errors),
    ):
        chosen = np.flatnonzero(wanted)
        chosen = chosen[np.argsort(line[members[chosen]], kind="stable")]
        firsts, lasts = starts[chosen], ends[chosen]
        # Writes of a batch each (savefile.BATCH_BYTES): the writer's thread takes each
        # as it is, with no join of its own.
        written = np.cumsum(lasts - firsts)
        total = int(written[-1]) if len(written) else 0
        cuts = np.searchsorted(written, np.arange(BATCH_BYTES, total, BATCH_BYTES)) + 1
        bounds = [0, *cuts.tolist(), len(chosen)]
        firsts_list, lasts_list = firsts.tolist(), lasts.tolist()
        for low, high in itertools.pairwise(bounds):
            if high > low:
                pieces = map(slice, firsts_list[low:high], lasts_list[low:high])
                writer.write(b"".join(map(read, pieces)))


def _write_rest(
    path: Path, rest: Ints, offset: Ints, size: Ints, last_unended: int | None, out: Any
) -> None:
    """Lines that take no place, in the order they came, read back from the results."""
    with path.open("rb", buffering=0) as source:
        fd = source.fileno()
        for at in range(0, len(rest), WRITE_LINES):
            chosen = rest[at : at + WRITE_LINES]
            offsets = offset[chosen]
            sizes = (
                size[chosen] - (offsets == last_unended)
                if last_unended is not None
                else size[chosen]
            )
            pieces = list(map(os.pread, [fd] * len(chosen), sizes.tolist(), offsets.tolist()))
            if sum(map(len, pieces)) != int(sizes.sum()):
                raise OSError("the results file changed while it was ordered")
            if last_unended is not None and int(offsets[-1]) == last_unended:
                pieces[-1] += b"\n"
            out.write(b"".join(pieces))
