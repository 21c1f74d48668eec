"""The quick ordering's input pass: each custom_id read and hashed, the hashes sorted into
a table that looks a result's custom_id up (confirmed byte for byte)."""

import os
import signal
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from batchledger.quick_scan import (
    INPUT_FORMS,
    Block,
    Chunk,
    Fallback,
    Ints,
    gather,
    line_blocks,
    two_processes,
)
from batchledger.result_lines import BLANK, input_id
from batchledger.split import Segments

MAX_ID_BYTES = 256  # a longer custom_id in the input: the exact way
_GOLDEN, _MIX_1, _MIX_2 = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
)


def _read_inputs(
    path: Path, ranges: Sequence[tuple[int, int]], folder: Path
) -> tuple[NDArray[np.bytes_], NDArray[np.uint64]]:
    """The ids and hashes of the input's lines; a large input read by two processes at
    once (the second half by a forked child)."""
    total = sum(end - start for start, end in ranges)
    middle = _stream_line_start(path, ranges, total // 2) if two_processes(total) else 0
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
        for position, chunk in line_blocks(stream):
            if chunk.find(b"\x00") >= 0:
                raise Fallback  # an id with a NUL byte: numpy's bytes would drop it
            found = _input_ids(chunk)
            if found is None:
                found = _input_ids_slowly(path, ranges, position, chunk.bytes())
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


class InputKeys:
    """The input's custom_ids: sorted hashes, where each comes from, the ids themselves."""

    def __init__(self, path: Path, ranges: Sequence[tuple[int, int]], folder: Path) -> None:
        self.ids, every = _read_inputs(path, ranges, folder)
        self.count = len(self.ids)
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


def _input_ids(chunk: Chunk) -> NDArray[np.bytes_] | None:
    """The custom_id of each line of a block whose lines all begin as json.dumps or the
    API write them (what _INPUT_HEAD reads from those lines); None for another block."""
    if not chunk.length or chunk.buffer[chunk.length - 1] != ord("\n"):
        return None  # a last line with no newline: read line by line
    lines = Block(chunk, chunk.length)
    good, begin, close, _ = lines.heads(INPUT_FORMS)
    if not bool(good.all()):
        return None
    return gather(lines.words, begin, close)


def _input_ids_slowly(
    path: Path, ranges: Sequence[tuple[int, int]], position: int, block: bytes
) -> NDArray[np.bytes_]:
    """As ordering._add_inputs reads a block line by line (UsageError: a line without id)."""
    ids = []
    offset = position
    for line in block.split(b"\n"):
        if line.strip(BLANK):
            found = input_id(path, ranges, offset, line)
            if b"\x00" in found:
                raise Fallback
            ids.append(found)
        offset += len(line) + 1
    return np.array(ids, dtype=f"S{max(1, max(map(len, ids), default=1))}")
