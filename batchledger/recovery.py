"""Recovery of creates cut off after their upload: the batch one made is found on the
server and recorded, or the create is marked abandoned once no batch can have been made.

Below both the sweep (every account's cut-off creates) and jobs (a part's cut-off attempt).
"""

import time
from dataclasses import dataclass, field

from batchledger.batch import known_batches, record
from batchledger.batches import BatchRef
from batchledger.claims import claimed_by_another_run
from batchledger.context import Context
from batchledger.rows import BatchRow
from batchledger.times import epoch_of

# An unfinished create whose batch is not found is given up on after this long, even where
# the search could not look back far enough to prove that no batch was made.
ABANDON_AFTER_SECONDS = 7 * 86400


@dataclass
class Recovered:
    recovered: list[BatchRow] = field(default_factory=list)  # batches of cut-off creates, found
    abandoned: list[BatchRow] = field(default_factory=list)  # cut-off creates that made none


def recover_unfinished(ctx: Context, account: str, rows: list[BatchRow]) -> Recovered:
    """Give creates of `account` that were cut off after their upload an end: record the
    batch one made, or mark it abandoned once no batch can have been made."""
    report = Recovered()
    rows = [row for row in rows if not claimed_by_another_run(row)]
    if not rows:
        return report
    provider = ctx.provider_for(account)
    files = {row["ref"]: provider.get_file(_upload_of(row)) for row in rows}
    made_at = [file["created_at"] for file in files.values() if file is not None]
    # A batch is made after its input file: back to the oldest upload, by the server's
    # clock. With an upload gone, the search can only look through the newest batches.
    since = min(made_at) if len(made_at) == len(rows) else None
    wanted = {row["ref"]: _upload_of(row) for row in rows}
    made_from = ctx.ledger.batches.batch_ids_made_from({_upload_of(row) for row in rows})
    known = known_batches(ctx, provider, rows[0], made_from)  # the account's, if no metadata
    search = provider.find_batches(wanted, since, known)
    now = time.time()
    for row in rows:
        batch = search.found.get(row["ref"])
        if batch is not None:
            ref = BatchRef(account, batch["id"])
            report.recovered.append(record(ctx, ref, batch, action="recover", row_id=row["id"]))
        elif (
            search.complete
            or files[row["ref"]] is None
            or (now - epoch_of(row["recorded_at"]) > ABANDON_AFTER_SECONDS)
        ):
            why = "its upload is gone" if files[row["ref"]] is None else "no batch was made"
            ctx.ledger.batches.mark_abandoned(
                row["id"], f"{why}; 'batchledger create' of the same input sends it again"
            )
            report.abandoned.append(row)
    return report


def _upload_of(row: BatchRow) -> str:
    """The input file a create cut off after its upload recorded (unfinished_submissions:
    input_file_id IS NOT NULL)."""
    file_id = row["input_file_id"]
    assert file_id is not None
    return file_id
