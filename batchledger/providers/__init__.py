"""The provider seam: what the tool asks of a batch API (`Provider`); what each API is
(`Profile`: limits, windows, metadata, result order, retention, status mapping) is in
profiles.py.

Everything above this package (batch, sweep, jobs, retry, prune, usage, export) sees only
these two. A provider's implementation is one package beside the others (`openai/`: the
OpenAI SDK's `OpenAI` and `AzureOpenAI` clients); `Context.provider_for` picks it by the
account's kind. Importing this package imports no SDK: that costs about a second, and
commands that never call an API (`list`, `show`, `usage`, `--help`) must not pay it.
"""

import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from batchledger.errors import BatchledgerError
from batchledger.profiles import Profile

if TYPE_CHECKING:
    from batchledger.savefile import Saved

# Set when the user interrupts a run whose downloads go on in worker threads (a sweep):
# each provider's download stops at its next chunk. The main thread gets KeyboardInterrupt.
STOP_DOWNLOADS = threading.Event()


def upload_name(path: Path, ref: str) -> str:
    """The name an input is uploaded under: its own stem, tagged with the ledger's ref.

    The tag lets a lost upload be told apart from another upload of a same-named file.
    The suffix is always .jsonl: the API refuses a batch input named otherwise.
    """
    return f"{path.stem}.{ref}.jsonl"


class Uploaded(NamedTuple):
    id: str
    created_at: int  # by the server's clock


class Inline(NamedTuple):
    """The requests a create sends inline: these byte ranges of the input, in order."""

    path: Path
    ranges: Sequence[tuple[int, int]]


class Listed(NamedTuple):
    batches: dict[str, dict[str, Any]]  # batch id -> the batch as the listing showed it
    pages: int  # pages read
    error: BatchledgerError | None  # why the listing stopped short, if it did


class Search(NamedTuple):
    found: dict[str, dict[str, Any]]  # ref -> the batch its create made
    complete: bool  # every batch back to the bound was looked at: what is not found was not made
    # Batches that could each be one a lost create made, where the search cannot tell which
    # (a provider whose batches carry no metadata): nothing may be sent again for it.
    ambiguous: tuple[str, ...] = ()


class Provider(Protocol):
    """Everything asked of a batch API, in the shape the layers above use: batches are plain
    dicts of the OpenAI Batch object's fields (a provider maps its own onto them), errors
    are the project's own (errors.py: `Transient`, `NotFound`, `Rejected`, `Conflict`)."""

    profile: Profile
    # Where the account's batches live, as the ledger records it for each batch.
    location: str

    def upload(
        self,
        path: Path,
        name: str,
        *,
        expires_after: int | None = None,
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> Uploaded:
        """Upload `path` (or only these byte ranges of it, in order) as `name`; found
        again, not repeated, when an answer is lost."""
        ...

    def create(
        self,
        file_id: str | None,
        endpoint: str,
        window: str,
        ref: str,
        *,
        file_created_at: int | None,
        user_metadata: Mapping[str, str] | None = None,
        output_expires_after: int | None = None,
        exclude: Collection[str] = (),
        inline: Inline | None = None,
    ) -> dict[str, Any]:
        """Create a batch tagged with `ref` from an uploaded file (`file_id`), or from the
        requests themselves (`inline`, where the profile says `inline_requests`), never two
        of them for one call."""
        ...

    def get(self, batch_id: str) -> dict[str, Any]:
        """Look up one batch."""
        ...

    def list_by_id(self, wanted: Collection[str], since: float | None, max_pages: int) -> Listed:
        """The batches of `wanted` among the account's newest, at most `max_pages` pages."""
        ...

    def list_all(self) -> Iterator[dict[str, Any]]:
        """Every batch of the account, newest first."""
        ...

    def find_batches(
        self, wanted: Mapping[str, str | None], since: float | None, exclude: Collection[str] = ()
    ) -> Search:
        """The batches that lost creates made (ref -> input file id), back to `since`."""
        ...

    def find_upload(self, filename: str, size: int, max_age: float | None) -> Uploaded | None:
        """An upload of `filename` with `size` bytes whose answer was lost."""
        ...

    def cancel(self, batch_id: str) -> dict[str, Any] | None:
        """Ask to cancel a batch; None if it is past cancelling."""
        ...

    def download(self, file_id: str, out_path: Path, operation: str = ...) -> "Saved":
        """Stream a result file to `out_path` atomically; its byte count and sha256."""
        ...

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        """The file object, or None if the provider no longer has it."""
        ...

    def delete_file(self, file_id: str) -> bool:
        """Delete a file; False if the provider did not have it (any more)."""
        ...

    def close(self) -> None: ...
