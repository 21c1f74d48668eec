"""Anthropic's results, put in the input's order: succeeded lines in one file, the rest in another.

Message Batches answer in any order and mix `succeeded` with `errored`, `canceled` and
`expired`. `order_results` writes `results_<id>.jsonl` (the succeeded lines) and
`results_<id>.errors.jsonl` (the others), each in the order of the input's custom_ids,
each line's bytes as the API sent them (a last line without a newline gets one).

Memory stays bounded whatever the size. The quick way (quick_order.py, numpy) hashes the
custom_ids into arrays in files and moves the lines through a spill file, by input range;
what it cannot be sure of (a repeated hash, an odd input) goes the exact way, here: the
custom_ids of both files go into a temporary SQLite file (results_index.ScratchIndex: a bounded
page cache, the rest on disk) with, for a result, its outcome and where its bytes are
(offset, size), never the line; SQLite sorts each side in C (one CREATE INDEX each) and
joins them in input order; the lines are then read back by offset into the two files.
Both write them atomically (savefile) and give the same bytes.

What cannot be placed is never dropped: a result whose custom_id is not in the input (or
that has none), and a second answer for a custom_id, go to the end of the errors file in
the order they came, with a warning in the log.

Reading a line's custom_id and result type: see `result_lines.outcome`.
"""

import itertools
import logging
import operator
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from batchledger.errors import UsageError
from batchledger.inline import line_blocks
from batchledger.result_lines import (
    BLANK,
    INPUT_HEAD,
    RESULT_HEAD,
    Ordered,
    Targets,
    file_offset,
    input_id,
    line_number,
    outcome,
)
from batchledger.results_index import ScratchIndex
from batchledger.savefile import Saved, prepare_target, save_chunks
from batchledger.split import Segments

log = logging.getLogger("batchledger")

RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
# Rows fetched from the join at once; their lines are read and handed to the writers at once.
FETCH_ROWS = 4096


def order_results(
    input_path: Path | None,
    results_path: Path,
    succeeded_target: Path,
    errors_target: Path,
    ranges: Sequence[tuple[int, int]] | None = None,
) -> Ordered:
    """Write the result lines of `results_path` in the order of the input's custom_ids.

    `ranges` are the byte ranges of the input that were sent (a job's part), all of it by
    default. UsageError when an input line has no custom_id or repeats one. A custom_id
    answered twice keeps its succeeded answer (else its first) in place; the other goes
    to the end of the errors file. Without an input (a batch made elsewhere), the lines
    are split by outcome in the order they came.
    """
    if input_path is None:
        return split_results(results_path, succeeded_target, errors_target)
    if ranges is None:
        ranges = [(0, input_path.stat().st_size)]
    from batchledger import quick_order  # numpy: imported here, never at start-up

    try:
        done = quick_order.order(input_path, results_path, succeeded_target, errors_target, ranges)
    except quick_order.Fallback:
        done = _order_exactly(input_path, results_path, succeeded_target, errors_target, ranges)
    if done.unknown:
        log.warning(
            "%d result lines of %s are for no request of the input: kept at the end of %s",
            done.unknown,
            results_path.name,
            errors_target.name,
        )
    if done.repeated:
        log.warning(
            "%d result lines of %s answer a request answered already: kept at the end of %s",
            done.repeated,
            results_path.name,
            errors_target.name,
        )
    return done


def _order_exactly(
    input_path: Path,
    results_path: Path,
    succeeded_target: Path,
    errors_target: Path,
    ranges: Sequence[tuple[int, int]],
) -> Ordered:
    """The exact way, in SQLite: for what the quick way (quick_order) cannot be sure of."""
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
            Targets(succeeded_target, errors_target) as targets,
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
    return Ordered(
        succeeded=saved[0],
        errors=saved[1],
        placed=joined - repeated,
        unknown=unknown,
        repeated=repeated,
        missing=inputs - (joined - repeated),
    )


def _place_unique(rows: sqlite3.Cursor, reader: "_Reader", targets: "Targets") -> int:
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
    rows: sqlite3.Cursor, reader: "_Reader", targets: "Targets", conn: sqlite3.Connection
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


def _write_row(row: tuple[Any, ...], reader: "_Reader", targets: "Targets") -> None:
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
            found = list(map(RESULT_HEAD.match, lines))
            offsets = itertools.accumulate(
                map(operator.add, map(len, lines), itertools.repeat(1)), initial=position
            )
            if None not in found:
                ids, kinds = map(_GROUP_1, found), map(_GROUP_2, found)
                conn.executemany(insert, zip(ids, kinds, offsets, map(len, lines), strict=False))
                total += len(lines)
            else:
                rows = [
                    (*outcome(line), offset, len(line))
                    for line, offset in zip(lines, offsets, strict=False)
                    if line.strip(BLANK)
                ]
                conn.executemany(insert, rows)
                total += len(rows)
            if tail.strip(BLANK):
                last_unended = position + len(block) - len(tail)
                conn.execute(
                    "INSERT INTO results VALUES (?, ? IS NOT NULL, ?, ?)",
                    (*outcome(tail), last_unended, len(tail)),
                )
                total += 1
    return total, last_unended


# A match's groups, taken in C by map(): m[1], m[2].
_GROUP_1: Callable[[Any], bytes] = operator.itemgetter(1)
_GROUP_2: Callable[[Any], bytes | None] = operator.itemgetter(2)


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
            found = list(map(INPUT_HEAD.match, lines))
            offsets = itertools.accumulate(
                map(operator.add, map(len, lines), itertools.repeat(1)), initial=position
            )
            if None not in found:
                conn.executemany(insert, zip(map(_GROUP_1, found), offsets, strict=False))
                count += len(lines)
                continue
            rows = [
                (input_id(path, ranges, offset, line), offset)
                for line, offset in zip(lines, offsets, strict=False)
                if line.strip(BLANK)
            ]
            conn.executemany(insert, rows)
            count += len(rows)
    return count


def _raise_repeated_input(
    conn: sqlite3.Connection, path: Path, ranges: Sequence[tuple[int, int]]
) -> None:
    """UsageError naming the first line that repeats an earlier line's custom_id."""
    custom_id, first, second = conn.execute(
        "SELECT custom_id, MIN(offset), MAX(offset) FROM inputs"
        " GROUP BY custom_id HAVING COUNT(*) > 1 ORDER BY MAX(offset) LIMIT 1"
    ).fetchone()
    raise UsageError(
        f"line {line_number(path, file_offset(ranges, second))} of {path.name} repeats the"
        f" custom_id {custom_id.decode(errors='replace')!r} of line"
        f" {line_number(path, file_offset(ranges, first))}: their results could not be told apart"
    )


def split_results(results_path: Path, succeeded_target: Path, errors_target: Path) -> Ordered:
    """The result lines of a batch whose input the ledger does not have (made elsewhere,
    found by `sync`): succeeded lines into one file and the rest into the other, each in
    the order the API sent them; one pass over the lines per file."""
    saved: list[Saved | None] = []
    for target, wanted in ((succeeded_target, True), (errors_target, False)):
        lines = (
            line if line.endswith(b"\n") else line + b"\n"
            for line in _result_lines(results_path)
            if (outcome(line)[1] == b"succeeded") == wanted
        )
        first = next(lines, None)
        if first is None:
            saved.append(None)
            continue
        prepare_target(target)
        saved.append(save_chunks(target, itertools.chain([first], lines)))
    return Ordered(saved[0], saved[1], placed=0, unknown=0, repeated=0, missing=0)


def _result_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        for line in source:
            if line.strip(BLANK + b"\n"):
                yield line
