"""The quick ordering's results pass: each line read once, its custom_id looked up, its
row (input line, outcome, where it is) added to arrays in files, the line written to a
spill file in a run of its bucket (its input line's range); a large file read by two
processes at once."""

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from batchledger.quick_inputs import InputKeys
from batchledger.quick_scan import (
    KINDS,
    RESULT_FORMS,
    TAIL_BYTES,
    Block,
    Chunk,
    Ints,
    follows,
    gather,
    line_blocks,
    two_processes,
)
from batchledger.result_lines import BLANK, outcome
from batchledger.split import Segments

# A block's lines go to the spill file in slots as wide as its longest line, unless the
# slots would take this many times the lines' bytes.
SLOT_WASTE = 1.25
SPILL_BUFFER = 64 * 1024  # the spill file's write buffer (a block's lines are one write)


def index_all(path: Path, size: int, keys: InputKeys, folder: Path, count: int) -> "Rows":
    """The results indexed (_index_results); a large file by two processes at once, each
    a half (the second half in a forked child, which has the input's keys as they are)."""
    middle = _line_start(path, size // 2) if two_processes(size) else 0
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
        second = Rows.restore(folder, "b")
    else:  # the child could not: its half here
        second = _index_results(path, (middle, size), keys, folder, count, "b")
    first.extend(second, count, max(1, keys.count))
    return first


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


class Rows:
    """Per result line, in the order they came: input line (-1: none), succeeded, where,
    and where the line is in its bucket (-1: in none). The lines themselves are in spill
    files (one per part of the results file read), in runs: each block read adds, for each
    bucket, one run of its lines in input order; bucket `n` is its runs one after another,
    in the order they were written (`runs`)."""

    FIELDS = ("line", "ok", "offset", "size", "at", "runs")

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.parts = [name]
        self.files = {field: self._path(field).open("wb") for field in self.FIELDS}
        self.last_unended: int | None = None
        self.filled: list[int] = []  # bytes in each bucket

    def _path(self, field: str) -> Path:
        return self.folder / f"{self.parts[0]}-{field}.bin"

    def spills(self) -> list[Path]:
        return [self.folder / f"spill-{part}" for part in self.parts]

    def add(self, line: Ints, ok: NDArray[np.int8], offset: Ints, size: Ints, at: Ints) -> None:
        arrays: tuple[NDArray[Any], ...] = (line, ok, offset, size, at)
        for field, values in zip(self.FIELDS, arrays, strict=False):
            self.files[field].write(values.tobytes())

    def add_runs(self, buckets: Ints, offsets: Ints, sizes: Ints) -> None:
        """Runs of lines written to the spill file: bucket, part (0: this one), offset, size."""
        runs = np.stack([buckets, np.zeros_like(buckets), offsets, sizes], axis=1)
        self.files["runs"].write(runs.astype(np.int64).tobytes())

    def close(self) -> None:
        for out in self.files.values():
            out.close()

    def save_state(self) -> None:
        state = {"filled": self.filled, "last_unended": self.last_unended}
        (self.folder / f"{self.parts[0]}.json").write_text(json.dumps(state))

    @classmethod
    def restore(cls, folder: Path, name: str) -> "Rows":
        rows = cls.__new__(cls)
        rows.folder, rows.parts, rows.files = folder, [name], {}
        state = json.loads((folder / f"{name}.json").read_text())
        rows.filled, rows.last_unended = state["filled"], state["last_unended"]
        return rows

    def extend(self, other: "Rows", count: int, inputs: int) -> None:
        """Append the rows of the next part of the results file (its runs follow ours)."""
        shift = np.array(self.filled, dtype=np.int64)
        for field in self.FIELDS:
            data = other._path(field).read_bytes()
            if field == "at" and data:
                at = np.frombuffer(data, dtype=np.int64).copy()
                line = np.frombuffer(other._path("line").read_bytes(), dtype=np.int64)
                placed = at >= 0
                at[placed] += shift[line[placed] * count // inputs]
                data = at.tobytes()
            if field == "runs" and data:
                runs = np.frombuffer(data, dtype=np.int64).reshape(-1, 4).copy()
                runs[:, 1] += len(self.parts)
                data = runs.tobytes()
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

    def runs(self, count: int) -> tuple[Ints, list[int]]:
        """The runs (part, offset, size), bucket after bucket; where each bucket's begin."""
        runs = self.load("runs", np.int64).reshape(-1, 4)
        order = np.argsort(runs[:, 0], kind="stable")
        bounds = np.searchsorted(runs[order, 0], np.arange(count + 1))
        return np.ascontiguousarray(runs[order, 1:]), bounds.tolist()


def _index_results(
    path: Path, span: tuple[int, int], keys: InputKeys, folder: Path, count: int, name: str
) -> Rows:
    """Read the results' span once: index each line, and write it, with the others of its
    block, to the spill file in input order (so bucket by bucket)."""
    rows = Rows(folder, name)
    inputs = max(1, keys.count)
    filled = np.zeros(count, dtype=np.int64)  # bytes in each bucket
    spilled = 0
    try:
        with (
            Segments(path, [span]) as stream,
            rows.spills()[0].open("wb", buffering=SPILL_BUFFER) as spill,
        ):
            for position, chunk in line_blocks(stream):
                read = _read_block(span[0] + position, chunk)
                if read.unended is not None:
                    rows.last_unended = read.unended
                line = keys.lookup(read.ids, read.known)
                # By input line, which groups them by bucket too: each block adds a run of
                # lines in input order to each bucket, read in that order when written out.
                placed = np.flatnonzero(line >= 0)
                sequence = placed[np.argsort(line[placed])]
                bucket = line[sequence] * count // inputs
                ends = np.zeros(len(sequence) + 1, dtype=np.int64)
                if read.width:  # each line in a slot of `width` bytes
                    ends[1:] = np.arange(1, len(sequence) + 1, dtype=np.int64) * read.width
                else:
                    np.cumsum(read.size[sequence], out=ends[1:])
                bounds = np.zeros(count + 1, dtype=np.int64)
                np.cumsum(np.bincount(bucket, minlength=count), out=bounds[1:])
                firsts = ends[bounds[:-1]]
                at = np.full(len(line), -1, dtype=np.int64)
                at[sequence] = filled[bucket] + ends[:-1] - firsts[bucket]
                lengths = ends[bounds[1:]] - firsts
                filled += lengths
                rows.add(line, read.ok, read.offset, read.size, at)
                used = np.flatnonzero(lengths)
                rows.add_runs(used, firsts[used] + spilled, lengths[used])
                spill.write(read.spilled(sequence))
                spilled += int(ends[-1])
    finally:
        rows.close()
    rows.filled = filled.tolist()
    return rows


class _Read(NamedTuple):
    """A block's result lines: ids, whether each has one, succeeded, offsets, sizes (with
    the newline the targets give each line), the offset of a last line with none; how a
    choice of them is written to the spill file (`spilled`): each in a slot of `width`
    bytes (the line, then whatever followed it in the block), or, if width is 0, one
    after the other, each with its newline."""

    ids: Any
    known: NDArray[np.bool_]
    ok: NDArray[np.int8]
    offset: Ints
    size: Ints
    unended: int | None
    spilled: Callable[[Ints], Any]
    width: int = 0


def _read_block(position: int, chunk: Chunk) -> _Read:
    length = chunk.length
    if length and chunk.buffer[length - 1] == ord("\n") and chunk.find(b"\x00") < 0:
        lines_of = Block(chunk, length)
        starts, ends = lines_of.starts, lines_of.ends
        quick = _read_quickly(lines_of)
        if quick is not None:
            ids, ok = quick
            size = ends - starts + 1
            width = int(size.max()) if len(size) else 0
            if width <= TAIL_BYTES and width * len(size) <= SLOT_WASTE * length:
                spilled = _slots(chunk, starts, width)
            else:  # lines of uneven lengths: joined, with no slot
                spilled, width = _slices(chunk, starts, ends + 1), 0
            return _Read(
                ids,
                np.ones(len(ids), dtype=bool),
                ok,
                starts + position,
                size,
                None,
                spilled,
                width,
            )
    block = chunk.bytes()
    end = block.rfind(b"\n") + 1
    # line by line, as ordering._add_results does (blank lines are no results)
    lines, found, offsets = [], [], []
    unended = None
    offset = position
    pieces = block[:end].split(b"\n")
    pieces.pop()
    tail = block[end:]
    for piece in pieces:
        if piece.strip(BLANK):
            lines.append(piece)
            found.append(outcome(piece))
            offsets.append(offset)
        offset += len(piece) + 1
    if tail.strip(BLANK):
        lines.append(tail)
        found.append(outcome(tail))
        offsets.append(offset)
        unended = offset
    names = [custom_id or b"" for custom_id, _ in found]
    # no id, or one with a NUL byte (numpy's bytes would lose it; no input id has one)
    known = np.array([cid is not None and b"\x00" not in cid for cid, _ in found], dtype=bool)
    names = [name if b"\x00" not in name else b"" for name in names]
    ids = np.array(names, dtype=f"S{max(1, max(map(len, names), default=1))}")
    ok = np.array([kind is not None for _, kind in found], dtype=np.int8)
    size = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines)) + 1

    def joined(chosen: Ints) -> bytes:
        return b"".join([lines[n] + b"\n" for n in chosen.tolist()])

    return _Read(ids, known, ok, np.array(offsets, dtype=np.int64), size, unended, joined)


