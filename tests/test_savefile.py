"""The download writer thread, against a disk that is slow and then fails.

The CLI's own tests (test_faults.py) fail the disk through RLIMIT_FSIZE, where writing is
faster than the network: the reader never waits on a full queue there. Here the disk is
slow, so the reader does, and the writer's failure must still reach it.
"""

import errno
import hashlib
import io
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from batchledger import savefile
from batchledger.savefile import BackgroundWriter

CHUNK = b"x" * 65536


class SlowDisk(io.BytesIO):
    """A file whose every write takes a while, and which is full after `room` writes."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.writes = 0
        self.writing = threading.Event()

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writing.set()
        time.sleep(0.05)
        self.writes += 1
        if self.writes > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def feed_in_background(writer: BackgroundWriter, chunks: int) -> "Future[str]":
    """Feed `writer` from a daemon thread, as the reader of a response would."""
    fed: Future[str] = Future()

    def run() -> None:
        try:
            with writer:
                for _ in range(chunks):
                    writer.write(CHUNK)
                fed.set_result(writer.finish())
        except BaseException as exc:
            fed.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()  # a daemon: a hang fails, not blocks
    return fed


def test_a_disk_that_fills_up_stops_a_reader_waiting_on_the_queue() -> None:
    disk = SlowDisk(room=2)
    writer = BackgroundWriter(disk)  # type: ignore[arg-type]

    fed = feed_in_background(writer, 16 * 20)  # 20 MiB: far more than the queue holds

    with pytest.raises(OSError, match="No space left"):
        fed.result(timeout=10)
    assert disk.writes == 3  # nothing written after the failure
    assert not writer._thread.is_alive()


def test_abandon_stops_the_writer_without_writing_the_rest() -> None:
    disk = SlowDisk(room=1000)
    writer = BackgroundWriter(disk)  # type: ignore[arg-type]
    for _ in range(16 * (savefile.QUEUED_BATCHES + 1)):  # fills the queue
        writer.write(CHUNK)
    assert disk.writing.wait(5)

    started = time.monotonic()
    writer.abandon()

    assert time.monotonic() - started < 1  # one write in progress, not the whole queue
    assert not writer._thread.is_alive()
    assert disk.writes <= 2


# The announced size is checked behind the transport's own check (the SDK's httpx raises on a
# body cut short of its Content-Length first), so no download through the CLI reaches it: it
# is shown here, on save_chunks itself.


@pytest.mark.parametrize("arrived", [[b"abc"], [b"abcdefghij", b"k"]], ids=["short", "long"])
def test_bytes_of_another_size_than_announced_leave_the_target_as_it_was(
    isolated: Path, arrived: list[bytes]
) -> None:
    target = isolated / "results.jsonl"
    target.write_bytes(b"the complete file saved before\n")

    with pytest.raises(savefile.Incomplete, match=r"received \d+ of 10 bytes"):
        savefile.save_chunks(target, arrived, expected_size=10)

    assert target.read_bytes() == b"the complete file saved before\n"
    assert sorted(path.name for path in isolated.iterdir()) == ["results.jsonl"]  # no .part


def test_bytes_of_another_size_than_announced_make_no_file_where_there_was_none(
    isolated: Path,
) -> None:
    with pytest.raises(savefile.Incomplete):
        savefile.save_chunks(isolated / "results.jsonl", [b"abc"], expected_size=10)

    assert list(isolated.iterdir()) == []


def test_bytes_of_the_announced_size_are_saved(isolated: Path) -> None:
    target = isolated / "results.jsonl"

    saved = savefile.save_chunks(target, [b"abcde", b"fghij"], expected_size=10)

    assert target.read_bytes() == b"abcdefghij"
    assert saved == savefile.Saved(size=10, sha256=hashlib.sha256(b"abcdefghij").hexdigest())
