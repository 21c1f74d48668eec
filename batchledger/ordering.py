"""Anthropic's results, put in the input's order: succeeded lines in one file, the rest in another.

Message Batches answer in any order and mix `succeeded` with `errored`, `canceled` and
`expired`. `order_results` writes `results_<id>.jsonl` (the succeeded lines) and
`results_<id>.errors.jsonl` (the others), each in the order of the input's custom_ids,
each line's bytes as the API sent them (a last line without a newline gets one).

Memory stays bounded whatever the size: the custom_ids of both files go into a temporary
SQLite file (results_index.ScratchIndex: a bounded page cache, the rest on disk) with, for a result,
its outcome and where its bytes are (offset, size), never the line; SQLite sorts each side
in C (one CREATE INDEX each) and joins them in input order; the lines are then read back
by offset into the two files, written atomically (savefile).

What cannot be placed is never dropped: a result whose custom_id is not in the input (or
that has none), and a second answer for a custom_id, go to the end of the errors file in
the order they came, with a warning in the log.

Reading a line's custom_id and result type: see `_outcome`.
"""

import itertools
import json
import logging
import operator
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchledger.errors import BatchledgerError, UsageError
from batchledger.inline import line_blocks
from batchledger.results_index import ScratchIndex
from batchledger.savefile import (
    BackgroundWriter,
    Saved,
    new_part,
    prepare_target,
    sync_directory,
)
from batchledger.split import Segments

log = logging.getLogger("batchledger")

RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
# Rows fetched from the join at once; their lines are read and handed to the writers at once.
FETCH_ROWS = 4096

# A result line as the API writes it: custom_id first, then result, whose type comes first.
# Read as a JSON parser would read these tokens: the id has no quote and no backslash, so
# its bytes are the string (nothing to unescape).
_RESULT_HEAD = re.compile(
    rb'[ \t\r]*\{[ \t\r]*"custom_id"[ \t\r]*:[ \t\r]*"([^"\\]*)"[ \t\r]*,'
    rb'[ \t\r]*"result"[ \t\r]*:[ \t\r]*\{[ \t\r]*"type"[ \t\r]*:[ \t\r]*'
    rb'"(?:(succeeded)|errored|canceled|expired)"'
)
# An input line whose first key is custom_id (as inline.scan_requests checks).
_INPUT_HEAD = re.compile(rb'[ \t\r]*\{[ \t\r]*"custom_id"[ \t\r]*:[ \t\r]*"([^"\\]*)"')
_BLANK = b" \t\r"


@dataclass(frozen=True)
class Ordered:
    succeeded: Saved | None  # None: no such line, no file written
    errors: Saved | None
    placed: int  # result lines written in input order, in either file
    unknown: int  # result lines whose custom_id is not in the input (or that have none)
    repeated: int  # further answers for a custom_id already placed
    missing: int  # input lines with no result at all


def order_results(
    input_path: Path,
    results_path: Path,
    succeeded_target: Path,
    errors_target: Path,
    ranges: Sequence[tuple[int, int]] | None = None,
) -> Ordered:
    """Write the result lines of `results_path` in the order of the input's custom_ids.

    `ranges` are the byte ranges of the input that were sent (a job's part), all of it by
    default. UsageError when an input line has no custom_id or repeats one. A custom_id
    answered twice keeps its succeeded answer (else its first) in place; the other goes
    to the end of the errors file.
    """
    if ranges is None:
        ranges = [(0, input_path.stat().st_size)]
    with ScratchIndex(prefix="batchledger-order-") as index:
        conn = index.conn
        conn.execute(
            "CREATE TABLE results (custom_id TEXT, ok INTEGER, offset INTEGER, size INTEGER)"
        )
        # offset: where the line is in the ranges' bytes, to name it in a message
        conn.execute("CREATE TABLE inputs (custom_id TEXT NOT NULL, offset INTEGER)")
        total, last_unended = _add_results(conn, results_path)
        inputs = _add_inputs(conn, input_path, ranges)
        # Sorting each side once, in C, is much quicker than a B-tree filled in random order.
        try:
            conn.execute("CREATE UNIQUE INDEX inputs_by_id ON inputs (custom_id)")
        except sqlite3.IntegrityError:
            _raise_repeated_input(conn, input_path, ranges)
        conn.execute("CREATE INDEX results_by_id ON results (custom_id, ok, offset, size)")
        repeats = conn.execute(
            "SELECT 1 FROM results WHERE custom_id IS NOT NULL"
            " GROUP BY custom_id HAVING COUNT(*) > 1 LIMIT 1"
        ).fetchone()
        conn.execute("CREATE TEMP TABLE later (rowid INTEGER PRIMARY KEY)")
        with (
            open(results_path, "rb", buffering=0) as source,
            _Targets(succeeded_target, errors_target) as targets,
        ):
            rows = conn.execute(
                "SELECT i.rowid, r.rowid, r.ok, r.offset, r.size FROM inputs i"
                " JOIN results r ON r.custom_id = i.custom_id ORDER BY i.rowid"
            )
            reader = _Reader(source.fileno(), last_unended)
            if repeats:
                joined = _place_all(rows, reader, targets, conn)
            else:
                joined = _place_unique(rows, reader, targets)
            (repeated,) = conn.execute("SELECT COUNT(*) FROM temp.later").fetchone()
            unknown = total - joined
            if unknown or repeated:
                rest = conn.execute(
                    "SELECT offset, size FROM results r WHERE rowid IN temp.later OR NOT EXISTS"
                    " (SELECT 1 FROM inputs i WHERE i.custom_id = r.custom_id) ORDER BY rowid"
                )
                while batch := rest.fetchmany(FETCH_ROWS):
                    targets.errors.write(b"".join([reader.line(o, s) for o, s in batch]))
            saved = targets.commit()
    if unknown:
        log.warning(
            "%d result lines of %s are for no request of the input: kept at the end of %s",
            unknown,
            results_path.name,
            errors_target.name,
        )
    if repeated:
        log.warning(
            "%d result lines of %s answer a request answered already: kept at the end of %s",
            repeated,
            results_path.name,
            errors_target.name,
        )
    return Ordered(
        succeeded=saved[0],
        errors=saved[1],
        placed=joined - repeated,
        unknown=unknown,
        repeated=repeated,
        missing=inputs - (joined - repeated),
    )


