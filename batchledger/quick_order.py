"""The quick way to put Anthropic's results in input order (ordering.order_results): numpy.

Imported by `order_results` only (numpy costs every command 0.1 s and 12 MB at start-up).
Whatever it cannot be sure of, it leaves to the exact way (SQLite, in ordering.py) by
raising `Fallback`, always before either target is touched.

1. The input (quick_inputs.py): each line's custom_id (read as result_lines' regexes read
   it, with no Python code per line for lines that begin as json.dumps or the API write
   them: numpy finds the lines and each id's closing quote (quick_scan.py), and reads the
   bytes as overlapping 8-byte words), a 64-bit hash of it (`quick_inputs._hashes`) and
   the id itself (a fixed-width numpy bytes array). The hashes are sorted once, with a
   directory on their top bits; two lines with one hash (the same custom_id, or a
   collision) are left to the exact way, which names repeated lines.
2. The results (quick_results.py), read once in blocks: each line's custom_id and type
   the same way, its hash looked up, the match confirmed by comparing the ids themselves
   (correctness never rests on a hash). Each line's input line, type, offset, size and
   place in its bucket go to arrays in files (memmap). The lines go to one spill file,
   each block's sorted by input line, so in one run per bucket (K buckets by input line
   range, K = the results' size / BUCKET_BYTES), each line in a fixed-width slot when its
   block's lines are of even lengths.
3. Here: each bucket, its runs read whole into one buffer (about BUCKET_BYTES), has its
   lines joined in input order and written to the two targets, each hashed in a thread of
   its own beside its writer (result_lines.HashApart); the lines that take no place are
   read back from the results file in the order they came, to the end of the errors file.

Past quick_scan.PARALLEL_BYTES, the input and then the results are each read by two processes at
once: the second half by a forked child, which writes its arrays (and spill file) to
the temporary folder; if it fails, this process reads that half itself.

Memory: the per-line arrays (about 70 bytes a line: hashes, ids, positions) and a bucket
or two, whatever the results' size; the files are read and written in large blocks.
"""

import bisect
import gc
import itertools
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchledger.quick_inputs import InputKeys
from batchledger.quick_results import Rows, index_all
from batchledger.quick_scan import Fallback as Fallback
from batchledger.quick_scan import Ints
from batchledger.result_lines import Ordered, Targets
from batchledger.savefile import BATCH_BYTES
from batchledger.threads import start_thread

BUCKET_BYTES = 4 * 1024 * 1024  # result bytes per bucket, read whole when it is written
MAX_BUCKET_BYTES = 4 * BUCKET_BYTES  # a larger bucket is read line by line
MAX_BUCKETS = 400  # buckets at most (< 2**15); past that, buckets grow
WRITE_LINES = 2048  # lines joined into one write (the GIL is held that long)


def order(
    input_path: Path,
    results_path: Path,
    succeeded_target: Path,
    errors_target: Path,
    ranges: Sequence[tuple[int, int]],
) -> Ordered:
    # A million lines make millions of short-lived memoryviews and slices, which the cyclic
    # collector would walk again and again (5 % of the CPU time): none of them is a cycle.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _order(input_path, results_path, succeeded_target, errors_target, ranges)
    finally:
        if collecting:
            gc.enable()


