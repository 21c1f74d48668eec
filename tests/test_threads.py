"""Helper threads leave Ctrl-C to the main thread (batchledger/threads.py).

A SIGINT the kernel hands to a writer or a hasher thread would wait until the main thread
next runs Python code: during a stalled download, minutes. Each helper thread blocks it.
"""

import signal
import threading
from pathlib import Path

from batchledger.result_lines import HashApart
from batchledger.savefile import BackgroundWriter
from batchledger.threads import MAIN_THREAD_SIGNALS, start_thread


def blocked_signals(thread: threading.Thread) -> set[int]:
    """The signals a running thread blocks, as the kernel has them (SigBlk)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    mask = int(
        next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16
    )
    return {number for number in range(1, 65) if mask & (1 << (number - 1))}


def test_a_started_thread_blocks_the_main_thread_s_signals_and_the_caller_s_mask_is_kept():
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    release = threading.Event()
    thread = start_thread(release.wait, "test-quiet")
    try:
        assert {signal.SIGINT, signal.SIGTERM, signal.SIGALRM} <= blocked_signals(thread)
        assert set(MAIN_THREAD_SIGNALS) == {signal.SIGINT, signal.SIGTERM, signal.SIGALRM}
    finally:
        release.set()
        thread.join()
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    assert signal.SIGINT not in before


def test_a_download_s_writer_and_hasher_threads_leave_ctrl_c_to_the_main_thread(tmp_path):
    for writer_class in (BackgroundWriter, HashApart):
        with open(tmp_path / f"{writer_class.__name__}.out", "wb") as out:
            writer = writer_class(out)
            threads = [writer._thread] + ([writer._hasher] if writer_class is HashApart else [])
            for thread in threads:
                assert signal.SIGINT in blocked_signals(thread), (writer_class, thread.name)
            writer.write(b"x" * 10)
            writer.finish()
        assert (tmp_path / f"{writer_class.__name__}.out").read_bytes() == b"x" * 10