def _place_unique(rows: sqlite3.Cursor, reader: "_Reader", targets: "_Targets") -> int:
    """Every custom_id answered once: each joined row is a line to write."""
    joined = 0
    if reader.last_unended is None:  # as the API writes them: every line ends with a newline
        # The batch turned into columns, the reads and the split: all of it runs in C.
        fds = itertools.repeat(reader.fd)
        while batch := rows.fetchmany(FETCH_ROWS):
            joined += len(batch)
            _, _, oks, offsets, sizes = zip(*batch, strict=True)
            pieces = list(map(os.pread, fds, sizes, offsets))
            targets.succeeded.write(b"".join(itertools.compress(pieces, oks)))
            targets.errors.write(b"".join(itertools.compress(pieces, map(operator.not_, oks))))
        return joined
    line = reader.line
    while batch := rows.fetchmany(FETCH_ROWS):
        joined += len(batch)
        targets.succeeded.write(b"".join([line(o, s) for _, _, ok, o, s in batch if ok]))
        targets.errors.write(b"".join([line(o, s) for _, _, ok, o, s in batch if not ok]))
    return joined


def _place_all(
    rows: sqlite3.Cursor, reader: "_Reader", targets: "_Targets", conn: sqlite3.Connection
) -> int:
    """Some custom_id was answered more than once: keep one answer in place, set the others
    aside (in temp.later) for the end of the errors file."""
    joined = 0
    later: list[tuple[int]] = []
    current: tuple[Any, ...] | None = None
    for row in rows:
        joined += 1
        if current is not None and current[0] == row[0]:
            if row[2] > current[2]:  # a success after an error: the success takes the place
                later.append((current[1],))
                current = row
            else:
                later.append((row[1],))
            continue
        if current is not None:
            _write_row(current, reader, targets)
        current = row
    if current is not None:
        _write_row(current, reader, targets)
    conn.executemany("INSERT INTO temp.later VALUES (?)", later)
    return joined


def _write_row(row: tuple[Any, ...], reader: "_Reader", targets: "_Targets") -> None:
    _, _, ok, offset, size = row
    (targets.succeeded if ok else targets.errors).write(reader.line(offset, size))


