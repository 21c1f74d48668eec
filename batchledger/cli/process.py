"""The process around a run: its exit, and Ctrl-C (main.py's `entry` uses them)."""

import contextlib
import os
import signal
import sys
import threading
import time
from typing import NoReturn

from batchledger.errors import ExitCode


def exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown, as mypy's `hard_exit` does.

    Once `openai` is imported, tearing down its thousands of classes and modules adds
    about 0.1 s to every run (`python -c "import openai"`: 0.47 s; ending in `os._exit`:
    0.39 s). By now `main` has closed the ledger and
    the log; the standard streams are flushed here.

    A run with threads of its own still going (a sweep stopped by Ctrl-C, whose downloads
    stop at their next chunk and remove their temporary files) waits for them, but not
    longer than THREADS_GRACE_SECONDS: a download stalled in a read would otherwise hold
    the exit until the server sends again or the read times out (minutes). What such a
    thread leaves is what `kill -9` leaves: an uncommitted ledger write, which SQLite
    rolls back, and a temporary file, which the next save to that target removes.
    """
    deadline = time.monotonic() + THREADS_GRACE_SECONDS
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # the reader went away (`batchledger list | head`): stop quietly, as cat would
    except OSError as exc:  # a full disk, say: the output is incomplete, and must not pass
        with contextlib.suppress(OSError):
            print(
                f"batchledger: error: could not write the output: {exc.strerror}", file=sys.stderr
            )
        code = code or int(ExitCode.FAILURE)
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


# How long the end of a run waits for its other threads (downloads stopping after Ctrl-C).
THREADS_GRACE_SECONDS = 2.0
# How long a Ctrl-C may go unanswered before it is raised again.
INTERRUPT_REPEAT_SECONDS = 1.0


def install_interrupt_handler() -> None:
    """Make Ctrl-C stick.

    Python drops an exception raised while a finaliser or weakref callback runs ("Exception
    ignored in: ..."), and a KeyboardInterrupt that lands there is lost: the run goes on
    waiting on the network (seen in tests/test_fault_campaign.py). So a Ctrl-C also arms a
    timer that raises it again until `main` has taken it.
    """
    if not hasattr(signal, "setitimer") or signal.getsignal(signal.SIGINT) is not (
        signal.default_int_handler
    ):
        return  # no timers here, or SIGINT is ignored or handled by whoever started us
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGALRM, _interrupted)


def _interrupted(signum: int, frame: object) -> None:
    signal.setitimer(signal.ITIMER_REAL, INTERRUPT_REPEAT_SECONDS)
    raise KeyboardInterrupt


def interrupt_taken() -> None:
    """Disarm the repeat of a Ctrl-C: `main` has it."""
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)
