"""Concatenating files (or byte ranges of them) into one, saved atomically: a job's merged results.

The bytes go through `savefile.save_chunks`, whose writer thread writes and hashes them
while this thread reads the next block. `os.sendfile` or `copy_file_range` would copy in
the kernel but skip that hash; bench/jobs.py measures both ways against `cat` + fsync
(bench/README.md): the sha256 (under 1 GB/s on one core) is what bounds either.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path

from batchledger.errors import BatchledgerError
from batchledger.savefile import Saved, prepare_target, save_chunks

# Bytes read at once: each read is a new bytes object handed to the writer thread, which
# holds a few of them at most (savefile.QUEUED_BATCHES), so memory stays a few of these.
# savefile's own batch size: one read is one hand-over, with no join; and the writer
# hashes what it has just written while it is still in the CPU's cache (1 MiB beat 4 and
# 16 MiB in bench/jobs.py).
READ_BYTES = 1024 * 1024

Source = Path | tuple[Path, int, int]


def concat(target: Path, sources: Sequence[Source]) -> Saved:
    """The sources' bytes in order into `target`, atomically; each a file or (file, start, end)."""
    prepare_target(target)
    return save_chunks(target, _chunks(sources))


def _chunks(sources: Sequence[Source]) -> Iterator[bytes]:
    for source in sources:
        path, start, end = (source, 0, None) if isinstance(source, Path) else source
        try:
            yield from _read(path, start, end)
        except OSError as exc:  # the source's fault, not the target's: say so
            raise BatchledgerError(f"could not read {path}: {exc.strerror or exc}") from exc


def _read(path: Path, start: int, end: int | None) -> Iterator[bytes]:
    with path.open("rb", buffering=0) as stream:
        stream.seek(start)
        left = None if end is None else end - start
        while left is None or left > 0:
            chunk = stream.read(READ_BYTES if left is None else min(READ_BYTES, left))
            if not chunk:
                if left:
                    raise OSError(f"it ended before byte {end}")
                return
            if left is not None:
                left -= len(chunk)
            yield chunk
