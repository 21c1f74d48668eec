"""Saving a file atomically: a temporary file of its own, written in a thread, made durable.

Whatever the bytes come from (a download, a merge of results), they go to a temporary file
beside the target, which is renamed into place only when complete and of the expected size:
a failure or Ctrl-C leaves no partial file at the target, and a complete file already there
stays as it was.

The thread that reads the HTTP response spends its time in Python (parsing the body as
it arrives); writing and hashing spend theirs in calls that release the GIL. Handing the
bytes over in batches of about a megabyte lets the two overlap on separate cores with few
hand-overs between threads; a queue of a few batches bounds the memory this takes,
whatever the size of the file (bench/transfer.py measures both).

Each temporary file names the process that writes it and is locked by it, so that what a
killed run left behind can be told from a download still going on, and removed.

A target that is a symlink is written through, as `cp` and the shell's `>` do: the link
stays, and the file it points to (made if it does not exist yet, with its folders) gets
the bytes; the temporary file and the rename are in that file's folder.
"""

import contextlib
import hashlib
import logging
import os
import queue
import re
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, NamedTuple

from batchledger.errors import BatchledgerError
from batchledger.threads import start_thread

try:
    import fcntl
except ImportError:  # not POSIX: nothing is locked, and leftovers are not removed
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("batchledger")

# Bytes gathered from the response before they are handed to the writer thread at once.
BATCH_BYTES = 1024 * 1024
# Batches waiting for the writer at most: a slow disk holds the reader back, not memory.
QUEUED_BATCHES = 2
# Every this many bytes the kernel is asked to start writing them out (_start_writeback).
WRITEBACK_BYTES = 32 * 1024 * 1024
# How often a reader blocked on a full queue checks whether the writer has failed.
POLL_SECONDS = 0.1


class Saved(NamedTuple):
    size: int
    sha256: str


class Incomplete(Exception):
    """The bytes that arrived are not as many as were announced."""


def real_target(target: Path) -> Path:
    """Where the bytes for `target` go: through its symlinks (dangling ones too)."""
    return Path(os.path.realpath(target))