class _Reader:
    """A result line's bytes by offset; the file's last line is given its missing newline."""

    def __init__(self, fd: int, last_unended: int | None) -> None:
        self.fd = fd
        self.last_unended = last_unended

    def line(self, offset: int, size: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise OSError("the results file changed while it was ordered")
        return data if offset != self.last_unended else data + b"\n"


def _add_results(conn: sqlite3.Connection, path: Path) -> tuple[int, int | None]:
    """Index each result line; their count, and the offset of a last line with no newline.

    A block whose lines all begin as the API writes them is indexed with no Python code per
    line (map, zip and accumulate run in C; SQLite turns the type into `ok`); a block with
    another line is indexed line by line.
    """
    # custom_id as bytes (a BLOB): compared byte for byte with the input's, never decoded.
    insert = "INSERT INTO results VALUES (?, ? IS NOT NULL, ?, ? + 1)"
    total = 0
    last_unended = None
    with conn, Segments(path, [(0, path.stat().st_size)]) as stream:
        for position, block in line_blocks(stream):
            lines = block.split(b"\n")
            tail = lines.pop()  # b"" after a final newline, else a last line without one
            found = list(map(_RESULT_HEAD.match, lines))
            offsets = itertools.accumulate(
                map(operator.add, map(len, lines), itertools.repeat(1)), initial=position
            )
            if None not in found:
                ids, kinds = map(_GROUP_1, found), map(_GROUP_2, found)
                conn.executemany(insert, zip(ids, kinds, offsets, map(len, lines), strict=False))
                total += len(lines)
            else:
                rows = [
                    (*_outcome(line), offset, len(line))
                    for line, offset in zip(lines, offsets, strict=False)
                    if line.strip(_BLANK)
                ]
                conn.executemany(insert, rows)
                total += len(rows)
            if tail.strip(_BLANK):
                last_unended = position + len(block) - len(tail)
                conn.execute(
                    "INSERT INTO results VALUES (?, ? IS NOT NULL, ?, ?)",
                    (*_outcome(tail), last_unended, len(tail)),
                )
                total += 1
    return total, last_unended


# A match's groups, taken in C by map(): m[1], m[2].
_GROUP_1: Callable[[Any], bytes] = operator.itemgetter(1)
_GROUP_2: Callable[[Any], bytes | None] = operator.itemgetter(2)


def _outcome(line: bytes) -> tuple[bytes | None, bytes | None]:
    """(custom_id, b"succeeded" or None) of a result line, parsed unless the quick way fits.

    The quick way (_RESULT_HEAD) is taken only when the line begins exactly as the API
    writes it, custom_id then result's type, and the id holds no backslash: those bytes
    are then read as a JSON parser reads them. What it does not check (the rest of the
    line) is not needed here, and the line's bytes are copied as they are. Any other line
    (keys in another order, an escaped id, whitespace the regex does not expect) is parsed
    here. A line that is not a JSON object, or has no string custom_id, is (None, None):
    it goes to the errors file.
    """
    found = _RESULT_HEAD.match(line)
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
    return _id_bytes(record["custom_id"]), b"succeeded" if kind == "succeeded" else None


def _id_bytes(custom_id: str) -> bytes:
    """A parsed custom_id as the bytes the quick way reads (UTF-8, as the line has it)."""
    return custom_id.encode("utf-8", errors="surrogatepass")


def _add_inputs(conn: sqlite3.Connection, path: Path, ranges: Sequence[tuple[int, int]]) -> int:
    """Index the custom_id and position of each request line of the ranges; their count.

    As for the results: a block of lines that all begin with their custom_id costs no
    Python code per line; another block is read line by line (blank lines skipped).
    """
    insert = "INSERT INTO inputs VALUES (?, ?)"
    count = 0
    with conn, Segments(path, ranges) as stream:
        for position, block in line_blocks(stream):
            lines = block.split(b"\n")
            if not lines[-1]:
                lines.pop()
            found = list(map(_INPUT_HEAD.match, lines))
            offsets = itertools.accumulate(
                map(operator.add, map(len, lines), itertools.repeat(1)), initial=position
            )
            if None not in found:
                conn.executemany(insert, zip(map(_GROUP_1, found), offsets, strict=False))
                count += len(lines)
                continue
            rows = [
                (_input_id(path, ranges, offset, line), offset)
                for line, offset in zip(lines, offsets, strict=False)
                if line.strip(_BLANK)
            ]
            conn.executemany(insert, rows)
            count += len(rows)
    return count


def _input_id(path: Path, ranges: Sequence[tuple[int, int]], offset: int, line: bytes) -> bytes:
    found = _INPUT_HEAD.match(line)
    if found is not None:
        return found.group(1)
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
        return _id_bytes(record["custom_id"])
    raise UsageError(
        f"line {_line_number(path, _file_offset(ranges, offset))} of {path.name} has no "
        "custom_id: its results could not be put in order"
    )


def _raise_repeated_input(
    conn: sqlite3.Connection, path: Path, ranges: Sequence[tuple[int, int]]
) -> None:
    """UsageError naming the first line that repeats an earlier line's custom_id."""
    custom_id, first, second = conn.execute(
        "SELECT custom_id, MIN(offset), MAX(offset) FROM inputs"
        " GROUP BY custom_id HAVING COUNT(*) > 1 ORDER BY MAX(offset) LIMIT 1"
    ).fetchone()
    raise UsageError(
        f"line {_line_number(path, _file_offset(ranges, second))} of {path.name} repeats the"
        f" custom_id {custom_id.decode(errors='replace')!r} of line"
        f" {_line_number(path, _file_offset(ranges, first))}: their results could not be told apart"
    )


def _file_offset(ranges: Sequence[tuple[int, int]], position: int) -> int:
    for start, end in ranges:
        if position < end - start:
            return start + position
        position -= end - start
    return ranges[-1][1] if ranges else 0


def _line_number(path: Path, offset: int) -> int:
    """The 1-based number of the line at `offset`: for messages only (reads up to it)."""
    newlines = 0
    with path.open("rb") as source:
        while offset > 0 and (chunk := source.read(min(offset, 1024 * 1024))):
            newlines += chunk.count(b"\n")
            offset -= len(chunk)
    return newlines + 1


class _Targets:
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
            self._writers.append(BackgroundWriter(out))
        self.succeeded, self.errors = self._writers

    def __enter__(self) -> "_Targets":
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