def _slots(chunk: Chunk, starts: Ints, width: int) -> Callable[[Ints], Any]:
    """The block's lines `chosen` (their numbers), each in a slot of `width` bytes (at most
    TAIL_BYTES): one numpy copy of `width` bytes per line, no Python object per line (the
    slots' tails, whatever followed the line, are never read back)."""
    padded = np.frombuffer(chunk.buffer, dtype=np.uint8)[: chunk.length + width]
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)

    def spilled(chosen: Ints) -> Any:
        return windows[starts[chosen]]

    return spilled


def _slices(chunk: Chunk, starts: Ints, stops: Ints) -> Callable[[Ints], bytes]:
    """Join the block's lines `chosen` (their numbers), each [start, stop): in C."""
    view = memoryview(chunk.buffer)

    def joined(chosen: Ints) -> bytes:
        pieces = map(slice, starts[chosen].tolist(), stops[chosen].tolist())
        return b"".join(map(view.__getitem__, pieces))

    return joined


def _read_quickly(lines: Block) -> tuple[NDArray[np.bytes_], NDArray[np.int8]] | None:
    """Ids and outcomes of lines that all begin as the API (or json.dumps) writes them:
    what _RESULT_HEAD reads from such a line. None when a line begins otherwise."""
    good, begin, close, kind_at = lines.heads(RESULT_FORMS)
    if not bool(good.all()):
        return None
    known = np.zeros(len(kind_at), dtype=bool)
    succeeded = follows(lines.words, kind_at, KINDS[0])
    known |= succeeded
    for kind in KINDS[1:]:
        known |= follows(lines.words, kind_at, kind)
    if not bool(known.all()):
        return None
    return gather(lines.words, begin, close), succeeded.astype(np.int8)
