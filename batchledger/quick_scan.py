"""The quick ordering's numpy reading of JSON lines: where each line begins and ends, its
quotes, the bytes at a place eight at a time, a custom_id's bytes gathered into an array."""

import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

PARALLEL_BYTES = 32 * 1024 * 1024  # a file past this: two processes read it at once
# Bytes read at once: each block costs about 150 numpy calls whatever its size, a fifth of
# the time at 1 MiB; at 4 MiB, larger allocations cost more than that saves (and 17 MB).
BLOCK_BYTES = 2 * 1024 * 1024
# Bytes a block's buffer holds after it: what a pattern, a window or a line's slot may read
# past the block's end.
TAIL_BYTES = 64 * 1024
WINDOW = 32  # bytes of a line read at once, looking for a string's closing quote
MAX_STRING = 4096  # a string not closed within this many bytes: read the slow way
_PAD = 40  # bytes past a block's end that follows and a window may read

# How the API (compact) and json.dumps (", " and ": ") begin a line: custom_id first; a
# result's type next.
INPUT_FORMS = ((b'{"custom_id": "', b'"'), (b'{"custom_id":"', b'"'))
RESULT_FORMS = (
    (b'{"custom_id":"', b'","result":{"type":"'),
    (b'{"custom_id": "', b'", "result": {"type": "'),
)
KINDS = (b'succeeded"', b'errored"', b'canceled"', b'expired"')
_QUOTE, _BACKSLASH, _NEWLINE = ord('"'), ord("\\"), ord("\n")

Ints = NDArray[np.int64]


class Chunk(NamedTuple):
    """A block of lines: the first `length` bytes of `buffer`, which holds at least
    TAIL_BYTES more after them (the start of the next line, or what an earlier block left
    there). The buffer is reused: a chunk's bytes are valid until the next is read."""

    buffer: bytearray
    length: int

    def find(self, byte: bytes) -> int:
        return self.buffer.find(byte, 0, self.length)

    def bytes(self) -> bytes:
        return bytes(memoryview(self.buffer)[: self.length])


def line_blocks(stream: Any, size: int = BLOCK_BYTES) -> Iterator[tuple[int, Chunk]]:
    """The stream in blocks of whole lines (the last may lack its newline), with their
    positions, read into one buffer (no copy of the bytes in Python: a block's padding is
    the bytes that follow it). What follows a block is never taken for part of a pattern:
    each whole line of a block ends with its newline, and no pattern holds one."""
    buffer = bytearray(size + TAIL_BYTES)
    position = 0
    kept = 0  # bytes of a line begun by the last read, at the buffer's start
    while True:
        room = len(buffer) - TAIL_BYTES
        if kept == room:  # a line longer than the buffer: a new one, twice as large
            buffer = buffer + bytes(len(buffer))
            room = len(buffer) - TAIL_BYTES
        read = stream.readinto(memoryview(buffer)[kept:room])
        if not read:
            if kept:
                yield position, Chunk(buffer, kept)
            return
        filled = kept + read
        cut = buffer.rfind(b"\n", 0, filled) + 1
        if cut == 0:
            kept = filled
            continue
        yield position, Chunk(buffer, cut)
        position += cut
        kept = filled - cut
        buffer[:kept] = buffer[cut:filled]


class Fallback(Exception):
    """The quick way cannot be sure here: the exact way orders these files."""


def two_processes(size: int) -> bool:
    """Whether `size` bytes are read by two processes at once: past PARALLEL_BYTES, where
    there is fork, and no other thread whose locks a child could inherit taken."""
    return size >= PARALLEL_BYTES and hasattr(os, "fork") and threading.active_count() == 1


def _lines(data: NDArray[np.uint8], end: int) -> tuple[Ints, Ints]:
    """(start, end) of each line of data[:end], which ends with a newline; end excludes it."""
    ends = np.flatnonzero(data[:end] == _NEWLINE).astype(np.int64)
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return starts, ends


def follows(words: NDArray[np.uint64], at: Ints, expected: bytes) -> NDArray[np.bool_]:
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


class Block:
    """A block of whole lines as numpy sees it: its bytes, where each line begins and
    ends (its newline), the bytes at any place as a word or a window."""

    def __init__(self, chunk: Chunk, end: int) -> None:
        length = chunk.length
        everything = np.frombuffer(chunk.buffer, dtype=np.uint8)
        self.data: NDArray[np.uint8] = everything[:length]
        self.words = _words(everything, length)
        # The WINDOW bytes that begin at each place: one fancy index copies them per line.
        self.windows = np.lib.stride_tricks.sliding_window_view(
            everything[: length + _PAD + 8], WINDOW
        )
        self.starts, self.ends = _lines(self.data, end)

    def heads(self, forms: Sequence[tuple[bytes, bytes]]) -> tuple[Any, Ints, Ints, Ints]:
        """For each line: whether it begins with a form's prefix, then a string with no
        backslash closed on the same line, then the form's `after` (from that quote on);
        where the string begins, where it ends (its quote), what follows `after`."""
        count = len(self.starts)
        good = np.zeros(count, dtype=bool)
        begin = np.zeros(count, dtype=np.int64)
        close = np.zeros(count, dtype=np.int64)
        then = np.zeros(count, dtype=np.int64)
        for prefix, after in forms:
            todo = np.flatnonzero(~good)
            if len(todo) == 0:
                break
            todo = todo[follows(self.words, self.starts[todo], prefix)]
            at = self.starts[todo] + len(prefix)
            quote, closed = self.closing(at)
            todo, at, quote = todo[closed], at[closed], quote[closed]
            fits = follows(self.words, quote, after)
            chosen = todo[fits]
            good[chosen] = True
            begin[chosen], close[chosen] = at[fits], quote[fits]
            then[chosen] = quote[fits] + len(after)
        return good, begin, close, then

    def closing(self, at: Ints) -> tuple[Ints, NDArray[np.bool_]]:
        """For each place (on a line of the block): where the first quote at or after it
        is, and whether it comes before any backslash and before the line's newline.

        Read WINDOW bytes at a time per line, so that no pass over the whole block is
        needed; a string longer than MAX_STRING bytes counts as not closed."""
        quote = np.zeros(len(at), dtype=np.int64)
        closed = np.zeros(len(at), dtype=bool)
        todo = np.arange(len(at))
        place = np.minimum(at, len(self.data))
        for _ in range(-(-MAX_STRING // WINDOW)):
            if len(todo) == 0:
                break
            rows = self.windows[place[todo]]
            quotes = rows == _QUOTE
            stops = quotes | (rows == _BACKSLASH) | (rows == _NEWLINE)
            first = stops.argmax(axis=1)
            stopped = stops[np.arange(len(todo)), first]
            done = todo[stopped]
            quote[done] = place[done] + first[stopped]
            closed[done] = quotes[np.flatnonzero(stopped), first[stopped]]
            todo = todo[~stopped]  # no stop in the window (not past the block's end)
            place[todo] = np.minimum(place[todo] + WINDOW, len(self.data))
        return quote, closed


def _words(padded: NDArray[np.uint8], length: int) -> NDArray[np.uint64]:
    """The eight bytes that begin at each position of the block (little-endian; past its
    end, what follows it in its buffer): overlapping words, one per byte, read by one
    fancy index per pattern."""
    words: NDArray[np.uint64] = np.ndarray(
        shape=(length + _PAD,), dtype="<u8", buffer=padded, strides=(1,)
    )
    return words


def gather(words: NDArray[np.uint64], begin: Ints, close: Ints) -> NDArray[np.bytes_]:
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
