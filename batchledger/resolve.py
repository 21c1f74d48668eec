"""What the user typed for a batch, turned into the batch and its account: a full id, a
unique prefix, or `last`."""

from collections.abc import Mapping
from typing import Any, TypeVar

from batchledger.batches import BatchRef, JobRef
from batchledger.errors import NotInLedger, UsageError
from batchledger.ledger import Ledger
from batchledger.rows import BatchRow, JobRow

# The rows `_one` picks from: batches, or jobs.
Named = TypeVar("Named", BatchRow, JobRow)


def resolve(
    ledger: Ledger | None, text: str, *, named: str | None, current: str
) -> BatchRef | JobRef:
    """The batch or job `text` names: a job id (`job_…`) or a unique prefix of one, `last`
    (the newest batch or job made), or a batch as resolve_batch finds it."""
    if ledger is not None and text.strip():
        if text == "last":
            job = ledger.jobs.latest_job(named)
            batch = ledger.batches.latest_batch(named)
            if job is not None and (batch is None or job["recorded_at"] >= batch["recorded_at"]):
                return JobRef(job["job_id"])
        elif text.startswith("job_") or not ledger.with_prefix("batches", text, named):
            job = _one(ledger.with_prefix("jobs", text, named), text, "matches")
            if job is not None:
                return JobRef(job["job_id"])
    return resolve_batch(ledger, text, named=named, current=current)


def resolve_batch(ledger: Ledger | None, text: str, *, named: str | None, current: str) -> BatchRef:
    """The batch `text` names, on its own account.

    `named` is the account the user named (--account), if any: prefixes and `last` look
    only there. A batch the ledger has is followed on the account it was made on; a full
    id the ledger has not seen is looked up on `current`, the run's account.
    """
    if not text.strip():
        raise UsageError("the batch id is empty")
    if text == "last":
        latest = ledger.batches.latest_batch(named) if ledger is not None else None
        if latest is None:
            raise NotInLedger("'last' names no batch: the ledger holds no created batch yet")
        return BatchRef.of(latest)
    if ledger is not None:
        exact = ledger.batches.find_batches(text)
        mine = [row for row in exact if row["account"] == named]
        found = _one(mine or exact, text, "is a batch of")
        if found is None:
            found = _one(ledger.with_prefix("batches", text, named), text, "matches")
        if found is not None:
            return BatchRef.of(found)
    if text.startswith("batch_"):
        return BatchRef(named or current, text)  # the API knows it, or says not
    raise NotInLedger(f"no batch in the ledger matches {text!r}")


def _one(rows: list[Named], text: str, verb: str) -> Named | None:
    """The one row of `rows`; None if none; a usage error naming them if several."""
    if len(rows) <= 1:
        return rows[0] if rows else None
    names = ", ".join(_label(row) for row in rows[:5])
    more = " and more" if len(rows) > 5 else ""
    raise UsageError(
        f"{text!r} {verb} {len(rows)} batches in the ledger ({names}{more}); "
        "type more of the id, or name the account with --account"
    )


def _label(row: Mapping[str, Any]) -> str:
    """A batch's or a job's id, and its account."""
    return f"{row.get('job_id') or row['batch_id']} ({row['account']})"
