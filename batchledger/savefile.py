"""Saving a download: a temporary file of its own, written in a thread, made durable.

The thread that reads the HTTP response spends its time in Python (parsing the body as
it arrives); writing and hashing spend theirs in calls that release the GIL. Handing the
bytes over in batches of about a megabyte lets the two overlap on separate cores with few
hand-overs between threads; a queue of a few batches bounds the memory this takes,
whatever the size of the file (bench/transfer.py measures both).

Each temporary file names the process that writes it and is locked by it, so that what a
killed run left behind can be told from a download still going on, and removed.
"""

import hashlib
import os
import queue
import re
import secrets
import threading
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # not POSIX: no locks, and leftovers are not cleaned up
    fcntl = None  # type: ignore[assignment]

# Bytes gathered from the response before they are handed to the writer thread at once.
BATCH_BYTES = 1024 * 1024
# Batches waiting for the writer at most: a slow disk holds the reader back, not memory.
QUEUED_BATCHES = 2
# Every this many bytes the kernel is asked to start writing them out (_start_writeback).
WRITEBACK_BYTES = 32 * 1024 * 1024
# How often a reader blocked on a full queue checks whether the writer has failed.
POLL_SECONDS = 0.1


class BackgroundWriter:
    """Writes to `out` what `write` is given, in a thread; `finish` makes it durable.

    `out` must be a file opened for binary writing, at its start. Whatever goes wrong in
    the thread (a full disk, a file too large) is raised again in the caller at its next
    `write` or at `finish`. `abandon` stops the thread without writing what is left.
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
        self._thread = threading.Thread(target=self._run, name="batchledger-writer", daemon=True)
        self._thread.start()

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
            # The thread drains the queue without writing, so this does not block long.
            self._hand_over(None, raise_failure=False)
            self._thread.join()

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

    def _run(self) -> None:
        written = written_out = 0
        try:
            while (batch := self._queue.get()) is not None:
                if self._abandoned.is_set():
                    continue
                data = b"".join(batch)
                self._out.write(data)
                self._digest.update(data)
                written += len(data)
                if written - written_out >= WRITEBACK_BYTES:
                    self._out.flush()
                    _start_writeback(self._out.fileno(), written_out, written - written_out)
                    written_out = written
        except BaseException as exc:  # raised again in the reading thread
            self._error = exc


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing these bytes to disk now, without waiting for it.

    On Linux, POSIX_FADV_DONTNEED starts writeback of the range's dirty pages and drops
    the pages already clean: a large download neither leaves a gigabyte of dirty pages for
    the final fsync (which then has only the tail to wait for) nor crowds the page cache.
    Elsewhere this does nothing, and the final fsync does all the work.
    """
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def new_part(target: Path) -> tuple[Path, BinaryIO]:
    """A new temporary file beside `target`, named after this process and locked by it.

    While the process lives, its lock keeps other runs from taking the file for one left
    behind; if it is killed, `remove_leftover_parts` can tell, and removes the file.
    """
    part = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    out = part.open("xb")
    if fcntl is not None:
        fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return part, out


def remove_leftover_parts(target: Path) -> list[tuple[Path, int]]:
    """Remove what killed runs left of their downloads to `target`; each path and size.

    A temporary file is left over when the process it names is gone and nobody holds its
    lock (a run killed with SIGKILL, or by a power cut, cannot remove its own).
    """
    if fcntl is None or os.name != "posix":
        return []
    name = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[0-9a-f]{{8}}\.part")
    removed: list[tuple[Path, int]] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    for entry in entries:
        match = name.fullmatch(entry.name)
        if match is None or _process_exists(int(match[1])):
            continue
        try:
            with open(entry.path, "rb") as part:
                try:
                    fcntl.flock(part.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live run on another host, or another run cleaning up
                size = os.fstat(part.fileno()).st_size
                os.unlink(entry.path)
        except OSError:
            continue  # removed by another run first, or not ours to remove: left as it is
        removed.append((Path(entry.path), size))
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except (OverflowError, ValueError):
        return True  # no process id: not a name this module gave, so not ours to remove
    return True


def sync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable, so the ledger never outlives the file it names."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
