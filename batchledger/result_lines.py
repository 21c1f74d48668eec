"""Anthropic's result lines and input lines read without parsing; the two output files
written atomically. Shared by the exact way (ordering.py) and the quick way (quick_order.py)."""

import json
import os
import queue
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from batchledger.errors import BatchledgerError, UsageError
from batchledger.savefile import (
    QUEUED_BATCHES,
    BackgroundWriter,
    Saved,
    new_part,
    prepare_target,
    sync_directory,
)
from batchledger.threads import start_thread

# A result line as the API writes it: custom_id first, then result, whose type comes first.
# Read as a JSON parser would read these tokens: the id has no quote and no backslash, so
# its bytes are the string (nothing to unescape).
RESULT_HEAD = re.compile(
    rb'[ \t\r]*\{[ \t\r]*"custom_id"[ \t\r]*:[ \t\r]*"([^"\\]*)"[ \t\r]*,'
    rb'[ \t\r]*"result"[ \t\r]*:[ \t\r]*\{[ \t\r]*"type"[ \t\r]*:[ \t\r]*'
    rb'"(?:(succeeded)|errored|canceled|expired)"'
)
# An input line whose first key is custom_id (as inline.scan_requests checks).
INPUT_HEAD = re.compile(rb'[ \t\r]*\{[ \t\r]*"custom_id"[ \t\r]*:[ \t\r]*"([^"\\]*)"')
BLANK = b" \t\r"


@dataclass(frozen=True)
class Ordered:
    succeeded: Saved | None  # None: no such line, no file written
    errors: Saved | None
    placed: int  # result lines written in input order, in either file
    unknown: int  # result lines whose custom_id is not in the input (or that have none)
    repeated: int  # further answers for a custom_id already placed
    missing: int  # input lines with no result at all


def outcome(line: bytes) -> tuple[bytes | None, bytes | None]:
    """(custom_id, b"succeeded" or None) of a result line, parsed unless the quick way fits.

    The quick way (RESULT_HEAD) is taken only when the line begins exactly as the API
    writes it, custom_id then result's type, and the id holds no backslash: those bytes
    are then read as a JSON parser reads them. What it does not check (the rest of the
    line) is not needed here, and the line's bytes are copied as they are. Any other line
    (keys in another order, an escaped id, whitespace the regex does not expect) is parsed
    here. A line that is not a JSON object, or has no string custom_id, is (None, None):
    it goes to the errors file.
    """
    found = RESULT_HEAD.match(line)
    if found is not None:
        return found.group(1), found.group(2)
    try:
        record = json.loads(line)
    except ValueError:
        return None, None
    if not isinstance(record, dict) or not isinstance(record.get("custom_id"), str):
        return None, None
    result = record.get("result")
    kind = result.get("type") if isinstance(result, dict) else None
    return id_bytes(record["custom_id"]), b"succeeded" if kind == "succeeded" else None


def id_bytes(custom_id: str) -> bytes:
    """A parsed custom_id as the bytes the quick way reads (UTF-8, as the line has it)."""
    return custom_id.encode("utf-8", errors="surrogatepass")


def input_id(path: Path, ranges: Sequence[tuple[int, int]], offset: int, line: bytes) -> bytes:
    found = INPUT_HEAD.match(line)
    if found is not None:
        return found.group(1)
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
        return id_bytes(record["custom_id"])
    raise UsageError(
        f"line {line_number(path, file_offset(ranges, offset))} of {path.name} has no "
        "custom_id: its results could not be put in order"
    )


def file_offset(ranges: Sequence[tuple[int, int]], position: int) -> int:
    """Where the `position`-th byte of the ranges, taken one after another, is in the file."""
    for start, end in ranges:
        if position < end - start:
            return start + position
        position -= end - start
    return ranges[-1][1] if ranges else 0


def line_number(path: Path, offset: int) -> int:
    """The 1-based number of the line at `offset`: for messages only (reads up to it)."""
    newlines = 0
    with path.open("rb") as source:
        while offset > 0 and (chunk := source.read(min(offset, 1024 * 1024))):
            newlines += chunk.count(b"\n")
            offset -= len(chunk)
    return newlines + 1


class Targets:
    """The two files written at once, each atomically (savefile); a file with no line is
    not written. Nothing is in place until `commit`; a failure leaves both targets as
    they were."""

    def __init__(self, succeeded: Path, errors: Path) -> None:
        self._paths = (succeeded, errors)
        self._parts: list[Path] = []
        self._outs: list[Any] = []
        self._writers: list[BackgroundWriter] = []
        for target in self._paths:
            prepare_target(target)
            part, out = new_part(target)
            self._parts.append(part)
            self._outs.append(out)
            self._writers.append(HashApart(out))
        self.succeeded, self.errors = self._writers

    def __enter__(self) -> "Targets":
        return self

    def commit(self) -> tuple[Saved | None, Saved | None]:
        saved: list[Saved | None] = []
        try:
            for target, part, out, writer in zip(
                self._paths, self._parts, self._outs, self._writers, strict=True
            ):
                sha256 = writer.finish()
                out.close()
                if writer.size == 0:
                    saved.append(None)
                    continue
                os.replace(part, target)
                saved.append(Saved(size=writer.size, sha256=sha256))
            sync_directory(self._paths[0].parent)
            if self._paths[1].parent != self._paths[0].parent:
                sync_directory(self._paths[1].parent)
        except OSError as exc:
            raise BatchledgerError(f"could not save the ordered results: {exc}") from exc
        return saved[0], saved[1]

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        for writer in self._writers:
            if kind is not None:
                writer.abandon()
        for out, part in zip(self._outs, self._parts, strict=True):
            out.close()
            part.unlink(missing_ok=True)


class HashApart(BackgroundWriter):
    """A BackgroundWriter whose sha256 is taken by a thread of its own, beside the writes.

    The ordering hands its targets 366 MB in a second or so: one thread that both writes
    (into the page cache) and hashes is then what the main thread waits for
    (bench/ordering.py). Here the writer passes each batch on to a hashing thread, and
    both work at once (each call releases the GIL).
    """

    def __init__(self, out: BinaryIO) -> None:
        self._hashing: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUED_BATCHES)
        # Started first: the writer's thread joins it when it ends (finish, abandon).
        self._hasher = start_thread(self._hash, "batchledger-hash")
        super().__init__(out)

    def _hash(self) -> None:
        while (data := self._hashing.get()) is not None:
            self._digest.update(data)

    def _hash_chunk(self, data: bytes) -> None:
        self._hashing.put(data)

    def _run(self) -> None:
        try:
            super()._run()
        finally:
            self._hashing.put(None)
            self._hasher.join()  # the digest is whole once the writer's thread has ended
