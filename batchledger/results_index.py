"""The one index of result lines by custom_id: a scratch SQLite file (a bounded page cache,
the rest on disk, deleted on exit) and the loop that fills it from result files.

Used by redo.py (`retry`'s plan and merge: where each line's bytes are), export.py (the
fields an export shows) and ordering.py (Anthropic's results put in input order). A dict of
a million custom_ids would hold a hundred megabytes or more.
"""

import json
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

INSERT_BATCH = 2_000  # rows written to the index per statement
READ_BYTES = 1024 * 1024  # result bytes read at once
INDEX_CACHE_KIB = 32 * 1024  # SQLite's page cache for the index: bounded, and enough to be quick

_decode_json = json.JSONDecoder().raw_decode


class ScratchIndex:
    """A temporary SQLite file for a join too large for memory, deleted on exit.

    Its page cache is bounded (INDEX_CACHE_KIB): the rest lives on disk.
    """

    def __init__(self, prefix: str = "batchledger-redo-") -> None:
        self._folder = tempfile.TemporaryDirectory(prefix=prefix)
        self.conn = sqlite3.connect(Path(self._folder.name) / "index.db")
        # A scratch file, deleted at the end: nothing to recover after a crash.
        self.conn.execute("PRAGMA journal_mode = OFF")
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.execute(f"PRAGMA cache_size = -{INDEX_CACHE_KIB}")

    def __enter__(self) -> "ScratchIndex":
        return self

    def __exit__(self, *_: object) -> None:
        self.conn.close()
        self._folder.cleanup()


def lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Each line of `path` (its newline included) with its byte offset."""
    offset = 0
    with path.open("rb", buffering=READ_BYTES) as stream:
        for raw in stream:
            yield offset, raw
            offset += len(raw)


def json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object on a line; {} if it is not one."""
    try:
        # A third faster than json.loads(bytes), which guesses the encoding of every line.
        value = _decode_json(raw.decode())[0]
    except ValueError:  # not JSON, not UTF-8, or leading whitespace: the careful way
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


# (file number, offset, the line's bytes, its JSON object) -> the row to store for it.
RowOf = Callable[[int, int, bytes, dict[str, Any]], tuple[Any, ...]]


def index_results(
    conn: sqlite3.Connection,
    upsert: str,
    paths: Sequence[Path],
    row_of: RowOf,
    read: Callable[[Path], Iterator[tuple[int, bytes]]] = lines,
) -> None:
    """Store a row (`row_of`) for every line of `paths` that names a custom_id, by the
    statement `upsert`, whose ON CONFLICT clause decides which line of a custom_id answered
    twice is kept (its success over an error). Lines naming none are left out: no request
    can be told by them."""
    with conn:
        for number, path in enumerate(paths):
            pending: list[tuple[Any, ...]] = []
            for offset, raw in read(path):
                record = json_object(raw)
                if not isinstance(record.get("custom_id"), str):
                    continue  # not attributable to any request
                pending.append(row_of(number, offset, raw, record))
                if len(pending) >= INSERT_BATCH:
                    conn.executemany(upsert, pending)
                    pending.clear()
            conn.executemany(upsert, pending)
