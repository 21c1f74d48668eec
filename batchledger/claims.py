"""Who is submitting an input right now: a claim is a lease held by one process on one host.

A claim names its host and process and runs out at its expiry. On the same host, the
process is asked directly: a dead one, or a pid that a newer process has taken over, frees
the claim at once. A claim from another host (a ledger shared over a network file system)
holds until it expires, so two hosts cannot both submit one input in the meantime, and a
host that died cannot block it for ever.
"""

import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from batchledger.times import epoch_of, iso_utc

# Longer than any one create takes (an upload of 200 MB on a slow line included).
CLAIM_LEASE_SECONDS = 3600
# claimed_at is to the second, and a boot time read from /proc may be a second off.
CLOCK_TICK_MARGIN_SECONDS = 2


def this_run() -> str:
    """Who is submitting: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def new_claim() -> dict[str, str]:
    """The ledger columns of a claim made now by this process."""
    now = datetime.now(UTC)
    return {
        "claimed_by": this_run(),
        "claimed_at": iso_utc(now),
        "claim_expires_at": iso_utc(now + timedelta(seconds=CLAIM_LEASE_SECONDS)),
    }


def claimed_by_another_run(row: Mapping[str, Any]) -> bool:
    """Another run holds a live claim on this row."""
    claimed_by = row.get("claimed_by")
    if not claimed_by or claimed_by == this_run():
        return False
    expires = row.get("claim_expires_at")
    if expires is None or epoch_of(expires) <= datetime.now(UTC).timestamp():
        return False  # run out (or made before claims had an expiry)
    host, _, pid = claimed_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host: only its lease says how long it holds
    started = process_started_at(int(pid))
    if started is None:
        return False  # no such process any more
    # A pid taken over by a process started after the claim is not the claimant.
    return started <= epoch_of(row["claimed_at"]) + CLOCK_TICK_MARGIN_SECONDS


def process_started_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), 0.0 where that cannot be told; None if
    there is no such process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # someone else's process: alive
    return _linux_start_time(pid) or 0.0


def _linux_start_time(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    # Field 22, counted after the command name (which may hold spaces) in parentheses.
    fields = stat.rpartition(")")[2].split()
    try:
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, OSError):
        return None