def prepare_target(target: Path) -> list[tuple[Path, int]]:
    """Make the target's folder; remove what killed runs left of theirs (each path and size)."""
    target = real_target(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchledgerError(f"could not create {target.parent}: {exc.strerror}") from exc
    return remove_leftover_parts(target)


def save_chunks(target: Path, chunks: Iterable[bytes], expected_size: int | None = None) -> Saved:
    """Write `chunks` to `target` atomically and durably; their size and sha256.

    Raises Incomplete (and leaves the target as it was) when `expected_size` is given and
    another number of bytes arrived; a disk that refuses the bytes is a BatchledgerError.
    """
    target = real_target(target)
    part: Path | None = None
    try:
        part, out = new_part(target)
        with out:  # open, and so locked, until renamed: never taken for a leftover
            with BackgroundWriter(out) as writer:
                for chunk in chunks:
                    writer.write(chunk)
                sha256 = writer.finish()
            if expected_size is not None and writer.size != expected_size:
                raise Incomplete(f"received {writer.size} of {expected_size} bytes")
            os.replace(part, target)
        sync_directory(target.parent)
    except OSError as exc:
        log.error("could not write %s", target, exc_info=True)
        raise BatchledgerError(f"could not save {target}: {exc.strerror or exc}") from exc
    finally:
        if part is not None:
            part.unlink(missing_ok=True)
    return Saved(size=writer.size, sha256=sha256)


class BackgroundWriter:
    """Writes to `out` what `write` is given, in a thread; `finish` makes it durable.

    `out` must be a file opened for binary writing, at its start. Whatever goes wrong in
    the thread (a full disk, a file too large) is raised again in the caller at its next
    `write` or at `finish`. Used as a context manager, it is abandoned (the thread stopped
    without writing what is left) when the block raises.
    """

    def __init__(self, out: BinaryIO) -> None:
        self.size = 0
        self._out = out
        self._digest = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=QUEUED_BATCHES)
        self._abandoned = threading.Event()
        self._error: BaseException | None = None
        self._thread = start_thread(self._run, "batchledger-writer")

    def write(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self.size += len(chunk)
        if self._pending_bytes >= BATCH_BYTES:
            self._hand_over(self._take_pending())

    def finish(self) -> str:
        """Write what is left, wait for it to reach the disk; the sha256 of all of it."""
        if self._pending:
            self._hand_over(self._take_pending())
        self._hand_over(None)
        self._thread.join()
        self._raise_if_failed()
        self._out.flush()
        os.fsync(self._out.fileno())
        return self._digest.hexdigest()

    def abandon(self) -> None:
        """Stop the thread, leaving the file as it is; for a download that failed."""
        self._abandoned.set()
        if self._thread.is_alive():
            # The thread finishes the write it is in, if any, then drains the queue
            # without writing.
            self._hand_over(None, raise_failure=False)
            self._thread.join()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.abandon()

    def _take_pending(self) -> list[bytes]:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        return batch

    def _hand_over(self, batch: list[bytes] | None, raise_failure: bool = True) -> None:
        while True:
            if self._error is not None:
                if raise_failure:
                    self._raise_if_failed()
                return
            try:
                self._queue.put(batch, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _hash_chunk(self, data: bytes) -> None:
        """Add written bytes to the sha256 (in this thread; HashApart: in one beside it)."""
        self._digest.update(data)

    def _run(self) -> None:
        written = written_out = 0
        try:
            while (batch := self._queue.get()) is not None:
                if self._abandoned.is_set():
                    continue
                data = b"".join(batch)
                self._hash_chunk(data)
                self._out.write(data)
                written += len(data)
                if written - written_out >= WRITEBACK_BYTES:
                    self._out.flush()
                    _start_writeback(self._out.fileno(), written_out, written - written_out)
                    written_out = written
        except BaseException as exc:  # raised again in the reading thread
            self._error = exc


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing these bytes to disk now, without waiting for it.

    On Linux, POSIX_FADV_DONTNEED starts writeback of the range's dirty pages, so that
    the fsync before the rename has only the last few megabytes left to wait for, not a
    gigabyte (bench/transfer.py). It is a hint: where it is missing or fails, the final
    fsync does all the work.
    """
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def new_part(target: Path) -> tuple[Path, BinaryIO]:
    """A new temporary file beside `target`, locked by this process while it is open.

    The file is made under a name of its own and locked before it takes its `.part` name,
    and the caller keeps it open until it is renamed into place: so a `.part` file nobody
    holds a lock on belongs to no live run, and `remove_leftover_parts` may remove it.
    On a file system without locks, nothing is locked and nothing is removed.
    """
    part = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    making = part.with_name(f"{part.name}.new")
    out = making.open("xb")
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # no locks here: remove_leftover_parts skips
                fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, part)
    except BaseException:
        out.close()
        making.unlink(missing_ok=True)
        raise
    return part, out


def remove_leftover_parts(target: Path) -> list[tuple[Path, int]]:
    """Remove what killed runs left of their downloads to `target`; each path and size.

    A run killed outright (SIGKILL, a power cut) cannot remove its temporary file; once
    no process holds the file's lock, it is a leftover. The process id in its name is
    for people reading the folder, not a test: a pid may be reused, or be another
    container's.
    """
    if fcntl is None:
        return []
    name = re.compile(rf"\.{re.escape(target.name)}\.\d+\.[0-9a-f]{{8}}\.part")
    removed: list[tuple[Path, int]] = []
    try:
        entries = [entry for entry in os.scandir(target.parent) if name.fullmatch(entry.name)]
    except OSError:
        return []
    for entry in entries:
        try:
            with open(entry.path, "rb") as part:
                # Fails while a live run holds it (BlockingIOError), or where there are no
                # locks at all: either way the file is left as it is.
                fcntl.flock(part.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                size = os.fstat(part.fileno()).st_size
                os.unlink(entry.path)
        except OSError:
            continue  # held, removed by another run first, or not ours to remove
        removed.append((Path(entry.path), size))
    return removed


def sync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable, so the ledger never outlives the file it names."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
