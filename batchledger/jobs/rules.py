"""The part rules: given a part's state, its last attempt and the time, what to do next.

A pure function, no I/O: jobs/moves.py reads the ledger, asks, and carries the answer out.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from batchledger.batches import BatchStatus, PartState, bounced_off_token_limit
from batchledger.rows import BatchRow, PartRow
from batchledger.times import epoch_of, iso_utc

# A part the enqueued-token limit bounced is sent again once another batch of the account
# has finished, or after this long (doubled at each bounce, up to the maximum).
REQUEUE_BACKOFF_SECONDS = 60
MAX_REQUEUE_BACKOFF_SECONDS = 1800


class Do(StrEnum):
    SEND = "send"  # a queued part goes out now (if --max-in-flight and its input allow)
    REQUEUE = "requeue"  # bounced off the enqueued-token limit: queued until `not_before`
    RESET = "reset"  # its create was cut off and made no batch: it goes out again
    WAIT = "wait"  # queued, its backoff not passed and no batch of the account finished since
    NOTHING = "nothing"  # sent and live, final, or cancelled: nothing for the rules to do


@dataclass(frozen=True)
class Next:
    do: Do
    not_before: str | None = None  # REQUEUE: when it may go again (ISO 8601, UTC)
    reason: str = ""


def requeue_wait(requeues: int) -> int:
    """Seconds a part waits after its bounce number `requeues` + 1."""
    return int(min(REQUEUE_BACKOFF_SECONDS * 2**requeues, MAX_REQUEUE_BACKOFF_SECONDS))


def next_step(
    part: PartRow,
    attempt: BatchRow | None,
    now: datetime,
    *,
    fits_budget: bool = True,
    finished_since: bool,
) -> Next:
    """What to do next with `part`, whose last attempt is `attempt`, at `now`.

    `fits_budget`: a queued part's counted tokens fit the account's enqueued-token budget
    beside its live batches (issue 22). `finished_since`: a batch of the part's account has
    finished since the part was requeued (a bounced part goes again then, without waiting
    out its backoff).
    """
    state = part["state"]
    if state == PartState.SENT and attempt is not None:
        if attempt["status"] == BatchStatus.ABANDONED:
            return Next(Do.RESET, reason="its create was cut off and made no batch")
        if bounced_off_token_limit(attempt):
            wait = timedelta(seconds=requeue_wait(part["requeues"]))
            return Next(
                Do.REQUEUE,
                not_before=iso_utc(now + wait),
                reason=f"part {part['part_index']} bounced off the enqueued-token limit",
            )
        return Next(Do.NOTHING)
    if state != PartState.QUEUED:
        return Next(Do.NOTHING)
    if not fits_budget:
        return Next(Do.WAIT, reason="it would take the account over its enqueued-token budget")
    if not part["requeues"] or part["not_before"] is None:
        return Next(Do.SEND)
    if now.timestamp() >= epoch_of(part["not_before"]) or finished_since:
        return Next(Do.SEND)
    return Next(Do.WAIT, reason="its token-limit backoff has not passed")
