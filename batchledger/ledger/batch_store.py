"""Batches and their history: claims, uploads, what the API said, downloads, merges,
marks, finds by id, ref or input, and what a sweep has to do."""

import json
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, cast

from batchledger.batches import (
    FINAL_STATUSES,
    SAVABLE_STATUSES,
    BatchStatus,
    fields_from_batch,
    ref_of,
)
from batchledger.claims import new_claim
from batchledger.details import CreateDetails
from batchledger.errors import BatchledgerError
from batchledger.ledger.store import (
    MADE_AT,
    ClaimGuard,
    Connection,
    InputFile,
    details_fields,
    input_fields,
    placeholders,
    refuse_duplicates,
    refuse_if_held,
    same_input,
    saved_file_fields,
)
from batchledger.rows import BatchRow, HistoryRow
from batchledger.times import utc_now


class BatchStore:
    """The `batches` and `history` tables."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def select(self, sql: str, params: tuple[Any, ...] = ()) -> list[BatchRow]:
        """Rows of `batches` (SELECT * or batches.*): SQLite's dicts, typed once here."""
        return cast(list[BatchRow], self.conn.rows(sql, params))

    def claim_submission(
        self,
        input_: InputFile,
        endpoint: str,
        window: str,
        *,
        account: str,
        base_url: str,
        force: bool,
        details: CreateDetails | None = None,
        guard: ClaimGuard | None = None,
    ) -> tuple[BatchRow, bool]:
        """Start (or resume) the submission of `input_`; the row and whether it resumed.

        One transaction decides it, so two runs cannot both start the same input: an
        input already sent on the account is refused (unless `force`), and a submission
        another run holds a claim on is refused too; then `guard`, if given, may refuse it
        (the day budget, against what the ledger holds now). A create cut off earlier is
        resumed from its row.
        """
        with self.conn.writing():
            if not force:
                refuse_duplicates(self.conn, input_, endpoint, window, account, base_url)
            row = self.find_unfinished_submission(input_, endpoint, window, account, base_url)
            refuse_if_held(input_, row)
            if guard is not None:
                guard("batches", row)
            asked = details_fields(details or CreateDetails())
            if row is not None:
                self.conn.db.table("batches").update(
                    row["id"], {**new_claim(), "status": None, "base_url": base_url, **asked}
                )
                self.conn.history(row["id"], "resume", "resuming an interrupted create")
                return self.get_row(row["id"]), True
            row_id = (
                self.conn.db.table("batches")
                .insert(
                    {
                        "ref": f"bl_{uuid.uuid4().hex}",
                        **input_fields(input_, endpoint, window, account, base_url),
                        "origin": "create",
                        "recorded_at": utc_now(),
                        **asked,
                        **new_claim(),
                    }
                )
                .last_pk
            )
            assert isinstance(row_id, int)
            self.conn.history(row_id, "submit", f"input {input_.path}")
            return self.get_row(row_id), False

    def record_upload(self, row_id: int, file_id: str) -> None:
        with self.conn.writing():
            self.conn.db.table("batches").update(row_id, {"input_file_id": file_id})
            self.conn.history(row_id, "upload", f"uploaded as {file_id}")

    def record_batch(
        self,
        batch: Mapping[str, Any],
        *,
        action: str,
        row_id: int | None,
        account: str,
        base_url: str | None,
        origin: str = "lookup",
        actual_cost: float | None = None,
    ) -> BatchRow:
        """Store what the account's API says of a batch; adds a row (from `origin`) if new.

        A row made before base URLs were recorded is stamped with the one that answered.
        `actual_cost`: a final batch's cost, as the caller priced it (`usage.batch_cost`);
        recorded once, where the row has none yet.
        """
        fields = fields_from_batch(batch)
        existing: BatchRow | None = None
        with self.conn.writing():
            if row_id is None:
                existing = self.row_of(batch, account)
                row_id = existing["id"] if existing else None
            if row_id is None:
                row_id = self._insert_foreign(batch, fields, origin, account, base_url)
            else:
                self.conn.update_batch(row_id, fields)
                if base_url is not None and (existing is None or existing["base_url"] is None):
                    self.conn.db.conn.execute(
                        "UPDATE batches SET base_url = ? WHERE id = ? AND base_url IS NULL",
                        (base_url, row_id),
                    )
                    if existing is not None:
                        existing = {**existing, "base_url": base_url}
            self.conn.history(row_id, action, f"status {batch['status']}")
            if actual_cost is not None:  # issue 22: priced once, when the batch ended
                self.conn.db.conn.execute(
                    "UPDATE batches SET actual_cost = ? WHERE id = ? AND actual_cost IS NULL",
                    (actual_cost, row_id),
                )
        if existing is not None and _stored_as_given(fields):
            # Read inside the transaction: the row as it is now, without reading it again.
            return cast(BatchRow, {**existing, **fields})
        return self.get_row(row_id)

    def _insert_foreign(
        self,
        batch: Mapping[str, Any],
        fields: dict[str, Any],
        origin: str,
        account: str,
        base_url: str | None,
    ) -> int:
        """Add a batch this ledger did not create."""
        row_id = (
            self.conn.db.table("batches")
            .insert(
                {
                    "ref": f"bl_{uuid.uuid4().hex}",
                    "account": account,
                    "base_url": base_url,
                    "origin": origin,
                    "input_file_id": batch.get("input_file_id"),
                    "endpoint": batch.get("endpoint") or "",
                    "completion_window": batch.get("completion_window") or "",
                    "recorded_at": utc_now(),
                    **fields,
                }
            )
            .last_pk
        )
        assert isinstance(row_id, int)
        return row_id

    def record_download(self, row_id: int, kind: str, path: Path, size: int, sha256: str) -> None:
        """Note that the batch's `kind` file ("output" or "error") is saved at `path`."""
        with self.conn.writing():
            self.conn.db.table("batches").update(
                row_id,
                {**saved_file_fields(kind, path, size, sha256), f"{kind}_saved_at": utc_now()},
            )
            self.conn.history(row_id, f"save_{kind}", f"saved {size} bytes to {path}")

    def record_merge(
        self,
        row_id: int,
        kind: str,
        path: Path | None,
        size: int | None,
        sha256: str | None,
        detail: str,
    ) -> None:
        """The batch's `kind` results, merged with a retry's: one line per custom_id."""
        with self.conn.writing():
            self.conn.db.table("batches").update(
                row_id,
                {**saved_file_fields(kind, path, size, sha256), f"{kind}_saved_at": utc_now()},
            )
            self.conn.history(row_id, f"merge_{kind}", f"{detail}: {size} bytes at {path}")

    def record_event(self, row_id: int, action: str, detail: str) -> None:
        with self.conn.writing():
            self.conn.history(row_id, action, detail)

    def record_remote_file_gone(self, row_id: int, kind: str, detail: str) -> None:
        """The batch's `kind` file ("input", "output", "error") is no longer on the account."""
        self._mark(row_id, {f"{kind}_file_gone_at": utc_now()}, f"prune_{kind}_file", detail)

    def mark_results_gone(self, row_id: int, reason: str) -> None:
        """The API says a result file does not exist (any more): sweeps stop asking."""
        self._mark(row_id, {"results_gone_at": utc_now()}, "results_gone", reason)

    def mark_not_found(self, row_id: int, reason: str) -> None:
        """The account says it has no such batch: sweeps stop asking."""
        self._mark(row_id, {"not_found_at": utc_now()}, "not_found", reason)

    def mark_rejected(self, row_id: int, reason: str, code: str | None = None) -> None:
        """The API refused to create the batch: the row will not be resumed."""
        errors = json.dumps([{"code": code, "message": reason}]) if code else None
        self._mark(row_id, {"status": BatchStatus.REJECTED, "errors": errors}, "rejected", reason)

    def mark_abandoned(self, row_id: int, reason: str) -> None:
        """No batch came of this create: sweeps stop looking; a create of it starts again."""
        self._mark(row_id, {"status": BatchStatus.ABANDONED}, "abandoned", reason)

    def _mark(self, row_id: int, fields: dict[str, Any], action: str, detail: str) -> None:
        """Set `fields` of the batch's row, and say why in its history: one transaction."""
        with self.conn.writing():
            self.conn.db.table("batches").update(row_id, fields)
            self.conn.history(row_id, action, detail)

    def get_row(self, row_id: int) -> BatchRow:
        rows = self.select("SELECT * FROM batches WHERE id = ?", (row_id,))
        if not rows:
            raise BatchledgerError(f"ledger row {row_id} vanished")
        return rows[0]

    def find_batches(self, batch_id: str, account: str | None = None) -> list[BatchRow]:
        """The rows of `batch_id`: one per account that has it (or the one of `account`)."""
        if account is None:
            return self.select("SELECT * FROM batches WHERE batch_id = ? ORDER BY id", (batch_id,))
        return self.select(
            "SELECT * FROM batches WHERE batch_id = ? AND account = ?", (batch_id, account)
        )

    def find_batch(self, batch_id: str, account: str) -> BatchRow | None:
        rows = self.find_batches(batch_id, account)
        return rows[0] if rows else None

    def row_of(self, batch: Mapping[str, Any], account: str) -> BatchRow | None:
        """The ledger's row of an account's batch: by its id, or by the ref a create tagged
        it with.

        A create cut off before it learned its batch id left a row with the ref only; the
        batch must land in that row, not in a second one.
        """
        row = self.find_batch(str(batch["id"]), account)
        ref = ref_of(batch)
        if row is None and ref:
            by_ref = self.find_by_ref(ref)
            if by_ref is not None and by_ref["batch_id"] is None and by_ref["account"] == account:
                row = by_ref
        return row

    def batch_ids_made_from(self, file_ids: Collection[str]) -> set[str]:
        """The batches recorded as made from these uploads (a part's attempts share one)."""
        if not file_ids:
            return set()
        rows = self.conn.rows(
            f"SELECT batch_id FROM batches WHERE batch_id IS NOT NULL AND input_file_id IN "
            f"({', '.join('?' for _ in file_ids)})",
            tuple(file_ids),
        )
        return {row["batch_id"] for row in rows}

    def batch_ids_of_account(self, account: str) -> set[str]:
        """Every batch of the account the ledger holds."""
        rows = self.conn.rows(
            "SELECT batch_id FROM batches WHERE batch_id IS NOT NULL AND account = ?", (account,)
        )
        return {row["batch_id"] for row in rows}

    def find_by_ref(self, ref: str) -> BatchRow | None:
        rows = self.select("SELECT * FROM batches WHERE ref = ?", (ref,))
        return rows[0] if rows else None

    def latest_batch(self, account: str | None = None) -> BatchRow | None:
        """The batch most recently made, as `list` orders them; made here before synced."""
        where = "AND account = ? " if account is not None else ""
        rows = self.select(
            f"SELECT * FROM batches WHERE batch_id IS NOT NULL AND part IS NULL {where}"
            f"ORDER BY origin = 'create' DESC, {MADE_AT} DESC, id DESC LIMIT 1",
            (account,) if account is not None else (),
        )
        return rows[0] if rows else None

    def find_unfinished_submission(
        self, input_: InputFile, endpoint: str, window: str, account: str, base_url: str
    ) -> BatchRow | None:
        """A create of the same input on the account (where it points now) that stopped
        before it knew its batch id: cut off, or given up on."""
        where, params = same_input(input_, endpoint, window, account, base_url)
        rows = self.select(
            f"SELECT * FROM batches WHERE {where} "
            "AND batch_id IS NULL AND origin = 'create' AND (status IS NULL OR status = ?) "
            "ORDER BY id DESC LIMIT 1",
            (*params, BatchStatus.ABANDONED),
        )
        return rows[0] if rows else None

    def unsent_submissions(self) -> list[BatchRow]:
        """Creates cut off before their upload was recorded: no batch can have been made of
        them (a create needs the file id the upload answers with)."""
        return self.select(
            "SELECT * FROM batches WHERE batch_id IS NULL AND input_file_id IS NULL "
            "AND origin = 'create' AND status IS NULL AND part IS NULL ORDER BY id"
        )

    def unfinished_submissions(self) -> list[BatchRow]:
        """Creates cut off after the upload: their batch may exist on the server."""
        return self.select(
            "SELECT * FROM batches WHERE batch_id IS NULL AND input_file_id IS NOT NULL "
            "AND origin = 'create' AND status IS NULL ORDER BY id"
        )

    def batches_to_sweep(self, *, include_synced: bool = False) -> list[BatchRow]:
        """Batches not yet final, and finished ones whose result files are not saved yet.

        Finished batches that `sync` found are left alone unless `include_synced`: their
        results may be saved elsewhere already, by whoever made them.
        """
        synced = "" if include_synced else "AND origin != 'sync' "
        return self.select(
            "SELECT * FROM batches WHERE batch_id IS NOT NULL AND results_gone_at IS NULL "
            "AND not_found_at IS NULL AND ("
            f"coalesce(status, '') NOT IN ({placeholders(FINAL_STATUSES)}) "
            f"OR (status IN ({placeholders(SAVABLE_STATUSES)}) {synced}AND ("
            "(output_file_id IS NOT NULL AND output_path IS NULL) "
            "OR (error_file_id IS NOT NULL AND error_path IS NULL)))"
            ") ORDER BY id",
            (*sorted(FINAL_STATUSES), *sorted(SAVABLE_STATUSES)),
        )

    def has_work_to_sweep(self, *, include_synced: bool) -> bool:
        """`status --all` has something to do: a batch to check or save, a create to
        recover or end, a job to move on. Without, it needs no key and no network."""
        for sql in (
            "SELECT 1 FROM batches WHERE batch_id IS NULL AND origin = 'create' "
            "AND status IS NULL LIMIT 1",
            "SELECT 1 FROM jobs WHERE status = 'running' LIMIT 1",
        ):
            if self.conn.rows(sql):
                return True
        return bool(self.batches_to_sweep(include_synced=include_synced))

    def batch_finished_since(self, account: str, since: str) -> bool:
        """A batch of the account was seen ending well (or early) at or after `since`."""
        rows = self.conn.rows(
            "SELECT 1 FROM batches WHERE account = ? AND status IN ('completed', 'expired', "
            "'cancelled') AND checked_at >= ? LIMIT 1",
            (account, since),
        )
        return bool(rows)

    def rows_with_remote_files(self) -> list[BatchRow]:
        """Every row that names an input, output or error file not known to be gone, oldest
        first."""
        return self.select(
            "SELECT * FROM batches WHERE "
            "(input_file_id IS NOT NULL AND input_file_gone_at IS NULL) "
            "OR (output_file_id IS NOT NULL AND output_file_gone_at IS NULL) "
            f"OR (error_file_id IS NOT NULL AND error_file_gone_at IS NULL) ORDER BY {MADE_AT}, id"
        )

    def history(self, row_id: int) -> list[HistoryRow]:
        rows = self.conn.rows("SELECT * FROM history WHERE batch = ? ORDER BY id", (row_id,))
        return cast(list[HistoryRow], rows)


# The columns of fields_from_batch that SQLite stores as INTEGER; the others are TEXT.
_INTEGER_FIELDS = frozenset({"requests_total", "requests_completed", "requests_failed"})


def _stored_as_given(fields: Mapping[str, Any]) -> bool:
    """SQLite gives these values back as they are: no column's type converts them."""
    return all(
        value is None or type(value) is (int if name in _INTEGER_FIELDS else str)
        for name, value in fields.items()
    )
