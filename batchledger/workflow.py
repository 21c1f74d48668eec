"""What the commands do, in plain values: the API calls and the ledger writes, in order.

Nothing here prints; the CLI turns the returned values into output.
"""

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchledger import api
from batchledger.errors import BatchledgerError, ExitCode
from batchledger.ledger import InputFile, Ledger, Row
from batchledger.paths import default_results_path, errors_path_for

if TYPE_CHECKING:
    from openai import OpenAI

HASH_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Submitted:
    file_id: str
    batch: dict[str, Any]
    row: Row
    recovered: bool = False  # the batch was made by an earlier create that was cut off


@dataclass(frozen=True)
class SavedFile:
    kind: str  # "output" or "error"
    path: Path
    size: int
    replaced: bool  # a file was already at `path` and has been overwritten


@dataclass
class BatchReport:
    """What a status check or a retrieve found and did for one batch."""

    batch_id: str
    batch: dict[str, Any] | None = None
    row: Row | None = None
    saved: list[SavedFile] = field(default_factory=list)
    error: BatchledgerError | None = None


def read_input(path_text: str) -> InputFile:
    """Check that the input exists and is a readable file; measure and hash it."""
    path = Path(path_text).expanduser().absolute()
    if not path.exists():
        raise BatchledgerError(f"input file {path_text} does not exist", ExitCode.USAGE)
    if path.is_dir():
        raise BatchledgerError(f"input {path_text} is a directory, not a file", ExitCode.USAGE)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
        size = os.stat(path).st_size
    except OSError as exc:
        raise BatchledgerError(
            f"cannot read input file {path_text}: {exc.strerror or exc}", ExitCode.USAGE
        ) from exc
    if size == 0:
        raise BatchledgerError(f"input file {path_text} is empty", ExitCode.USAGE)
    return InputFile(path=path, size=size, sha256=digest.hexdigest())


def submit(
    client: "OpenAI",
    ledger: Ledger,
    input_: InputFile,
    endpoint: str,
    window: str,
    log_file: Path,
    *,
    force: bool = False,
) -> Submitted:
    """Upload `input_` and create its batch, recording each step as soon as it is known.

    A create of the same input that was cut off earlier is resumed, not repeated: its
    batch is looked for on the server (by the ledger ref in its metadata), and its upload
    is reused.
    """
    duplicate = ledger.find_active_duplicate(input_, endpoint, window)
    if duplicate is not None and not force:
        raise BatchledgerError(
            f"{input_.path.name} was already submitted as {duplicate['batch_id']} "
            f"(status {duplicate['status']}, same content, endpoint and window); "
            "use --force to submit it again",
            ExitCode.REFUSED,
        )
    row = ledger.find_unfinished_submission(input_, endpoint, window)
    file_id: str | None = None
    if row is None:
        row = ledger.start_submission(input_, endpoint, window, log_file)
    else:
        ledger.record_event(row["id"], "resume", "resuming an interrupted create", log_file)
        since = epoch_of(row["recorded_at"]) - api.CLOCK_SKEW_SECONDS
        found = api.find_batches_by_ref(client, {row["ref"]}, since).get(row["ref"])
        if found is not None:
            row = ledger.record_batch(found, log_file, action="recover", row_id=row["id"])
            return Submitted(file_id=found["input_file_id"], batch=found, row=row, recovered=True)
        file_id = row["input_file_id"]
        if file_id is not None and not api.file_exists(client, file_id):
            file_id = None
        if file_id is None:
            file_id = api.find_uploaded_file(client, input_.path.name, input_.size, since)
            if file_id is not None:
                ledger.record_upload(row["id"], file_id, log_file)
    if file_id is None:
        file_id = api.upload_file(client, input_.path)
        ledger.record_upload(row["id"], file_id, log_file)
    # The ledger's ref travels with the batch, so the batch can be found again by
    # listing the account's batches if the response to this request is lost.
    batch = api.create_batch(client, file_id, endpoint, window, row["ref"])
    row = ledger.record_batch(batch, log_file, action="create", row_id=row["id"])
    return Submitted(file_id=file_id, batch=batch, row=row)


