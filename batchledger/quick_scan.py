"""The quick ordering's numpy reading of JSON lines: where each line begins and ends, its
quotes, the bytes at a place eight at a time, a custom_id's bytes gathered into an array."""

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

PARALLEL_BYTES = 32 * 1024 * 1024  # a file past this: two processes read it at once
_PAD = 24  # bytes past a block's end that follows may read (zeros: in no pattern)

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
            fits = follows(self.words, self.starts[todo], prefix)
            quote = self.quotes[np.minimum(np.searchsorted(self.quotes, at), len(self.quotes) - 1)]
            fits &= (quote >= at) & (quote < self.ends[todo])
            if self.slashes is not None:
                fits &= np.searchsorted(self.slashes, quote) == np.searchsorted(self.slashes, at)
            fits &= follows(self.words, quote, after)
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
