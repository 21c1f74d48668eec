"""What the user typed for a batch, turned into a batch id: a full id, a prefix, `last`."""

from batchledger.errors import UsageError
from batchledger.ledger import Ledger


def resolve_batch_id(ledger: Ledger | None, text: str) -> str:
    """A batch id from what the user typed: a full id, a unique prefix, or `last`."""
    if not text.strip():
        raise UsageError("the batch id is empty")
    if text == "last":
        latest = ledger.latest_batch() if ledger is not None else None
        if latest is None:
            raise UsageError("'last' names no batch: the ledger holds no created batch yet")
        return str(latest["batch_id"])
    if ledger is not None and ledger.find_batch(text) is not None:
        return text
    matches = ledger.batches_with_prefix(text) if ledger is not None else []
    if len(matches) == 1:
        return str(matches[0]["batch_id"])
    if len(matches) > 1:
        names = ", ".join(row["batch_id"] for row in matches[:5])
        more = " and more" if len(matches) > 5 else ""
        raise UsageError(
            f"{text!r} matches {len(matches)} batches in the ledger ({names}{more}); "
            "type more of the id"
        )
    if text.startswith("batch_"):
        return text  # a full id the ledger has not seen: the API knows it, or says not
    raise UsageError(f"no batch in the ledger matches {text!r}")