def _order(
    input_path: Path,
    results_path: Path,
    succeeded_target: Path,
    errors_target: Path,
    ranges: Sequence[tuple[int, int]],
) -> Ordered:
    with tempfile.TemporaryDirectory(prefix="batchledger-order-") as name:
        folder = Path(name)
        keys = InputKeys(input_path, ranges, folder)
        size = results_path.stat().st_size
        buckets = max(1, min(MAX_BUCKETS, -(-size // BUCKET_BYTES)))
        rows = index_all(results_path, size, keys, folder, buckets)
        inputs = keys.count
        del keys
        return _write(rows, results_path, inputs, buckets, succeeded_target, errors_target)


def _write(
    rows: Rows,
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
    # The lines to place, in input order (an input line has one at most): a scatter, no sort.
    kept = np.flatnonzero(placed & ~later)
    slot = np.full(max(1, inputs), -1, dtype=np.int64)
    slot[line[kept]] = kept
    in_order = slot[slot >= 0]
    del slot, kept
    numbers = line[in_order] * count
    numbers //= max(1, inputs)
    bounds = np.searchsorted(numbers, np.arange(1, count + 1)).tolist()
    del numbers
    buffer = bytearray(min(max(rows.filled, default=0), MAX_BUCKET_BYTES))
    runs, run_bounds = rows.runs(count)
    spills = [path.open("rb", buffering=0) for path in rows.spills()]
    remover: threading.Thread | None = None
    try:
        with Targets(succeeded_target, errors_target) as targets:
            start = 0
            for number in range(count):
                stop = bounds[number]
                members = in_order[start:stop]
                start = stop
                if len(members):
                    its = runs[run_bounds[number] : run_bounds[number + 1]]
                    read = _read_bucket(spills, its, rows.filled[number], buffer)
                    _place(at[members], size[members], ok[members], read, targets)
            del buffer
            for source in spills:
                source.close()
            # 366 MB of spill removed by a thread, while the rest is written and synced
            remover = start_thread(_remove, "batchledger-order-rm", (rows.spills(),), daemon=False)
            rest = np.flatnonzero(~placed | later)
            if len(rest):
                offset: Ints = rows.load("offset", np.int64)
                _write_rest(results_path, rest, offset, size, rows.last_unended, targets.errors)
            saved = targets.commit()
    finally:
        for source in spills:
            source.close()
        if remover is not None:
            remover.join()
    return Ordered(
        succeeded=saved[0],
        errors=saved[1],
        placed=joined - repeated,
        unknown=total - joined,
        repeated=repeated,
        missing=inputs - (joined - repeated),
    )


def _remove(paths: list[Path]) -> None:
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


def _read_bucket(
    spills: list[Any], runs: Ints, filled: int, buffer: bytearray
) -> Callable[[slice], Any]:
    """A bucket's bytes by slice: its runs read whole into `buffer`, one after another
    (if it is larger, each line read when asked for)."""
    if int(runs[:, 2].sum()) != filled:
        raise OSError("a temporary file of the ordering changed")
    fds = [source.fileno() for source in spills]
    if filled > len(buffer):  # the input's lines got their results' bytes unevenly
        return _LineReader(fds, runs)
    view = memoryview(buffer)
    done = 0
    for part, offset, length in runs.tolist():
        if _read_into(fds[part], view[done : done + length], offset) != length:
            raise OSError("a temporary file of the ordering changed")
        done += length
    return view[:filled].__getitem__


def _read_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)


class _LineReader:
    """A line of a bucket by its slice, read from the bucket's runs (one after another)."""

    def __init__(self, fds: list[int], runs: Ints) -> None:
        self.fds = fds
        self.runs = runs.tolist()
        self.firsts = [0, *itertools.accumulate(run[2] for run in self.runs)]

    def __call__(self, piece: slice) -> bytes:
        number = bisect.bisect_right(self.firsts, piece.start) - 1
        if not 0 <= number < len(self.runs):
            raise OSError("a temporary file of the ordering changed")
        part, offset, _ = self.runs[number]
        return os.pread(
            self.fds[part], piece.stop - piece.start, offset + piece.start - self.firsts[number]
        )


def _place(
    starts: Ints,
    sizes: Ints,
    ok: NDArray[np.int8],
    read: Callable[[slice], Any],
    targets: Targets,
) -> None:
    """A bucket's lines (in input order) into the target of their outcome."""
    succeeded = ok == 1
    for wanted, writer in ((succeeded, targets.succeeded), (~succeeded, targets.errors)):
        firsts = starts[wanted]
        lasts = firsts + sizes[wanted]
        # Writes of a batch each (savefile.BATCH_BYTES): the writer's thread takes each
        # as it is, with no join of its own.
        written = np.cumsum(lasts - firsts)
        total = int(written[-1]) if len(written) else 0
        cuts = np.searchsorted(written, np.arange(BATCH_BYTES, total, BATCH_BYTES)) + 1
        bounds = [0, *cuts.tolist(), len(firsts)]
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
