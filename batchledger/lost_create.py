"""The lost-create rule for APIs whose batches carry no metadata (Anthropic's Message Batches).

A create whose answer was lost (a timeout, a dropped connection, a 5xx after the bytes went
out) may or may not have made a batch. With no metadata to carry our own id, the batch is
found by the server's clock and the request count: among the account's batches created
since the create began, those not in the ledger with the same number of requests.

- Exactly one: it is ours; the caller records it.
- None, once the listing reached batches older than the create: none was made; the caller
  sends again.
- More than one: the rule cannot tell which (another client of the same account sent as
  many requests at the same time); nothing is sent, the candidates are named, exit 3.

What it cannot prove: that a lone candidate is ours and not another client's identical
create of the same second, with ours never made. It can prove the other way round: with
no candidate, nothing of that size was made since the create began, so sending again
pays for nothing twice.

A pure function: the caller lists the batches (newest first, as the API lists them) and
chooses what to do.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from batchledger.errors import Refused

# An HTTP Date has whole seconds: the create may have begun up to a second after it says.
DATE_RESOLUTION = timedelta(seconds=1)


@dataclass(frozen=True)
class Found:
    batch: Mapping[str, Any]


@dataclass(frozen=True)
class NotMade:
    pass


@dataclass(frozen=True)
class Ambiguous:
    candidates: tuple[str, ...]  # batch ids, newest first

    def refusal(self) -> Refused:
        """The error the command stops with (exit 3), naming the candidates."""
        return Refused(
            f"the create's answer was lost and {len(self.candidates)} batches could be it "
            f"({', '.join(self.candidates)}): nothing was sent again; look at them "
            "(batchledger status ID), or send anyway with --force"
        )


LostCreate = Found | NotMade | Ambiguous


def match_lost_create(
    listed: Iterable[Mapping[str, Any]],
    since: datetime,
    count: int,
    known_ids: set[str] | frozenset[str],
) -> LostCreate:
    """What became of a create of `count` requests begun at the server's time `since`.

    `listed` is the account's batches, newest first (consumed only until one older than
    `since`: the paging stops there). `since` is the server's Date, of a response no later
    than the create's start, timezone-aware. `known_ids`: the batch ids the ledger holds.
    A batch is a MessageBatch as JSON (or the SDK's object as a dict): its `id`,
    `created_at` (RFC 3339 or a datetime) and `request_counts`.
    """
    if since.tzinfo is None:
        raise ValueError("since must be timezone-aware (the server's Date is UTC)")
    earliest = since - DATE_RESOLUTION
    candidates: list[Mapping[str, Any]] = []
    for batch in listed:
        created = _created_at(batch)
        if created < earliest:
            break  # the listing is newest first: every batch after this is older still
        if batch["id"] in known_ids or _requests(batch) != count:
            continue
        candidates.append(batch)
    if not candidates:
        return NotMade()
    if len(candidates) == 1:
        return Found(candidates[0])
    return Ambiguous(tuple(str(batch["id"]) for batch in candidates))


def _created_at(batch: Mapping[str, Any]) -> datetime:
    value = batch["created_at"]
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"batch {batch['id']} has a created_at with no timezone: {value}")
    return moment


def _requests(batch: Mapping[str, Any]) -> int:
    """All of a batch's requests, whatever their state."""
    counts = batch.get("request_counts") or {}
    names = ("processing", "succeeded", "errored", "canceled", "expired")
    return sum(int(counts.get(name) or 0) for name in names)
