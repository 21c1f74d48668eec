"""The quick ordering's results pass: each line read once, its custom_id looked up, its
row (input line, outcome, where it is) added to arrays in files, the line appended to the
bucket file of its input line's range; a large file read by two processes at once."""

import itertools
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchledger.inline import line_blocks
from batchledger.quick_inputs import InputKeys
from batchledger.quick_scan import KINDS, RESULT_FORMS, Block, Ints, follows, gather, two_processes
from batchledger.result_lines import BLANK, outcome
from batchledger.split import Segments

BUCKET_BUFFER = 64 * 1024  # each bucket file's write buffer


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
    first.extend(second, count, max(1, len(keys.ids)))
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
    def restore(cls, folder: Path, name: str) -> "Rows":
        rows = cls.__new__(cls)
        rows.folder, rows.parts, rows.files = folder, [name], {}
        state = json.loads((folder / f"{name}.json").read_text())
        rows.filled, rows.last_unended = state["filled"], state["last_unended"]
        return rows

    def extend(self, other: "Rows", count: int, inputs: int) -> None:
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
    path: Path, span: tuple[int, int], keys: InputKeys, folder: Path, count: int, name: str
) -> Rows:
    """Read the results' span once: index each line, and append it to its bucket file."""
    rows = Rows(folder, name)
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
        lines_of = Block(block, end)
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
    return lines, ids, known, ok, np.array(offsets, dtype=np.int64), size, unended


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
