"""Who is submitting an input right now: a claim names a host and a process."""

import os
import socket
from collections.abc import Mapping
from typing import Any


def this_run() -> str:
    """Who is submitting: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claimed_by_another_run(row: Mapping[str, Any]) -> bool:
    """Another process that is still alive is submitting this row."""
    claimed_by = row.get("claimed_by")
    if not claimed_by or claimed_by == this_run():
        return False
    host, _, pid = claimed_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # a ledger is local; a claim from elsewhere is a stale copy
    return process_alive(int(pid))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
