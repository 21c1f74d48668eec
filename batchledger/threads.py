"""Background threads that never take the user's Ctrl-C.

The kernel hands a process's SIGINT (or SIGTERM, or SIGALRM) to any thread that does not
block it. If a helper thread (a writer, a hasher, an estimate's scan) takes it, CPython only
flags it for the main thread, whose handler then waits until the main thread runs Python
code again: while it is blocked in a socket read of a stalled download, that may be
minutes. A thread started here blocks those signals from its first instruction (a new
thread inherits its creator's mask, so the mask is set around `start`), and the kernel
delivers them to the main thread, whose blocking call is interrupted at once.
"""

import signal
import threading
from collections.abc import Callable
from typing import Any

# The signals the main thread acts on: Ctrl-C, a kill, and the timer some callers arm.
MAIN_THREAD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGALRM})


def start_thread(
    target: Callable[..., Any], name: str, args: tuple[Any, ...] = (), *, daemon: bool = True
) -> threading.Thread:
    """Start `target(*args)` in a thread of its own that leaves the main thread's signals
    to the main thread."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=daemon)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread
