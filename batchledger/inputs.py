"""The input file of a create: checked at once, hashed while the rest of the run starts."""

import dataclasses
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import BinaryIO, TypeVar

from batchledger.errors import UsageError
from batchledger.ledger import InputFile
from batchledger.split import SPARSE_LINE_BYTES
from batchledger.threads import start_thread

_Row = TypeVar("_Row")
HASH_CHUNK_BYTES = 1024 * 1024
COUNT_CHUNK_BYTES = 4 * 1024 * 1024


def read_input(path_text: str) -> InputFile:
    """Check that the input exists and is a readable file; measure and hash it."""
    return hash_input(check_input(path_text), path_text)


def check_input(path_text: str) -> Path:
    """The input's absolute path, once it is known to be a readable file that is not empty.

    Cheap (a stat and one byte read), so that a bad input is reported before anything
    else: before the API key is looked at, the ledger opened or the log started.
    """
    path = Path(path_text).expanduser().absolute()
    if _a_stream(path):
        raise UsageError(
            f"input {path_text} is a stream, not a regular file: it cannot be read again (for "
            "a job's parts, retry, or the duplicate guard); save it to a file first"
        )
    if not path.exists():
        raise UsageError(f"input file {path_text} does not exist")
    if path.is_dir():
        raise UsageError(f"input {path_text} is a directory, not a file")
    if not path.is_file():
        # A pipe or a device: it could be read once only, and has no size to record.
        raise UsageError(
            f"input {path_text} is not a regular file: it cannot be read again (for a job's "
            "parts, retry, or the duplicate guard); save it to a file first"
        )
    try:
        with path.open("rb") as stream:
            first = stream.read(1)
    except OSError as exc:
        raise _unreadable(path_text, exc) from exc
    if not first:
        raise UsageError(f"input file {path_text} is empty")
    return path


def _a_stream(path: Path) -> bool:
    """/dev/stdin, /dev/fd/N, /proc/…/fd/N: whatever file is behind them now, the name
    recorded would not find it again."""
    parts = path.parts
    if parts[:2] == ("/", "dev"):
        return parts[2:3] == ("fd",) or parts[2:] in (("stdin",), ("stdout",), ("stderr",))
    return parts[:2] == ("/", "proc") and "fd" in parts


def hash_input(path: Path, path_text: str, *, count: bool = True) -> InputFile:
    """Measure and hash a checked input (the ledger's duplicate guard needs its sha256);
    with `count`, count its requests too (see count_lines)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise _unreadable(path_text, exc) from exc
    input_ = InputFile(path=path, size=size, sha256=digest.hexdigest())
    return count_lines(input_, path_text) if count else input_


def count_lines(input_: InputFile, path_text: str) -> InputFile:
    """`input_` with its number of requests: its lines, counted, never parsed.

    Not done while hashing in the background: counting holds the GIL, and beside the
    import of `openai` it cost that import half a second on a 200 MB input
    (bench/transfer.py); done after it, it costs 50-100 ms, from the page cache. Newlines
    are found as `split` finds them: with `find` (memchr) where lines are long, with
    `count` where they are short (on 200 MB of 5 kB lines: 53 ms against 136-155 ms).
    """
    newlines = 0
    last = b""
    sparse = False  # the last chunk's lines were long: walk its newlines with find
    try:
        with input_.path.open("rb") as stream:
            while chunk := stream.read(COUNT_CHUNK_BYTES):
                found = _newlines(chunk) if sparse else chunk.count(b"\n")
                sparse = found == 0 or len(chunk) // found > SPARSE_LINE_BYTES
                newlines += found
                last = chunk[-1:]
    except OSError as exc:
        raise _unreadable(path_text, exc) from exc
    # A last line without a newline is a request too.
    lines = newlines + (1 if last not in (b"", b"\n") else 0)
    return dataclasses.replace(input_, lines=lines)


def _newlines(chunk: bytes) -> int:
    found = at = 0
    find = chunk.find
    while at := find(b"\n", at) + 1:  # -1 + 1: no more
        found += 1
    return found


def hash_input_in_background(path: Path, path_text: str) -> "Future[InputFile]":
    """`hash_input` (without the count) in a thread of its own, so that it overlaps the
    import of `openai`.

    Hashing is C code that releases the GIL; the import is Python: on two cores they run
    side by side (bench/transfer.py). The thread is a daemon: a run that fails meanwhile
    (no API key, Ctrl-C) does not wait for the hash of a file it will not send.
    """
    future: Future[InputFile] = Future()

    def run() -> None:
        try:
            future.set_result(hash_input(path, path_text, count=False))
        except BaseException as exc:  # handed to whoever waits on the future
            future.set_exception(exc)

    start_thread(run, "batchledger-hash")
    return future


class InputHash:
    """The sha256 of a file the caller has open, taken in a thread of its own beside the
    caller's own reading of it (hashing releases the GIL: on two cores it costs the caller
    little). It reads a duplicate of the caller's descriptor by offset: the caller's
    position is untouched, and the bytes are those of the file the caller reads, even if
    another is renamed over its path meanwhile. `stop()` ends it early (the caller stopped
    reading); an unreadable file is a UsageError, as at create."""

    def __init__(self, stream: BinaryIO, path: Path) -> None:
        self._path_text = str(path)
        self._stopped = threading.Event()
        self._future: Future[str] = Future()
        if hasattr(os, "pread"):
            fd = os.dup(stream.fileno())
        else:  # Windows: a duplicate would share the caller's position; the path, then
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            start_thread(self._run, "batchledger-hash", (fd,))
        except BaseException:
            os.close(fd)
            raise

    def result(self) -> str:
        return self._future.result()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self, fd: int) -> None:
        try:
            digest = hashlib.sha256()
            offset = 0
            while not self._stopped.is_set() and (chunk := _read_at(fd, offset)):
                digest.update(chunk)
                offset += len(chunk)
            self._future.set_result(digest.hexdigest())
        except OSError as exc:
            self._future.set_exception(_unreadable(self._path_text, exc))
        except BaseException as exc:  # handed to whoever waits on the result
            self._future.set_exception(exc)
        finally:
            os.close(fd)


def _read_at(fd: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, HASH_CHUNK_BYTES, offset)
    return os.read(fd, HASH_CHUNK_BYTES)  # a descriptor of its own, read in order


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def read_as_sent(
    path: Path,
    sha256: str | None,
    rows: Callable[[BinaryIO], Iterator[_Row]],
    changed: str,
    buffering: int = -1,
) -> Iterator[_Row]:
    """The `rows` made from an input read again (an export, results()), held to the input
    as it was sent: its `sha256` (if recorded) is taken beside them (`InputHash`), and an
    input changed in place since, its size the same, is a UsageError once the last row is
    made (`changed` says what that means for the rows). One that cannot be read is a
    UsageError (exit 2), as at create, not a failure to save what it was read for."""
    try:
        stream = path.open("rb", buffering=buffering)
    except OSError as exc:
        raise _unreadable(str(path), exc) from exc
    with stream:
        hashing = InputHash(stream, path) if sha256 else None
        made = False
        try:
            yield from rows(stream)
            made = True
        finally:
            if hashing is not None and not made:
                hashing.stop()  # cut off, or the caller stopped: nobody waits for the hash
    if hashing is not None and hashing.result() != sha256:
        raise UsageError(
            f"the input {path} has changed since it was sent (same size, other bytes){changed}"
        )


def _unreadable(path_text: str, exc: OSError) -> UsageError:
    return UsageError(f"cannot read input file {path_text}: {exc.strerror or exc}")