def epoch_of(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def check_status(
    client: "OpenAI",
    ledger: Ledger,
    batch_id: str,
    log_file: Path,
    *,
    auto_save: bool,
    out: Path | None = None,
) -> BatchReport:
    """Fetch a batch, record it, and save its results if it completed and `auto_save`."""
    batch = api.get_batch_status(client, batch_id)
    row = ledger.record_batch(batch, log_file, action="status", row_id=None)
    report = BatchReport(batch_id=batch_id, batch=batch, row=row)
    # A result already saved is not fetched again unless the user names a place for it.
    if auto_save and batch["status"] == "completed" and (out is not None or not results_saved(row)):
        report.saved = save_results(client, ledger, batch, row, out, log_file)
        report.row = ledger.get_row(row["id"])
    return report


def results_saved(row: Row) -> bool:
    """Every result file the batch has is saved locally."""
    return (row["output_file_id"] is None or row["output_path"] is not None) and (
        row["error_file_id"] is None or row["error_path"] is not None
    )


def retrieve(
    client: "OpenAI", ledger: Ledger, batch_id: str, out: Path | None, log_file: Path
) -> BatchReport:
    """Save a completed batch's results; refuse (exit 3) while it is not completed."""
    batch = api.get_batch_status(client, batch_id)
    row = ledger.record_batch(batch, log_file, action="retrieve", row_id=None)
    if batch["status"] != "completed":
        ledger.record_event(row["id"], "retrieve_refused", f"status {batch['status']}", log_file)
        raise BatchledgerError(
            f"batch {batch_id} is {batch['status']}, not completed; nothing was saved",
            ExitCode.REFUSED,
        )
    saved = save_results(client, ledger, batch, row, out, log_file)
    return BatchReport(batch_id=batch_id, batch=batch, row=ledger.get_row(row["id"]), saved=saved)


def save_results(
    client: "OpenAI",
    ledger: Ledger,
    batch: dict[str, Any],
    row: Row,
    out: Path | None,
    log_file: Path,
) -> list[SavedFile]:
    """Download the output file (and the error file beside it) and record both."""
    out_path = (out or default_results_path(batch["id"])).expanduser().absolute()
    wanted = [("output", batch.get("output_file_id"), out_path)]
    wanted.append(("error", batch.get("error_file_id"), errors_path_for(out_path)))
    saved: list[SavedFile] = []
    for kind, file_id, path in wanted:
        if not file_id:
            continue
        replaced = path.exists()
        operation = "DOWNLOAD_RESULTS" if kind == "output" else "DOWNLOAD_ERRORS"
        try:
            size = api.download_results(client, file_id, path, operation)
        except BatchledgerError as exc:
            ledger.record_event(row["id"], f"save_{kind}_failed", exc.message, log_file)
            raise
        except KeyboardInterrupt:
            ledger.record_event(row["id"], f"save_{kind}_interrupted", str(path), log_file)
            raise
        ledger.record_download(row["id"], kind, path, size, log_file)
        saved.append(SavedFile(kind=kind, path=path, size=size, replaced=replaced))
    return saved


def recover_unfinished(client: "OpenAI", ledger: Ledger, log_file: Path) -> list[Row]:
    """Record the batches that cut-off creates made on the server; the rows it recovered."""
    rows = ledger.unfinished_submissions()
    if not rows:
        return []
    since = min(epoch_of(row["recorded_at"]) for row in rows) - api.CLOCK_SKEW_SECONDS
    found = api.find_batches_by_ref(client, {row["ref"] for row in rows}, since)
    return [
        ledger.record_batch(found[row["ref"]], log_file, action="recover", row_id=row["id"])
        for row in rows
        if row["ref"] in found
    ]


def sweep(
    client: "OpenAI",
    ledger: Ledger,
    rows: list[Row],
    log_file: Path,
    *,
    auto_save: bool,
    concurrency: int,
) -> list[BatchReport]:
    """Check the batches of `rows`, `concurrency` at a time, sharing one client."""

    def check(row: Row) -> BatchReport:
        try:
            return check_status(client, ledger, row["batch_id"], log_file, auto_save=auto_save)
        except BatchledgerError as exc:
            return BatchReport(batch_id=row["batch_id"], row=row, error=exc)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(check, rows))
