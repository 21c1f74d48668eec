"""`prune`: delete from the account the files of batches whose results are safe locally.

The rule that keeps it safe: a batch's files are deleted only when the batch is final and
every result file it has is saved locally, unchanged on disk (the size and sha256 the ledger
recorded), or it has no result files at all. A file that another batch still needs (an
input shared by a batch that does not pass the rule, or one still being submitted) is kept.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from batchledger.accounts import Account
from batchledger.batch import saved_unchanged
from batchledger.batches import FINAL_STATUSES, BatchRef
from batchledger.context import Context
from batchledger.errors import BatchledgerError
from batchledger.ledger import Ledger
from batchledger.rows import RESULT_KINDS, BatchRow, file_id, saved_columns

FILE_KINDS = ("input", "output", "error")


class RemoteFile(NamedTuple):
    """A batch's file on the account, as the ledger knows it."""

    file_id: str | None
    size: int | None  # bytes, as the ledger recorded them
    gone_at: str | None  # when prune found it gone (or deleted it)


def remote_file(row: BatchRow, kind: str) -> RemoteFile:
    """The batch's `kind` file ("input", "output" or "error")."""
    if kind == "input":
        return RemoteFile(row["input_file_id"], row["input_bytes"], row["input_file_gone_at"])
    if kind == "output":
        return RemoteFile(row["output_file_id"], row["output_bytes"], row["output_file_gone_at"])
    return RemoteFile(row["error_file_id"], row["error_bytes"], row["error_file_gone_at"])


@dataclass
class PruneItem:
    """One remote file of a batch, and what prune did (or would do) with it."""

    row_id: int
    batch_id: str
    kind: str  # "input", "output" or "error"
    file_id: str
    size: int | None  # bytes, from the API's file object (else the ledger)
    outcome: str = ""  # "deleted", "would delete", "not found", "failed: ..."

    @property
    def freed(self) -> int:
        return (self.size or 0) if self.outcome in ("deleted", "would delete") else 0


@dataclass
class PrunePlan:
    """The remote files prune deletes (or did, or would), and how many final batches it
    kept because their results are not saved."""

    items: list[PruneItem]
    kept_unsaved: int  # final batches passed over because their results are not saved


def results_safe(row: BatchRow) -> bool:
    """Every result file of the batch is saved locally and unchanged; or it has none."""
    for kind in RESULT_KINDS:
        if file_id(row, kind) is None:
            continue
        path = saved_columns(row, kind)["path"]
        if path is None or not saved_unchanged(row, kind, Path(path)):
            return False
    return True


def prunable(row: BatchRow, older_than: str | None) -> bool:
    """The batch is final, made before `older_than` (if given), with its results safe."""
    if row["batch_id"] is None or row["status"] not in FINAL_STATUSES:
        return False
    made_at = row["created_at"] or row["recorded_at"]  # as list --since compares
    if older_than is not None and made_at >= older_than:
        return False
    return results_safe(row)


def plan(ledger: Ledger, older_than: str | None, account: Account) -> PrunePlan:
    """The remote files prune may delete from `account`; nothing is asked of the API.

    Only batches made where the account points now: another base URL's files are not
    there to delete.
    """
    rows = [
        row
        for row in ledger.batches.rows_with_remote_files()
        if row["account"] == account.name and row["base_url"] in (None, account.location)
    ]
    chosen: list[BatchRow] = []
    kept: list[BatchRow] = []
    unsaved = 0
    for row in rows:
        if prunable(row, older_than):
            chosen.append(row)
        else:
            kept.append(row)
            if row["batch_id"] is not None and row["status"] in FINAL_STATUSES:
                unsaved += not results_safe(row)
    # A file that a kept row names stays: an upload reused by a resumed create, or shared.
    in_use = {remote_file(row, kind).file_id for row in kept for kind in FILE_KINDS}
    # Requests sent inline were uploaded as no file: there is no input to delete.
    kinds = RESULT_KINDS if account.profile.inline_requests else FILE_KINDS
    items = [
        PruneItem(
            row_id=row["id"],
            batch_id=BatchRef.of(row).batch_id,  # prunable: the API has answered for it
            kind=kind,
            file_id=file.file_id,
            size=file.size,
        )
        for row in chosen
        for kind in kinds
        if (file := remote_file(row, kind)).file_id is not None
        and file.gone_at is None
        and file.file_id not in in_use
    ]
    return PrunePlan(items=_once_each(items), kept_unsaved=unsaved)


def _once_each(items: Iterable[PruneItem]) -> list[PruneItem]:
    """One item per file id: an input shared by two prunable batches is deleted once."""
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.file_id not in seen:
            seen.add(item.file_id)
            unique.append(item)
    return unique


def prune(ctx: Context, items: list[PruneItem], *, dry_run: bool) -> list[PruneItem]:
    """Look up each file and, unless `dry_run`, delete it; each deletion is recorded.

    A file the API no longer has is noted (and recorded as gone), not an error. Any other
    failure is kept in the item's outcome and the others go on.
    """
    provider, ledger = ctx.provider(), ctx.ledger
    for item in items:
        try:
            found = provider.get_file(item.file_id)
            if found is not None:
                item.size = found.get("bytes") or item.size
                if dry_run:
                    item.outcome = "would delete"
                    continue
            gone = found is None or not provider.delete_file(item.file_id)
        except BatchledgerError as exc:
            item.outcome = f"failed: {exc.message}"
            continue
        if gone:
            item.outcome = "not found"
            detail = f"{item.file_id} was not on the account (HTTP 404)"
        else:
            item.outcome = "deleted"
            detail = f"deleted {item.file_id} ({item.size} bytes)"
        if not dry_run:
            # One file may be two of a batch's (Anthropic's results: output and errors).
            row = ledger.batches.get_row(item.row_id)
            for kind in FILE_KINDS:
                if kind == item.kind or remote_file(row, kind).file_id == item.file_id:
                    ledger.batches.record_remote_file_gone(item.row_id, kind, detail)
    return items
